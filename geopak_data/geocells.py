"""Geocells: HDBSCAN clusters per province that keep their radius promises (pure logic, no I/O).

A geocell is only useful to the model if knowing it pins a photo down, so the limits below
hold for every cell this module returns, not "as far as possible":

* **Radius** of a cell = the largest haversine distance (km) from a member to the cell's centre.
  It is at most ``urban_radius_km`` (default 5) for an urban cell and at most
  ``rural_radius_km`` (default 50) for any other cell.
* **Urban rule** (configurable): a photo is *urban* when at least
  ``urban_density_min_neighbours`` other photos of its province lie closer than
  ``urban_density_radius_km`` to it (measured in the province's projection); a cell is urban
  when its median member is urban (that is, when more than half of its members are urban).
* **Centre** = the cell's medoid: the member photo with the smallest summed distance to the
  other members, so a centre always lies where a photo was taken (never a mean that can fall
  into a lake or across a border). Cells of more than 256 photos search the medoid among the
  32 members nearest their mean, scoring each on an evenly spaced sample of at most 2,048
  members: exact enough to stay central and O(n) instead of O(n^2).
* **No cell crosses a province border**: cells are built per province, from that province's
  photos only.

How a province is clustered (``build_geocells``):

1. Project the province's photos to metres with a Lambert azimuthal equal-area CRS centred on
   them (pyproj; the PROJ string is reported per cell as ``crs``), where Euclidean distance
   matches the haversine distance to well under 1 % over a province.
2. HDBSCAN (the ``hdbscan`` library, ``boruvka_kdtree`` on the 2-D metres) with
   ``min_cluster_size``, ``min_samples`` and ``cluster_selection_epsilon_km``; core distances
   in one job, because hdbscan's parallel split changes tie-breaking and so the clusters.
   A province with more than ``hdbscan_max_points`` photos is clustered on a seeded random
   sample of that size; the other photos take the label of their nearest sampled photo.
   Photos at exactly the same spot get one label (HDBSCAN may part them at distance 0), and
   every later step keeps them together: a landmark's photos always share a cell.
3. Every cluster that breaks its limit is split with k-means (scikit-learn, fixed seed,
   k ~ (radius / limit)^2, at least 2) and the pieces are checked again, recursively, until
   every piece holds. Pieces may fall below ``min_samples_per_cell``: the minimum yields to
   the radius limit, never the reverse.
4. HDBSCAN noise joins the nearest cell whose centre lies within that cell's limit (then the
   cell's centre and flag are recomputed and step 3 runs again). Points that join no cell are
   grouped among themselves (greedy: the photo with the most other leftovers within its limit
   first takes all of them); a group of at least ``min_isolated`` photos becomes its own
   (``isolated``) cell, photos in no such group are rejected as ``geocell_isolated``.
5. Balancing towards a target number of cells per province (``target_cells_for``)::

       target = round(cells_per_1000_samples * n / 1000 + cells_per_10000_km2 * area_km2 / 10000)
       target = clamp(target, 1, max(1, n // min_samples_per_cell))

   where ``n`` is the region's photo count and ``area_km2`` its area (Pakistan: the official
   ``PROVINCE_AREA_KM2``; other countries: the region table's geodesic polygon area);
   ``target_cells`` in the config overrides it per region.
   Below target, the biggest cells are split by k-means into about n / (N / target) pieces
   (re-checked as in step 3). Then cells with fewer than ``min_samples_per_cell`` photos, and
   the smallest cells while the province is above target, merge with the nearest cell of the
   same province whose union (new medoid, new urban flag) still keeps its limit; a cell no
   neighbour can take stays small. If that leaves the province below target, the biggest
   cells are halved while both halves keep their limits and ``min_samples_per_cell``.
   The target is a goal: the radius limits and then the minimum cell size win over it.
6. Cells left with fewer than ``min_isolated`` photos (pieces of splits no neighbour could
   absorb) dissolve: each photo joins the nearest other cell within its limit, or is rejected
   as ``geocell_isolated``. So no cell has fewer than ``min_isolated`` photos.

The result is deterministic: points are put in a canonical (lat, lon) order per province before
clustering, k-means has a fixed seed and runs single-threaded, ties are broken by position, and
cells are numbered by (province_id, center_lat, center_lon).
"""

from __future__ import annotations

import heapq
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from geopak_core.errors import GeopakError
from geopak_core.geo import EARTH_RADIUS_KM, haversine_km, valid_coordinates
from geopak_core.progress import log, progress
from geopak_core.regions import PAKISTAN, RegionTable
from geopak_core.shardfmt import CELLS_SCHEMA, cell_id_order

from .config import ClusterConfig
from .tables import column, has_column

# Official areas (km^2, rounded) used by the balancing target; index = contract province id.
# Pakistan's official province areas (the balancing target's land term); other countries use
# the geodesic areas of their polygons from the region table.
PROVINCE_AREA_KM2: tuple[float, ...] = (
    140_914.0,  # Sindh
    205_344.0,  # Punjab
    101_741.0,  # Khyber Pakhtunkhwa (incl. former FATA)
    1_165.0,  # Islamabad Capital Territory
    72_971.0,  # Gilgit-Baltistan
    347_190.0,  # Balochistan
    13_297.0,  # Azad Kashmir
)

# The cluster stage's cells table (shardfmt.CELLS_SCHEMA), with the centre's row index in
# place of its key until the stage maps it.
CELL_COLUMNS: tuple[str, ...] = tuple(
    "center_index" if name == "center_key" else name for name in CELLS_SCHEMA.names
)

_EXACT_MEDOID = 256  # cells up to this size get the exact medoid
_MEDOID_CANDIDATES = 32
_MEDOID_EVAL = 2048
_MAX_SPLIT_K = 64  # pieces per k-means split when enforcing a radius
_MAX_TARGET_K = 256  # pieces per k-means split when balancing towards the target
_MERGE_CANDIDATES = 6
_KMEANS_FIT_MAX = 10_000  # k-means fits on at most ~this many members of a cell
_DENSITY_CHUNK_VALUES = 4_000_000


