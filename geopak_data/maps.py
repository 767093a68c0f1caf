"""One map drawing for the whole project: province polygons, photos, geocells, predictions.

Used by ``cluster`` (cells.png), ``stats``, the demo and ``geopak-predict --map``. It draws with
matplotlib's Agg canvas directly (no pyplot state, no display needed, safe in threads) and
uses no basemap tiles, so it works offline. When ``boundaries`` is None it tries
``geopak_core.boundaries.load_boundaries()``; if the polygons are unavailable the map is
drawn without them rather than failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geopak_core.io import atomic_path
from geopak_core.progress import log
from geopak_core.regions import PAKISTAN, RegionTable

from .tables import column, has_column

# One colour per contract province id (colour-blind friendly Okabe-Ito palette).
PROVINCE_COLOURS: tuple[str, ...] = (
    "#E69F00",
    "#009E73",
    "#0072B2",
    "#D55E00",
    "#56B4E9",
    "#CC79A7",
    "#8C6D31",
)
PNG_COMPRESS_LEVEL = 1  # zlib effort of the map's PNG (pixels do not depend on it)
_MAX_POINTS = 200_000  # more points than this are thinned (evenly) before drawing
_KM_PER_DEG_LAT = 110.574
_KM_PER_DEG_LON_EQ = 111.320


_POLYGONS: dict[tuple[str, int, int, str], Any] = {}  # (file, size, mtime_ns, country) -> frame


def _read_polygons(boundaries: str | Path | None, country: str) -> Any:
    """The region polygons, read once per process while the file stays the same (maps are
    drawn for every stage and by forked children, which inherit what the parent read)."""
    from geopak_core.boundaries import read_boundaries, resolve_boundaries_path

    src = Path(resolve_boundaries_path(boundaries, country=country))
    st = src.stat()
    key = (str(src), st.st_size, st.st_mtime_ns, country)
    if key not in _POLYGONS:
        frame = read_boundaries(src, country=country)
        _POLYGONS.clear()
        _POLYGONS[key] = frame
    return _POLYGONS[key]


def _load_boundaries(boundaries: Any, regions: RegionTable | None = None) -> Any:
    if boundaries is False:
        return None
    if boundaries is not None and not isinstance(boundaries, str | Path):
        return boundaries
    try:
        country = regions.country if regions is not None and regions.country else "PAK"
        return _read_polygons(boundaries, country)
    except Exception as exc:  # no polygons is not a reason to lose the map
        log.info(
            "map drawn without province polygons (%s)",
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None


def _points(points: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(lat, lon, province_id or None) from a DataFrame/Table/dict with lat, lon or a (lat, lon) pair."""
    if points is None:
        return np.zeros(0), np.zeros(0), None
    if hasattr(points, "column_names"):  # pyarrow Table
        cols = points.column_names
        get = lambda c: np.asarray(points.column(c).to_numpy(zero_copy_only=False))  # noqa: E731
    elif hasattr(points, "columns") or isinstance(points, Mapping):
        cols = list(points.columns) if hasattr(points, "columns") else list(points)
        get = lambda c: np.asarray(points[c])  # noqa: E731
    else:
        seq = list(points)
        if len(seq) < 2:
            raise ValueError(
                "points must be (lat, lon[, province_id]) arrays or a table with lat, lon columns"
            )
        lat, lon = np.asarray(seq[0], dtype=np.float64), np.asarray(seq[1], dtype=np.float64)
        pid = np.asarray(seq[2]) if len(seq) > 2 and seq[2] is not None else None
        return lat, lon, pid
    if "lat" not in cols or "lon" not in cols:
        raise ValueError("points table needs lat and lon columns")
    pid = get("province_id") if "province_id" in cols else None
    return get("lat").astype(np.float64), get("lon").astype(np.float64), pid


def _extent(
    boxes: list[tuple[float, float, float, float]],
    default: tuple[float, float, float, float] | None = None,
) -> tuple[float, float, float, float]:
    boxes = [b for b in boxes if all(math.isfinite(v) for v in b)]
    if not boxes:
        lon0, lat0, lon1, lat1 = default or PAKISTAN.bbox or (-180.0, -90.0, 180.0, 90.0)
    else:
        lon0 = min(b[0] for b in boxes)
        lat0 = min(b[1] for b in boxes)
        lon1 = max(b[2] for b in boxes)
        lat1 = max(b[3] for b in boxes)
    pad = max(0.1, 0.03 * max(lon1 - lon0, lat1 - lat0))
    return lon0 - pad, lat0 - pad, lon1 + pad, lat1 + pad


