"""Exact and near-duplicate grouping with one documented keep rule.

The same photo reaches us many times: the same Flickr photo via the Flickr API and YFCC, a
re-upload, a resized copy. Duplicates inflate some places and leak between train and test, so
each group keeps exactly one copy:

KEEP RULE — within a group the kept record is the one with
  1. the highest resolution (``original_width * original_height`` when known, else
     ``width * height``), then
  2. the earliest ``date_taken`` (records without a parseable date come last), then
  3. the smallest ``key`` (a stable tie-break, so reruns keep the same record).

* **Exact duplicates** share the sha256 of the stored file bytes.
* **Near duplicates** have perceptual hashes at most ``max_distance`` bits apart. Groups are
  the connected components of that "near" relation (scipy.sparse.csgraph), so a chain
  A~B~C is one group even when A and C differ by more; the detail records the actual distance
  to the kept copy.

Candidate pairs come from multi-index hashing (pigeonhole): cut the 64-bit hash into ``m``
blocks; two hashes within ``d`` bits agree exactly on at least ``m - d`` blocks, so every
true pair shares one of the ``C(m, m-d)`` masked keys. ``m`` is chosen to keep buckets small
for the number of hashes, so the work grows about linearly, not quadratically, with n.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .quality import hamming_distance, phash_to_int

KEEP_RULE = (
    "highest resolution (original_width*original_height, else width*height), "
    "then earliest date_taken (undated last), then smallest key"
)


@dataclass
class DedupResult:
    """Per-record outcome aligned with the input frame: ``reason`` '' (kept), ``exact_duplicate``
    or ``near_duplicate``; ``kept_key`` the key of the copy kept instead; ``detail`` for humans."""

    reason: np.ndarray
    kept_key: np.ndarray
    detail: np.ndarray

    @property
    def dropped(self) -> np.ndarray:
        return self.reason != ""


def keep_rank(df: pd.DataFrame) -> np.ndarray:
    """Rank of each record under the keep rule (0 = best); ties are impossible (keys unique)."""
    n = len(df)
    res = np.zeros(n, dtype=np.float64)
    if "original_width" in df and "original_height" in df:
        ow = pd.to_numeric(df["original_width"], errors="coerce").to_numpy(dtype=np.float64)
        oh = pd.to_numeric(df["original_height"], errors="coerce").to_numpy(dtype=np.float64)
        res = np.where(np.isfinite(ow * oh), ow * oh, 0.0)
    if "width" in df and "height" in df:
        w = pd.to_numeric(df["width"], errors="coerce").to_numpy(dtype=np.float64)
        h = pd.to_numeric(df["height"], errors="coerce").to_numpy(dtype=np.float64)
        res = np.where(res > 0, res, np.nan_to_num(w * h))
    if "date_taken" in df:
        raw = (
            df["date_taken"]
            .astype(object)
            .where(df["date_taken"].notna(), "")
            .astype(str)
            .str.strip()
        )
        dates = pd.to_datetime(
            raw.where(raw != "", None), errors="coerce", format="ISO8601", utc=True
        )
        secs = (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
        t = np.where(np.isfinite(secs), secs, np.inf)
    else:
        t = np.zeros(n)
    keys = df["key"].astype(str).to_numpy()
    order = np.lexsort((keys, t, -res))  # last key is primary: resolution desc, date asc, key asc
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def exact_groups(hashes: np.ndarray | list[str]) -> np.ndarray:
    """Group label per record from a content hash (-1 for an empty hash: never grouped)."""
    s = pd.Series(list(hashes), dtype=object).fillna("")
    labels, _ = pd.factorize(s)
    return np.where(s.to_numpy() == "", -1, labels).astype(np.int64)


def _block_masks(m: int) -> list[int]:
    edges = np.linspace(0, 64, m + 1).round().astype(int)
    return [((1 << int(b - a)) - 1) << int(a) for a, b in itertools.pairwise(edges)]


def _choose_blocks(n: int, d: int) -> int:
    """Number of blocks that minimises (masked keys) x (sort + expected bucket pairs)."""
    best, best_cost = d + 1, math.inf
    for m in range(d + 1, min(64, d + 9) + 1):
        k = m - d
        bits = k * (64 // m)
        cost = math.comb(m, k) * (n + n * n / 2.0 ** min(bits, 62))
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _pairs_in_runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, of positions inside runs of equal values of a sorted array."""
    n = sorted_keys.shape[0]
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    start = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    run_id = np.cumsum(start) - 1
    run_end = np.r_[np.flatnonzero(start)[1:], n][run_id]  # exclusive end of each position's run
    counts = run_end - np.arange(n) - 1
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    first = np.repeat(np.arange(n), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return first, first + 1 + offsets


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of uint64 hashes at most ``max_distance`` bits apart."""
    if not 0 <= max_distance <= 32:
        raise ValueError("max_distance must be 0..32 bits")
    h = np.asarray(hashes, dtype=np.uint64)
    n = h.shape[0]
    m = _choose_blocks(n, max_distance)
    masks = _block_masks(m)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    for combo in itertools.combinations(range(m), m - max_distance):
        mask = np.uint64(sum(masks[c] for c in combo))
        keys = h & mask
        order = np.argsort(keys, kind="stable")
        a, b = _pairs_in_runs(keys[order])
        if a.size == 0:
            continue
        i, j = order[a], order[b]
        close = hamming_distance(h[i], h[j]) <= max_distance
        lo, hi = np.minimum(i[close], j[close]), np.maximum(i[close], j[close])
        src.append(lo)
        dst.append(hi)
    if not src:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = np.unique(np.stack([np.concatenate(src), np.concatenate(dst)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def near_groups(
    hashes: np.ndarray, max_distance: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """Connected-component label per hash (-1 where ``valid`` is False or the hash is alone)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h = np.asarray(hashes, dtype=np.uint64)
    n = h.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    idx = np.arange(n) if valid is None else np.flatnonzero(valid)
    if idx.size < 2:
        return labels
    i, j = near_pairs(h[idx], max_distance)
    if i.size == 0:
        return labels
    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(idx.size, idx.size))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    labels[idx] = np.where(sizes[comp] > 1, comp, -1)
    return labels


