"""Leakage-free grouped, stratified splits (geopak_data.splits)."""

from __future__ import annotations

import numpy as np
import pytest

from geopak_data.splits import (
    assign_splits,
    burst_pairs,
    deal_groups,
    duplicate_pairs,
    leakage_groups,
    parse_phash,
    shuffle_order,
)


def _pairs(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)}


def test_bursts_need_same_owner_same_day_and_distance() -> None:
    owner = ["ann", "ann", "ann", "ann", "bob", "", ""]
    date = [
        "2014-03-02 09:00",
        "2014-03-02 17:00",
        "2014-03-03 09:00",
        "2014-03-02 10:00",
        "2014-03-02",
        "2014-03-02",
        "2014-03-02",
    ]
    lat = np.array(
        [24.860, 24.865, 24.860, 25.200, 24.860, 24.860, 24.860]
    )  # 0.005 deg ~ 0.56 km; 25.2 ~ 38 km away
    lon = np.full(7, 67.01)
    got = _pairs(*burst_pairs(owner, date, lat, lon, radius_km=1.0))
    # 0-1 same owner/day, 560 m apart; 2 is another day; 3 is 38 km away; 4 another owner;
    # 5 and 6 have no owner, so nothing says they are one photographer's burst.
    assert got == {(0, 1)}
    assert _pairs(*burst_pairs(owner, date, lat, lon, radius_km=0.1)) == set()


def test_undated_photos_of_one_owner_count_as_one_day() -> None:
    got = _pairs(
        *burst_pairs(
            ["ann", "ann", "ann"],
            ["", None, "2014-01-01"],
            np.array([30.0, 30.001, 30.0]),
            np.array([70.0, 70.0, 70.0]),
            radius_km=1.0,
        )
    )
    assert got == {(0, 1)}


def test_large_bursts_use_the_block_path_and_chain() -> None:
    n = 60  # above the small-bucket limit: compared blockwise
    lat = 24.0 + 0.004 * np.arange(
        n
    )  # 445 m steps: only neighbours are within 1 km... and 2 steps (890 m)
    got = _pairs(
        *burst_pairs(["ann"] * n, ["2015-05-05"] * n, lat, np.full(n, 67.0), radius_km=1.0)
    )
    assert (0, 1) in got and (0, 2) in got and (0, 3) not in got
    groups, nb, _ = leakage_groups(
        n,
        owner=["ann"] * n,
        date_taken=["2015-05-05"] * n,
        lat=lat,
        lon=np.full(n, 67.0),
        sha256=[""] * n,
        phash=[""] * n,
    )
    assert len(set(groups.tolist())) == 1  # single linkage: the whole walk is one group
    assert nb == len(got)


def test_duplicates_by_sha_and_phash() -> None:
    sha = ["a", "b", "a", "c", "d", ""]
    base = 0x0F0F_0F0F_0F0F_0F0F
    ph = [
        f"{base:016x}",
        f"{base ^ 0b111:016x}",
        None,
        f"{base ^ 0xFF00_0000_0000_0000:016x}",
        "",
        "zz",
    ]
    got = _pairs(*duplicate_pairs(sha, ph, max_distance=4))
    assert got == {(0, 2), (0, 1)}  # same sha; 3 bits apart; 8 bits is too far; bad hashes ignored
    assert _pairs(*duplicate_pairs(sha, ph, max_distance=8)) == {
        (0, 2),
        (0, 1),
        (0, 3),
    }  # 1-3: 11 bits


def test_phash_near_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=40, dtype=np.int64).astype(np.uint64)
    hashes = []
    for h in base:
        hashes.append(int(h))
        for _ in range(2):  # near copies with 1..7 flipped bits
            bits = rng.choice(64, size=int(rng.integers(1, 8)), replace=False)
            hashes.append(int(h) ^ int(sum(1 << int(b) for b in bits)))
    got = _pairs(*duplicate_pairs([""] * len(hashes), hashes, max_distance=5))
    want = {
        (i, j)
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if bin(hashes[i] ^ hashes[j]).count("1") <= 5
    }
    assert got == want and want


def test_parse_phash_accepts_hex_and_int() -> None:
    h, ok = parse_phash(["ff", 255, None, "", "nothex", float("nan")])
    assert ok.tolist() == [True, True, False, False, False, False]
    assert h[0] == h[1] == 255