def _boxes(
    gdf: Any, lat: np.ndarray, lon: np.ndarray, cells: Any, preds: list[Mapping[str, Any]]
) -> list[tuple[float, float, float, float]]:
    """(lon0, lat0, lon1, lat1) of everything drawn: the map's extent covers them all."""
    boxes: list[tuple[float, float, float, float]] = []
    if gdf is not None and len(gdf):
        b = [float(v) for v in gdf.total_bounds]
        boxes.append((b[0], b[1], b[2], b[3]))
    if len(lat):
        boxes.append(
            (
                float(np.nanmin(lon)),
                float(np.nanmin(lat)),
                float(np.nanmax(lon)),
                float(np.nanmax(lat)),
            )
        )
    if cells is not None:
        clat = column(cells, "center_lat").astype(np.float64)
        clon = column(cells, "center_lon").astype(np.float64)
        if len(clat):
            boxes.append(
                (float(np.min(clon)), float(np.min(clat)), float(np.max(clon)), float(np.max(clat)))
            )
    if preds:
        plat = [float(p["lat"]) for p in preds]
        plon = [float(p["lon"]) for p in preds]
        boxes.append((min(plon), min(plat), max(plon), max(plat)))
    return boxes


def _rings(geom: Any) -> list[np.ndarray]:
    """The exterior rings of a (multi)polygon as (n, 2) lon/lat arrays."""
    out = []
    for poly in getattr(geom, "geoms", [geom]):
        if poly.is_empty or not hasattr(poly, "exterior"):
            continue
        out.append(np.asarray(poly.exterior.coords)[:, :2])
    return out


def _draw_boundaries(ax: Any, gdf: Any) -> None:
    """Province polygons: a light fill in the province's colour, a grey outline, the name.

    One PolyCollection and one LineCollection for all polygons: drawing them one patch at a
    time made the map the slowest part of the shard stage.
    """
    from matplotlib.collections import LineCollection, PolyCollection

    names = list(gdf["province"]) if "province" in gdf.columns else [None] * len(gdf)
    ids = list(gdf["province_id"]) if "province_id" in gdf.columns else [None] * len(gdf)
    rings: list[np.ndarray] = []
    colours: list[str] = []
    for geom, name, p in zip(gdf.geometry, names, ids, strict=True):
        colour = PROVINCE_COLOURS[int(p) % len(PROVINCE_COLOURS)] if p is not None else "#999999"
        mine = _rings(geom)
        rings += mine
        colours += [colour] * len(mine)
        if name:
            rp = geom.representative_point()
            ax.annotate(
                str(name),
                (rp.x, rp.y),
                fontsize=7,
                color="#333333",
                ha="center",
                zorder=6,
                alpha=0.8,
            )
    if rings:
        fill = PolyCollection(rings, facecolors=colours, edgecolors="none", alpha=0.08, zorder=1)
        ax.add_collection(fill, autolim=False)
        ax.add_collection(
            LineCollection(rings, colors="#555555", linewidths=0.6, zorder=2), autolim=False
        )


def _legend_dot(colour: str, label: str, **kw: Any) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", linestyle="", color=colour, label=label, **kw)


def _draw_points(
    ax: Any,
    lat: np.ndarray,
    lon: np.ndarray,
    pid: Any,
    handles: list[Any],
    names: tuple[str, ...] = PAKISTAN.names,
) -> None:
    """Photos as dots, coloured by province when known (thinned above _MAX_POINTS)."""
    step = max(1, int(math.ceil(len(lat) / _MAX_POINTS)))
    la, lo = lat[::step], lon[::step]
    size = 2.0 if len(la) > 20_000 else 5.0
    style = {"s": size, "linewidths": 0, "zorder": 3, "rasterized": True}
    if pid is None:
        ax.scatter(lo, la, color="#333333", alpha=0.4, **style)
        handles.append(_legend_dot("#333333", f"photos ({len(lat):,})"))
        return
    pp = np.asarray(pid)[::step]
    for p in sorted({int(v) for v in np.unique(pp) if int(v) >= 0}):
        m = pp == p
        colour = PROVINCE_COLOURS[p % len(PROVINCE_COLOURS)]
        if np.any(m):
            ax.scatter(lo[m], la[m], color=colour, alpha=0.5, **style)
            handles.append(_legend_dot(colour, names[p] if p < len(names) else f"region {p}"))


