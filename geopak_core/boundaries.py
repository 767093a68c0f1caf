"""Region polygons: find them, verify them, and map them onto the region table's ids.

Every label in the dataset comes from these polygons (a country's first-level administrative
units), so where they come from is pinned, or at least recorded, rather than trusted:

* ``load_boundaries(path, country=ISO3)`` looks, in order, at an explicit ``path``
  (``--boundaries`` or ``region.boundaries``), the ``GEOPAK_BOUNDARIES`` environment variable,
  a cached copy of the country's geoBoundaries gbOpen ADM1 release, and finally downloads
  that release. Pakistan's file is pinned by sha256 in ``boundaries/manifest.json``: a download
  (and a cached copy, every time it is used) must match it or it is refused, because a
  silently changed polygon file would silently change every label. Other countries are not
  pinned: their digest is recorded beside the cached file on first download and every later
  use must match that record (and every stage records the digest it used).
* GeoJSON, GeoPackage and Shapefile (also zipped) are read with pyogrio. The unit name and
  code columns are configurable (geoBoundaries ``shapeName`` / ``shapeISO`` by default).
  Pakistan's units map onto the contract's fixed ids (a file that does not hold exactly its
  seven units is rejected); any other country's units get ids ordered by ISO 3166-2 code,
  then name (``geopak_core.regions.RegionTable``).

No polygon data is committed to the repository; the cache lives in ``boundaries/cache/``
(git-ignored) or, when that is not writable (an installed package), in the user cache dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from geopak_core.errors import GeopakError
from geopak_core.io import atomic_path, atomic_write_text, file_sha256
from geopak_core.progress import log
from geopak_core.regions import PAKISTAN, RegionTable

if TYPE_CHECKING:  # geopandas is heavy: imported only when polygons are actually needed
    import geopandas

ENV_VAR = "GEOPAK_BOUNDARIES"

# Whether error advice may name --boundaries: a command that has no such option must not
# tell its user to pass it. Commands set it (set_cli_advice); library use keeps the default.
_ADVICE = {"boundaries_flag": True}


def set_cli_advice(*, boundaries_flag: bool) -> None:
    """Declare whether the command in use accepts ``--boundaries FILE``."""
    _ADVICE["boundaries_flag"] = boundaries_flag


def offline_advice() -> str:
    """How to give the polygons without a download, naming only options the command has."""
    if _ADVICE["boundaries_flag"]:
        return f"pass --boundaries FILE or set {ENV_VAR}"
    return f"set {ENV_VAR}=FILE (a local copy of the polygons)"


CACHE_ENV_VAR = "GEOPAK_BOUNDARIES_CACHE"
_REPO_BOUNDARIES = Path(__file__).resolve().parent.parent / "boundaries"
MANIFEST_PATH = _REPO_BOUNDARIES / "manifest.json"

# geoBoundaries keeps every release file in its GitHub repository under
# releaseData/<release type>/<ISO3>/<ADM level>/geoBoundaries-<ISO3>-<ADM level>.geojson; the
# commit pins the release (v6.0.0 here, the same one Pakistan's sha256 was taken from).
URL_TEMPLATE = (
    "https://github.com/wmgeolab/geoBoundaries/raw/9469f09/releaseData/gbOpen/"
    "{iso3}/ADM1/geoBoundaries-{iso3}-ADM1.geojson"
)

# The same pin as boundaries/manifest.json, for installs that do not ship that folder
# (a test checks the two agree).
DEFAULT_MANIFEST: dict[str, Any] = {
    "name": "geoBoundaries gbOpen PAK ADM1",
    "url": "https://github.com/wmgeolab/geoBoundaries/raw/9469f09/releaseData/gbOpen/PAK/ADM1/geoBoundaries-PAK-ADM1.geojson",
    "mirrors": [],
    "filename": "geoBoundaries-PAK-ADM1.geojson",
    "sha256": "34c973399b464f8b43a6cfbc9255ff6d19d911477f1549d0ff0f1dcaaf63c37b",
    "units": 7,
    "country": "PAK",
    "url_template": URL_TEMPLATE,
}

DEFAULT_NAME_COLUMN = "shapeName"
DEFAULT_CODE_COLUMN = "shapeISO"
_MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
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
# Other countries: where to look for the unit name / code when the configured column is absent.
_FALLBACK_NAMES = ("shapeName", "NAME_1", "ADM1_EN", "name", "NAME", "province")
_FALLBACK_CODES = ("shapeISO", "iso_3166_2", "ISO_1", "iso")
_BBOX_MARGIN_DEG = 0.15  # the table's bbox: the polygons' bounds plus this (border tolerance)
_ISO3 = re.compile(r"^[A-Z]{3}$")


def check_country(country: str | None) -> str:
    """Normalise an ISO 3166-1 alpha-3 code (``pak`` -> ``PAK``); one-line error otherwise."""
    code = str(country or "PAK").strip().upper()
    if not _ISO3.match(code):
        raise GeopakError(
            f"country {country!r}: expected an ISO 3166-1 alpha-3 code such as PAK, IND or NGA"
        )
    return code


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


def country_manifest(country: str = "PAK") -> dict[str, Any]:
    """Where a country's ADM1 release comes from: Pakistan's pinned manifest, else the
    geoBoundaries gbOpen file of that country (no sha256 known: recorded on first download)."""
    iso3 = check_country(country)
    pinned = boundaries_manifest()
    if iso3 == str(pinned.get("country", "PAK")).upper():
        return pinned
    template = str(pinned.get("url_template") or URL_TEMPLATE)
    return {
        "name": f"geoBoundaries gbOpen {iso3} ADM1",
        "url": template.format(iso3=iso3),
        "mirrors": [],
        "filename": f"geoBoundaries-{iso3}-ADM1.geojson",
        "sha256": "",
    }


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
    """The cache file of a release (pinned files carry a digest prefix in their name)."""
    m = manifest or boundaries_manifest()
    if not m.get("sha256"):
        return Path(cache_dir or default_cache_dir()) / str(m["filename"])
    stem, dot, ext = str(m["filename"]).rpartition(".")
    name = f"{stem}-{m['sha256'][:12]}.{ext}" if dot else f"{m['filename']}-{m['sha256'][:12]}"
    return Path(cache_dir or default_cache_dir()) / name


def _digest_record(cached: Path) -> Path:
    return cached.with_name(cached.name + ".sha256")


def download_boundaries(
    url: str, sha256: str, dest: str | Path, *, timeout_s: float = 60.0
) -> Path:
    """Download ``url`` to ``dest``; with a ``sha256`` only if the bytes hash to it (else
    nothing is written). Without one, the digest is recorded beside ``dest``."""
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
                if sha256 and got != sha256.lower():
                    raise GeopakError(
                        f"boundaries download {url}: sha256 {got} does not match the pinned {sha256}; "
                        "refusing to use it"
                    )
                if not sha256:
                    atomic_write_text(_digest_record(dest), got + "\n")
    except requests.RequestException as exc:
        raise GeopakError(
            f"boundaries download {url} failed ({type(exc).__name__}); {offline_advice()}"
        ) from None
    log.info(
        "downloaded boundaries %s (%d bytes, sha256 %s %s) -> %s",
        url,
        size,
        got[:12],
        "verified" if sha256 else "recorded",
        dest,
    )
    return dest


def _cached_ok(cached: Path, m: dict[str, Any]) -> bool:
    """A cached file is used only if it matches the pin, or (unpinned) its recorded digest."""
    if not cached.is_file():
        return False
    want = m.get("sha256") or ""
    if not want:
        record = _digest_record(cached)
        want = record.read_text("utf-8").strip() if record.is_file() else ""
    if want and file_sha256(cached) == want:
        return True
    log.warning("cached boundaries %s do not match their sha256; downloading again", cached)
    with contextlib.suppress(OSError):
        cached.unlink()
    return False


def resolve_boundaries_path(
    path: str | Path | None = None,
    *,
    country: str = "PAK",
    cache_dir: str | Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> Path:
    """Where the polygons come from: ``path``, ``$GEOPAK_BOUNDARIES``, the verified cache of the
    country's release, a download of it."""
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
    m = manifest or country_manifest(country)
    cached = cached_path(m, cache_dir)
    if _cached_ok(cached, m):
        return cached
    errors: list[str] = []
    for url in [m["url"], *m.get("mirrors", [])]:
        try:
            return download_boundaries(url, m.get("sha256") or "", cached)
        except GeopakError as exc:
            errors.append(str(exc))
    raise GeopakError(
        "; ".join(errors)
        if len(errors) == 1
        else "no boundaries source worked: " + " | ".join(errors)
    )


