"""Province polygons: find them, verify them, and map them onto the contract's ids.

Every label in the dataset comes from these seven polygons, so where they come from is pinned
and checked rather than trusted:

* ``load_boundaries(path)`` looks, in order, at an explicit ``path`` (``--boundaries`` or
  ``tag.boundaries``), the ``GEOPAK_BOUNDARIES`` environment variable, a cached copy of the
  pinned release, and finally downloads the geoBoundaries gbOpen PAK ADM1 release named in
  ``boundaries/manifest.json``. A download (and a cached copy, every time it is used) must
  match the sha256 pinned there, or it is refused: a silently changed polygon file would
  silently change every label.
* GeoJSON, GeoPackage and Shapefile (also zipped) are read with pyogrio. Units are matched by
  ``shapeISO`` (ISO 3166-2) or ``shapeName`` onto the fixed ids in ``provinces.py``; a file
  that does not hold exactly the seven units of Pakistan is rejected with a one-line error
  instead of producing wrong labels.

No polygon data is committed to the repository; the cache lives in ``boundaries/cache/``
(git-ignored) or, when that is not writable (an installed package), in the user cache dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from geopak_core.errors import GeopakError
from geopak_core.geo import PAKISTAN_BBOX
from geopak_core.io import atomic_path, file_sha256
from geopak_core.progress import log
from geopak_core.regions import NUM_PROVINCES, PROVINCES, province_id

if TYPE_CHECKING:  # geopandas is heavy: imported only when polygons are actually needed
    import geopandas

ENV_VAR = "GEOPAK_BOUNDARIES"
CACHE_ENV_VAR = "GEOPAK_BOUNDARIES_CACHE"
_REPO_BOUNDARIES = Path(__file__).resolve().parent.parent / "boundaries"
MANIFEST_PATH = _REPO_BOUNDARIES / "manifest.json"

# The same pin as boundaries/manifest.json, for installs that do not ship that folder
# (a test checks the two agree).
DEFAULT_MANIFEST: dict[str, Any] = {
    "name": "geoBoundaries gbOpen PAK ADM1",
    "url": "https://github.com/wmgeolab/geoBoundaries/raw/9469f09/releaseData/gbOpen/PAK/ADM1/geoBoundaries-PAK-ADM1.geojson",
    "mirrors": [],
    "filename": "geoBoundaries-PAK-ADM1.geojson",
    "sha256": "34c973399b464f8b43a6cfbc9255ff6d19d911477f1549d0ff0f1dcaaf63c37b",
    "units": 7,
}

_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_NAME_COLUMNS = (
    "shapeISO",
    "shapeName",
    "iso_3166_2",
    "ISO_1",
    "HASC_1",
    "NAME_1",
    "ADM1_EN",
    "name",
    "NAME",
    "province",
)


def boundaries_manifest() -> dict[str, Any]:
    """The pinned release (URL, sha256): ``boundaries/manifest.json``, else the built-in copy."""
    if MANIFEST_PATH.is_file():
        try:
            data = json.loads(MANIFEST_PATH.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise GeopakError(f"{MANIFEST_PATH}: invalid JSON: {exc}") from None
        for key in ("url", "sha256", "filename"):
            if not data.get(key):
                raise GeopakError(f"{MANIFEST_PATH}: missing '{key}'")
        return data
    return dict(DEFAULT_MANIFEST)


def default_cache_dir() -> Path:
    """``GEOPAK_BOUNDARIES_CACHE``, else ``boundaries/cache`` in a checkout, else the user cache."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    repo_cache = _REPO_BOUNDARIES / "cache"
    if _REPO_BOUNDARIES.is_dir() and _writable(repo_cache):
        return repo_cache
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "geopak" / "boundaries"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def cached_path(
    manifest: dict[str, Any] | None = None, cache_dir: str | Path | None = None
) -> Path:
    m = manifest or boundaries_manifest()
    stem, dot, ext = str(m["filename"]).rpartition(".")
    name = f"{stem}-{m['sha256'][:12]}.{ext}" if dot else f"{m['filename']}-{m['sha256'][:12]}"
    return Path(cache_dir or default_cache_dir()) / name