def _draw_cells(ax: Any, cells: Any, handles: list[Any]) -> None:
    """Each cell as its radius circle (an ellipse in degrees) and its centre."""
    from matplotlib.collections import EllipseCollection

    clat = column(cells, "center_lat").astype(np.float64)
    clon = column(cells, "center_lon").astype(np.float64)
    crad = column(cells, "radius_km").astype(np.float64)
    if not len(clat):
        return
    urban = (
        column(cells, "urban").astype(bool)
        if has_column(cells, "urban")
        else np.zeros(len(clat), dtype=bool)
    )
    colours = np.where(urban, "#C0392B", "#1F4E9E")
    ec = EllipseCollection(
        2.0 * crad / (_KM_PER_DEG_LON_EQ * np.cos(np.radians(clat))),
        2.0 * crad / _KM_PER_DEG_LAT,
        np.zeros(len(clat)),
        units="xy",
        offsets=np.column_stack([clon, clat]),
        offset_transform=ax.transData,
        facecolors="none",
        edgecolors=colours,
        linewidths=0.5,
        alpha=0.7,
        zorder=4,
    )
    ax.add_collection(ec)
    ax.scatter(clon, clat, s=3, c=colours, linewidths=0, zorder=5)
    handles.append(
        _legend_dot("#C0392B", f"urban cells ({int(urban.sum())})", markerfacecolor="none")
    )
    handles.append(
        _legend_dot("#1F4E9E", f"rural cells ({int((~urban).sum())})", markerfacecolor="none")
    )


def _draw_predictions(ax: Any, preds: list[Mapping[str, Any]], handles: list[Any]) -> None:
    """Predictions as stars, joined by a dashed line to the true location (a cross) if given."""
    from matplotlib.lines import Line2D

    if any("true_lat" in p for p in preds):
        handles.append(
            Line2D(
                [], [], marker="*", linestyle="", color="#000000", markersize=9, label="prediction"
            )
        )
        handles.append(
            Line2D([], [], marker="x", linestyle="--", color="#000000", label="true location")
        )
    for p in preds:
        colour = p.get("color", "#000000")
        plat, plon = float(p["lat"]), float(p["lon"])
        if "true_lat" in p and "true_lon" in p:
            tlat, tlon = float(p["true_lat"]), float(p["true_lon"])
            ax.plot(
                [tlon, plon], [tlat, plat], linestyle="--", linewidth=0.8, color=colour, zorder=6
            )
            ax.scatter([tlon], [tlat], marker="x", s=50, color=colour, linewidths=1.2, zorder=7)
        ax.scatter(
            [plon],
            [plat],
            marker="*",
            s=160,
            color=colour,
            edgecolors="white",
            linewidths=0.8,
            zorder=7,
        )
        if p.get("label"):
            ax.annotate(
                str(p["label"]),
                (plon, plat),
                xytext=(6, 6),
                textcoords="offset points",
                fontsize=8,
                zorder=8,
            )


def _draw_tiles(ax: Any, tiles: Any, handles: list[Any]) -> None:
    """Shade each tile by its ``value`` (0..1): the coverage map's "how much is missing"."""
    from matplotlib.patches import Patch, Rectangle

    x0, y0 = column(tiles, "lon_min"), column(tiles, "lat_min")
    x1, y1 = column(tiles, "lon_max"), column(tiles, "lat_max")
    v = column(tiles, "value").astype(np.float64)
    for a, b, c, d, val in zip(x0, y0, x1, y1, v, strict=True):
        ax.add_patch(
            Rectangle(
                (a, b), c - a, d - b,
                facecolor=(0.85, 0.1, 0.1, 0.05 + 0.55 * float(np.clip(val, 0, 1))),
                edgecolor=(0.5, 0.5, 0.5, 0.3), linewidth=0.3, zorder=3,
            )
        )  # fmt: skip
    handles.append(
        Patch(facecolor=(0.85, 0.1, 0.1, 0.6), label="tile below target (darker: more missing)")
    )


def _region_names(gdf: Any, regions: RegionTable | None) -> tuple[str, ...]:
    """Legend names by id: the region table's, else the polygons', else Pakistan's."""
    if regions is not None:
        return regions.names
    if gdf is not None and len(gdf) and {"province", "province_id"} <= set(gdf.columns):
        frame = gdf.sort_values("province_id")
        if list(frame["province_id"]) == list(range(len(frame))):
            return tuple(str(n) for n in frame["province"])
    return PAKISTAN.names


