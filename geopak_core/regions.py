"""The region table: a country's first-level administrative units and their ids.

Every label in a dataset is an id into this table (the JSON keys stay ``province`` /
``province_id`` for compatibility; they mean "first-level administrative unit"), so the table
travels with the data: the tag stage writes it into the work folder, the cluster stage beside
``cells.parquet``, the shard stage into the shard folder (``regions.parquet``) and training into
every checkpoint. Nothing downstream assumes a number of regions; it reads this table.

Ids are stable by construction:

* **Pakistan** (``PAK``) keeps the contract's fixed ids (the ``PAKISTAN`` instance below);
* **any other country** gets ids ordered by ISO 3166-2 code (then name), contiguous from 0,
  so the same boundaries file always yields the same ids.

This module is numpy/pyarrow only (no geopandas), so the model tower can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geopak_core.errors import GeopakError
from geopak_core.geo import PAKISTAN_BBOX

REGIONS_FILE = "regions.parquet"
# province_id is stored as int8 when a country's table fits (Pakistan's 7, most countries),
# so those outputs keep their bytes, and as int16 only when it does not (Slovenia's ~212
# municipalities and other long ADM1 lists); -1 means "no region" in both.
INT8_REGIONS = 127
MAX_REGIONS = 32767

_PAK_NAMES = (
    "Sindh",
    "Punjab",
    "Khyber Pakhtunkhwa",
    "Islamabad Capital Territory",
    "Gilgit-Baltistan",
    "Balochistan",
    "Azad Kashmir",
)
_PAK_CODES = ("PK-SD", "PK-PB", "PK-KP", "PK-IS", "PK-GB", "PK-BA", "PK-JK")

_PAK_ALIASES = {
    "khyberpakhtunkhwa": 2,
    "kpk": 2,
    "kp": 2,
    "nwfp": 2,
    "northwestfrontierprovince": 2,
    "federallyadministeredtribalareas": 2,
    "fata": 2,
    "islamabad": 3,
    "ict": 3,
    "federalcapitalterritory": 3,
    "northernareas": 4,
    "baluchistan": 5,
    "azadjammuandkashmir": 6,
    "azadjammukashmir": 6,
    "ajk": 6,
}


def id_dtype(n: int) -> Any:
    """The numpy dtype that stores region ids of a table of ``n`` regions (and -1)."""
    import numpy as np

    return np.dtype(np.int8) if int(n) <= INT8_REGIONS else np.dtype(np.int16)


def id_arrow_type(n: int) -> Any:
    """The Arrow type of ``province_id`` columns for a table of ``n`` regions (int8 or int16)."""
    import pyarrow as pa

    return pa.int8() if int(n) <= INT8_REGIONS else pa.int16()


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass(frozen=True)
class RegionTable:
    """A country's first-level units: ``names[i]`` / ``codes[i]`` / ``areas_km2[i]`` for id ``i``.

    ``bbox`` (lon_min, lat_min, lon_max, lat_max, with a small margin) is what the sources
    filter by; ``aliases`` maps other spellings (normalised) onto ids.
    """

    country: str
    names: tuple[str, ...]
    codes: tuple[str, ...]
    areas_km2: tuple[float, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    aliases: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "country", str(self.country).upper())
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "codes", tuple(str(c or "") for c in self.codes))
        object.__setattr__(self, "areas_km2", tuple(float(a) for a in self.areas_km2))
        if self.bbox is not None:
            object.__setattr__(self, "bbox", tuple(float(v) for v in self.bbox))
        n = len(self.names)
        if n == 0:
            raise GeopakError(f"region table for {self.country}: no regions")
        if n > MAX_REGIONS:
            raise GeopakError(
                f"region table for {self.country}: {n} first-level units; at most {MAX_REGIONS} are supported"
            )
        if len(self.codes) != n or (self.areas_km2 and len(self.areas_km2) != n):
            raise GeopakError(
                f"region table for {self.country}: names, codes and areas differ in length"
            )
        if len(set(self.names)) != n:
            dup = sorted({x for x in self.names if self.names.count(x) > 1})
            raise GeopakError(f"region table for {self.country}: duplicate region names {dup}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n(self) -> int:
        """Number of regions (the size of the model's province head)."""
        return len(self.names)

    @property
    def id_dtype(self) -> Any:
        """numpy dtype of this table's ids (int8 up to 127 regions, else int16)."""
        return id_dtype(self.n)

    @property
    def id_arrow_type(self) -> Any:
        """Arrow type of this table's ``province_id`` columns (int8 up to 127 regions, else int16)."""
        return id_arrow_type(self.n)

    def name(self, rid: int) -> str:
        return self.names[int(rid)]

    def code(self, rid: int) -> str:
        return self.codes[int(rid)]

    def id(self, name_or_code: str) -> int:
        """The id of a region given by name (any known spelling) or ISO 3166-2 code.

        Raises KeyError naming the text when it is no region of this country.
        """
        text = str(name_or_code).strip()
        upper = text.upper()
        for i, c in enumerate(self.codes):
            if c and c.upper() == upper:
                return i
        key = _norm(text)
        for i, nm in enumerate(self.names):
            if _norm(nm) == key:
                return i
        if key in self.aliases:
            return int(self.aliases[key])
        raise KeyError(f"unknown {self.country} region {name_or_code!r}")

    def same_regions(self, other: RegionTable) -> bool:
        """True when ids mean the same regions (country, names and codes; not areas)."""
        return (self.country, self.names, self.codes) == (other.country, other.names, other.codes)

    # ---------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what a checkpoint stores)."""
        return {
            "country": self.country,
            "names": list(self.names),
            "codes": list(self.codes),
            "areas_km2": list(self.areas_km2),
            "bbox": list(self.bbox) if self.bbox is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegionTable:
        country = str(data.get("country") or "")
        names = tuple(data.get("names") or ())
        areas = tuple(data.get("areas_km2") or ())
        if country.upper() == "PAK" and names == PAKISTAN.names:
            if not areas:
                return PAKISTAN
            return cls("PAK", names, PAKISTAN.codes, areas, PAKISTAN.bbox, PAKISTAN.aliases)
        bbox = data.get("bbox")
        return cls(
            country=country,
            names=names,
            codes=tuple(data.get("codes") or [""] * len(names)),
            areas_km2=areas,
            bbox=tuple(bbox) if bbox else None,
        )

    def to_arrow(self) -> Any:
        """The table as written to ``regions.parquet``: ``province_id``, ``province``, ``iso``,
        ``area_km2``; the country and bbox ride in the schema metadata."""
        import json

        import pyarrow as pa

        n = self.n
        areas = list(self.areas_km2) if self.areas_km2 else [float("nan")] * n
        table = pa.table(
            {
                "province_id": pa.array(range(n), type=self.id_arrow_type),
                "province": pa.array(self.names, type=pa.string()),
                "iso": pa.array(self.codes, type=pa.string()),
                "area_km2": pa.array(areas, type=pa.float64()),
            }
        )
        meta = {"country": self.country, "bbox": list(self.bbox) if self.bbox else None}
        return table.replace_schema_metadata({b"geopak.regions": json.dumps(meta).encode()})

    def write(self, path: str | Path, *, durable: bool = True) -> Path:
        """Write ``regions.parquet`` atomically (fsynced unless ``durable=False``)."""
        from geopak_core.io import atomic_write_parquet

        atomic_write_parquet(Path(path), self.to_arrow(), durable=durable)
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> RegionTable:
        """Read a ``regions.parquet`` written by ``write`` (one-line error when it is not one)."""
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        p = Path(path)
        try:
            table = pq.read_table(p)
        except (OSError, pa.ArrowInvalid) as exc:
            raise GeopakError(f"cannot read region table {p} ({exc})") from None
        for col in ("province_id", "province"):
            if col not in table.column_names:
                raise GeopakError(f"region table {p}: lacks column {col!r}")
        ids = table.column("province_id").to_pylist()
        if ids != list(range(len(ids))):
            raise GeopakError(f"region table {p}: province_id must be 0..{len(ids) - 1} in order")
        meta: dict[str, Any] = {}
        raw = (table.schema.metadata or {}).get(b"geopak.regions")
        if raw:
            meta = json.loads(raw)
        names = table.column("province").to_pylist()
        codes = table.column("iso").to_pylist() if "iso" in table.column_names else [""] * len(ids)
        areas = table.column("area_km2").to_pylist() if "area_km2" in table.column_names else []
        return cls.from_dict(
            {
                "country": meta.get("country") or _guess_country(codes),
                "names": names,
                "codes": codes,
                "areas_km2": [float("nan") if a is None else a for a in areas],
                "bbox": meta.get("bbox"),
            }
        )


def _guess_country(codes: Iterable[str]) -> str:
    prefixes = {str(c).split("-")[0] for c in codes if c}
    if prefixes == {"PK"}:
        return "PAK"
    return prefixes.pop() if len(prefixes) == 1 else ""


#: Pakistan: the contract's fixed ids (the default country).
PAKISTAN = RegionTable(
    country="PAK", names=_PAK_NAMES, codes=_PAK_CODES, bbox=PAKISTAN_BBOX, aliases=_PAK_ALIASES
)


def regions_from_cells(ids: Iterable[int], names: Iterable[str]) -> RegionTable:
    """A table recovered from (province_id, province) pairs (an older shard folder or work
    folder without ``regions.parquet``): Pakistan when the names are Pakistan's, else a table
    of the names seen (regions never seen get no name and make this an error)."""
    seen: dict[int, str] = {}
    for i, nm in zip(ids, names, strict=True):
        seen.setdefault(int(i), str(nm))
    if all(0 <= i < PAKISTAN.n and PAKISTAN.names[i] == nm for i, nm in seen.items()):
        return PAKISTAN
    n = max(seen) + 1 if seen else 0
    missing = [i for i in range(n) if i not in seen]
    if missing or not seen:
        raise GeopakError(
            f"cannot recover the region table: no {REGIONS_FILE} and region ids {missing or 'none'} have no name"
        )
    return RegionTable(country="", names=tuple(seen[i] for i in range(n)), codes=("",) * n)


def regions_in(folder: str | Path, *, cells: str | Path | None = None) -> RegionTable:
    """The region table of a folder (shard folder, ``W/tag``, ``W/cluster``):
    ``regions.parquet`` there, else recovered from ``cells.parquet`` (else Pakistan's)."""
    folder = Path(folder)
    path = folder / REGIONS_FILE
    if path.is_file():
        return RegionTable.read(path)
    cells_path = Path(cells) if cells else folder / "cells.parquet"
    if cells_path.is_file():
        import pyarrow.parquet as pq

        t = pq.read_table(cells_path, columns=["province_id", "province"])
        return regions_from_cells(
            t.column("province_id").to_pylist(), t.column("province").to_pylist()
        )
    return PAKISTAN


__all__ = [
    "INT8_REGIONS",
    "MAX_REGIONS",
    "PAKISTAN",
    "REGIONS_FILE",
    "RegionTable",
    "regions_from_cells",
    "id_arrow_type",
    "id_dtype",
    "regions_in",
]