def boundaries_available(
    path: str | Path | None = None, *, country: str = "PAK", cache_dir: str | Path | None = None
) -> bool:
    """True when polygons for ``country`` are on this machine (a file, the env var, the cache),
    i.e. without any download."""
    if path or os.environ.get(ENV_VAR, "").strip():
        return Path(path or os.environ[ENV_VAR].strip()).exists()
    m = country_manifest(country)
    cached = cached_path(m, cache_dir)
    return cached.is_file() and (bool(m.get("sha256")) or _digest_record(cached).is_file())


def load_boundaries(
    path: str | Path | None = None,
    *,
    country: str = "PAK",
    name_column: str = DEFAULT_NAME_COLUMN,
    code_column: str = DEFAULT_CODE_COLUMN,
    cache_dir: str | Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> geopandas.GeoDataFrame:
    """The region polygons: columns ``province``, ``province_id`` (int8, int16 past 127 units), ``iso``, ``geometry``.

    EPSG:4326, one row per region id, sorted by ``province_id``. ``attrs`` records the file,
    its sha256 and the ``RegionTable`` so a stage can say which polygons made its labels.
    """
    src = resolve_boundaries_path(path, country=country, cache_dir=cache_dir, manifest=manifest)
    return read_boundaries(src, country=country, name_column=name_column, code_column=code_column)


def _read_frame(p: Path) -> geopandas.GeoDataFrame:
    import geopandas as gpd

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
    return gdf


def read_boundaries(
    path: str | Path,
    *,
    country: str = "PAK",
    name_column: str = DEFAULT_NAME_COLUMN,
    code_column: str = DEFAULT_CODE_COLUMN,
) -> geopandas.GeoDataFrame:
    """Read and normalise one polygon file (GeoJSON, GeoPackage, Shapefile; zipped too)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    p = Path(path)
    iso3 = check_country(country)
    gdf = _read_frame(p)
    _check_file_country(gdf, p, iso3)
    if iso3 == "PAK":
        ids = _pakistan_ids(gdf, p, name_column, code_column)
        table = PAKISTAN
        geoms = shapely.make_valid(np.asarray(gdf.geometry.values))
    else:
        gdf, table = _other_country(gdf, p, iso3, name_column, code_column)
        ids = list(range(table.n))
        geoms = np.asarray(gdf.geometry.values)
    if any(g is None or g.is_empty or g.area == 0 for g in geoms):
        raise GeopakError(f"boundaries file {p}: a unit has an empty geometry")
    if iso3 == "PAK":
        _check_pakistan_bounds(shapely.total_bounds(geoms), p)
    else:
        _check_antimeridian(shapely.bounds(shapely.get_parts(geoms)), p, iso3)
    out = gpd.GeoDataFrame(
        {
            "province": [table.names[i] for i in ids],
            "province_id": np.asarray(ids, dtype=table.id_dtype),
            "iso": [table.codes[i] for i in ids],
        },
        geometry=list(geoms),
        crs=4326,
    )
    out = out.sort_values("province_id", kind="stable").reset_index(drop=True)
    areas = tuple(_area_km2(g) for g in out.geometry.values)
    bbox = table.bbox
    if bbox is None:
        minx, miny, maxx, maxy = shapely.total_bounds(np.asarray(out.geometry.values))
        m = _BBOX_MARGIN_DEG
        bbox = (
            max(-180.0, minx - m),
            max(-90.0, miny - m),
            min(180.0, maxx + m),
            min(90.0, maxy + m),
        )
    out.attrs["regions"] = RegionTable(
        country=table.country,
        names=table.names,
        codes=table.codes,
        areas_km2=areas,
        bbox=bbox,
        aliases=table.aliases,
    )
    out.attrs["source"] = str(p)
    out.attrs["sha256"] = file_sha256(p) if p.is_file() else ""
    return out


def _check_file_country(gdf: Any, p: Path, iso3: str) -> None:
    """geoBoundaries files name their country (``shapeGroup``): refuse another country's file."""
    if "shapeGroup" not in gdf.columns:
        return
    groups = {str(g).upper() for g in gdf["shapeGroup"].dropna().unique()}
    if groups and iso3 not in groups:
        raise GeopakError(
            f"boundaries file {p}: holds {', '.join(sorted(groups))}, not {iso3}; "
            f"pass --boundaries FILE for {iso3} (or --country {sorted(groups)[0]})"
        )


def _pakistan_ids(gdf: Any, p: Path, name_column: str, code_column: str) -> list[int]:
    """Match each feature onto the contract's fixed ids (exactly the seven units, once each)."""
    ids: list[int] = []
    unknown: list[str] = []
    preferred = [c for c in (code_column, name_column) if c and c in gdf.columns]
    cols = preferred + [c for c in _NAME_COLUMNS if c in gdf.columns and c not in preferred]
    if not cols:
        raise GeopakError(
            f"boundaries file {p}: no shapeName/shapeISO column (columns: {', '.join(map(str, gdf.columns))})"
        )
    for _, row in gdf.iterrows():  # seven rows, not per point
        pid = None
        for c in cols:
            with contextlib.suppress(KeyError):
                pid = PAKISTAN.id(str(row[c]))
                break
        if pid is None:
            unknown.append(" / ".join(str(row[c]) for c in cols))
        ids.append(-1 if pid is None else pid)
    n = PAKISTAN.n
    if unknown:
        raise GeopakError(
            f"boundaries file {p}: units {', '.join(map(repr, unknown[:5]))} are not provinces of "
            f"Pakistan (expected the {n} ADM1 units: {', '.join(PAKISTAN.names)})"
        )
    found = sorted(set(ids))
    if len(gdf) != n or found != list(range(n)):
        missing = [PAKISTAN.names[i] for i in range(n) if i not in found]
        raise GeopakError(
            f"boundaries file {p}: expected the {n} ADM1 units of Pakistan, found {len(gdf)} features"
            + (
                f" (missing {', '.join(missing)})"
                if missing
                else " (a unit appears more than once)"
            )
        )
    return ids


def _check_pakistan_bounds(bounds: Any, p: Path) -> None:
    minx, miny, maxx, maxy = bounds
    lon_min, lat_min, lon_max, lat_max = PAKISTAN.bbox or (0.0, 0.0, 0.0, 0.0)
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


def _check_antimeridian(part_bounds: Any, p: Path, iso3: str) -> None:
    """Refuse a country that lies across lon 180 (Fiji, Kiribati, Russia's Chukotka, the USA's
    Aleutians) or past +-180: its parts (``part_bounds``, one row of minx, miny, maxx, maxy per
    polygon part) leave their widest longitude gap inside -180..180 rather than across 180,
    i.e. the country is compact only when seen across the antimeridian.

    Why a refusal: every stage treats longitude as the interval -180..180. Such a country's
    bbox (what the sources filter by) would span the globe, the tagger's metric projection
    would be centred near lon 0 (the far side of the Earth, so border distances and the
    tolerance band come out distorted), crawl tiles and maps would cover every longitude: wrong
    without any error. Clipping the file to one side of 180 works today."""
    import numpy as np

    b = np.asarray(part_bounds, dtype=np.float64).reshape(-1, 4)
    minx, maxx = float(b[:, 0].min()), float(b[:, 2].max())
    if minx < -180.0 or maxx > 180.0:
        raise GeopakError(
            f"boundaries file {p}: longitudes {minx:.2f}..{maxx:.2f} lie outside -180..180; "
            "write them within -180..180 (countries across the antimeridian are not supported yet)"
        )
    spans = b[np.argsort(b[:, 0]), :][:, [0, 2]]
    reach = np.maximum.accumulate(spans[:, 1])  # merged intervals: gaps open where reach < next
    inner = float(np.max(spans[1:, 0] - reach[:-1], initial=0.0))
    across = (spans[0, 0] + 360.0) - reach[-1]  # the gap that wraps through lon 180
    if inner > across:
        raise GeopakError(
            f"boundaries file {p}: {iso3} crosses the antimeridian (units on both sides of "
            "longitude 180); countries across lon 180 (Fiji, Kiribati, Russia, the USA) are not "
            "supported yet: clip the file to one side of 180 to work on the rest"
        )


def _pick_column(gdf: Any, wanted: str, fallbacks: tuple[str, ...]) -> str | None:
    if wanted and wanted in gdf.columns:
        return wanted
    return next((c for c in fallbacks if c in gdf.columns), None)


def _other_country(
    gdf: Any, p: Path, iso3: str, name_column: str, code_column: str
) -> tuple[Any, RegionTable]:
    """Units of any other country: one row per (code, name) (parts of a unit are merged), ids
    ordered by ISO 3166-2 code, then name."""
    import geopandas as gpd
    import numpy as np
    import shapely

    ncol = _pick_column(gdf, name_column, _FALLBACK_NAMES)
    if ncol is None:
        raise GeopakError(
            f"boundaries file {p}: no unit name column {name_column!r} "
            f"(columns: {', '.join(map(str, gdf.columns))}); set region.name_column"
        )
    ccol = _pick_column(gdf, code_column, _FALLBACK_CODES)
    names = [("" if v is None else str(v)).strip() for v in gdf[ncol]]
    codes = (
        [("" if v is None else str(v)).strip() for v in gdf[ccol]] if ccol else [""] * len(names)
    )
    if any(not n for n in names):
        raise GeopakError(f"boundaries file {p}: a unit has no name in column {ncol!r}")
    groups: dict[tuple[str, str], list[Any]] = {}
    for code, name, geom in zip(codes, names, gdf.geometry.values, strict=True):
        groups.setdefault((code, name), []).append(geom)
    keys = sorted(groups, key=lambda k: (k[0] == "", k[0], k[1]))
    seen: dict[str, str] = {}
    for code, name in keys:
        if name in seen:
            raise GeopakError(
                f"boundaries file {p}: unit name {name!r} appears with two codes ({seen[name]!r}, {code!r})"
            )
        seen[name] = code
    geoms = [
        shapely.make_valid(shapely.union_all(np.asarray(groups[k], dtype=object))) for k in keys
    ]
    frame = gpd.GeoDataFrame({"name": [k[1] for k in keys]}, geometry=geoms, crs=4326)
    table = RegionTable(
        country=iso3, names=tuple(k[1] for k in keys), codes=tuple(k[0] for k in keys)
    )
    return frame, table


def _area_km2(geom: Any) -> float:
    """Geodesic area on the WGS84 ellipsoid (what the card and the cell budget report)."""
    from pyproj import Geod

    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(geom)
    return round(abs(float(area)) / 1e6, 3)


def region_table(boundaries: geopandas.GeoDataFrame) -> RegionTable:
    """The ``RegionTable`` of loaded polygons (``attrs``; rebuilt from the columns if lost)."""
    table = boundaries.attrs.get("regions")
    if isinstance(table, RegionTable):
        return table
    frame = boundaries.sort_values("province_id")
    names = tuple(str(n) for n in frame["province"])
    if names == PAKISTAN.names:
        return PAKISTAN
    codes = tuple(str(c) for c in frame["iso"]) if "iso" in frame else ("",) * len(names)
    return RegionTable(country="", names=names, codes=codes)


__all__ = [
    "DEFAULT_MANIFEST",
    "ENV_VAR",
    "URL_TEMPLATE",
    "boundaries_available",
    "boundaries_manifest",
    "cached_path",
    "check_country",
    "country_manifest",
    "default_cache_dir",
    "download_boundaries",
    "load_boundaries",
    "read_boundaries",
    "region_table",
    "resolve_boundaries_path",
]
