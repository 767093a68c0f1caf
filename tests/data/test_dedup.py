"""Exact and near-duplicate grouping and the keep rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geopak_data.dedup import (
    KEEP_RULE,
    exact_groups,
    find_duplicates,
    keep_rank,
    near_groups,
    near_pairs,
)


def _frame(rows):
    return pd.DataFrame(
        rows,
        columns=[
            "key",
            "width",
            "height",
            "original_width",
            "original_height",
            "date_taken",
            "file_sha256",
            "phash",
        ],
    )


def test_keep_rule_resolution_then_date_then_key():
    df = _frame(
        [
            ("k-b", 100, 100, 100, 100, "2010-01-01 10:00:00", "", ""),
            (
                "k-a",
                100,
                100,
                100,
                100,
                "2010-01-01T10:00:00",
                "",
                "",
            ),  # same instant, other format
            ("k-c", 100, 100, 2000, 1000, "", "", ""),  # largest original wins despite no date
            ("k-d", 100, 100, 100, 100, "2009-05-01", "", ""),
            ("k-e", 100, 100, 100, 100, "not a date", "", ""),
        ]
    )
    rank = keep_rank(df)
    assert list(df["key"].to_numpy()[np.argsort(rank)]) == ["k-c", "k-d", "k-a", "k-b", "k-e"]
    assert "resolution" in KEEP_RULE and "date_taken" in KEEP_RULE and "key" in KEEP_RULE


def test_keep_rank_falls_back_to_stored_size_without_original():
    df = pd.DataFrame(
        {
            "key": ["a", "b"],
            "width": [50, 80],
            "height": [50, 80],
            "date_taken": ["2001-01-01", "2020-01-01"],
        }
    )
    assert list(keep_rank(df)) == [1, 0]


def test_exact_groups():
    labels = exact_groups(["x", "y", "x", "", "", "y", "z"])
    assert labels[0] == labels[2] and labels[1] == labels[5]
    assert labels[0] != labels[1] and labels[6] not in (labels[0], labels[1])
    assert labels[3] == labels[4] == -1  # an unknown hash never groups


@pytest.mark.parametrize("d", [0, 2, 4, 7])
def test_near_pairs_match_brute_force(d):
    rng = np.random.default_rng(d)
    n = 1500
    h = rng.integers(0, 2**63, n, dtype=np.uint64) ^ (
        rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63)
    )
    src = rng.integers(0, n, 200)
    dst = rng.integers(0, n, 200)
    for s, t in zip(src, dst, strict=True):  # plant copies 0..d+1 bits apart
        bits = rng.choice(64, size=rng.integers(0, d + 2), replace=False)
        h[t] = h[s] ^ np.uint64(sum(1 << int(b) for b in bits))
    i, j = near_pairs(h, d)
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    bi, bj = np.nonzero(np.triu(dist <= d, 1))
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == set(
        zip(bi.tolist(), bj.tolist(), strict=True)
    )
    assert len(bi) > 0


def test_near_groups_are_connected_components():
    a = 0b0
    h = np.array(
        [a, a ^ 0b111, a ^ 0b111111, 0xFFFF_0000_0000_0000, 0xFFFF_0000_0000_0001], dtype=np.uint64
    )
    labels = near_groups(h, 3)
    assert labels[0] == labels[1] == labels[2]  # chain: 0-1 is 3 bits, 1-2 is 3 bits, 0-2 is 6
    assert labels[3] == labels[4] != labels[0]
    masked = near_groups(h, 3, valid=np.array([True, False, True, True, True]))
    assert masked[0] == masked[2] == -1  # without the middle link they are not near


def test_find_duplicates_keeps_best_and_explains():
    df = _frame(
        [
            ("flickr-1", 100, 100, 1600, 1200, "2012-01-01", "sha-A", "ffff0000ffff0000"),
            (
                "yfcc-1",
                100,
                100,
                800,
                600,
                "2011-01-01",
                "sha-A",
                "ffff0000ffff0000",
            ),  # same file, smaller original
            ("flickr-2", 100, 100, 1000, 1000, "2015-06-01", "sha-B", "00000000000000ff"),
            (
                "flickr-3",
                100,
                100,
                1000,
                1000,
                "2014-06-01",
                "sha-C",
                "00000000000000fe",
            ),  # near of 2 & 4, earlier
            ("flickr-4", 100, 100, 1000, 1000, "", "sha-D", "00000000000000f0"),
            ("flickr-5", 100, 100, 1000, 1000, "", "sha-E", "ffffffff00000000"),  # unrelated
        ]
    )
    res = find_duplicates(df, max_distance=4)
    out = dict(zip(df["key"], zip(res.reason, res.kept_key, strict=True), strict=True))
    assert out["yfcc-1"] == ("exact_duplicate", "flickr-1")
    assert out["flickr-1"] == ("", "")
    assert out["flickr-3"] == ("", "")  # same resolution, earliest date
    assert out["flickr-2"] == ("near_duplicate", "flickr-3")
    assert out["flickr-4"] == ("near_duplicate", "flickr-3")
    assert out["flickr-5"] == ("", "")
    details = dict(zip(df["key"], res.detail, strict=True))
    assert "pHash 1 bits from flickr-3" == details["flickr-2"]
    assert "sha256" in details["yfcc-1"]
    # exact duplicates are settled first: the dropped exact copy is not reported twice
    assert list(res.reason).count("exact_duplicate") == 1

    only_exact = find_duplicates(df, near=False)
    assert list(only_exact.reason).count("near_duplicate") == 0
    assert only_exact.dropped.sum() == 1
