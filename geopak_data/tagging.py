"""Vectorised province tagging: point-in-polygon plus a metric border tolerance.

Why it is built this way:

* **Correct by construction.** A point gets a province only if it lies in (or on the edge of)
  that province's polygon, or lies outside the national border by at most ``tolerance_km``
  *across a border kind that may be snapped* (by default only the sea coast: a photo taken on
  a boat, a pier or a beach past a coarse coastline), in which case it gets the *nearest*
  province. A point just across a land border is in another country (Wagah/Attari,
  Kartarpur, Khem Karan, Kupwara are all within 5 km of Pakistan) and is rejected. Points in
  a digitising sliver between two provinces (inside the national outline) get the nearest
  province too. Nothing is guessed from a bounding box or a cell centre.
* **Which border is coast.** Only the country's own ADM1 polygons are known, so the coast is
  *configured*: the parts of the national outline (the exterior of the union of the
  provinces) that lie inside any of ``coast_bboxes`` (lon_min, lat_min, lon_max, lat_max,
  drawn by hand around the shoreline, not third-party polygon data) are ``coast``; the rest
  of the outline is ``land``. Each border segment is classified once by its midpoint.
* **Vectorised.** Millions of photos must be tagged in seconds: all tests run in GEOS through
  shapely 2's array functions (``contains_xy``/``intersects_xy`` on prepared polygons) and an
  ``STRtree`` spatial index; there is no Python loop over points.
* **Metric tolerance.** Degrees are not distances (a degree of longitude is 111 km at the
  equator and 89 km in Gilgit). The border band is found in a Lambert conformal conic
  projection fitted to Pakistan, and the reported distance is the great-circle (haversine)
  distance from the point to its nearest border point, so ``border_km`` is in real km.

Order of work for N points: a bounding-box test (numpy) drops far points; a two-level lookup
grid (0.1 degree cells, cells that straddle a border split 4 x 4) settles most of the rest by
array indexing — each grid cell was classified once, exactly, with GEOS as "wholly inside
province k and touching no other", "wholly outside the tolerance zone" or "mixed"; only points
in mixed cells (a few percent) go through exact tests: the national outline grown by the
tolerance, then the seven prepared provinces (each only on points in its bounding box); the
points left over lie in the border band and get their nearest province from an STRtree of
short border pieces (so each distance is to a few segments, not to a 900-vertex ring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geopak_core.geo import haversine_km, valid_coordinates
from geopak_core.regions import PAKISTAN, id_dtype

if TYPE_CHECKING:
    import geopandas

# Lambert conformal conic fitted to Pakistan (standard parallels 27N and 35N): scale error
# below ~1% from 23.5N to 37.5N, used only to find the border band and the nearest border point.
PAKISTAN_LCC = "+proj=lcc +lat_1=27 +lat_2=35 +lat_0=30 +lon_0=69 +datum=WGS84 +units=m +no_defs"


def projection_for(bounds: tuple[float, float, float, float], names: tuple[str, ...] = ()) -> str:
    """A metric projection for finding a country's border band: Pakistan's fixed LCC; for any
    other country an LCC with standard parallels at 1/6 and 5/6 of its latitude span (wide
    countries off the equator), else a transverse Mercator through its centre (tall ones, or
    those on the equator), so the scale error stays small over the country."""
    if names == PAKISTAN.names:
        return PAKISTAN_LCC
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    lon0, lat0 = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    lat1, lat2 = miny + (maxy - miny) / 6.0, maxy - (maxy - miny) / 6.0
    if miny * maxy > 0 and (maxx - minx) >= (maxy - miny) and abs(lat1 + lat2) > 1.0:
        return (
            f"+proj=lcc +lat_1={lat1:.4f} +lat_2={lat2:.4f} +lat_0={lat0:.4f} +lon_0={lon0:.4f} "
            "+datum=WGS84 +units=m +no_defs"
        )
    return f"+proj=tmerc +lat_0={lat0:.4f} +lon_0={lon0:.4f} +k=1 +datum=WGS84 +units=m +no_defs"


OUTSIDE = -1  # province_id for points that get no province
# Border kinds of the national outline (``TagResult.kind``); INTERNAL: a point inside the
# national outline but in no province (a digitising sliver), always snapped.
KIND_NONE, KIND_COAST, KIND_LAND, KIND_INTERNAL = 0, 1, 2, 3
BORDER_KINDS = ("coast", "land")  # what ``snap_borders`` may name
_KIND_NAMES = {KIND_NONE: "", KIND_COAST: "coast", KIND_LAND: "land", KIND_INTERNAL: "internal"}
_ON_OUTLINE_M = 1.0  # a province edge whose midpoint is this close to the outline is on it
_MIXED = -2  # grid code: the cell needs exact tests
_PIECE_SEGMENTS = 8
_GRID_DEG = 0.1  # level-1 cell size
_GRID_SPLIT = 4  # mixed level-1 cells are split SPLIT x SPLIT
_GRID_EPS = 1e-9  # cells are classified slightly enlarged, so float rounding at an edge is harmless


@dataclass
class TagResult:
    """Per-point outcome, aligned with the input arrays.

    ``province_id``: region id (int8; int16 past 127 regions), -1 when rejected.
    ``border_km``: 0 for points inside a province; for points outside every province polygon
    (past the coast or the national border, or in a digitising sliver between two
    provinces), the great-circle km to the nearest province edge (NaN when farther than the
    search band or coordinates are invalid).
    ``status``: 0 inside, 1 snapped (outside the border within the tolerance, across a
    snappable border kind), 2 outside Pakistan, 3 invalid coordinates. ``kind``: for points
    outside every polygon, the kind of the nearest border (``KIND_COAST``, ``KIND_LAND``,
    ``KIND_INTERNAL``), else ``KIND_NONE``.
    """

    province_id: np.ndarray
    border_km: np.ndarray
    status: np.ndarray
    kind: np.ndarray | None = None
    names: tuple[str, ...] = PAKISTAN.names  # the region table's names, by id

    INSIDE = 0
    SNAPPED = 1
    OUTSIDE = 2
    INVALID = 3

    def kind_names(self) -> np.ndarray:
        """The nearest border's kind per point as text (``"coast"``, ``"land"``, ...)."""
        k = self.kind if self.kind is not None else np.zeros(self.status.shape, np.int8)
        return np.array([_KIND_NAMES[int(v)] for v in k], dtype=object)

    @property
    def tagged(self) -> np.ndarray:
        return self.province_id >= 0

    def province_names(self) -> np.ndarray:
        names = np.array(list(self.names) + [""], dtype=object)
        return names[np.where(self.province_id >= 0, self.province_id, len(self.names))]


