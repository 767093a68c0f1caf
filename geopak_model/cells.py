"""The geocell table the model's heads are built from.

The network's output layout (how many regions the province head has, how many cells each
region's head has, which global cell id each column is, where each cell's center is and how far
its offset may move) is fixed by this table and the region table it carries (``regions``: the
country's first-level units, from the shard folder's ``regions.parquet``), so both travel
inside every checkpoint as plain lists (``to_dict``) and are re-validated on load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geopak_core.errors import GeopakError
from geopak_core.geo import valid_coordinates
from geopak_core.regions import PAKISTAN, RegionTable, regions_in
from geopak_core.shardfmt import CELL_REQUIRED, cell_id_order, read_table

REQUIRED_COLUMNS = CELL_REQUIRED


@dataclass
class CellTable:
    """One row per geocell, indexed by ``cell_id`` (contiguous from 0, row i is cell i)."""

    cell_id: np.ndarray
    province_id: np.ndarray
    center_lat: np.ndarray
    center_lon: np.ndarray
    radius_km: np.ndarray
    n_samples: np.ndarray | None = field(default=None)  # training photos per cell, if known
    regions: RegionTable = field(default=PAKISTAN)  # what province_id means

    @property
    def num_provinces(self) -> int:
        """Size of the province (first-level region) head."""
        return self.regions.n

    def __post_init__(self) -> None:
        self.cell_id = np.asarray(self.cell_id, dtype=np.int64)
        self.province_id = np.asarray(self.province_id, dtype=np.int64)
        self.center_lat = np.asarray(self.center_lat, dtype=np.float64)
        self.center_lon = np.asarray(self.center_lon, dtype=np.float64)
        self.radius_km = np.asarray(self.radius_km, dtype=np.float64)
        if self.n_samples is not None:
            self.n_samples = np.asarray(self.n_samples, dtype=np.int64)
        self._validate()

    def _validate(self) -> None:
        n = len(self.cell_id)
        if n == 0:
            raise GeopakError("cell table is empty: the model needs at least one geocell")
        for name in ("province_id", "center_lat", "center_lon", "radius_km"):
            if len(getattr(self, name)) != n:
                raise GeopakError(
                    f"cell table column {name} has {len(getattr(self, name))} rows, expected {n}"
                )
        if self.n_samples is not None and len(self.n_samples) != n:
            raise GeopakError(
                f"cell table column n_samples has {len(self.n_samples)} rows, expected {n}"
            )
        if not np.array_equal(self.cell_id, np.arange(n)):
            cell_id_order(self.cell_id)  # says which rule is broken when the ids are not 0..n-1
            raise GeopakError("cell table: cell_id must be contiguous from 0 in row order")
        k = self.regions.n
        bad = np.flatnonzero((self.province_id < 0) | (self.province_id >= k))
        if bad.size:
            raise GeopakError(
                f"cell {int(bad[0])} has province_id {int(self.province_id[bad[0]])}, expected 0..{k - 1}"
            )
        bad = np.flatnonzero(~valid_coordinates(self.center_lat, self.center_lon))
        if bad.size:
            raise GeopakError(
                f"cell {int(bad[0])} has an invalid center ({self.center_lat[bad[0]]}, {self.center_lon[bad[0]]})"
            )
        bad = np.flatnonzero(~np.isfinite(self.radius_km) | (self.radius_km < 0))
        if bad.size:
            raise GeopakError(
                f"cell {int(bad[0])} has an invalid radius_km {self.radius_km[bad[0]]}"
            )

    @property
    def num_cells(self) -> int:
        return int(len(self.cell_id))

    def cells_of_province(self, p: int) -> np.ndarray:
        """Global cell ids of province ``p``, ascending: the column order of its head."""
        return np.flatnonzero(self.province_id == int(p)).astype(np.int64)

    def cells_per_province(self) -> list[int]:
        return [int((self.province_id == p).sum()) for p in range(self.regions.n)]

    def province_counts(self) -> np.ndarray | None:
        """Training photos per province (from n_samples), for class weights; None if unknown."""
        if self.n_samples is None:
            return None
        return np.bincount(
            self.province_id, weights=self.n_samples, minlength=self.regions.n
        ).astype(np.int64)

    @classmethod
    def from_parquet(cls, path: str | Path, regions: RegionTable | None = None) -> CellTable:
        """Read the shard folder's ``cells.parquet`` (rows may be stored in any order) with the
        folder's region table (``regions.parquet`` beside it; older folders: Pakistan's)."""
        p = Path(path)
        if not p.is_file():
            raise GeopakError(f"cells table not found: {p}")
        if regions is None:
            regions = regions_in(p.parent, cells=p)
        table = read_table(p)
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise GeopakError(f"{p}: missing column(s) {', '.join(missing)}")
        cols = {c: table.column(c).to_numpy() for c in REQUIRED_COLUMNS}
        if "n_samples" in table.column_names:
            cols["n_samples"] = table.column("n_samples").to_numpy()
        order = np.argsort(cols["cell_id"], kind="stable")
        try:
            return cls(**{k: v[order] for k, v in cols.items()}, regions=regions)
        except GeopakError as exc:
            raise GeopakError(f"{p}: {exc}") from None

    def digest(self) -> str:
        """sha256 of what a trained model's outputs mean: cell ids, their provinces and their
        centres (micro-degree precision). Two tables with the same count but permuted or moved
        centres differ, so a checkpoint is never used with another dataset's cells."""
        import hashlib

        h = hashlib.sha256(b"geopak-cells-v1\0")
        h.update(np.ascontiguousarray(self.cell_id, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(self.province_id, dtype="<i8").tobytes())
        for col in (self.center_lat, self.center_lon):
            h.update(np.ascontiguousarray(np.round(col * 1e6), dtype="<i8").tobytes())
        return h.hexdigest()

    def require_same(self, other: CellTable, *, what: str, where: str, advice: str) -> None:
        """Raise a one-line ``GeopakError`` unless ``other`` is the same cell table."""
        if self.num_cells != other.num_cells:
            raise GeopakError(
                f"{what} has {self.num_cells} geocells but {where} has {other.num_cells}: {advice}"
            )
        if self.digest() != other.digest():
            diff = np.flatnonzero(
                (self.province_id != other.province_id)
                | (np.abs(self.center_lat - other.center_lat) > 1e-6)
                | (np.abs(self.center_lon - other.center_lon) > 1e-6)
            )
            first = f" (first difference: cell {int(diff[0])})" if diff.size else ""
            raise GeopakError(
                f"{what} was made for another cell table than {where}: same count "
                f"({self.num_cells}) but other ids, centres or provinces{first}; {advice}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, so a checkpoint stays loadable with ``torch.load(weights_only=True)``."""
        out: dict[str, Any] = {
            "cell_id": self.cell_id.tolist(),
            "province_id": self.province_id.tolist(),
            "center_lat": self.center_lat.tolist(),
            "center_lon": self.center_lon.tolist(),
            "radius_km": self.radius_km.tolist(),
        }
        if self.n_samples is not None:
            out["n_samples"] = self.n_samples.tolist()
        out["regions"] = self.regions.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellTable:
        missing = [c for c in REQUIRED_COLUMNS if c not in data]
        if missing:
            raise GeopakError(f"cell table is missing {', '.join(missing)}")
        regions = RegionTable.from_dict(data["regions"]) if data.get("regions") else PAKISTAN
        kwargs = {k: data[k] for k in (*REQUIRED_COLUMNS, "n_samples") if k in data}
        return cls(**kwargs, regions=regions)

    def describe(self) -> str:
        per = self.cells_per_province()
        return ", ".join(f"{self.regions.names[p]}: {n}" for p, n in enumerate(per))
