"""Leakage-free, stratified train/val/test splits (pure: numpy, scipy, no I/O).

A model that saw one photo of a burst in training and its neighbour in test is graded on
memory, not on geolocation. So photos are first joined into *groups* that must share a
split, and whole groups are then dealt to the splits:

* **bursts**: the same owner, the same calendar day (``date_taken[:10]``; photos with no
  date, or a date known only to the month, the year or "circa" (``date_granularity`` 4, 6,
  8, or a reduced-precision ``2013-05``), count as one "unknown day" per owner: a month is
  never read as its first day) and closer than ``burst_radius_km`` to another
  photo of the burst (single linkage, so a walk along a street stays one group);
* **exact duplicates**: the same ``sha256`` of the stored JPEG;
* **near-duplicates**: perceptual hashes (64-bit pHash) within ``phash_distance`` bits;
* **declared groups**: the same non-empty ``group_id`` (a Mapillary sequence: frames of one
  drive, as OSV-5M keeps a sequence in one split).

The links form a graph whose connected components (scipy's union-find) are the groups.

Dealing is stratified by province *and* by geocell: groups are taken largest first (ties in
a seeded random order) and each goes to the split whose share of that cell and that
province is furthest below its target fraction. Before that, every province with at least
as many groups as there are (non-empty) splits gives its smallest groups one to each split,
so rare provinces (Balochistan, Gilgit-Baltistan) appear in val and test too.

Everything is a function of the records and the seed: the same input gives the same split
on any machine (hashes are blake2b, never Python's salted ``hash``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geopak_core.geo import haversine_km
from geopak_core.hashing import stable_u64
from geopak_core.shardfmt import SPLITS

from .dates import is_day
from .dedup import near_pairs
from .quality import parse_phash

# Buckets up to this size are compared with vectorised "offset" pairs; larger ones blockwise.
_SMALL_BUCKET = 24
_BLOCK = 512


@dataclass
class SplitResult:
    """Per input row: its split index (0 train, 1 val, 2 test) and its leakage group."""

    split: np.ndarray  # int8, index into SPLITS
    group: np.ndarray  # int64, 0..n_groups-1 numbered by first appearance in key order
    n_groups: int
    burst_links: int  # pairs linked as bursts (before taking components)
    duplicate_links: int  # pairs linked as exact or near-duplicates

    def names(self) -> np.ndarray:
        return np.asarray(SPLITS, dtype=object)[self.split]


def shuffle_order(keys: Sequence[str], seed: int, salt: str = "shuffle") -> np.ndarray:
    """Indices of ``keys`` in a seeded pseudo-random order that depends on each key alone.

    Sorting by a per-key hash is a uniform shuffle that stays put for every other key when a
    record is added or removed, which keeps shard contents stable across re-runs.
    """
    h = np.fromiter((stable_u64(seed, salt, k) for k in keys), dtype=np.uint64, count=len(keys))
    return np.lexsort((np.asarray(keys, dtype=object).astype(str), h))


# ----------------------------------------------------------------------------- parsing


def _day(value: object, granularity: object = None) -> str:
    """The calendar day of a date, or "" when it has none (missing, month/year/circa only)."""
    return str(value).strip()[:10] if is_day(value, granularity) else ""


# ----------------------------------------------------------------------------- linking


def _bucket_pairs(
    labels: np.ndarray, valid: np.ndarray, close: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j) with the same label (among valid rows) for which ``close`` holds.

    ``close(a, b)`` must broadcast: it gets two index vectors, or a column and a row of
    indices for a block. Small buckets are handled for the whole array at once by comparing
    each row with the next ``k`` rows in label order; large buckets in blocks (upper triangle).
    """
    idx = np.flatnonzero(valid)
    if idx.size < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = idx[np.argsort(labels[idx], kind="stable")]
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    sizes = np.diff(np.r_[starts, lab.size])
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    small_rows = np.repeat(sizes <= _SMALL_BUCKET, sizes) & np.repeat(sizes > 1, sizes)
    o, lo = order[small_rows], lab[small_rows]
    for k in range(1, min(_SMALL_BUCKET, o.size)):
        same = lo[:-k] == lo[k:]
        if not same.any():
            break
        a, b = o[:-k][same], o[k:][same]
        m = close(a, b)
        out_a.append(a[m])
        out_b.append(b[m])
    for s, z in zip(starts[sizes > _SMALL_BUCKET], sizes[sizes > _SMALL_BUCKET], strict=True):
        members = order[s : s + z]
        for r0 in range(0, z, _BLOCK):
            rows = members[r0 : r0 + _BLOCK]
            cols = members[r0:]
            m = close(rows[:, None], cols[None, :])
            ii, jj = np.nonzero(m)
            upper = jj > ii
            out_a.append(rows[ii[upper]])
            out_b.append(cols[jj[upper]])
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)


