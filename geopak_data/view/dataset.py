"""What the viewer shows, read once from a shard folder or a work folder.

The page asks for columns, not rows: 100,000 samples travel as a handful of arrays with
small dictionaries for the categorical fields (split, region, source, licence), so the
browser can filter and recolour without another request. Everything here is plain data
access with no web framework, so a notebook can use it directly.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from geopak_core.errors import GeopakError
from geopak_core.shardfmt import CELL_COLUMNS

CATEGORIES = ("split", "province", "source", "license")
DETAIL_FIELDS = (
    "key",
    "split",
    "province",
    "province_id",
    "cell_id",
    "lat",
    "lon",
    "source",
    "source_id",
    "url",
    "owner",
    "license",
    "license_url",
    "attribution",
    "title",
    "date_taken",
    "width",
    "height",
    "sha256",
)
# The latest stage's records stand for the work folder (each stage keeps every column).
_WORK_STAGES = ("cluster", "tag", "filter")
_REJECT_SAMPLES = 12


def _clean(value: Any) -> Any:
    """JSON-ready scalars: numpy -> Python, NaN/NaT -> None."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is pd.NaT:
        return None
    return value


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise GeopakError(
            f"{path}: not a readable Parquet table ({exc.__class__.__name__})"
        ) from None


@dataclass
class ViewData:
    """One dataset as the viewer sees it: samples, cells, rejects and where images live."""

    root: Path
    kind: str  # "shards" or "work"
    samples: pd.DataFrame
    cells: pd.DataFrame
    rejects: pd.DataFrame
    _tars: dict[str, dict[str, tarfile.TarInfo]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------------ loading
    @property
    def country(self) -> str:
        """The ISO3 country of the dataset's region table (Pakistan for older folders)."""
        from geopak_core.regions import regions_in

        folder = self.root if self.kind == "shards" else self.root / "cluster"
        if self.kind != "shards" and not (folder / "regions.parquet").is_file():
            folder = self.root / "tag"
        return regions_in(folder).country or "PAK"

    @classmethod
    def open(cls, path: str | Path) -> ViewData:
        """A shard folder (``index.parquet``) or a work folder (``manifest.json``)."""
        root = Path(path)
        if not root.is_dir():
            raise GeopakError(f"not a folder: {root}")
        if (root / "index.parquet").is_file():
            return cls._open_shards(root)
        if (root / "manifest.json").is_file():
            return cls._open_work(root)
        raise GeopakError(
            f"{root}: neither a shard folder (no index.parquet) nor a work folder (no manifest.json)"
        )

    @classmethod
    def _open_shards(cls, root: Path) -> ViewData:
        samples = _read_parquet(root / "index.parquet")
        cells_path = root / "cells.parquet"
        cells = _read_parquet(cells_path) if cells_path.is_file() else pd.DataFrame()
        return cls(
            root=root,
            kind="shards",
            samples=_normalise(samples),
            cells=cells,
            rejects=_empty_rejects(),
        )

    @classmethod
    def _open_work(cls, root: Path) -> ViewData:
        samples = None
        for stage in _WORK_STAGES:
            p = root / stage / "records.parquet"
            if p.is_file():
                samples = _read_parquet(p)
                break
        if samples is None:
            parts = [_read_parquet(p) for p in sorted(root.glob("crawl/*/records.parquet"))]
            samples = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        samples = samples.copy()
        samples["split"] = "unsplit"
        cells_path = root / "cluster" / "cells.parquet"
        cells = _read_parquet(cells_path) if cells_path.is_file() else pd.DataFrame()
        rejects = [
            _read_parquet(p)
            for p in sorted(root.glob("*/rejects.parquet"))
            + sorted(root.glob("crawl/*/rejects.parquet"))
        ]
        rej = pd.concat(rejects, ignore_index=True) if rejects else _empty_rejects()
        return cls(root=root, kind="work", samples=_normalise(samples), cells=cells, rejects=rej)

    # ------------------------------------------------------------------ queries
    def mask(self, filters: dict[str, str]) -> np.ndarray:
        """Rows matching every ``field=value`` filter (unknown fields are a user error)."""
        m = np.ones(len(self.samples), dtype=bool)
        for name, value in filters.items():
            if name not in CATEGORIES:
                raise GeopakError(f"unknown filter {name!r} (known: {', '.join(CATEGORIES)})")
            if value not in ("", None):
                m &= (self.samples[name] == value).to_numpy()
        return m

    def columns(self, filters: dict[str, str] | None = None) -> dict[str, Any]:
        """The samples as columns: lat/lon rounded to ~1 m, categories as codes + labels."""
        df = self.samples[self.mask(filters or {})]
        out: dict[str, Any] = {
            "n": int(len(df)),
            "key": df["key"].tolist(),
            "lat": np.round(df["lat"].to_numpy(dtype=float), 5).tolist(),
            "lon": np.round(df["lon"].to_numpy(dtype=float), 5).tolist(),
            "categories": {},
        }
        for name in CATEGORIES:
            labels = sorted(self.samples[name].unique().tolist())
            codes = pd.Categorical(df[name], categories=labels).codes
            out["categories"][name] = {"labels": labels, "codes": codes.tolist()}
        return out

    def records(
        self, filters: dict[str, str], *, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """A page of full sample rows (for notebooks)."""
        df = self.samples[self.mask(filters)]
        page = df.iloc[offset : offset + limit]
        fields = [f for f in DETAIL_FIELDS if f in page.columns]
        rows = [
            {f: _clean(v) for f, v in zip(fields, row, strict=True)}
            for row in page[fields].itertuples(index=False)
        ]
        return {"n": int(len(df)), "offset": offset, "limit": limit, "samples": rows}

    def counts(self, filters: dict[str, str]) -> dict[str, Any]:
        df = self.samples[self.mask(filters)]
        return {
            "n": int(len(df)),
            **{
                name: {str(k): int(v) for k, v in df[name].value_counts().items()}
                for name in CATEGORIES
            },
        }

    def detail(self, key: str) -> dict[str, Any] | None:
        rows = self.samples[self.samples["key"] == key]
        if rows.empty:
            return None
        row = rows.iloc[0]
        return {f: _clean(row[f]) for f in DETAIL_FIELDS if f in row.index}

    def cell_rows(self) -> list[dict[str, Any]]:
        if self.cells.empty:
            return []
        cols = [c for c in CELL_COLUMNS if c in self.cells.columns]
        return [
            {c: _clean(v) for c, v in zip(cols, row, strict=True)}
            for row in self.cells[cols].itertuples(index=False)
        ]

    def reject_summary(self) -> dict[str, Any]:
        """Reason counts and a sample of rejected records per reason, in stage order."""
        rej = self.rejects
        if rej.empty:
            return {"n": 0, "reasons": []}
        reasons = []
        for (stage, reason), group in rej.groupby(["stage", "reason"], sort=False):
            sample = group.head(_REJECT_SAMPLES)
            reasons.append(
                {
                    "stage": str(stage),
                    "reason": str(reason),
                    "count": int(len(group)),
                    "samples": [
                        {
                            c: _clean(v)
                            for c, v in row.items()
                            if c in ("key", "source", "source_id", "url", "detail")
                        }
                        for row in sample.to_dict("records")
                    ],
                }
            )
        reasons.sort(key=lambda r: -r["count"])
        return {"n": int(len(rej)), "reasons": reasons}

    def truth_for_sha256(self, digest: str) -> dict[str, Any] | None:
        """The dataset sample whose stored JPEG has these bytes (an uploaded dataset photo)."""
        if "sha256" not in self.samples.columns:
            return None
        rows = self.samples[self.samples["sha256"] == digest]
        return None if rows.empty else self.detail(str(rows.iloc[0]["key"]))

    # ------------------------------------------------------------------ images
    def image_bytes(self, key: str) -> bytes | None:
        """The stored JPEG of ``key``, read only from inside the dataset folder."""
        rows = self.samples[self.samples["key"] == key]
        if rows.empty:
            return None
        row = rows.iloc[0]
        if self.kind == "shards":
            return self._from_tar(str(row["shard"]), key)
        rel = row.get("image_path")
        if not isinstance(rel, str) or not rel:
            return None
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path.read_bytes()

    def _from_tar(self, shard: str, key: str) -> bytes | None:
        path = (self.root / shard).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        with self._lock:
            members = self._tars.get(shard)
            if members is None:
                try:
                    with tarfile.open(path) as tf:
                        members = {m.name: m for m in tf.getmembers() if m.isfile()}
                except (tarfile.TarError, OSError):
                    return None
                self._tars[shard] = members
        info = members.get(f"{key}.jpg")
        if info is None:
            return None
        with open(path, "rb") as fh:
            fh.seek(info.offset_data)
            return fh.read(info.size)

    def meta(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "kind": self.kind,
            "n_samples": int(len(self.samples)),
            "n_cells": int(len(self.cells)),
            "n_rejects": int(len(self.rejects)),
            "categories": {c: sorted(self.samples[c].unique().tolist()) for c in CATEGORIES},
        }


def _empty_rejects() -> pd.DataFrame:
    return pd.DataFrame(columns=["key", "source", "source_id", "url", "stage", "reason", "detail"])


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Every column the page needs, with strings where the page expects labels."""
    df = df.copy()
    if "key" not in df.columns:
        raise GeopakError("the records have no 'key' column")
    for col in ("lat", "lon"):
        if col not in df.columns:
            raise GeopakError(f"the records have no {col!r} column")
    df = df[np.isfinite(df["lat"].astype(float)) & np.isfinite(df["lon"].astype(float))]
    for name in CATEGORIES:
        if name not in df.columns:
            df[name] = "unknown"
        df[name] = df[name].fillna("unknown").astype(str).replace("", "unknown")
    return df.reset_index(drop=True)


def regions_geojson(
    boundaries: str | Path | None, *, tolerance_deg: float = 0.01, country: str = "PAK"
) -> dict[str, Any]:
    """Region polygons, simplified for the page; an empty collection when none are at hand.

    Only local files are used (explicit path, ``GEOPAK_BOUNDARIES`` or the verified cache): the
    viewer must start offline and never wait on a download.
    """
    import os

    from geopak_core import boundaries as gb

    path: Path | None = Path(boundaries) if boundaries else None
    given = path is not None
    if path is None:
        env = os.environ.get(gb.ENV_VAR, "").strip()
        if env:
            path = Path(env)
        else:
            try:
                cached = gb.cached_path(gb.country_manifest(country))
                path = cached if cached.is_file() else None
            except Exception:  # no manifest in an installed copy, unwritable cache, ...
                path = None
    if path is None or not path.exists():
        return {"type": "FeatureCollection", "features": [], "note": "no region polygons found"}
    try:
        gdf = gb.read_boundaries(path, country=country)
    except GeopakError as exc:
        if given:
            raise  # the user's own file: a wrong one is their error to hear
        # $GEOPAK_BOUNDARIES of another country (Pakistan's, for a folder of another one)
        # must not stop the viewer: it starts without polygons and says why
        return {"type": "FeatureCollection", "features": [], "note": str(exc).splitlines()[0]}
    gdf = gdf.assign(geometry=gdf.geometry.simplify(tolerance_deg, preserve_topology=True))
    name_col = "province" if "province" in gdf.columns else gdf.columns[0]
    features = [
        {
            "type": "Feature",
            "properties": {"name": str(row[name_col])},
            "geometry": json.loads(json.dumps(row.geometry.__geo_interface__)),
        }
        for _, row in gdf.iterrows()
    ]
    return {"type": "FeatureCollection", "features": features}


def decode_upload(data: bytes, *, max_pixels: int, max_side: int = 1024) -> Any:
    """An uploaded photo checked and re-encoded exactly as the crawl treats a download
    (signature, bomb limit, decodability, EXIF rotation), as a PIL image; raises
    ``GeopakError`` with the crawl's reject reason."""
    from PIL import Image

    from geopak_data.imaging import ImageRejected, process_image

    try:
        stored = process_image(data, max_side=max_side, max_pixels=max_pixels)
    except ImageRejected as exc:
        raise GeopakError(f"upload refused: {exc.reason} ({exc.detail})") from None
    img = Image.open(io.BytesIO(stored.data))
    img.load()
    return img