def _synthetic(n: int = 600, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    prov = rng.choice([0, 1, 2, 3, 4, 5, 6], size=n, p=[0.45, 0.3, 0.12, 0.05, 0.03, 0.03, 0.02])
    cell = prov * 10 + rng.integers(0, 3, size=n)
    owners = rng.integers(0, 40, size=n)
    day = rng.integers(0, 6, size=n)
    lat = 24.0 + prov * 1.5 + rng.normal(0, 0.004, size=n)
    lon = 62.0 + prov * 2.0 + rng.normal(0, 0.004, size=n)
    sha = [f"{i:064x}" for i in range(n)]
    for i in range(0, n - 1, 37):  # a few exact duplicates
        sha[i + 1] = sha[i]
    phash = [f"{int(x):016x}" for x in rng.integers(0, 2**63, size=n)]
    return {
        "keys": [f"yfcc-{i}" for i in range(n)],
        "province_id": prov,
        "cell_id": cell,
        "owner": [f"u{o}" for o in owners],
        "date_taken": [f"2014-01-{1 + d:02d}" for d in day],
        "lat": lat,
        "lon": lon,
        "sha256": sha,
        "phash": phash,
    }


def test_no_group_straddles_splits_and_every_link_is_respected() -> None:
    d = _synthetic()
    res = assign_splits(**d, seed=1)
    assert res.burst_links > 0 and res.duplicate_links > 0
    for g in np.unique(res.group):
        assert len(set(res.split[res.group == g].tolist())) == 1
    # Re-derive the links independently and check both ends share a split.
    a, b = burst_pairs(d["owner"], d["date_taken"], d["lat"], d["lon"], 1.0)
    c, e = duplicate_pairs(d["sha256"], d["phash"], 6)
    assert np.all(res.split[a] == res.split[b]) and np.all(res.split[c] == res.split[e])


def test_fractions_and_stratification() -> None:
    d = _synthetic(n=2000, seed=5)
    res = assign_splits(**d, seed=0, burst_radius_km=0.0, phash_distance=0)
    share = np.bincount(res.split, minlength=3) / len(d["keys"])
    assert np.allclose(share, [0.8, 0.1, 0.1], atol=0.02)
    for p in np.unique(d["province_id"]):
        sub = res.split[d["province_id"] == p]
        assert set(sub.tolist()) == {0, 1, 2}  # every province in every split
        if sub.size >= 300:
            assert abs(np.mean(sub == 0) - 0.8) < 0.05
    for c in np.unique(d["cell_id"]):
        sub = res.split[d["cell_id"] == c]
        if sub.size >= 200:
            assert abs(np.mean(sub == 0) - 0.8) < 0.06


def test_rare_province_reaches_every_split() -> None:
    # Province 5 has three single-photo groups; greedy deficit alone would put all in train.
    keys = [f"k{i:03d}" for i in range(103)]
    prov = np.array([0] * 100 + [5] * 3)
    res = deal_groups(
        keys=keys,
        group=np.arange(103),
        province_id=prov,
        cell_id=prov,
        fractions=(0.8, 0.1, 0.1),
        seed=0,
    )
    assert sorted(res[100:].tolist()) == [0, 1, 2]
    # Two groups cannot cover three splits: both stay where the deficit puts them, no error.
    res2 = deal_groups(
        keys=keys[:102], group=np.arange(102), province_id=prov[:102], cell_id=prov[:102], seed=0
    )
    assert res2.shape == (102,)


def test_zero_fraction_split_gets_nothing() -> None:
    d = _synthetic(n=300)
    res = assign_splits(**d, fractions=(0.9, 0.1, 0.0))
    assert not np.any(res.split == 2)
    assert np.any(res.split == 1)


def test_deterministic_given_seed_and_independent_of_row_order() -> None:
    d = _synthetic(n=400)
    r1 = assign_splits(**d, seed=3)
    r2 = assign_splits(**d, seed=3)
    assert np.array_equal(r1.split, r2.split)
    perm = np.random.default_rng(0).permutation(400)
    shuffled = {
        k: (np.asarray(v)[perm] if not isinstance(v, list) else [v[i] for i in perm])
        for k, v in d.items()
    }
    r3 = assign_splits(**shuffled, seed=3)
    assert np.array_equal(r3.split, r1.split[perm])
    r4 = assign_splits(**d, seed=4)
    assert not np.array_equal(r4.split, r1.split)


def test_duplicate_keys_rejected() -> None:
    d = _synthetic(n=10)
    d["keys"][1] = d["keys"][0]
    with pytest.raises(ValueError, match="unique"):
        assign_splits(**d)


def test_shuffle_order_is_seeded_and_stable_per_key() -> None:
    keys = [f"k{i}" for i in range(50)]
    o1 = shuffle_order(keys, 0)
    assert sorted(o1.tolist()) == list(range(50)) and o1.tolist() != list(range(50))
    assert np.array_equal(o1, shuffle_order(keys, 0))
    assert not np.array_equal(o1, shuffle_order(keys, 1))
    # Dropping a key keeps the relative order of all others.
    rest = [keys[i] for i in o1.tolist() if i != 7]
    o2 = shuffle_order([k for k in keys if k != "k7"], 0)
    assert [[k for k in keys if k != "k7"][i] for i in o2.tolist()] == rest


def test_month_or_year_dates_are_never_a_day() -> None:
    """Flickr sends a month-only date as ``2014-03-01 00:00:00`` with granularity 4: it must not
    join the owner's photos of 1 March, and a stored ``2014-03`` is no day either."""
    owner = ["ann"] * 5
    date = ["2014-03-01 10:00:00", "2014-03-01 00:00:00", "2014-03", "2014", "2014-03-01 11:00:00"]
    gran = [0, 4, None, 6, None]
    lat = np.array([30.0, 30.001, 30.002, 30.003, 30.004])
    lon = np.full(5, 70.0)
    got = _pairs(*burst_pairs(owner, date, lat, lon, radius_km=1.0, date_granularity=gran))
    # 0 and 4 are the same exact day; 1, 2 and 3 have no day: one "unknown day" bucket
    assert got == {(0, 4), (1, 2), (1, 3), (2, 3)}
    # without the granularity column the padded first-of-month date would pass as a day
    naive = _pairs(*burst_pairs(owner, date, lat, lon, radius_km=1.0))
    assert (0, 1) in naive
    res = assign_splits(
        keys=[f"k{i}" for i in range(5)],
        province_id=np.zeros(5, np.int8),
        cell_id=np.zeros(5, np.int32),
        owner=owner,
        date_taken=date,
        lat=lat,
        lon=lon,
        sha256=[f"s{i}" for i in range(5)],
        phash=[""] * 5,
        date_granularity=gran,
    )
    assert res.group[0] == res.group[4] and res.group[1] == res.group[2] == res.group[3]
    assert res.group[0] != res.group[1]
