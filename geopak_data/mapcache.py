"""The shard stage's map, kept by a digest of everything that decides its pixels.

``map.png`` is a pure function of the points drawn (lat, lon, province, in draw order), the
cells, the title, the region table, the polygon file, the drawing code and the libraries
that render it. Drawing it is most of the stage's fixed cost at a few thousand photos (a
quarter second of matplotlib), so a rebuild whose map inputs did not change (``--force``,
another ``--out``, a new shard size, a rerun after kill -9) copies the PNG it drew before
instead of drawing it again. Any change to an input is a new digest and a fresh drawing.

The polygon file counts by its identity (path, size, mtime_ns, ctime_ns), a matplotlibrc by
its path, size and mtime (installed fonts are not looked at); when the stage
cannot name the file without a download (no ``region.boundaries``, no
``GEOPAK_BOUNDARIES``, nothing cached yet) nothing is cached and the map is drawn.

Kept in the user cache (``GEOPAK_CACHE``, else the platform's cache folder) under
``maps/<digest>.png``, the newest ``KEEP`` of them. ``GEOPAK_MAP_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from geopak_core.io import atomic_path
from geopak_core.regions import RegionTable

VERSION = 1
KEEP = 32
ENV = "GEOPAK_MAP_CACHE"


def enabled() -> bool:
    """Whether maps are cached (``GEOPAK_MAP_CACHE=0`` turns it off)."""
    return os.environ.get(ENV, "1").strip() not in ("0", "false", "no", "off")


def _folder() -> Path:
    base = os.environ.get("GEOPAK_CACHE")
    if base:
        return Path(base) / "maps"
    import platformdirs

    return Path(platformdirs.user_cache_dir("geopak", appauthor=False)) / "maps"


def _polygon_file(boundaries: str | None, regions: RegionTable | None) -> Path | None:
    """The polygon file the drawing will read, when it is known without a download."""
    from geopak_core.boundaries import ENV_VAR, cached_path, country_manifest

    if boundaries:
        return Path(boundaries)
    if os.environ.get(ENV_VAR, "").strip():
        return Path(os.environ[ENV_VAR].strip())
    try:
        country = regions.country if regions is not None and regions.country else "PAK"
        cached = cached_path(country_manifest(country))
    except Exception:  # noqa: BLE001 - an unknown country: drawn, not cached
        return None
    return cached if cached.is_file() else None


def _code_digest() -> str:
    """The drawing code and the libraries that render it (their versions read from the
    installed metadata: nothing as heavy as matplotlib is imported for it)."""
    from importlib import import_module
    from importlib.metadata import version

    from . import __version__

    maps = import_module("geopak_data.maps")  # as the drawing will (a stand-in has no file)
    h = hashlib.sha256(Path(maps.__file__).read_bytes())
    libs = "|".join(version(d) for d in ("matplotlib", "pillow", "numpy"))
    h.update(f"{__version__}|{libs}|{maps.PNG_COMPRESS_LEVEL}".encode())
    h.update(json.dumps(_rc_files()).encode())
    return h.hexdigest()


def _rc_files() -> list[Any]:
    """The matplotlibrc files matplotlib would read (the user's settings change the drawing)."""
    home = Path.home()
    candidates = [
        Path.cwd() / "matplotlibrc",
        Path(os.environ.get("MATPLOTLIBRC", "/nonexistent")),
        Path(os.environ.get("MPLCONFIGDIR", home / ".config" / "matplotlib")) / "matplotlibrc",
        Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "matplotlib" / "matplotlibrc",
    ]
    out: list[Any] = []
    for p in candidates:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def map_digest(
    points: Any,
    cells: Any,
    *,
    title: str,
    regions: RegionTable | None,
    boundaries: str | None,
) -> str | None:
    """The digest of a shard map's inputs, or None when they cannot all be named."""
    if not enabled():
        return None
    try:  # a stand-in or missing maps module, an unknown file: drawn as usual, not cached
        polygons = _polygon_file(boundaries, regions)
        if polygons is None:
            return None
        st = os.stat(polygons)
        code = _code_digest()
    except Exception:  # noqa: BLE001
        return None
    h = hashlib.sha256(f"geopak-map-v{VERSION}|{code}|{title}".encode())
    h.update(json.dumps([str(polygons), st.st_size, st.st_mtime_ns, st.st_ctime_ns]).encode())
    if regions is not None:
        h.update(json.dumps([regions.country, list(regions.names), list(regions.codes)]).encode())
    for col, dtype in (("lat", np.float64), ("lon", np.float64), ("province_id", np.int64)):
        h.update(col.encode() + np.ascontiguousarray(points[col].to_numpy(dtype)).tobytes())
    for col in cells.columns:
        values = cells[col].tolist()
        h.update(col.encode() + json.dumps(values, default=str).encode())
    return h.hexdigest()


def fetch(digest: str | None, dest: Path) -> bool:
    """Copy the map drawn for ``digest`` to ``dest`` (atomically); False when there is none."""
    if digest is None:
        return False
    src = _folder() / f"{digest}.png"
    try:
        with atomic_path(dest, suffix=".png", durable=False) as tmp:
            shutil.copyfile(src, tmp)
        os.utime(src)  # recently used: kept by the pruning
    except OSError:
        return False
    return True


def store(digest: str | None, drawn: Path) -> None:
    """Keep the map just drawn under ``digest`` (nothing happens when the cache is unwritable)."""
    if digest is None or not drawn.is_file():
        return
    folder = _folder()
    try:
        with atomic_path(folder / f"{digest}.png", suffix=".png", durable=False) as tmp:
            shutil.copyfile(drawn, tmp)
        files = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
        for old in files[: max(0, len(files) - KEEP)]:
            old.unlink(missing_ok=True)
    except OSError:
        return