def border_rule(
    tolerance_km: float, snap_borders: Sequence[str], coast_bboxes: Sequence[Sequence[float]]
) -> str:
    """One sentence saying which points outside the polygons get a province (tag notes, card)."""
    kinds = [k for k in BORDER_KINDS if k in set(snap_borders)]
    if tolerance_km <= 0 or not kinds:
        return "points outside every province polygon are rejected (no border tolerance)"
    across = {
        ("coast",): "across the sea coast only",
        ("land",): "across land borders only",
        ("coast", "land"): "across the sea coast and land borders",
    }[tuple(kinds)]
    rule = (
        f"points up to {tolerance_km:g} km outside the national border {across} get the nearest "
        "province; "
        + (
            "points outside the polygons near a land border are rejected as outside the country"
            if "land" not in kinds
            else "points farther out are rejected"
        )
    )
    if "coast" in kinds:
        rule += (
            f" (coast: the outline inside {len(coast_bboxes)} configured tag.coast_bboxes box(es))"
            if coast_bboxes
            else " (no tag.coast_bboxes configured, so no border counts as coast)"
        )
    return rule


class ProvinceTagger:
    """Prepared polygons and indexes for tagging many batches of points with one boundary set.

    ``snap_borders``: the border kinds (``"coast"``, ``"land"``) a point just outside may be
    snapped across; ``coast_bboxes``: boxes (lon_min, lat_min, lon_max, lat_max) whose part of
    the national outline is coast. Both are inputs, so any country's outline and coast work.
    """

    def __init__(
        self,
        boundaries: geopandas.GeoDataFrame,
        tolerance_km: float = 5.0,
        *,
        snap_borders: Sequence[str] = ("coast",),
        coast_bboxes: Sequence[Sequence[float]] = (),
    ):
        import shapely
        from pyproj import Transformer

        if tolerance_km < 0:
            raise ValueError("tolerance_km must be >= 0")
        bad = sorted(set(snap_borders) - set(BORDER_KINDS))
        if bad:
            raise ValueError(f"unknown border kind(s) {bad}: use {list(BORDER_KINDS)}")
        self.tolerance_km = float(tolerance_km)
        self.snap_borders = tuple(k for k in BORDER_KINDS if k in set(snap_borders))
        self.coast_bboxes = [tuple(float(v) for v in b) for b in coast_bboxes]
        gdf = boundaries.sort_values("province_id")
        # ids, grid codes and owners in the table's id dtype (int8; int16 past 127 regions)
        self._dt = id_dtype(len(gdf))
        self.ids = np.asarray(gdf["province_id"], dtype=self._dt)
        self.names = tuple(str(n) for n in gdf["province"])
        geoms = np.asarray(gdf.geometry.values)
        self.geoms = geoms
        shapely.prepare(geoms)
        self.bounds = shapely.bounds(geoms)  # (k, 4): minx, miny, maxx, maxy

        crs = projection_for(tuple(shapely.total_bounds(geoms)), self.names)
        self._fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        self._inv = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        proj = np.array(
            [
                shapely.transform(
                    g, lambda xy: np.column_stack(self._fwd.transform(xy[:, 0], xy[:, 1]))
                )
                for g in geoms
            ]
        )
        country = shapely.union_all(proj)
        self._build_pieces(proj, country)

        # The national outline grown by the tolerance (plus a margin, so the exact metric test
        # decides, not the curvature of the re-projected buffer), back in degrees and prepared.
        margin_m = self.tolerance_km * 1000.0 * 1.02 + 200.0
        zone = shapely.buffer(country, margin_m, quad_segs=4) if margin_m > 0 else country
        zone = shapely.transform(
            zone, lambda xy: np.column_stack(self._inv.transform(xy[:, 0], xy[:, 1]))
        )
        zone = shapely.make_valid(zone)
        shapely.prepare(zone)
        self._zone = zone
        self.zone_bounds = tuple(float(v) for v in shapely.bounds(zone))
        self._build_grid()

    def _build_pieces(self, proj: np.ndarray, country: object) -> None:
        """Border pieces (short lines of one province and one kind) in STRtrees.

        Every ring of every province is cut into runs of at most ``_PIECE_SEGMENTS`` segments
        of one kind: ``coast``/``land`` when the segment lies on the national outline (inside
        / outside the coast boxes), ``internal`` otherwise. Nearest piece = nearest province.
        """
        import shapely

        filled = shapely.union_all(
            [shapely.polygons(shapely.get_exterior_ring(p)) for p in shapely.get_parts(country)]
        )
        outline = shapely.boundary(filled)
        shapely.prepare(outline)
        shapely.prepare(filled)
        self._filled = filled
        coast_area = None
        if self.coast_bboxes:
            boxes = [shapely.segmentize(shapely.box(*b), 0.05) for b in self.coast_bboxes]
            coast_area = shapely.union_all([self._to_proj(b) for b in boxes])
            shapely.prepare(coast_area)
        pieces: list[object] = []
        owners: list[int] = []
        kinds: list[int] = []
        for pid, g in zip(self.ids, proj, strict=True):
            for ring in shapely.get_rings(shapely.get_parts(g)):
                coords = shapely.get_coordinates(ring)
                if len(coords) < 2:
                    continue
                mid = (coords[:-1] + coords[1:]) / 2.0
                mids = shapely.points(mid[:, 0], mid[:, 1])
                kind = np.where(
                    shapely.dwithin(outline, mids, _ON_OUTLINE_M), KIND_LAND, KIND_INTERNAL
                ).astype(np.int8)
                if coast_area is not None:
                    coast = shapely.intersects_xy(coast_area, mid[:, 0], mid[:, 1])
                    kind[(kind == KIND_LAND) & coast] = KIND_COAST
                for start, stop in _runs(kind, _PIECE_SEGMENTS):
                    pieces.append(shapely.linestrings(coords[start : stop + 1]))
                    owners.append(int(pid))
                    kinds.append(int(kind[start]))
        self._pieces = np.array(pieces, dtype=object)
        self._owners = np.asarray(owners, dtype=self._dt)
        self._kinds = np.asarray(kinds, dtype=np.int8)
        self._tree = shapely.STRtree(self._pieces)
        on_outline = np.flatnonzero(self._kinds != KIND_INTERNAL)
        self._outline_idx = on_outline
        self._outline_tree = shapely.STRtree(self._pieces[on_outline])
        snap = {KIND_COAST: "coast" in self.snap_borders, KIND_LAND: "land" in self.snap_borders}
        self._snappable = np.array(
            [False, snap[KIND_COAST], snap[KIND_LAND], True], dtype=bool
        )  # indexed by kind

    def _to_proj(self, geom: object) -> object:
        import shapely

        return shapely.transform(
            geom, lambda xy: np.column_stack(self._fwd.transform(xy[:, 0], xy[:, 1]))
        )

    # ------------------------------------------------------------------ lookup grid

    def _classify(self, x0: np.ndarray, y0: np.ndarray, size: float) -> np.ndarray:
        """Exact class of square cells: province id, OUTSIDE (misses the zone) or _MIXED."""
        import shapely

        e = _GRID_EPS
        x1, y1 = x0 + size, y0 + size
        boxes = shapely.box(x0 - e, y0 - e, x1 + e, y1 + e)
        code = np.full(x0.shape[0], _MIXED, dtype=self._dt)
        in_zone = shapely.intersects(self._zone, boxes)
        code[~in_zone] = OUTSIDE
        hits = np.zeros(x0.shape[0], dtype=np.int32)
        owner = np.full(x0.shape[0], OUTSIDE, dtype=self._dt)
        for k, g in enumerate(self.geoms):
            bx0, by0, bx1, by1 = self.bounds[k]
            cand = np.flatnonzero(in_zone & (x0 <= bx1) & (x1 >= bx0) & (y0 <= by1) & (y1 >= by0))
            hit = cand[shapely.intersects(g, boxes[cand])]
            hits[hit] += 1
            owner[hit] = self.ids[k]
        for k, g in enumerate(self.geoms):
            cand = np.flatnonzero((hits == 1) & (owner == self.ids[k]))
            code[cand[shapely.contains_properly(g, boxes[cand])]] = self.ids[k]
        return code

    def _build_grid(self) -> None:
        gx0, gy0, gx1, gy1 = self.zone_bounds
        r = _GRID_DEG
        self._nx = max(1, int(np.ceil((gx1 - gx0) / r)))
        self._ny = max(1, int(np.ceil((gy1 - gy0) / r)))
        iy, ix = np.divmod(np.arange(self._nx * self._ny), self._nx)
        self._grid1 = self._classify(gx0 + ix * r, gy0 + iy * r, r)
        mixed = np.flatnonzero(self._grid1 == _MIXED)
        self._block = np.full(self._grid1.shape[0], -1, dtype=np.int64)
        self._block[mixed] = np.arange(mixed.size)
        s = _GRID_SPLIT
        sub = np.arange(s * s)
        sy, sx = np.divmod(sub, s)
        bx = (gx0 + ix[mixed] * r)[:, None] + sx[None, :] * (r / s)
        by = (gy0 + iy[mixed] * r)[:, None] + sy[None, :] * (r / s)
        self._grid2 = self._classify(bx.ravel(), by.ravel(), r / s)

    def _lookup(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Grid code per point (points must lie within ``zone_bounds``)."""
        gx0, gy0, _, _ = self.zone_bounds
        fx = (lon - gx0) / _GRID_DEG
        fy = (lat - gy0) / _GRID_DEG
        ix = np.clip(fx.astype(np.int64), 0, self._nx - 1)
        iy = np.clip(fy.astype(np.int64), 0, self._ny - 1)
        cell = iy * self._nx + ix
        code = self._grid1[cell]
        m = np.flatnonzero(code == _MIXED)
        if m.size:
            s = _GRID_SPLIT
            sx = np.clip(((fx[m] - ix[m]) * s).astype(np.int64), 0, s - 1)
            sy = np.clip(((fy[m] - iy[m]) * s).astype(np.int64), 0, s - 1)
            code[m] = self._grid2[self._block[cell[m]] * (s * s) + sy * s + sx]
        return code

    def tag(self, lat: np.ndarray, lon: np.ndarray) -> TagResult:
        """Tag points given in degrees (arrays of any shape; flattened)."""
        lat = np.asarray(lat, dtype=np.float64).ravel()
        lon = np.asarray(lon, dtype=np.float64).ravel()
        n = lat.shape[0]
        pid = np.full(n, OUTSIDE, dtype=self._dt)
        border = np.full(n, np.nan, dtype=np.float64)
        status = np.full(n, TagResult.OUTSIDE, dtype=np.int8)
        kind = np.zeros(n, dtype=np.int8)

        valid = valid_coordinates(lat, lon)
        status[~valid] = TagResult.INVALID
        zx0, zy0, zx1, zy1 = self.zone_bounds
        with np.errstate(invalid="ignore"):
            near = valid & (lon >= zx0) & (lon <= zx1) & (lat >= zy0) & (lat <= zy1)
        idx = np.flatnonzero(near)
        if idx.size == 0:
            return TagResult(pid, border, status, kind, self.names)
        code = self._lookup(lon[idx], lat[idx])
        pure = code >= 0
        pid[idx[pure]] = code[pure]
        border[idx[pure]] = 0.0
        status[idx[pure]] = TagResult.INSIDE
        self._exact(idx[code == _MIXED], lat, lon, pid, border, status, kind)
        return TagResult(pid, border, status, kind, self.names)

    def _exact(
        self,
        idx: np.ndarray,
        lat: np.ndarray,
        lon: np.ndarray,
        pid: np.ndarray,
        border: np.ndarray,
        status: np.ndarray,
        kind: np.ndarray | None = None,
    ) -> None:
        """Exact tests for the points ``idx`` (those in mixed grid cells); fills the outputs."""
        import shapely

        if idx.size:
            idx = idx[shapely.contains_xy(self._zone, lon[idx], lat[idx])]
        if idx.size == 0:
            return

        # Inside a province: test each prepared polygon on the points inside its bbox that are
        # still unassigned; intersects_xy counts the edge as inside, the lowest id wins a tie.
        x, y = lon[idx], lat[idx]
        got = np.full(idx.size, OUTSIDE, dtype=self._dt)
        for k, g in enumerate(self.geoms):
            bx0, by0, bx1, by1 = self.bounds[k]
            cand = np.flatnonzero((got < 0) & (x >= bx0) & (x <= bx1) & (y >= by0) & (y <= by1))
            if cand.size:
                hit = shapely.intersects_xy(g, x[cand], y[cand])
                got[cand[hit]] = self.ids[k]
        inside = got >= 0
        pid[idx[inside]] = got[inside]
        border[idx[inside]] = 0.0
        status[idx[inside]] = TagResult.INSIDE

        band = idx[~inside]
        if band.size:
            d_km, owner, near_kind = self._nearest(lat[band], lon[band])
            ok = (d_km <= self.tolerance_km) & self._snappable[near_kind]
            pid[band[ok]] = owner[ok]
            status[band[ok]] = TagResult.SNAPPED
            border[band] = np.where(np.isfinite(d_km), d_km, np.nan)
            if kind is not None:
                kind[band] = near_kind

    def _nearest(
        self, lat: np.ndarray, lon: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Great-circle km to the nearest border point, that border's province and its kind.

        A point inside the national outline (a sliver between provinces) looks at every
        piece; a point outside it only at the outline's pieces, so the kind of border it lies
        beyond (coast or land) decides, never an internal edge that ends at the outline.
        """
        import shapely

        px, py = self._fwd.transform(lon, lat)
        pts = shapely.points(px, py)
        n = lat.shape[0]
        d_km = np.full(n, np.inf)
        owner = np.full(n, OUTSIDE, dtype=self._dt)
        kind = np.zeros(n, dtype=np.int8)
        within = shapely.contains(self._filled, pts)
        for sel, tree, index in (
            (np.flatnonzero(within), self._tree, None),
            (np.flatnonzero(~within), self._outline_tree, self._outline_idx),
        ):
            if sel.size:
                d, o, k = self._nearest_in(tree, index, pts[sel], lat[sel], lon[sel])
                d_km[sel], owner[sel], kind[sel] = d, o, k
        kind[np.isinf(d_km)] = KIND_NONE
        return d_km, owner, kind

    def _nearest_in(
        self,
        tree: object,
        index: np.ndarray | None,
        pts: np.ndarray,
        lat: np.ndarray,
        lon: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import shapely

        search_m = self.tolerance_km * 1000.0 * 1.1 + 1000.0
        (src, dst), _ = tree.query_nearest(  # type: ignore[attr-defined]
            pts, max_distance=search_m, return_distance=True, all_matches=False
        )
        if index is not None:
            dst = index[dst]
        d_km = np.full(lat.shape[0], np.inf)
        owner = np.full(lat.shape[0], OUTSIDE, dtype=self._dt)
        kind = np.zeros(lat.shape[0], dtype=np.int8)
        if src.size:
            # all_matches=False keeps one nearest piece per point; ties between two provinces'
            # shared edge resolve to the lowest piece index, i.e. deterministically.
            lines = shapely.shortest_line(pts[src], self._pieces[dst])
            ends = shapely.get_coordinates(lines).reshape(-1, 2, 2)[:, 1, :]
            elon, elat = self._inv.transform(ends[:, 0], ends[:, 1])
            d_km[src] = haversine_km(lat[src], lon[src], elat, elon)
            owner[src] = self._owners[dst]
            kind[src] = self._kinds[dst]
        return d_km, owner, kind


def _runs(kind: np.ndarray, longest: int) -> list[tuple[int, int]]:
    """(first, last + 1) segment ranges of equal ``kind``, each at most ``longest`` long."""
    out = []
    start = 0
    n = kind.shape[0]
    for i in range(1, n + 1):
        if i == n or kind[i] != kind[start] or i - start >= longest:
            out.append((start, i))
            start = i
    return out


def tag_points(
    lat: np.ndarray,
    lon: np.ndarray,
    boundaries: geopandas.GeoDataFrame,
    tolerance_km: float = 5.0,
    **opts: Any,
) -> TagResult:
    """One-shot helper: build a ``ProvinceTagger`` (``opts``: ``snap_borders``,
    ``coast_bboxes``) and tag the points."""
    return ProvinceTagger(boundaries, tolerance_km, **opts).tag(lat, lon)


__all__ = [
    "BORDER_KINDS",
    "OUTSIDE",
    "PAKISTAN_LCC",
    "ProvinceTagger",
    "TagResult",
    "border_rule",
    "projection_for",
    "tag_points",
]