# ----------------------------------------------------------------------------- projection


def province_crs(lat: np.ndarray, lon: np.ndarray) -> str:
    """A Lambert azimuthal equal-area CRS (PROJ string) centred on these points' bounding box.

    Centred on the province's own photos, distances in it stay within a fraction of a percent
    of the true (haversine) distance across a province, so metres can drive HDBSCAN/k-means.
    The centre is rounded to 0.1 degree to keep the string readable and stable.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.size == 0:
        lat0, lon0 = 30.0, 70.0
    else:
        lat0 = round(float(lat.min() + lat.max()) / 2.0, 1)
        lon0 = round(float(lon.min() + lon.max()) / 2.0, 1)
    return f"+proj=laea +lat_0={lat0:.1f} +lon_0={lon0:.1f} +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs +type=crs"


def project(lat: np.ndarray, lon: np.ndarray, crs: str) -> np.ndarray:
    """(n, 2) array of x, y metres in ``crs`` (from WGS84 lat/lon)."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = tr.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])


# ----------------------------------------------------------------------------- density rule


def neighbour_counts(xy: np.ndarray, radius_m: float, cap: int, n_jobs: int = -1) -> np.ndarray:
    """Other points closer than ``radius_m`` to each point, counted up to ``cap``.

    The urban rule only asks whether a count reaches ``cap`` (= urban_density_min_neighbours),
    so a capped k-nearest-neighbour query answers it exactly at O(n * cap) cost, however dense a
    city gets (an uncapped ball count is O(n * density) and explodes in Lahore).
    """
    from scipy.spatial import cKDTree

    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    k = min(int(cap) + 1, n)
    tree = cKDTree(xy)
    out = np.empty(n, dtype=np.int32)
    chunk = max(1024, _DENSITY_CHUNK_VALUES // k)
    for start in range(0, n, chunk):
        d, _ = tree.query(
            xy[start : start + chunk], k=k, distance_upper_bound=radius_m, workers=n_jobs
        )
        d = np.asarray(d).reshape(-1, k)
        out[start : start + chunk] = np.isfinite(d).sum(axis=1) - 1
    return out


# ----------------------------------------------------------------------------- balancing target


def target_cells_for(
    province: int,
    n_samples: int,
    config: ClusterConfig,
    area_km2: float | None = None,
    regions: RegionTable = PAKISTAN,
) -> tuple[int, str]:
    """The balancing target for one region and where it came from ("config" or "formula").

    More photos and more land both deserve more cells; a region can never be asked for more
    cells than it has photos for at ``min_samples_per_cell`` each (the formula in the module
    docstring). ``config.target_cells[name]`` wins over the formula.
    """
    name = regions.names[int(province)]
    if name in config.target_cells:
        return int(config.target_cells[name]), "config"
    area = _area(int(province), area_km2, regions)
    raw = (
        config.cells_per_1000_samples * n_samples / 1000.0
        + config.cells_per_10000_km2 * area / 10000.0
    )
    cap = max(1, int(n_samples) // max(1, config.min_samples_per_cell))
    return int(min(max(1, round(raw)), cap)), "formula"


def _area(province: int, area_km2: float | None, regions: RegionTable) -> float:
    """A region's land area: given, else Pakistan's official figure, else the table's polygon area."""
    if area_km2 is not None:
        return float(area_km2)
    if regions.same_regions(PAKISTAN):
        return PROVINCE_AREA_KM2[province]
    return float(regions.areas_km2[province]) if regions.areas_km2 else 0.0


# ----------------------------------------------------------------------------- spherical helpers


def _unit(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la = np.radians(np.asarray(lat, dtype=np.float64))
    lo = np.radians(np.asarray(lon, dtype=np.float64))
    c = np.cos(la)
    return np.column_stack([c * np.cos(lo), c * np.sin(lo), np.sin(la)])


def _chord(km: float) -> float:
    return 2.0 * math.sin(min(math.pi / 2.0, km / (2.0 * EARTH_RADIUS_KM))) + 1e-9


def _nearest_within(
    lat: np.ndarray,
    lon: np.ndarray,
    clat: np.ndarray,
    clon: np.ndarray,
    limit_km: np.ndarray,
    k: int = 16,
) -> np.ndarray:
    """For each point the index of the nearest centre with haversine distance <= its limit, else -1.

    A k-d tree on unit vectors finds candidates (chord order = great-circle order); the final
    test uses the same haversine as every radius check, so "joined within the limit" and
    "radius within the limit" can never disagree by rounding.
    """
    from scipy.spatial import cKDTree

    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    n, c = len(lat), len(clat)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or c == 0:
        return out
    limit_km = np.asarray(limit_km, dtype=np.float64)
    max_limit = float(limit_km.max())
    tree = cKDTree(_unit(clat, clon))
    kk = min(k, c)
    chunk = 200_000
    for s in range(0, n, chunk):
        la, lo = lat[s : s + chunk], lon[s : s + chunk]
        _, nb = tree.query(_unit(la, lo), k=kk)
        nb = np.asarray(nb).reshape(len(la), kk)
        d = haversine_km(la[:, None], lo[:, None], clat[nb], clon[nb])
        dd = np.where(d <= limit_km[nb], d, np.inf)
        j = np.argmin(dd, axis=1)
        rows = np.arange(len(la))
        best = dd[rows, j]
        res = np.where(np.isfinite(best), nb[rows, j], -1)
        if kk < c:  # a farther centre with a bigger limit may still take the point
            need = np.flatnonzero(~np.isfinite(best) & (d[:, -1] <= max_limit))
            if need.size:
                lists = tree.query_ball_point(_unit(la[need], lo[need]), r=_chord(max_limit))
                for row, cand in zip(need, lists, strict=True):
                    if not cand:
                        continue
                    cand = np.sort(np.asarray(cand, dtype=np.int64))
                    dc = haversine_km(la[row], lo[row], clat[cand], clon[cand])
                    dc = np.where(dc <= limit_km[cand], dc, np.inf)
                    m = int(np.argmin(dc))
                    if np.isfinite(dc[m]):
                        res[row] = cand[m]
        out[s : s + chunk] = res
    return out


# ----------------------------------------------------------------------------- per-province engine


@dataclass
class _Cell:
    idx: np.ndarray  # sorted local indices of the members
    centre: int  # local index of the medoid
    radius: float
    urban: bool
    limit: float
    isolated: bool = False

    @property
    def n(self) -> int:
        return int(len(self.idx))

    @property
    def ok(self) -> bool:
        return self.radius <= self.limit


@dataclass
class _Counts:
    hdbscan_points: int = 0
    hdbscan_clusters: int = 0
    hdbscan_noise: int = 0
    noise_joined: int = 0
    splits: int = 0
    merges: int = 0
    balance_splits: int = 0
    isolated_groups: int = 0
    rejected_isolated: int = 0
    dissolved_cells: int = 0
    dissolved_joined: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class _Province:
    """One province's photos in canonical order, with the operations on cells over them."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, cfg: ClusterConfig, n_jobs: int):
        self.lat = lat
        self.lon = lon
        self.cfg = cfg
        self.n_jobs = n_jobs
        self.crs = province_crs(lat, lon)
        self.xy = project(lat, lon, self.crs)
        self.density = neighbour_counts(
            self.xy, cfg.urban_density_radius_km * 1000.0, cfg.urban_density_min_neighbours, n_jobs
        )
        self.urban_pt = self.density >= cfg.urban_density_min_neighbours
        self.counts = _Counts()

    # -- one cell -------------------------------------------------------------------------

    def medoid(self, idx: np.ndarray) -> int:
        n = len(idx)
        if n <= 2:
            return int(idx[0])
        from scipy.spatial.distance import cdist

        # cdist computes sqrt(dx*dx + dy*dy) per pair in C, bit for bit what the numpy
        # broadcast did, without the (n, n, 2) temporary: same medoid, a fraction of the time.
        p = self.xy[idx]
        if n <= _EXACT_MEDOID:
            cost = cdist(p, p).sum(axis=1)
            return int(idx[int(np.argmin(cost))])
        mean = p.mean(axis=0)
        d = ((p - mean) ** 2).sum(axis=1)
        cand = np.argpartition(d, _MEDOID_CANDIDATES)[:_MEDOID_CANDIDATES]
        cand = cand[np.lexsort((cand, d[cand]))]
        ev = p[:: max(1, -(-n // _MEDOID_EVAL))]
        cost = cdist(p[cand], ev).sum(axis=1)
        return int(idx[int(cand[int(np.argmin(cost))])])

    def stats(self, idx: np.ndarray, isolated: bool = False) -> _Cell:
        idx = np.sort(np.asarray(idx, dtype=np.int64))
        c = self.medoid(idx)
        radius = float(haversine_km(self.lat[idx], self.lon[idx], self.lat[c], self.lon[c]).max())
        urban = bool(2 * int(self.urban_pt[idx].sum()) > len(idx))
        limit = float(self.cfg.urban_radius_km if urban else self.cfg.rural_radius_km)
        return _Cell(idx, c, radius, urban, limit, isolated)

    def split(self, cell: _Cell, k: int, max_k: int = _MAX_SPLIT_K) -> list[np.ndarray]:
        """k-means pieces of a cell (fixed seed); a median cut if k-means cannot separate it.

        Returns at least two non-empty pieces unless every photo of the cell is at one spot
        (radius 0, which never needs splitting for a limit)."""
        from scipy.spatial import cKDTree
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        idx = cell.idx
        p = self.xy[idx]
        k = int(max(2, min(k, len(idx), max_k)))
        # Big cells fit k-means on an evenly spaced sample and give every member its nearest
        # centre: the same partition quality at a fraction of the cost.
        step = max(1, len(idx) // _KMEANS_FIT_MAX)
        fit = p[::step] if step > 1 and len(p[::step]) >= 4 * k else p
        mean = p.mean(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=k, n_init=1, random_state=self.cfg.seed, max_iter=50).fit(
                fit - mean
            )
        if fit is p:
            labels = km.labels_
        else:
            _, labels = cKDTree(km.cluster_centers_).query(p - mean)
        parts = [idx[labels == j] for j in range(k)]
        parts = [q for q in parts if len(q)]
        if len(parts) >= 2:
            return parts
        # Duplicates can make k-means see a single point; cut along the widest axis instead.
        # A cell whose photos all share one spot cannot be split: it comes back whole.
        ext = np.ptp(p, axis=0)
        if not np.any(ext > 0):
            return [idx]
        v = p[:, int(np.argmax(ext))]
        cut = float(np.median(v))
        left = v < cut if np.any(v < cut) else v <= cut
        if left.all():
            left = v < v.max()
        return [idx[left], idx[~left]]

    # -- steps ---------------------------------------------------------------------------

    def enforce(self, cells: list[_Cell]) -> list[_Cell]:
        """Split every cell that breaks its limit until each piece keeps it (always terminates:
        a single photo has radius 0)."""
        out: list[_Cell] = []
        stack = list(reversed(cells))
        while stack:
            c = stack.pop()
            if c.ok:
                out.append(c)
                continue
            k = math.ceil((c.radius / c.limit) ** 2)
            children = [self.stats(q, c.isolated) for q in self.split(c, k)]
            self.counts.splits += 1
            stack.extend(reversed(children))
        return out

    def join(self, cells: list[_Cell], points: np.ndarray) -> tuple[list[_Cell], np.ndarray]:
        """Noise points join the nearest cell whose centre is within that cell's limit."""
        if not len(points) or not cells:
            return cells, points
        cidx = np.array([c.centre for c in cells], dtype=np.int64)
        limits = np.array([c.limit for c in cells], dtype=np.float64)
        choice = _nearest_within(
            self.lat[points], self.lon[points], self.lat[cidx], self.lon[cidx], limits
        )
        joined = choice >= 0
        self.counts.noise_joined += int(joined.sum())
        order = np.argsort(choice[joined], kind="stable")
        ch = choice[joined][order]
        pts = points[joined][order]
        bounds = np.flatnonzero(np.diff(ch)) + 1
        out = list(cells)
        for grp_c, grp_p in zip(np.split(ch, bounds), np.split(pts, bounds), strict=True):
            if not len(grp_c):
                continue
            j = int(grp_c[0])
            out[j] = self.stats(np.concatenate([cells[j].idx, grp_p]), cells[j].isolated)
        return out, points[~joined]

    def isolated(self, points: np.ndarray) -> tuple[list[_Cell], np.ndarray]:
        """Group leftover points greedily; groups of >= min_isolated become cells."""
        from scipy.spatial import cKDTree

        if not len(points):
            return [], points
        points = np.sort(points)
        xy = self.xy[points]
        r = (
            np.where(self.urban_pt[points], self.cfg.urban_radius_km, self.cfg.rural_radius_km)
            * 1000.0
        )
        tree = cKDTree(xy)
        counts = np.asarray(tree.query_ball_point(xy, r=r, return_length=True))
        order = np.lexsort((np.arange(len(points)), -counts))
        taken = np.zeros(len(points), dtype=bool)
        cells: list[_Cell] = []
        for i in order:
            if taken[i] or counts[i] < self.cfg.min_isolated:
                continue
            nb = np.asarray(tree.query_ball_point(xy[i], r=r[i]), dtype=np.int64)
            nb = nb[~taken[nb]]
            if len(nb) < self.cfg.min_isolated:
                continue
            taken[nb] = True
            cells.append(self.stats(points[nb], isolated=True))
        cells = self.enforce(cells)
        self.counts.isolated_groups += len(cells)
        rejected = points[~taken]
        self.counts.rejected_isolated += len(rejected)
        return cells, rejected

    def merge(self, cells: list[_Cell], target: int) -> list[_Cell]:
        """Merge undersized cells, then the smallest while above target, when the union holds."""
        if len(cells) < 2:
            return cells
        pool: dict[int, _Cell] = dict(enumerate(cells))
        cap = 2 * len(cells)  # every merge retires two cells and adds one
        cxy = np.zeros((cap, 2))
        cxy[: len(cells)] = self.xy[[c.centre for c in cells]]
        alive = np.zeros(cap, dtype=bool)
        alive[: len(cells)] = True
        next_uid = len(cells)
        heap = [(c.n, self.lat[c.centre], self.lon[c.centre], uid) for uid, c in pool.items()]
        heapq.heapify(heap)
        stuck: set[int] = set()
        n_alive = len(cells)
        max_d = (
            2.0 * self.cfg.rural_radius_km * 1000.0 * 1.01
        )  # both centres are members of the union
        min_n = self.cfg.min_samples_per_cell
        while heap and n_alive > 1:
            n, _, _, uid = heapq.heappop(heap)
            if not alive[uid] or uid in stuck:
                continue
            if n >= min_n and n_alive <= target:
                break  # the heap is ordered by size: nothing left is undersized or in excess
            a = pool[uid]
            d = np.sqrt(((cxy[:next_uid] - cxy[uid]) ** 2).sum(axis=1))
            mask = alive[:next_uid] & (d <= max_d)
            mask[uid] = False
            cand = np.flatnonzero(mask)
            cand = cand[np.lexsort((cand, d[cand]))][:_MERGE_CANDIDATES]
            merged = None
            for b in cand:
                other = pool[int(b)]
                m = self.stats(np.concatenate([a.idx, other.idx]), a.isolated and other.isolated)
                if m.ok:
                    merged = (int(b), m)
                    break
            if merged is None:
                stuck.add(uid)
                continue
            b, m = merged
            alive[uid] = alive[b] = False
            del pool[uid], pool[b]
            new = next_uid
            next_uid += 1
            alive[new] = True
            pool[new] = m
            cxy[new] = self.xy[m.centre]
            n_alive -= 1
            self.counts.merges += 1
            heapq.heappush(heap, (m.n, self.lat[m.centre], self.lon[m.centre], new))
        return [pool[u] for u in sorted(pool)]

    def split_to_target(self, cells: list[_Cell], target: int) -> list[_Cell]:
        """While below target, split the biggest cell into k ~ n / (N / target) k-means pieces.

        Pieces are re-checked (a piece may turn urban and need a smaller radius); pieces under
        ``min_samples_per_cell`` are left to the merge step that follows.
        """
        n_total = sum(c.n for c in cells)
        if len(cells) >= target or n_total == 0:
            return cells
        size = n_total / target  # the average cell size the target asks for
        min_n = self.cfg.min_samples_per_cell

        def pieces(cell: _Cell, n_alive: int) -> list[_Cell] | None | Literal[False]:
            k = min(round(cell.n / size), cell.n // min_n, _MAX_TARGET_K, target - n_alive + 1)
            if k < 2:
                return False  # the heap is ordered by size: no smaller cell can be split either
            parts = self.split(cell, k, max_k=_MAX_TARGET_K)
            if len(parts) < 2:
                return None  # all at one spot
            return self.enforce([self.stats(q, cell.isolated) for q in parts])

        return self._split_biggest(cells, target, pieces)

    def top_up(self, cells: list[_Cell], target: int) -> list[_Cell]:
        """After merging, while still below target: split the biggest cell in two when both
        halves keep their limits and hold at least ``min_samples_per_cell`` photos."""
        min_n = self.cfg.min_samples_per_cell

        def halves(cell: _Cell, _n_alive: int) -> list[_Cell] | None | Literal[False]:
            if cell.n < 2 * min_n:
                return False
            parts = self.split(cell, 2)
            if len(parts) != 2 or min(len(q) for q in parts) < min_n:
                return None
            children = [self.stats(q, cell.isolated) for q in parts]
            return children if all(c.ok for c in children) else None

        return self._split_biggest(cells, target, halves)

    def _split_biggest(
        self,
        cells: list[_Cell],
        target: int,
        pieces: Callable[[_Cell, int], list[_Cell] | None | Literal[False]],
    ) -> list[_Cell]:
        """While fewer than ``target`` cells live, offer the biggest to ``pieces(cell, alive)``:
        it answers the cells that replace it, None (keep it, try the next biggest) or False
        (stop). One loop for both ways of balancing towards the target."""
        out = list(cells)
        alive = [True] * len(out)
        heap = [(-c.n, i) for i, c in enumerate(out)]
        heapq.heapify(heap)
        n_alive = len(out)
        while heap and n_alive < target:
            _, i = heapq.heappop(heap)
            children = pieces(out[i], n_alive)
            if children is False:
                break
            if children is None:
                continue
            alive[i] = False
            for c in children:
                out.append(c)
                alive.append(True)
                heapq.heappush(heap, (-c.n, len(out) - 1))
            n_alive += len(children) - 1
            self.counts.balance_splits += 1
        return [c for c, a in zip(out, alive, strict=True) if a]

    def dissolve_small(self, cells: list[_Cell]) -> tuple[list[_Cell], np.ndarray]:
        """Cells of fewer than ``min_isolated`` photos (pieces left by splitting) dissolve: each
        photo joins the nearest bigger cell within that cell's limit, or is rejected.

        A receiving cell takes a new medoid when its limit still holds around it; otherwise it
        keeps its centre and flag (every joined photo is within the limit of that centre).
        """
        small = [c for c in cells if c.n < self.cfg.min_isolated]
        if not small:
            return cells, np.zeros(0, dtype=np.int64)
        big = [c for c in cells if c.n >= self.cfg.min_isolated]
        points = np.sort(np.concatenate([c.idx for c in small]))
        self.counts.dissolved_cells += len(small)
        if not big:
            self.counts.rejected_isolated += len(points)
            return [], points
        cidx = np.array([c.centre for c in big], dtype=np.int64)
        limits = np.array([c.limit for c in big], dtype=np.float64)
        choice = _nearest_within(
            self.lat[points], self.lon[points], self.lat[cidx], self.lon[cidx], limits
        )
        for j in np.unique(choice[choice >= 0]):
            old = big[int(j)]
            idx = np.concatenate([old.idx, points[choice == j]])
            new = self.stats(idx, old.isolated)
            if not new.ok:
                idx = np.sort(idx)
                radius = float(
                    haversine_km(
                        self.lat[idx], self.lon[idx], self.lat[old.centre], self.lon[old.centre]
                    ).max()
                )
                new = _Cell(idx, old.centre, radius, old.urban, old.limit, old.isolated)
            big[int(j)] = new
        rejected = points[choice < 0]
        self.counts.dissolved_joined += int((choice >= 0).sum())
        self.counts.rejected_isolated += len(rejected)
        return big, rejected

    def hdbscan_labels(self) -> np.ndarray:
        """HDBSCAN labels (-1 = noise) for every photo of the province.

        HDBSCAN's Boruvka MST grows faster than n log n on dense city data (720k Karachi-like
        points: ~2 minutes of CPU), so a province with more than ``hdbscan_max_points`` photos is
        clustered on a seeded random sample of that size and every other photo takes the label
        of its nearest sampled photo. Everything after this step works on all photos.
        """
        n = len(self.xy)
        cfg = self.cfg
        if n < max(cfg.min_cluster_size, 2):
            return np.full(n, -1, dtype=np.int64)
        import hdbscan
        from scipy.spatial import cKDTree

        sample = None
        x = self.xy
        if cfg.hdbscan_max_points and n > cfg.hdbscan_max_points:
            rng = np.random.default_rng(cfg.seed)
            sample = np.sort(rng.choice(n, size=cfg.hdbscan_max_points, replace=False))
            x = self.xy[sample]
        self.counts.hdbscan_points = len(x)
        model = hdbscan.HDBSCAN(
            min_cluster_size=cfg.min_cluster_size,
            min_samples=min(cfg.min_samples, len(x) - 1),
            cluster_selection_epsilon=float(cfg.cluster_selection_epsilon_km) * 1000.0,
            algorithm="boruvka_kdtree",
            # One job, on purpose: hdbscan splits the core-distance query into n_jobs chunks,
            # which reorders neighbours at equal distance (duplicates), and so changes the
            # clusters with the core count (93k Punjab-like points: 210/208/209 clusters at
            # 1/2/4 jobs). The sampling cap keeps the single-threaded run short.
            core_dist_n_jobs=1,
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                labels = np.asarray(model.fit_predict(x), dtype=np.int64)
        except (ValueError, IndexError) as exc:  # degenerate input (e.g. all photos at one spot)
            log.debug("hdbscan failed on %d points (%s); treating all as noise", len(x), exc)
            return np.full(n, -1, dtype=np.int64)
        if sample is not None:
            _, nearest = cKDTree(x).query(self.xy, k=1, workers=self.n_jobs)
            labels = labels[np.asarray(nearest, dtype=np.int64)]
        # Photos at exactly one spot (a landmark) are indistinguishable, yet HDBSCAN may part them
        # at distance 0. They are adjacent in canonical order: give each run its first label.
        # Every later step keeps identical points together, so they always share a cell.
        start = np.r_[True, (self.lat[1:] != self.lat[:-1]) | (self.lon[1:] != self.lon[:-1])]
        first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
        return labels[first]

    def run(self, target: int) -> tuple[list[_Cell], np.ndarray]:
        t = self.counts.seconds
        t0 = time.perf_counter()
        labels = self.hdbscan_labels()
        t["hdbscan"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        order = np.argsort(labels, kind="stable")
        sl = labels[order]
        bounds = np.flatnonzero(np.diff(sl)) + 1
        groups = [g for g in np.split(order, bounds) if len(g)]
        noise = np.zeros(0, dtype=np.int64)
        if groups and labels[groups[0][0]] < 0:
            noise = groups.pop(0)
        self.counts.hdbscan_clusters = len(groups)
        self.counts.hdbscan_noise = int(len(noise))
        cells = self.enforce([self.stats(g) for g in groups])
        cells, left = self.join(cells, noise)
        cells = self.enforce(cells)
        iso, rejected = self.isolated(left)
        cells = self.split_to_target(cells + iso, target)
        cells = self.merge(cells, target)
        cells = self.top_up(cells, target)
        cells = self.enforce(cells)  # a no-op by construction; kept as the last word
        cells, dropped = self.dissolve_small(cells)
        t["constraints"] = time.perf_counter() - t0
        return cells, np.sort(np.concatenate([rejected, dropped]))


# ----------------------------------------------------------------------------- public API


@dataclass
class GeocellResult:
    """Cells and the assignment of every input point.

    ``cell_of_point[i]`` is the cell id of input point ``i``, or -1 when it was rejected as
    ``geocell_isolated`` (``rejected`` is that mask). ``cells`` has ``CELL_COLUMNS``; its
    ``center_index`` is the input position of each cell's medoid photo.
    """

    cell_of_point: np.ndarray
    cells: pd.DataFrame
    rejected: np.ndarray
    report: dict[str, Any]


def build_geocells(
    lat: np.ndarray,
    lon: np.ndarray,
    province_id: np.ndarray,
    config: ClusterConfig,
    *,
    area_km2: Mapping[int, float] | None = None,
    regions: RegionTable = PAKISTAN,
    n_jobs: int = -1,
) -> GeocellResult:
    """Cluster points (already tagged with contract province ids) into constrained geocells.

    See the module docstring for the rules. ``area_km2`` overrides ``PROVINCE_AREA_KM2`` for the
    balancing target; ``n_jobs`` is the parallelism of the k-d tree queries (it never changes
    the result).
    """
    # Load the OpenMP/BLAS users first: threadpool_limits only reaches libraries already loaded.
    import hdbscan  # noqa: F401
    import sklearn.cluster  # noqa: F401
    from threadpoolctl import threadpool_limits

    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    pid = np.asarray(province_id)
    n = len(lat)
    if not (len(lon) == n == len(pid)):
        raise GeopakError(
            f"lat, lon and province_id differ in length ({n}, {len(lon)}, {len(pid)})"
        )
    bad = np.flatnonzero(~valid_coordinates(lat, lon))
    if bad.size:
        raise GeopakError(
            f"{bad.size} point(s) with invalid coordinates, first at row {int(bad[0])} ({lat[bad[0]]}, {lon[bad[0]]})"
        )
    pid = pid.astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    nreg = regions.n
    bad = np.flatnonzero((pid < 0) | (pid >= nreg))
    if bad.size:
        raise GeopakError(
            f"{bad.size} point(s) with province_id outside 0..{nreg - 1}, first at row "
            f"{int(bad[0])} ({int(pid[bad[0]])})"
        )
    if n_jobs == 0:
        n_jobs = -1

    cell_of_point = np.full(n, -1, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    members: list[np.ndarray] = []
    prov_report: dict[str, Any] = {}
    started = time.perf_counter()
    present = [p for p in range(nreg) if np.any(pid == p)]
    with threadpool_limits(limits=1):  # k-means single-threaded: same result on every machine
        for p in progress(present, desc="geocells", unit="province"):
            t0 = time.perf_counter()
            sel = np.flatnonzero(pid == p)
            sel = sel[np.lexsort((lon[sel], lat[sel]))]  # canonical order
            area = None if area_km2 is None else area_km2.get(p)
            target, source = target_cells_for(p, len(sel), config, area, regions)
            prov = _Province(lat[sel], lon[sel], config, n_jobs)
            cells, rejected = prov.run(target)
            for c in cells:
                rows.append(
                    {
                        "province_id": p,
                        "center_lat": float(prov.lat[c.centre]),
                        "center_lon": float(prov.lon[c.centre]),
                        "radius_km": c.radius,
                        "n_samples": c.n,
                        "urban": c.urban,
                        "limit_km": c.limit,
                        "isolated": c.isolated,
                        "center_index": int(sel[c.centre]),
                        "crs": prov.crs,
                    }
                )
                members.append(sel[c.idx])
            k = prov.counts
            nc = len(cells)
            prov_report[regions.names[p]] = {
                "province_id": p,
                "n_samples": int(len(sel)),
                "n_kept": int(len(sel) - len(rejected)),
                "area_km2": _area(p, area, regions),
                "target_cells": target,
                "target_source": source,
                "cells": nc,
                "urban_cells": int(sum(c.urban for c in cells)),
                "rural_cells": int(sum(not c.urban for c in cells)),
                "urban_photos": int(prov.urban_pt.sum()),
                "hdbscan_points": k.hdbscan_points,
                "hdbscan_clusters": k.hdbscan_clusters,
                "hdbscan_noise": k.hdbscan_noise,
                "noise_joined": k.noise_joined,
                "splits": k.splits,
                "merges": k.merges,
                "balance_splits": k.balance_splits,
                "isolated_groups": k.isolated_groups,
                "isolated_cells": int(sum(c.isolated for c in cells)),
                "isolated_cell_samples": int(sum(c.n for c in cells if c.isolated)),
                "rejected_isolated": k.rejected_isolated,
                "small_cells_dissolved": k.dissolved_cells,
                "small_cell_photos_joined": k.dissolved_joined,
                "cells_below_min_samples": int(
                    sum(c.n < config.min_samples_per_cell for c in cells)
                ),
                "crs": prov.crs,
                "seconds": {
                    name: round(v, 3)
                    for name, v in {**k.seconds, "total": time.perf_counter() - t0}.items()
                },
            }
            log.debug(
                "geocells %s: %d points -> %d cells (target %d) in %.1fs",
                regions.names[p],
                len(sel),
                nc,
                target,
                time.perf_counter() - t0,
            )

    cells = pd.DataFrame(
        rows, columns=[c for c in CELL_COLUMNS if c not in ("cell_id", "province", "neighbours")]
    )
    order = (
        np.lexsort(
            (
                cells["center_index"].to_numpy(),
                -cells["n_samples"].to_numpy(),
                cells["center_lon"].to_numpy(),
                cells["center_lat"].to_numpy(),
                cells["province_id"].to_numpy(),
            )
        )
        if len(cells)
        else np.zeros(0, dtype=np.int64)
    )
    cells = cells.iloc[order].reset_index(drop=True)
    members = [members[i] for i in order]
    for cid, m in enumerate(members):
        cell_of_point[m] = cid
    cells.insert(0, "cell_id", np.arange(len(cells), dtype=np.int32))
    cells["province_id"] = cells["province_id"].astype(regions.id_dtype)
    cells.insert(2, "province", [regions.names[int(p)] for p in cells["province_id"]])
    cells["n_samples"] = cells["n_samples"].astype(np.int32)
    cells["urban"] = cells["urban"].astype(bool)
    cells["isolated"] = cells["isolated"].astype(bool)
    cells["center_index"] = cells["center_index"].astype(np.int64)
    cells["neighbours"] = nearest_cells(
        cells["center_lat"].to_numpy(), cells["center_lon"].to_numpy(), config.neighbours_k
    )
    cells = cells[list(CELL_COLUMNS)]

    rejected = cell_of_point < 0
    check = check_cells(lat, lon, pid, cell_of_point, cells)
    report = summarize(cells, prov_report, check, config, n_in=n, n_rejected=int(rejected.sum()))
    report["seconds"] = round(time.perf_counter() - started, 3)
    return GeocellResult(cell_of_point.astype(np.int32), cells, rejected, report)


def nearest_cells(center_lat: np.ndarray, center_lon: np.ndarray, k: int) -> list[np.ndarray]:
    """The ``k`` nearest other cells of each cell by haversine distance between centres
    (ties by cell id), as int32 arrays; fewer when there are not enough cells."""
    from scipy.spatial import cKDTree

    c = len(center_lat)
    kk = min(int(k), c - 1)
    if kk <= 0:
        return [np.zeros(0, dtype=np.int32) for _ in range(c)]
    tree = cKDTree(_unit(center_lat, center_lon))
    q = min(c, kk + 1 + 4)  # a few extra so ties at the boundary are ordered by id
    _, nb = tree.query(_unit(center_lat, center_lon), k=q)
    nb = np.asarray(nb).reshape(c, q)
    d = haversine_km(
        np.asarray(center_lat)[:, None],
        np.asarray(center_lon)[:, None],
        np.asarray(center_lat)[nb],
        np.asarray(center_lon)[nb],
    )
    out = []
    for i in range(c):
        row, dr = nb[i], d[i]
        keep = row != i
        row, dr = row[keep], dr[keep]
        o = np.lexsort((row, dr))[:kk]
        out.append(row[o].astype(np.int32))
    return out


def _cell_order(cells: Any) -> np.ndarray | None:
    if not has_column(cells, "cell_id"):
        return None
    return cell_id_order(column(cells, "cell_id"))


def cell_distance_matrix(cells: Any) -> np.ndarray:
    """Haversine km between every pair of cell centres, rows/columns in cell_id order.

    ``cells`` is the cells table (pandas, pyarrow, a dict of columns or an object with
    ``center_lat``/``center_lon`` attributes such as the model's ``CellTable``). The model's
    distance-aware label smoothing needs exactly this matrix.
    """
    clat = column(cells, "center_lat").astype(np.float64)
    clon = column(cells, "center_lon").astype(np.float64)
    order = _cell_order(cells)
    if order is not None:
        clat, clon = clat[order], clon[order]
    return haversine_km(clat[:, None], clon[:, None], clat[None, :], clon[None, :])


def assign_to_cells(
    lat: np.ndarray,
    lon: np.ndarray,
    province_id: np.ndarray,
    cells: Any,
    *,
    urban_radius_km: float = 5.0,
    rural_radius_km: float = 50.0,
) -> np.ndarray:
    """Assign new points to existing cells without reclustering.

    Each point goes to the nearest cell centre of its own province whose haversine distance is
    within that cell's limit (``limit_km`` when the table has it, else ``urban_radius_km`` /
    ``rural_radius_km`` by its ``urban`` flag); -1 when no cell takes it. Returns int32 cell ids.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    pid = np.asarray(province_id).astype(np.int64)
    if not (len(lat) == len(lon) == len(pid)):
        raise GeopakError(
            f"lat, lon and province_id differ in length ({len(lat)}, {len(lon)}, {len(pid)})"
        )
    out = np.full(len(lat), -1, dtype=np.int32)
    if len(lat) == 0:
        return out
    cid = (
        column(cells, "cell_id").astype(np.int64)
        if has_column(cells, "cell_id")
        else np.arange(len(column(cells, "center_lat")))
    )
    cpid = column(cells, "province_id").astype(np.int64)
    clat = column(cells, "center_lat").astype(np.float64)
    clon = column(cells, "center_lon").astype(np.float64)
    if has_column(cells, "limit_km"):
        limit = column(cells, "limit_km").astype(np.float64)
    else:
        urban = (
            column(cells, "urban").astype(bool)
            if has_column(cells, "urban")
            else np.zeros(len(clat), dtype=bool)
        )
        limit = np.where(urban, float(urban_radius_km), float(rural_radius_km))
    ok = valid_coordinates(lat, lon)
    for p in np.unique(pid):
        cs = np.flatnonzero(cpid == p)
        cs = cs[np.argsort(cid[cs], kind="stable")]
        pts = np.flatnonzero((pid == p) & ok)
        if not len(cs) or not len(pts):
            continue
        j = _nearest_within(lat[pts], lon[pts], clat[cs], clon[cs], limit[cs])
        out[pts] = np.where(j >= 0, cid[cs][np.maximum(j, 0)], -1)
    return out


def check_cells(
    lat: np.ndarray, lon: np.ndarray, province_id: np.ndarray, cell_of_point: np.ndarray, cells: Any
) -> dict[str, Any]:
    """Check every promise from scratch: radius within limit, one province per cell, counts.

    Recomputes each cell's radius as the max haversine distance of its assigned points to its
    centre; independent of how the cells were built, so the report's "violations" is a check.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    pid = np.asarray(province_id).astype(np.int64)
    cop = np.asarray(cell_of_point).astype(np.int64)
    order = _cell_order(cells)
    if order is None:
        order = np.arange(len(column(cells, "center_lat")))
    c = len(order)
    clat = column(cells, "center_lat").astype(np.float64)[order]
    clon = column(cells, "center_lon").astype(np.float64)[order]
    cpid = column(cells, "province_id").astype(np.int64)[order]
    limit = column(cells, "limit_km").astype(np.float64)[order]
    nsamp = column(cells, "n_samples").astype(np.int64)[order]
    m = cop >= 0
    d = haversine_km(lat[m], lon[m], clat[cop[m]], clon[cop[m]])
    radius = np.zeros(c)
    np.maximum.at(radius, cop[m], d)
    counts = np.bincount(cop[m], minlength=c)
    crossing = np.flatnonzero(
        np.bincount(cop[m], weights=(pid[m] != cpid[cop[m]]).astype(np.float64), minlength=c) > 0
    )
    over = np.flatnonzero(radius > limit)
    wrong_n = np.flatnonzero(counts != nsamp)
    return {
        "radius_violations": int(len(over)),
        "province_violations": int(len(crossing)),
        "count_mismatches": int(len(wrong_n)),
        "total": int(len(over) + len(crossing) + len(wrong_n)),
        "violating_cells": sorted({int(x) for x in np.concatenate([over, crossing, wrong_n])})[
            :100
        ],
        "max_radius_to_limit": float((radius / np.where(limit > 0, limit, 1.0)).max())
        if c
        else 0.0,
    }


def _dist(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return {"count": 0}
    q = np.percentile(v, [0, 10, 25, 50, 75, 90, 100])
    return {
        "count": int(len(v)),
        "mean": round(float(v.mean()), 3),
        **{
            k: round(float(x), 3)
            for k, x in zip(("min", "p10", "p25", "p50", "p75", "p90", "max"), q, strict=True)
        },
    }


def _sampling_report(provinces: dict[str, Any], config: ClusterConfig) -> dict[str, Any]:
    """Where HDBSCAN ran on a sample (``hdbscan_max_points``) and what that changed.

    Only the HDBSCAN labels come from the sample: a photo outside it takes the label of its
    nearest sampled photo (so it can never be HDBSCAN noise unless that neighbour is), and
    every later step (radius splits, noise joins, balancing, the check) runs on all photos.
    So every limit still holds for every photo; what differs from an unsampled run is where
    the initial cluster boundaries fall, hence which cells the balancing starts from.
    """
    cap = int(config.hdbscan_max_points)
    sampled = {
        name: {
            "photos": int(v["n_samples"]),
            "clustered": int(v["hdbscan_points"]),
            "labelled_by_nearest": int(v["n_samples"] - v["hdbscan_points"]),
        }
        for name, v in provinces.items()
        if v["hdbscan_points"] and v["hdbscan_points"] < v["n_samples"]
    }
    return {
        "max_points": cap,
        "rule": (
            f"a province with more than {cap:,} photos runs HDBSCAN on a seeded random sample of "
            f"{cap:,}; the others take the label of their nearest sampled photo; radius limits, "
            "joins and balancing then run on every photo (0 = never sample)"
            if cap
            else "off: HDBSCAN runs on every photo"
        ),
        "provinces": sampled,
        "labelled_by_nearest": int(sum(v["labelled_by_nearest"] for v in sampled.values())),
    }


def summarize(
    cells: pd.DataFrame,
    provinces: dict[str, Any],
    check: dict[str, Any],
    config: ClusterConfig,
    *,
    n_in: int,
    n_rejected: int,
) -> dict[str, Any]:
    """The cluster report: cells per province, distributions, violations, isolated counts."""
    urban = cells["urban"].to_numpy(dtype=bool) if len(cells) else np.zeros(0, dtype=bool)
    radius = cells["radius_km"].to_numpy() if len(cells) else np.zeros(0)
    nsamp = cells["n_samples"].to_numpy() if len(cells) else np.zeros(0)
    return {
        "n_in": int(n_in),
        "n_kept": int(n_in - n_rejected),
        "n_rejected": int(n_rejected),
        "n_cells": int(len(cells)),
        "cells_per_province": {name: int(v["cells"]) for name, v in provinces.items()},
        "samples_per_cell": _dist(nsamp),
        "radius_km": _dist(radius),
        "radius_km_urban": _dist(radius[urban]),
        "radius_km_rural": _dist(radius[~urban]),
        "urban_cells": int(urban.sum()),
        "rural_cells": int((~urban).sum()),
        "cells_below_min_samples": int((nsamp < config.min_samples_per_cell).sum()),
        "violations": check,
        "isolated": {
            "cells": int(sum(v["isolated_cells"] for v in provinces.values())),
            "cell_samples": int(sum(v["isolated_cell_samples"] for v in provinces.values())),
            "rejected": int(sum(v["rejected_isolated"] for v in provinces.values())),
            "min_isolated": config.min_isolated,
        },
        "sampling": _sampling_report(provinces, config),
        "rules": {
            "radius": (
                "max haversine distance of a member to the medoid centre <= "
                f"{config.urban_radius_km} km (urban) / {config.rural_radius_km} km (rural)"
            ),
            "urban": (
                "more than half of the cell's photos have >= "
                f"{config.urban_density_min_neighbours} other photos closer than "
                f"{config.urban_density_radius_km} km"
            ),
            "target": (
                f"round({config.cells_per_1000_samples} * n / 1000 + {config.cells_per_10000_km2} "
                f"* area_km2 / 10000), clamped to [1, n // {config.min_samples_per_cell}]; "
                "cluster.target_cells overrides"
            ),
            "isolated": (
                f"points no cell takes are grouped; groups of < {config.min_isolated} are "
                "rejected as geocell_isolated"
            ),
        },
        "provinces": provinces,
    }