_WARMED: list[bool] = []  # the warm-up drawing is done once per process


def preload(regions: RegionTable | None = None, boundaries: str | Path | None = None) -> None:
    """Import what :func:`plot_map` draws with, read the polygons and draw one tiny map (the
    first drawing of a process sets up fonts, text layout and lazily imported modules): a
    process that hands its maps to forked children (the shard stage) does this once so
    every later child starts with all of it in memory."""
    import tempfile

    gdf = _load_boundaries(boundaries, regions)
    if _WARMED:
        return
    _WARMED.append(True)
    with tempfile.TemporaryDirectory(prefix="geopak-map-") as tmp:
        plot_map(
            Path(tmp) / "warm.png",
            boundaries=gdf if gdf is not None else False,
            points=([30.0, 31.0], [70.0, 71.0], [0, 1]),
            cells={"center_lat": [30.5], "center_lon": [70.5], "radius_km": [5.0]},
            title="warm-up",
            dpi=20,
            regions=regions,
        )


def plot_map(
    path: str | Path,
    *,
    boundaries: Any = None,
    points: Any = None,
    cells: Any = None,
    predictions: Sequence[Mapping[str, Any]] | None = None,
    title: str = "",
    dpi: int = 150,
    tiles: Any = None,
    regions: RegionTable | None = None,
) -> Path:
    """Draw a PNG map and write it atomically to ``path``; returns the path.

    * ``boundaries``: a GeoDataFrame (EPSG:4326) or a polygon file path; None loads the
      project's polygons if available; False draws none.
    * ``points``: (lat, lon[, province_id]) arrays, or a DataFrame/pyarrow Table/dict with
      ``lat``, ``lon`` and optionally ``province_id`` (colours by province).
    * ``cells``: a table with ``center_lat``, ``center_lon``, ``radius_km`` and optionally
      ``province_id``/``urban``: each cell is drawn as its radius circle and its centre.
    * ``tiles``: a table with ``lon_min``, ``lat_min``, ``lon_max``, ``lat_max`` and ``value``
      in 0..1 (the coverage map: 1 = nothing yet, 0 = at target), drawn as shaded boxes.
    * ``predictions``: dicts with ``lat``, ``lon`` and optionally ``label``, ``color`` and the
      photo's ``true_lat``/``true_lon`` (drawn as a cross joined to the prediction).
    * ``regions``: the region table naming the ids in the legend (default: the polygons'
      names, else Pakistan's); its country decides which polygons ``boundaries=None`` loads.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gdf = _load_boundaries(boundaries, regions)
    lat, lon, pid = _points(points)
    preds = list(predictions or [])
    default = regions.bbox if regions is not None else None
    lon0, lat0, lon1, lat1 = _extent(_boxes(gdf, lat, lon, cells, preds), default)
    mid_lat = (lat0 + lat1) / 2.0

    aspect = (lat1 - lat0) / max((lon1 - lon0) * math.cos(math.radians(mid_lat)), 1e-6)
    fig = Figure(figsize=(9.0, min(14.0, max(4.0, 9.0 * aspect))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#f4f7fb")
    handles: list[Any] = []
    if gdf is not None and len(gdf):
        _draw_boundaries(ax, gdf)

    if tiles is not None:
        _draw_tiles(ax, tiles, handles)

    if len(lat):
        _draw_points(ax, lat, lon, pid, handles, _region_names(gdf, regions))
    if cells is not None:
        _draw_cells(ax, cells, handles)
    _draw_predictions(ax, preds, handles)

    ax.set_xlim(lon0, lon1)
    ax.set_ylim(lat0, lat1)
    ax.set_aspect(1.0 / math.cos(math.radians(mid_lat)))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if title:
        ax.set_title(title, fontsize=11)
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.8, markerscale=1.5)
    # Fixed margins in inches (room for the tick labels, axis labels and title) instead of
    # tight_layout, which lays the whole figure out a second time: a third of the drawing time.
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.7 / w, right=1 - 0.15 / w, bottom=0.55 / h, top=1 - 0.4 / h)

    out = Path(path)
    with atomic_path(out, suffix=".png") as tmp:
        # zlib level 1: the same pixels as the default level 6 in half the encoding time (a
        # fifth of the whole drawing), the file about a sixth larger.
        fig.savefig(
            tmp,
            format="png",
            dpi=dpi,
            metadata={"Software": None},
            pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL},
        )
    return out