def _codes(values: Sequence[object]) -> np.ndarray:
    """Integer codes for arbitrary hashable values (equal values, equal codes)."""
    _, inv = np.unique(
        np.asarray([str(v) for v in values], dtype=object).astype(str), return_inverse=True
    )
    return inv.astype(np.int64)


def burst_pairs(
    owner: Sequence[object],
    date_taken: Sequence[object],
    lat: np.ndarray,
    lon: np.ndarray,
    radius_km: float,
    date_granularity: Sequence[object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of photos by the same owner on the same day closer than ``radius_km``."""
    owners = ["" if o is None else str(o).strip() for o in owner]
    valid = np.array([bool(o) for o in owners], dtype=bool)
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    valid &= np.isfinite(lat) & np.isfinite(lon)
    if radius_km <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    grans = list(date_granularity) if date_granularity is not None else [None] * len(owners)
    labels = _codes(
        [f"{o}\x1f{_day(d, g)}" for o, d, g in zip(owners, date_taken, grans, strict=True)]
    )

    def close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return haversine_km(lat[a], lon[a], lat[b], lon[b]) <= radius_km

    return _bucket_pairs(labels, valid, close)


def duplicate_pairs(
    sha256: Sequence[object], phash: Sequence[object], max_distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs with the same sha256, or perceptual hashes at most ``max_distance`` bits apart.

    Near pairs come from ``dedup.near_pairs`` (the filter's near-duplicate finder: multi-index
    hashing, so only hashes that agree exactly on some block of bits are ever compared).
    """
    shas = ["" if s is None else str(s) for s in sha256]
    valid = np.array([bool(s) for s in shas], dtype=bool)
    labels = _codes(shas)
    sa, sb = _bucket_pairs(labels, valid, lambda a, b: np.ones(a.size, dtype=bool))
    out_a, out_b = [sa], [sb]
    hashes, ok = parse_phash(list(phash))
    if ok.sum() >= 2 and max_distance >= 0:
        idx = np.flatnonzero(ok)
        a, b = near_pairs(hashes[idx], max_distance)  # the filter's near-duplicate finder
        out_a.append(idx[a])
        out_b.append(idx[b])
    a = np.concatenate(out_a) if out_a else np.empty(0, np.int64)
    b = np.concatenate(out_b) if out_b else np.empty(0, np.int64)
    if a.size:
        pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
        return pairs[:, 0], pairs[:, 1]
    return a, b


def declared_group_pairs(group_id: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Links joining the rows of each non-empty ``group_id`` into a chain (n-1 links for a
    group of n: linear however large a sequence is)."""
    ids = ["" if g is None else str(g) for g in group_id]
    idx = np.asarray([i for i, g in enumerate(ids) if g], dtype=np.int64)
    if idx.size < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    codes = _codes([ids[i] for i in idx])
    order = np.argsort(codes, kind="stable")
    sorted_idx, sorted_codes = idx[order], codes[order]
    same = sorted_codes[1:] == sorted_codes[:-1]
    return sorted_idx[:-1][same], sorted_idx[1:][same]


def leakage_groups(
    n: int,
    *,
    owner: Sequence[object],
    date_taken: Sequence[object],
    lat: np.ndarray,
    lon: np.ndarray,
    sha256: Sequence[object],
    phash: Sequence[object],
    burst_radius_km: float = 1.0,
    phash_distance: int = 6,
    group_id: Sequence[object] | None = None,
    date_granularity: Sequence[object] | None = None,
) -> tuple[np.ndarray, int, int]:
    """Group id per row (connected components of burst and duplicate links), plus link counts.

    Group ids are numbered by first appearance in row order, so sorted input gives ids that
    do not depend on how scipy labels its components.
    """
    from scipy.sparse import coo_matrix  # here, not at import: a third of the CLI's start-up
    from scipy.sparse.csgraph import connected_components

    ba, bb = burst_pairs(owner, date_taken, lat, lon, burst_radius_km, date_granularity)
    da, db = duplicate_pairs(sha256, phash, phash_distance)
    ga, gb = declared_group_pairs(group_id) if group_id is not None else (ba[:0], bb[:0])
    rows = np.concatenate([ba, da, ga])
    cols = np.concatenate([bb, db, gb])
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(np.argsort(first))] = np.arange(first.size)
    return rank[labels], int(ba.size), int(da.size)


# ----------------------------------------------------------------------------- dealing


def deal_groups(
    *,
    keys: Sequence[str],
    group: np.ndarray,
    province_id: np.ndarray,
    cell_id: np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Split index per row; every row of a group gets the same split.

    See the module docstring for the rule. ``fractions`` are per split in SPLITS order; a
    zero fraction gets no samples at all.
    """
    n = len(keys)
    group = np.asarray(group, dtype=np.int64)
    prov = np.asarray(province_id, dtype=np.int64)
    cell = np.asarray(cell_id, dtype=np.int64)
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (len(SPLITS),) or np.any(frac < 0) or frac.sum() <= 0:
        raise ValueError(
            f"fractions must be {len(SPLITS)} non-negative numbers with a positive sum"
        )
    frac = frac / frac.sum()
    active = np.flatnonzero(frac > 0)
    result = np.zeros(n, dtype=np.int8)
    if n == 0:
        return result
    n_groups = int(group.max()) + 1

    # Per group: rows, size, a seeded tie-break, home province, composition by cell/province.
    order = np.argsort(group, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(group, minlength=n_groups))]
    size = np.diff(bounds)
    keys_arr = np.asarray(keys, dtype=object)
    first_key = [str(keys_arr[order[bounds[g]]]) for g in range(n_groups)]
    tiebreak = np.fromiter(
        (stable_u64(seed, "deal", k) for k in first_key), dtype=np.uint64, count=n_groups
    )

    p_levels, p_idx = np.unique(prov, return_inverse=True)
    c_levels, c_idx = np.unique(cell, return_inverse=True)
    p_total = np.bincount(p_idx, minlength=p_levels.size).astype(np.float64)
    c_total = np.bincount(c_idx, minlength=c_levels.size).astype(np.float64)
    p_target = p_total[:, None] * frac[None, :]
    c_target = c_total[:, None] * frac[None, :]
    p_cur = np.zeros_like(p_target)
    c_cur = np.zeros_like(c_target)

    def composition(
        level_idx: np.ndarray, n_levels: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets per group, level per entry, count per entry): a group's rows by level."""
        uniq, counts = np.unique(group * n_levels + level_idx, return_counts=True)
        g_of = uniq // n_levels
        offsets = np.searchsorted(g_of, np.arange(n_groups + 1))
        return offsets, uniq % n_levels, counts.astype(np.float64)

    p_off, p_lvl, p_cnt = composition(p_idx, p_levels.size)
    c_off, c_lvl, c_cnt = composition(c_idx, c_levels.size)
    home = np.empty(n_groups, dtype=np.int64)
    for g in range(n_groups):
        a, b = p_off[g], p_off[g + 1]
        home[g] = p_lvl[a + int(np.argmax(p_cnt[a:b]))] if b - a > 1 else p_lvl[a]

    assigned = np.full(n_groups, -1, dtype=np.int64)

    def give(g: int, s: int) -> None:
        assigned[g] = s
        a, b = p_off[g], p_off[g + 1]
        p_cur[p_lvl[a:b], s] += p_cnt[a:b]
        a, b = c_off[g], c_off[g + 1]
        c_cur[c_lvl[a:b], s] += c_cnt[a:b]

    # Seed: each province with enough groups gives one of its smallest groups to every split.
    by_size = np.lexsort((tiebreak, size))  # smallest first, seeded ties
    seed_order = active[np.argsort(frac[active], kind="stable")]  # rarest split picks first
    for p in range(p_levels.size):
        mine = by_size[home[by_size] == p]
        if mine.size < active.size:
            continue
        for s, g in zip(seed_order, mine[: active.size], strict=True):
            give(int(g), int(s))

    # Deal the rest, largest first, to the split furthest below its target (share of the
    # group's cells plus share of its provinces, each relative to that stratum's size).
    p_inv = 1.0 / p_total
    c_inv = 1.0 / c_total
    active_mask = np.full(len(SPLITS), -np.inf)
    active_mask[active] = 0.0
    for g in np.lexsort((tiebreak, -size)):
        if assigned[g] >= 0:
            continue
        pa, pb, ca, cb = p_off[g], p_off[g + 1], c_off[g], c_off[g + 1]
        if pb - pa == 1 and cb - ca == 1:  # the common case: one cell, one province
            p, c = p_lvl[pa], c_lvl[ca]
            score = (c_target[c] - c_cur[c]) * c_inv[c] + (p_target[p] - p_cur[p]) * p_inv[p]
            s = int(np.argmax(score + active_mask))
            assigned[g] = s
            p_cur[p, s] += p_cnt[pa]
            c_cur[c, s] += c_cnt[ca]
            continue
        w = float(size[g])
        pl, cl = p_lvl[pa:pb], c_lvl[ca:cb]
        score = ((c_target[cl] - c_cur[cl]) * (c_inv[cl] * c_cnt[ca:cb] / w)[:, None]).sum(axis=0)
        score += ((p_target[pl] - p_cur[pl]) * (p_inv[pl] * p_cnt[pa:pb] / w)[:, None]).sum(axis=0)
        give(int(g), int(np.argmax(score + active_mask)))

    result[:] = assigned[group].astype(np.int8)
    return result


def assign_splits(
    *,
    keys: Sequence[str],
    province_id: np.ndarray,
    cell_id: np.ndarray,
    owner: Sequence[object],
    date_taken: Sequence[object],
    lat: np.ndarray,
    lon: np.ndarray,
    sha256: Sequence[object],
    phash: Sequence[object],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    burst_radius_km: float = 1.0,
    phash_distance: int = 6,
    group_id: Sequence[object] | None = None,
    date_granularity: Sequence[object] | None = None,
) -> SplitResult:
    """Leakage groups, then a stratified deal of whole groups to train/val/test.

    Rows may come in any order; the result depends only on the set of rows and the seed.
    """
    n = len(keys)
    keys_s = np.asarray([str(k) for k in keys], dtype=object)
    if len(set(keys_s.tolist())) != n:
        raise ValueError("keys must be unique")
    perm = np.argsort(keys_s.astype(str), kind="stable")

    def take(values: Sequence[object]) -> list[object]:
        arr = np.asarray(values, dtype=object)
        return arr[perm].tolist()

    lat_a = np.asarray(lat, dtype=np.float64)[perm]
    lon_a = np.asarray(lon, dtype=np.float64)[perm]
    group_sorted, n_burst, n_dup = leakage_groups(
        n,
        owner=take(owner),
        date_taken=take(date_taken),
        lat=lat_a,
        lon=lon_a,
        sha256=take(sha256),
        phash=take(phash),
        burst_radius_km=burst_radius_km,
        phash_distance=phash_distance,
        group_id=take(group_id) if group_id is not None else None,
        date_granularity=None if date_granularity is None else take(date_granularity),
    )
    split_sorted = deal_groups(
        keys=keys_s[perm].tolist(),
        group=group_sorted,
        province_id=np.asarray(province_id)[perm],
        cell_id=np.asarray(cell_id)[perm],
        fractions=fractions,
        seed=seed,
    )
    split = np.empty(n, dtype=np.int8)
    group = np.empty(n, dtype=np.int64)
    split[perm] = split_sorted
    group[perm] = group_sorted
    return SplitResult(
        split=split,
        group=group,
        n_groups=int(group_sorted.max()) + 1 if n else 0,
        burst_links=n_burst,
        duplicate_links=n_dup,
    )
