"""Column access that works the same on a pyarrow Table, a pandas DataFrame, a mapping of
arrays or an object with array attributes (e.g. ``geopak_model.cells.CellTable``), so pure
functions can take whichever table the caller already has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def column(table: Any, name: str) -> np.ndarray:
    """One column as a numpy array from a pyarrow Table, a DataFrame, a mapping or an object with
    attributes, so helpers work on whatever the caller holds."""
    if hasattr(table, "column_names") and hasattr(table, "column"):  # pyarrow Table
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False))
    if isinstance(table, Mapping) or hasattr(table, "columns"):
        return np.asarray(table[name])
    return np.asarray(getattr(table, name))


def has_column(table: Any, name: str) -> bool:
    """Whether ``table`` (any of the kinds ``column`` accepts) has a column ``name``."""
    if hasattr(table, "column_names"):
        return name in table.column_names
    if hasattr(table, "columns"):
        return name in table.columns
    if isinstance(table, Mapping):
        return name in table
    return getattr(table, name, None) is not None