def download_boundaries(
    url: str, sha256: str, dest: str | Path, *, timeout_s: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` only if its bytes hash to ``sha256`` (else nothing is written)."""
    import requests

    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise GeopakError(f"boundaries URL {url!r}: only http and https are allowed")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    try:
        with requests.get(
            url,
            stream=True,
            timeout=(10.0, timeout_s),
            headers={"User-Agent": "geopak boundaries loader"},
        ) as resp:
            if resp.status_code != 200:
                raise GeopakError(f"boundaries download {url}: HTTP {resp.status_code}")
            with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
                for block in resp.iter_content(1 << 16):
                    size += len(block)
                    if size > _MAX_DOWNLOAD_BYTES:
                        raise GeopakError(
                            f"boundaries download {url}: larger than {_MAX_DOWNLOAD_BYTES} bytes; refusing"
                        )
                    h.update(block)
                    fh.write(block)
                fh.flush()
                got = h.hexdigest()
                if got != sha256.lower():
                    raise GeopakError(
                        f"boundaries download {url}: sha256 {got} does not match the pinned {sha256}; refusing to use it"
                    )
    except requests.RequestException as exc:
        raise GeopakError(
            f"boundaries download {url} failed ({type(exc).__name__}); pass --boundaries FILE or set {ENV_VAR}"
        ) from None
    log.info("downloaded province boundaries %s (%d bytes, sha256 verified) -> %s", url, size, dest)
    return dest


def resolve_boundaries_path(
    path: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """Where the polygons come from: ``path``, ``$GEOPAK_BOUNDARIES``, the verified cache, a download."""
    if path:
        p = Path(path)
        if not p.exists():
            raise GeopakError(f"boundaries file not found: {p}")
        return p
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        p = Path(env)
        if not p.exists():
            raise GeopakError(f"{ENV_VAR}={env}: file not found")
        return p
    m = manifest or boundaries_manifest()
    cached = cached_path(m, cache_dir)
    if cached.is_file():
        if file_sha256(cached) == m["sha256"]:
            return cached
        log.warning(
            "cached boundaries %s do not match the pinned sha256; downloading again", cached
        )
        with contextlib.suppress(OSError):
            cached.unlink()
    errors: list[str] = []
    for url in [m["url"], *m.get("mirrors", [])]:
        try:
            return download_boundaries(url, m["sha256"], cached)
        except GeopakError as exc:
            errors.append(str(exc))
    raise GeopakError(
        "; ".join(errors)
        if len(errors) == 1
        else "no boundaries source worked: " + " | ".join(errors)
    )


def load_boundaries(
    path: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> geopandas.GeoDataFrame:
    """The seven province polygons: columns ``province``, ``province_id`` (int8), ``geometry``.

    EPSG:4326, one row per contract id, sorted by ``province_id``. ``attrs`` records the file
    and its sha256 so a stage can say which polygons made its labels.
    """
    src = resolve_boundaries_path(path, cache_dir=cache_dir, manifest=manifest)
    return read_boundaries(src)


def read_boundaries(path: str | Path) -> geopandas.GeoDataFrame:
    """Read and normalise one polygon file (GeoJSON, GeoPackage, Shapefile; zipped too)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    p = Path(path)
    try:
        gdf = gpd.read_file(p, engine="pyogrio")
    except Exception as exc:  # pyogrio/GDAL raise many types for unreadable files
        raise GeopakError(
            f"boundaries file {p}: cannot read it as GeoJSON/GeoPackage/Shapefile ({str(exc).splitlines()[0][:200]})"
        ) from None
    if len(gdf) == 0 or "geometry" not in gdf:
        raise GeopakError(f"boundaries file {p}: holds no features")
    if gdf.crs is None:
        minx, miny, maxx, maxy = gdf.total_bounds
        if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
            raise GeopakError(
                f"boundaries file {p}: no CRS and the coordinates are not degrees; add a .prj or use GeoJSON"
            )
        gdf = gdf.set_crs(4326)
    elif not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs(4326)

    ids: list[int] = []
    unknown: list[str] = []
    cols = [c for c in _NAME_COLUMNS if c in gdf.columns]
    if not cols:
        raise GeopakError(
            f"boundaries file {p}: no shapeName/shapeISO column (columns: {', '.join(map(str, gdf.columns))})"
        )
    for _, row in gdf.iterrows():  # seven rows, not per point
        pid = None
        for c in cols:
            with contextlib.suppress(KeyError):
                pid = province_id(str(row[c]))
                break
        if pid is None:
            unknown.append(" / ".join(str(row[c]) for c in cols))
        ids.append(-1 if pid is None else pid)
    if unknown:
        raise GeopakError(
            f"boundaries file {p}: units {', '.join(map(repr, unknown[:5]))} are not provinces of Pakistan (expected the 7 ADM1 units: {', '.join(PROVINCES)})"
        )
    gdf = gdf.assign(province_id=ids)
    found = sorted(set(ids))
    if len(gdf) != NUM_PROVINCES or found != list(range(NUM_PROVINCES)):
        missing = [PROVINCES[i] for i in range(NUM_PROVINCES) if i not in found]
        raise GeopakError(
            f"boundaries file {p}: expected the {NUM_PROVINCES} ADM1 units of Pakistan, found {len(gdf)} features"
            + (
                f" (missing {', '.join(missing)})"
                if missing
                else " (a unit appears more than once)"
            )
        )
    geoms = shapely.make_valid(np.asarray(gdf.geometry.values))
    if any(g is None or g.is_empty or g.area == 0 for g in geoms):
        raise GeopakError(f"boundaries file {p}: a unit has an empty geometry")
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    lon_min, lat_min, lon_max, lat_max = PAKISTAN_BBOX
    if (
        minx < lon_min - 1
        or maxx > lon_max + 1
        or miny < lat_min - 1
        or maxy > lat_max + 1
        or (maxx - minx) < 5
    ):
        raise GeopakError(
            f"boundaries file {p}: bounds ({minx:.2f}, {miny:.2f}, {maxx:.2f}, {maxy:.2f}) are not Pakistan's"
        )
    out = gpd.GeoDataFrame(
        {
            "province": [PROVINCES[i] for i in ids],
            "province_id": np.asarray(ids, dtype=np.int8),
        },
        geometry=list(geoms),
        crs=4326,
    )
    out = out.sort_values("province_id", kind="stable").reset_index(drop=True)
    out.attrs["source"] = str(p)
    out.attrs["sha256"] = file_sha256(p) if p.is_file() else ""
    return out


__all__ = [
    "DEFAULT_MANIFEST",
    "ENV_VAR",
    "boundaries_manifest",
    "cached_path",
    "default_cache_dir",
    "download_boundaries",
    "load_boundaries",
    "read_boundaries",
    "resolve_boundaries_path",
]