def _winners(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Position of the best-ranked member of each record's group (itself when ungrouped)."""
    n = labels.shape[0]
    win = np.arange(n)
    grouped = np.flatnonzero(labels >= 0)
    if grouped.size:
        order = grouped[np.lexsort((rank[grouped], labels[grouped]))]
        first = np.r_[True, labels[order][1:] != labels[order][:-1]]
        best = order[first][np.cumsum(first) - 1]
        win[order] = best
    return win


def find_duplicates(
    df: pd.DataFrame,
    *,
    exact: bool = True,
    near: bool = True,
    max_distance: int = 4,
    sha_column: str = "file_sha256",
    phash_column: str = "phash",
) -> DedupResult:
    """Decide which records are duplicates of which, under ``KEEP_RULE``.

    Exact duplicates are settled first; near duplicates are then searched among the records
    that survived, so one record never carries two reasons.
    """
    n = len(df)
    reason = np.full(n, "", dtype=object)
    kept = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    if n == 0:
        return DedupResult(reason, kept, detail)
    keys = df["key"].astype(str).to_numpy()
    rank = keep_rank(df)
    alive = np.ones(n, dtype=bool)
    if exact and sha_column in df:
        win = _winners(exact_groups(df[sha_column].to_numpy()), rank)
        dup = win != np.arange(n)
        reason[dup] = "exact_duplicate"
        kept[dup] = keys[win[dup]]
        detail[dup] = [f"same file (sha256) as {k}" for k in keys[win[dup]]]
        alive &= ~dup
    if near and phash_column in df:
        ph = df[phash_column].fillna("").astype(str).to_numpy()
        hashes = phash_to_int(ph)
        win = _winners(near_groups(hashes, max_distance, valid=alive & (ph != "")), rank)
        dup = (win != np.arange(n)) & alive
        dist = hamming_distance(hashes[dup], hashes[win[dup]])
        reason[dup] = "near_duplicate"
        kept[dup] = keys[win[dup]]
        detail[dup] = [
            f"pHash {d} bits from {k}" for d, k in zip(dist, keys[win[dup]], strict=True)
        ]
    return DedupResult(reason, kept, detail)


__all__ = [
    "KEEP_RULE",
    "DedupResult",
    "exact_groups",
    "find_duplicates",
    "keep_rank",
    "near_groups",
    "near_pairs",
]
