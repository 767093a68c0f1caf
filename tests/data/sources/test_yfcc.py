"""YFCC100M metadata: formats, decoding, filtering, licences and resumable discovery."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore
from geopak_data.config import load_config
from geopak_data.sources import NullProgress, get_source
from geopak_data.sources.base import discovery_rejects
from geopak_data.sources.yfcc import (
    YFCC_COLUMNS,
    map_license,
    write_yfcc_parquet,
    write_yfcc_tsv,
    yfcc_line,
)

CC_BY = dict(
    licensename="Attribution License", licenseurl="http://creativecommons.org/licenses/by/2.0/"
)
ROWS = [
    dict(
        photoid=101,
        unickname="Ali Khan",
        title="Badshahi Mosque, Lahore",
        usertags=["lahore", "badshahi mosque"],
        datetaken="2010-05-21 14:20:33.0",
        longitude=74.3095,
        latitude=31.5881,
        accuracy=16,
        downloadurl="http://farm4.staticflickr.com/1/101_a.jpg",
        pageurl="http://www.flickr.com/photos/x/101/",
        licensename="Attribution-ShareAlike License",
        licenseurl="http://creativecommons.org/licenses/by-sa/2.0/",
    ),
    dict(
        photoid=102, longitude=None, latitude=None, downloadurl="http://x/102.jpg"
    ),  # no coordinates
    dict(
        photoid=103, longitude=73.05, latitude=33.68, marker=1, downloadurl="http://x/103.mp4"
    ),  # a video
    dict(photoid=104, longitude=2.35, latitude=48.85, downloadurl="http://x/104.jpg", **CC_BY),
    dict(
        photoid=105,
        uid="12345@N00",
        longitude=67.0,
        latitude=24.86,
        accuracy=11,
        downloadurl="http://x/105.jpg",
        licensename="Attribution-NonCommercial License",
        licenseurl="http://creativecommons.org/licenses/by-nc/2.0/",
    ),
    dict(photoid=106, longitude=0.0, latitude=0.0, downloadurl="http://x/106.jpg"),  # null island
]


def discover(tmp_path, path, **cfg_over):
    cfg = load_config(None, cfg_over or None)
    src = get_source("yfcc", config=cfg, metadata=path)
    parts = PartStore(tmp_path / f"parts-{path.name}")
    src.discover(parts, progress=NullProgress())
    return parts, parts.read_all()


def test_real_format_shape(tmp_path):
    line = yfcc_line(ROWS[0], 7)
    cols = line.split("\t")
    assert len(cols) == 25 == len(YFCC_COLUMNS)
    # 1-based columns of the contract: lon 13, lat 14, accuracy 15, URL 17, licence 18, marker 25
    assert cols[12] == "74.3095" and cols[13] == "31.5881" and cols[14] == "16"
    assert (
        cols[16].startswith("http://farm4")
        and cols[17] == "Attribution-ShareAlike+License"
        and cols[24] == "0"
    )
    assert cols[8] == "Badshahi+Mosque%2C+Lahore"  # URL-encoded, + for spaces


@pytest.mark.parametrize("name", ["m.tsv", "m.tsv.gz", "m.tsv.bz2", "m.parquet"])
def test_formats_give_the_same_records(tmp_path, name):
    path = tmp_path / name
    (write_yfcc_parquet if name.endswith(".parquet") else write_yfcc_tsv)(path, ROWS)
    if name.endswith(".gz"):
        assert gzip.open(path, "rt").readline().count("\t") == 24
    _, t = discover(tmp_path, path)
    recs = {r["source_id"]: r for r in t.to_pylist()}
    assert sorted(recs) == ["101", "105"]  # no coords, video, outside bbox, (0,0) dropped
    r = recs["101"]
    assert r["key"] == "yfcc-101" and r["source"] == "yfcc"
    assert (r["lat"], r["lon"], r["accuracy"]) == (31.5881, 74.3095, 16)
    assert r["title"] == "Badshahi Mosque, Lahore" and r["owner"] == "Ali Khan"
    assert r["tags"] == "lahore badshahimosque"
    assert r["date_taken"] == "2010-05-21T14:20:33"
    assert (r["license"], r["license_id"]) == ("CC BY-SA 2.0", "5")
    assert r["url"] == "http://farm4.staticflickr.com/1/101_a.jpg"
    assert "Ali Khan" in r["attribution"] and "CC BY-SA 2.0" in r["attribution"]
    assert recs["105"]["owner"] == "12345@N00"  # no nickname: the NSID
    assert recs["105"]["license"] == "CC BY-NC 2.0"


def test_parquet_with_other_column_spellings(tmp_path):
    path = tmp_path / "alt.parquet"
    pq.write_table(
        pa.table(
            {
                "ID": ["1", "2"],
                "Longitude": ["74.3", ""],
                "Latitude": ["31.5", ""],
                "DownloadURL": ["http://x/1.jpg", "http://x/2.jpg"],
                "Video": [0, 0],
                "License": ["Attribution License", "Attribution License"],
            }
        ),
        path,
    )
    _, t = discover(tmp_path, path)
    assert t.column("source_id").to_pylist() == ["1"]


def test_parquet_missing_columns_is_a_user_error(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"foo": [1]}), path)
    with pytest.raises(GeopakError, match="lacks column"):
        discover(tmp_path, path)


def test_bbox_from_config(tmp_path):
    path = write_yfcc_tsv(tmp_path / "m.tsv", ROWS)
    _, t = discover(tmp_path, path, **{"crawl.bbox": [0.0, 40.0, 10.0, 50.0]})
    assert t.column("source_id").to_pylist() == ["104"]


def test_malformed_rows_skipped_and_unreadable_file_refused(tmp_path):
    path = tmp_path / "m.tsv"
    good = [yfcc_line(r, i) for i, r in enumerate(ROWS)]
    path.write_text("\n".join(good[:1] + ["only\tthree\tcolumns"] + good[1:]) + "\n")
    _, t = discover(tmp_path, path)
    assert sorted(t.column("source_id").to_pylist()) == ["101", "105"]
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(GeopakError, match="not a readable"):
        discover(tmp_path, bad)


def test_missing_or_absent_metadata_is_a_user_error(tmp_path):
    cfg = load_config()
    with pytest.raises(GeopakError, match="not found"):
        get_source("yfcc", config=cfg, metadata=tmp_path / "nope.tsv")
    with pytest.raises(GeopakError, match="--metadata"):
        get_source("yfcc", config=cfg)


def test_discovery_resumes_by_unit(tmp_path):
    rows = [
        dict(
            photoid=i,
            longitude=70 + (i % 50) * 0.1,
            latitude=30.0,
            downloadurl=f"http://x/{i}.jpg",
            title=f"photo {i}",
            **CC_BY,
        )
        for i in range(600)
    ]
    path = write_yfcc_tsv(tmp_path / "big.tsv", rows)
    cfg = load_config(None, {"crawl.yfcc.chunk_bytes": 8192})
    src = get_source("yfcc", config=cfg, metadata=path)
    parts = PartStore(tmp_path / "p")
    src.discover(parts, progress=NullProgress())
    units = sorted(parts.done_units())
    assert len(units) > 3
    full = parts.read_all(units)
    assert full.num_rows == 600 and full.column("source_id").to_pylist() == [
        str(i) for i in range(600)
    ]
    # a kill after some units: remove the later parts, run again, get the same table
    for u in units[2:]:
        (parts.folder / f"{u}.parquet").unlink()
    src.discover(parts, progress=NullProgress())
    assert parts.read_all(sorted(parts.done_units())).equals(full)


@pytest.mark.parametrize(
    "name,url,expected",
    [
        ("Attribution License", "http://creativecommons.org/licenses/by/2.0/", ("CC BY 2.0", "4")),
        ("Attribution-NonCommercial-ShareAlike License", "", ("CC BY-NC-SA 2.0", "1")),
        (
            "Attribution-NoDerivs License",
            "http://creativecommons.org/licenses/by-nd/2.0/",
            ("CC BY-ND 2.0", "6"),
        ),
        (
            "Attribution-NonCommercial-NoDerivs License",
            "http://creativecommons.org/licenses/by-nc-nd/2.0/",
            ("CC BY-NC-ND 2.0", "3"),
        ),
        (
            "Public Domain Dedication (CC0)",
            "https://creativecommons.org/publicdomain/zero/1.0/",
            ("CC0 1.0", "9"),
        ),
        ("Something Else", "", ("Something Else", "")),
    ],
)
def test_license_mapping(name, url, expected):
    assert map_license(name, url) == expected


def _by_lines(block: bytes, bbox) -> tuple[int, list, int]:
    """The reference: every line read as text by ``_parse_line`` (rows, kept rows, malformed)."""
    from geopak_data.sources.yfccscan import _python_lines, _python_table

    lines, pos = [], 0
    for i, raw in enumerate(
        block.split(b"\n")[:-1] if block.endswith(b"\n") else block.split(b"\n")
    ):
        lines.append((i, pos, pos + len(raw)))
        pos += len(raw) + 1
    rows, bad, _, kept = _python_lines(block, lines, bbox)
    return rows, _python_table(kept).to_pylist(), bad


def _scanned(block: bytes, bbox, scratch=None) -> tuple[int, list, int]:
    from geopak_data.sources.yfccscan import Scratch, scan_block

    res = scan_block(block, bbox, scratch or Scratch())
    return res.rows, res.kept.to_pylist(), res.malformed


def test_scan_keeps_what_the_line_by_line_reading_keeps():
    rows = [
        dict(
            photoid=i,
            longitude=60 + (i % 40) * 0.5,
            latitude=20 + (i % 30) * 0.6,
            marker=int(i % 11 == 0),
            accuracy=i % 17 or None,
            title=f"t {i}",
            downloadurl=f"http://x/{i}.jpg",
        )
        for i in range(400)
    ]
    block = ("\n".join(yfcc_line(r, i) for i, r in enumerate(rows)) + "\n").encode()
    bbox = (60.8, 23.55, 77.9, 37.15)
    got = _scanned(block, bbox)
    assert got == _by_lines(block, bbox)
    assert got[0] == 400 and len(got[1]) > 50 and got[2] == 0
    # a malformed coordinate and an empty line: only that line is lost, and it is counted
    k = int(got[1][0]["photoid"])
    lines = [yfcc_line(r, i) for i, r in enumerate(rows)]
    cols = lines[k].split("\t")
    cols[12] = "not-a-number"
    lines[k] = "\t".join(cols)
    broken = ("\n".join(lines[:10] + [""] + lines[10:]) + "\n").encode()
    res = _scanned(broken, bbox)
    assert res == (400, got[1][1:], 1) == _by_lines(broken, bbox)


@pytest.mark.parametrize(
    "content",
    [
        b'name = "x"\n[filter]\nmin_side = 1\n',
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x02\x00\n\x9c\x80\xfe\t\x01\n",
    ],
)
def test_wrong_file_type_is_refused_before_any_work(tmp_path, content):
    # A TOML or a JPEG passed as --metadata must be a one-line error at construction (before any
    # progress bar), not a crawl of zero photos; non-UTF-8 bytes must not print pyarrow noise.
    path = tmp_path / "wrong.tsv"
    path.write_bytes(content)
    with pytest.raises(GeopakError, match="not a yfcc100m_dataset file"):
        get_source("yfcc", config=load_config(), metadata=path)


def test_non_utf8_malformed_line_takes_the_quiet_slow_path(tmp_path, capfd):
    path = tmp_path / "m.tsv"
    good = [yfcc_line(r, i).encode() for i, r in enumerate(ROWS)]
    path.write_bytes(b"\n".join(good[:1] + [b"\xff\xfe\tbinary"] + good[1:]) + b"\n")
    _, t = discover(tmp_path, path)
    assert sorted(t.column("source_id").to_pylist()) == ["101", "105"]
    assert "Traceback" not in capfd.readouterr().err


# ----------------------------------------------------------------------------- byte-level fast path

BBOX = (60.8, 23.55, 77.9, 37.15)
# Coordinates the fast path parses itself (plain decimals, bbox edges, long digit runs that round
# onto an edge, "-0", leading zeros) and empty ones.
PLAIN = [
    "74.3095",
    "31.5881",
    "-0",
    "-0.0",
    "007.50",
    "60.8",
    "77.9",
    "23.55",
    "37.15",
    "60.79999999999999999",
    "77.90000000000000001",
    "37.150000000000000001",
    "23.549999999999999",
    "-122.419415",
    "0",
    "100",
    "12345678901234567890.12345678901234567890",
    "",
]
# Anything else: the block must take the exact path (or give the same answer).
ODD = [
    "1e1",
    "7.43e1",
    "+74.3",
    " 74.3",
    "74.3 ",
    ".5",
    "5.",
    "nan",
    "inf",
    "-",
    "abc",
    "74,3",
    "74.3\r",
    "\xff",
    "1" * 25,
    "123456789012345678901.5",
]


def _rand_line(rng, odd: bool) -> bytes:
    import random as _random

    assert isinstance(rng, _random.Random)
    f = [
        str(rng.randrange(10**6)),
        str(rng.randrange(10**10)),
        "h",
        "1@N00",
        "nick+name",
        "2010-05-21 14:20:33.0",
        "1274449233",
        "",
        rng.choice(["t", "", "caf%C3%A9", "a\rb", "\xe9t\xe9"]),
        "",
        "a,b",
        "",
        rng.choice(PLAIN),
        rng.choice(PLAIN),
        str(rng.randrange(17)),
        "http://p/",
        f"http://x/{rng.randrange(999)}.jpg",
        "Attribution+License",
        "http://creativecommons.org/licenses/by/2.0/",
        "1",
        "2",
        "s",
        "o",
        "jpg",
        rng.choice("0001"),
    ]
    if rng.random() < 0.3:  # coordinates inside the bbox, to be kept
        f[12], f[13] = (
            f"{rng.uniform(60.7, 78.0):.{rng.randrange(0, 9)}f}",
            f"{rng.uniform(23.5, 37.2):.{rng.randrange(0, 9)}f}",
        )
    if f[24] == "1" and rng.random() < 0.3:  # a video's coordinates are never looked at
        f[rng.choice((12, 13))] = rng.choice(ODD)
    if rng.random() < 0.1:  # one empty coordinate: the other is never looked at either
        k = rng.choice((12, 13))
        f[k], f[25 - k] = "", rng.choice(ODD + PLAIN)
    raw = "\t".join(f).encode(
        "latin-1" if rng.random() < 0.1 else "utf-8"
    )  # latin-1: non-UTF-8 text bytes
    if not odd:
        return raw
    kind = rng.randrange(12)
    if kind == 0:
        f[rng.choice((12, 13))] = rng.choice(ODD)
        f[24] = "0"
        return "\t".join(f).encode("utf-8", "surrogateescape")
    return [
        raw + b"\r",  # CRLF
        raw + b"\textra",  # 26 fields
        raw.rsplit(b"\t", 1)[0],  # 24 fields
        b"",  # empty line
        b"  ",  # blank line
        b"\t" * 24,  # 25 empty fields
        b" \t" * 24 + b"0",  # blank fields, marker 0
        raw[:-1] + rng.choice([b"", b"2", b"00", b" 0", b"-1", b"1 "]),  # odd markers
        raw.replace(b"\tnick", b"\tni\x00ck"),  # a control byte
        raw.replace(b"\th\t", b"\t\xff\xfe\t"),  # non-UTF-8 in a field
        b"only\tthree\tcolumns",
    ][kind - 1]


def _rand_block(rng, n: int, odd_rate: float) -> bytes:
    return b"".join(_rand_line(rng, rng.random() < odd_rate) + b"\n" for _ in range(n))


def _counting_parse_line(monkeypatch) -> list:
    """Count the lines read one by one (the Python reference) instead of vectorised."""
    from geopak_data.sources import yfccscan

    calls: list = []
    real = yfccscan._parse_line

    def counted(raw, bbox):
        calls.append(raw)
        return real(raw, bbox)

    monkeypatch.setattr(yfccscan, "_parse_line", counted)
    return calls


def test_well_formed_blocks_are_decided_without_python_per_line(monkeypatch):
    import random

    from geopak_data.sources.yfccscan import Scratch

    rng = random.Random(3)
    scratch = Scratch()
    kept = 0
    for _ in range(150):
        block = _rand_block(rng, rng.randrange(1, 40), 0.0)
        want = _by_lines(block, BBOX)
        calls = _counting_parse_line(monkeypatch)
        got = _scanned(block, BBOX, scratch)
        monkeypatch.undo()
        assert got == want
        assert [(r["longitude"], r["latitude"]) for r in got[1]] == [
            (r["longitude"], r["latitude"]) for r in want[1]
        ]
        odd = [ln for ln in block.split(b"\n") if _odd_coordinates(ln)]
        assert len(calls) == len(odd)  # only lines with a coordinate the scan does not parse
        kept += len(got[1])
    assert kept > 500


def _odd_coordinates(line: bytes) -> bool:
    import re

    f = line.split(b"\t")
    plain = re.compile(rb"^-?[0-9]+(\.[0-9]+)?$")
    if len(f) != 25 or not f[12] or not f[13]:
        return False
    return not all(plain.match(v) and sum(c.isdigit() for c in v.decode()) <= 15 for v in f[12:14])


@pytest.mark.parametrize("workers", [1, 3])
def test_scan_with_malformed_lines_gives_the_line_by_line_answer(workers):
    import random

    from geopak_data.sources.yfccscan import scan_all

    rng = random.Random(workers)
    blocks = []
    for _ in range(250):
        block = _rand_block(rng, rng.randrange(1, 12), 0.25)
        if rng.random() < 0.05:
            block = block[:-1]  # no final newline
        blocks.append(block)
    got = [
        (b.rows, b.kept.to_pylist(), b.malformed)
        for b in scan_all(iter(blocks), BBOX, workers=workers)  # in threads, in block order
    ]
    assert got == [_by_lines(block, BBOX) for block in blocks]
    assert sum(len(k) for _, k, _ in got) > 100 and sum(b for _, _, b in got) > 100


def test_threaded_scan_stops_when_closed_and_raises_where_a_block_failed():
    import threading

    from geopak_data.sources.yfccscan import scan_all

    good = (yfcc_line(ROWS[0], 1) + "\n").encode()
    asked = []

    def endless():
        while True:
            asked.append(1)
            yield good

    gen = scan_all(endless(), BBOX, workers=2)
    assert next(gen).kept.num_rows == 1
    gen.close()
    n = len(asked)
    assert n <= 4 and not any(t.name.startswith("yfcc-scan") for t in threading.enumerate())
    with pytest.raises(TypeError):
        list(scan_all(iter([good, 42, good]), BBOX, workers=2))  # not bytes: raised in order


def test_odd_coordinates_are_read_like_python_reads_them():
    good = yfcc_line(ROWS[0], 1)
    assert _scanned((good + "\n").encode(), BBOX)[1][0]["photoid"] == "101"
    cases = {
        "7.43095e1": (1, 1, 0),  # an exponent: a number, inside the bbox
        "+74.3095": (1, 1, 0),
        " 74.3095 ": (1, 1, 0),
        "74.3095\r": (1, 1, 0),
        "nan": (1, 0, 0),  # a number, never inside
        "inf": (1, 0, 0),
        "abc": (1, 0, 1),  # no number: a row, and malformed
        "74,3": (1, 0, 1),
        "\xff": (1, 0, 1),
        "1" * 25: (1, 0, 0),  # a number far outside
        "74.30950000000000000001": (1, 1, 0),  # more digits than the vectorised parse takes
    }
    for lon, (rows, kept, bad) in cases.items():
        cols = good.split("\t")
        cols[12] = lon
        block = ("\t".join(cols) + "\n").encode("utf-8", "surrogateescape")
        got = _scanned(block, BBOX)
        assert (got[0], len(got[1]), got[2]) == (rows, kept, bad), lon
        assert got == _by_lines(block, BBOX)
    for block in [good.encode(), (good + "\r\n").encode(), (good + "\n\n").encode()]:
        assert _scanned(block, BBOX)[1][0]["photoid"] == "101"


def test_plain_decimals_parse_to_the_correctly_rounded_double():
    import random
    import re

    import numpy as np

    from geopak_data.sources.yfccscan import _plain_values

    rng = random.Random(1)
    vals = ["-0", "0", "-0.0", "007.50", "1.", ".5", "-", "1e5", "+1", "1.2.3", "--1", "1-"]
    vals += ["0.000000000000001", "999999999999999", "9999999999999999", "-.5", "5.-", "-1."]
    for _ in range(20000):
        k = rng.randrange(4)
        if k == 0:
            vals.append(f"{rng.uniform(-180, 180):.{rng.randrange(0, 12)}f}")
        elif k == 1:
            vals.append(str(rng.randrange(10 ** rng.randrange(1, 16))))
        elif k == 2:
            vals.append("".join(rng.choice("0123456789.-") for _ in range(rng.randrange(1, 18))))
        else:
            vals.append(repr(rng.uniform(-1, 1)))
    data = b"".join(v.encode() + b"\t" for v in vals)
    lens = np.array([len(v) for v in vals])
    starts = np.concatenate([[0], np.cumsum(lens + 1)[:-1]])
    values, ok = _plain_values(np.frombuffer(data, np.uint8), starts, lens)
    plain = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
    for v, x, o in zip(vals, values, ok, strict=True):
        assert o == (bool(plain.match(v)) and sum(c.isdigit() for c in v) <= 15), v
        if o:
            assert x == float(v) and np.signbit(x) == np.signbit(float(v)), v
    assert ok.sum() > 10000


def _reference_blocks(data: bytes, chunk: int) -> list[bytes]:
    """Block boundaries as defined: the first ``chunk`` bytes (more, k * chunk, for a longer
    line) of what is left, cut after their last newline; the tail gets a final newline."""
    out, pos = [], 0
    while pos < len(data):
        k = 1
        while True:
            window = data[pos : pos + k * chunk]
            if len(window) < k * chunk:
                out.append(window if window.endswith(b"\n") else window + b"\n")
                return out
            cut = window.rfind(b"\n")
            if cut >= 0:
                break
            k += 1
        out.append(window[: cut + 1])
        pos += cut + 1
    return out


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2"])
def test_raw_blocks_boundaries(tmp_path, suffix):
    import bz2
    import random

    from geopak_data.sources.yfcc import _raw_blocks

    rng = random.Random(len(suffix))
    for trial in range(12):
        lines = [
            bytes(rng.randrange(32, 127) for _ in range(rng.choice([0, 5, 40, 300])))
            for _ in range(rng.randrange(0, 30))
        ]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.7 else b"")
        chunk = rng.choice([16, 64, 100, 257])
        path = tmp_path / f"m{trial}.tsv{suffix}"
        path.write_bytes(
            gzip.compress(data)
            if suffix == ".gz"
            else bz2.compress(data)
            if suffix == ".bz2"
            else data
        )
        got = [bytes(b) for b in _raw_blocks(path, chunk)]  # copy: a block is valid until the next
        assert got == _reference_blocks(data, chunk)


def test_placeholder_and_impossible_dates_are_missing(tmp_path):
    base = dict(
        longitude=74.3,
        latitude=31.5,
        downloadurl="http://x/1.jpg",
        dateuploaded=1274449233,
        **CC_BY,
    )
    rows = [
        dict(base, photoid=201, datetaken="4501-01-01 00:00:00.0"),  # placeholder year
        dict(base, photoid=202, datetaken="1899-12-31 23:59:59.0"),  # before 1900
        dict(base, photoid=203, datetaken="2011-01-01 00:00:00.0"),  # after its 2010 upload
        dict(base, photoid=204, datetaken="2010-05-21 14:20:33.0"),  # fine
        dict(base, photoid=205, datetaken="not a date"),
    ]
    _, t = discover(tmp_path, write_yfcc_tsv(tmp_path / "d.tsv", rows))
    got = dict(
        zip(t.column("source_id").to_pylist(), t.column("date_taken").to_pylist(), strict=True)
    )
    assert got == {"201": "", "202": "", "203": "", "204": "2010-05-21T14:20:33", "205": ""}
    assert t.column("date_granularity").to_pylist() == [None] * 5  # YFCC's TSV has none


def test_parquet_granularity_column_is_kept(tmp_path):
    path = tmp_path / "g.parquet"
    write_yfcc_parquet(path, [dict(ROWS[0])])
    t = pq.read_table(path)
    t = t.append_column("datetakengranularity", pa.array([4], pa.int8()))
    pq.write_table(t, path)
    _, out = discover(tmp_path, path)
    rec = out.to_pylist()[0]
    assert rec["date_taken"] == "2010-05" and rec["date_granularity"] == 4


def _webscope_lines(rows):
    """The 2014 Webscope layout: the 25 columns without line number (1) and hash (3)."""
    out = []
    for i, r in enumerate(rows):
        f = yfcc_line(r, i).split("\t")
        out.append("\t".join([f[1]] + f[3:]))
    return out


def test_webscope_23_column_files_are_read(tmp_path):
    lines = _webscope_lines(ROWS)
    assert all(len(ln.split("\t")) == 23 for ln in lines)
    path = tmp_path / "yfcc100m_dataset-0.bz2"
    import bz2

    path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    src = get_source("yfcc", config=load_config(None), metadata=path)
    assert src.layout == "webscope23" and "Webscope" in src.describe()
    _, t = discover(tmp_path, path)
    want = write_yfcc_tsv(tmp_path / "same.tsv", ROWS)
    _, t25 = discover(tmp_path, want)
    assert t.to_pylist() == t25.to_pylist()  # same records as the 25-column file


def test_other_column_counts_are_refused_naming_both_layouts(tmp_path):
    path = tmp_path / "odd.tsv"
    path.write_text("a\tb\tc\n" * 3)
    with pytest.raises(
        GeopakError, match=r"25 tab-separated columns \(nor the 23 of the 2014 Webscope"
    ):
        get_source("yfcc", config=load_config(None), metadata=path)


def test_prefetched_keeps_order_raises_where_the_producer_failed_and_stops_on_close():
    import threading

    from geopak_data.sources.yfcc import prefetched

    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in prefetched(failing()):
            got.append(x)
    assert got == [1, 2]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = prefetched(endless(), depth=1)
    assert next(gen) == 0
    gen.close()
    n = len(produced)
    assert not any(t.name == "yfcc-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) == n  # nothing more is produced once closed


# ----------------------------------------------------------------------------- record mapping


def _reference_record(row: dict) -> dict:
    """The row-by-row mapping discovery used before it was columnar: the definition
    ``records_table`` must reproduce exactly (kept here as the test's oracle)."""
    from urllib.parse import unquote_plus

    from geopak_data.dates import clean_date, from_unix
    from geopak_data.records import empty_record, make_key
    from geopak_data.sources.yfcc import _tags

    sid = str(row["photoid"]).strip()
    owner = unquote_plus(row.get("unickname") or "") or str(row.get("uid") or "")
    title = unquote_plus(row.get("title") or "")
    license_url = row.get("licenseurl") or ""
    short, lid = map_license(unquote_plus(row.get("licensename") or ""), license_url)
    taken, granularity = clean_date(
        unquote_plus(row.get("datetaken") or ""),
        row.get("datetakengranularity"),
        uploaded=from_unix(row.get("dateuploaded")),
    )
    page = row.get("pageurl") or ""
    who = f" by {owner}" if owner else ""
    attribution = (
        f'"{title or sid}"{who}, {short or "licence unknown"}'
        + (f", {page}" if page else "")
        + " (Flickr, via YFCC100M)"
    )
    return empty_record(
        key=make_key("yfcc", sid),
        source="yfcc",
        source_id=sid,
        url=row.get("downloadurl") or "",
        lat=float(row["latitude"]),
        lon=float(row["longitude"]),
        accuracy=row["accuracy"],
        license=short,
        license_id=lid,
        license_url=license_url,
        owner=owner,
        title=title,
        tags=_tags(row.get("usertags") or ""),
        date_taken=taken,
        date_granularity=granularity,
        attribution=attribution,
        restricted=False,
    )


def _reference_table(kept_rows: list) -> pa.Table:
    """Reference records as ``write_unit`` stores them (credentials stripped row by row)."""
    from geopak_data.records import SOURCE_SCHEMA, records_to_table
    from geopak_data.sources.base import _stored

    return records_to_table(_stored(_reference_record(r) for r in kept_rows), SOURCE_SCHEMA)


def _reference_by_policy(records: pa.Table) -> tuple[pa.Table, list[str]]:
    """The records the default licence policy keeps, row by row, and the keys it refuses."""
    from geopak_data.licenses import classify, policy

    allowed = policy(load_config().crawl.flickr.licenses)
    ok = [classify(r["license"], r["license_url"]).family in allowed for r in records.to_pylist()]
    refused = [k for k, good in zip(records.column("key").to_pylist(), ok, strict=True) if not good]
    return records.filter(pa.array(ok)), refused


NASTY = {
    1: [" 7 ", "a.b", "x" * 70, "", "\u00e97", "7", "12345"],  # photo id
    3: ["", "1@N00"],  # uid
    4: ["", "A+b", "%E2%9C%93", "%ZZ", "a%2", "+", "caf%C3%A9+x", "%ff"],  # nickname
    5: [  # date taken
        "2010-05-21 14:20:33.0",
        "2010-02-30 10:00:00.0",
        "4501-01-01 00:00:00.0",
        "1899-12-31 23:59:59.0",
        "2011-05-21 14:20:33.0",
        "2010-05-21+14%3A20%3A33.0",
        "2010-5-2",
        "2010",
        "2010-05",
        "2010-05-21T14:20:33",
        "",
        "x",
        " 2010-05-21 14:20:33.0 ",
        "2010-05-21 24:00:00.0",
        "2000-02-29 12:00:00.0",
        "1900-02-29 12:00:00.0",
        "2010-05-21 14:20:60.0",
        "2099-01-01 00:00:00.0",
        "2010-05-22 14:20:33.0",
        "2010-05-22 14:20:34.0",
    ],
    6: ["1274449233", "", "0", "-5", "1.27e9", " 1274449233", "abc", "99999999999", "1274449233.7"],
    8: [
        "",
        "T",
        "a%0Ab",
        "http://u:p@h/x",
        "see+https://h/x?api_key=S",
        "%ff%fe",
        "x+y",
        "\xe9t\xe9",
    ],
    10: ["", "a,b", ",,a,,", "a+b,c%20d", "%2C,x", "\xe9t\xe9,a", "a\x00b", "+,+", "a b", "A,a"],
    14: ["16", "", " 3 ", "x", "99999999999", "\xb2", "007", "1.5"],  # accuracy
    15: [
        "",
        "http://www.flickr.com/photos/1@N00/5/",
        "http://u:pw@flickr.com/p/",
        "http://h/?token=t",
    ],
    16: ["http://x/a.jpg", "http://u:p@x/a.jpg", "http://x/a.jpg?key=K&x=1", ""],
    17: [
        "Attribution+License",
        "",
        "Public+Domain+Dedication+%28CC0%29",
        "Something+Else",
        "Attribution-ShareAlike+License",
    ],
    18: [
        "",
        "http://creativecommons.org/licenses/by/2.0/",
        "https://creativecommons.org/publicdomain/zero/1.0/",
        "http://creativecommons.org/publicdomain/mark/1.0/",
    ],
}


def _nasty_lines(rng, n: int) -> list[bytes]:
    """Kept photos with every text field drawn from ``NASTY`` (and some odd coordinates and
    markers), mixed with the scan tests' random and malformed lines."""
    base = yfcc_line(dict(ROWS[0], photoid=5, dateuploaded="1274449233")).split("\t")
    out = [_rand_line(rng, rng.random() < 0.2) for _ in range(n)]
    for _ in range(n // 4):
        f = list(base)
        for k, choices in NASTY.items():
            f[k] = rng.choice(choices)
        if rng.random() < 0.2:
            f[12] = rng.choice(["7.43e1", " 74.3", "74.3 ", "+74.3", "nan", "1_0", "74.", ".5"])
        if rng.random() < 0.1:
            f[24] = rng.choice(["", " 0", "00", "0\r", "2", "x", "1"])
        out.append("\t".join(f).encode("utf-8", "surrogateescape"))
    rng.shuffle(out)
    return out


def test_records_match_the_row_by_row_mapping(tmp_path):
    """The columnar discovery gives exactly the records of the row-by-row mapping, on a file
    of nasty rows, whatever the block size."""
    import random

    from geopak_data.sources.yfccscan import Scratch, scan_block

    rng = random.Random(11)
    data = b"\n".join(_nasty_lines(rng, 3000)) + b"\n"
    path = tmp_path / "nasty.tsv"
    path.write_bytes(data)
    want = scan_block(data, BBOX, Scratch()).kept.to_pylist()
    reference, refused = _reference_by_policy(_reference_table(want))
    assert reference.num_rows > 500 and len(refused) > 20
    for chunk in (4096, 1 << 16, 1 << 22):
        cfg = load_config(None, {"crawl.yfcc.chunk_bytes": chunk, "crawl.bbox": list(BBOX)})
        src = get_source("yfcc", config=cfg, metadata=path)
        parts = PartStore(tmp_path / f"p{chunk}")
        src.discover(parts, progress=NullProgress())
        got = parts.read_all(sorted(parts.done_units()))
        assert got.to_pylist() == reference.to_pylist(), chunk
        rejects = discovery_rejects(parts)
        rej = rejects.read_all(sorted(rejects.done_units()))
        assert rej.column("key").to_pylist() == refused, chunk
        assert set(rej.column("reason").to_pylist()) == {"license_not_free"}
    assert src.malformed == _by_lines(data, BBOX)[2] > 100


def test_parquet_records_match_the_row_by_row_mapping(tmp_path):
    import random

    from geopak_data.sources.base import write_unit_table
    from geopak_data.sources.yfcc import records_table, scan_blocks

    rng = random.Random(12)
    rows = []
    for line in _nasty_lines(rng, 400):
        f = line.decode("utf-8", "replace").split("\t")
        if len(f) == 25:
            rows.append(dict(zip(YFCC_COLUMNS, f, strict=True)))
    table = pa.table({c: [r[c] for r in rows] for c in YFCC_COLUMNS})
    gran = pa.array([rng.choice([None, 0, 4, 6, 8, 3]) for _ in rows], pa.int8())
    path = tmp_path / "m.parquet"
    pq.write_table(table.append_column("datetakengranularity", gran), path)
    kept = pa.concat_tables(b.kept for b in scan_blocks(path, BBOX))
    assert kept.num_rows > 50
    parts = PartStore(tmp_path / "p")
    write_unit_table(parts, "c0", records_table(kept))
    assert parts.read("c0").to_pylist() == _reference_table(kept.to_pylist()).to_pylist()


def test_clean_dates_agrees_with_clean_date():
    import datetime as dt
    import random

    from geopak_data.dates import clean_date, clean_dates, from_unix

    rng = random.Random(5)
    values, grans, ups = [], [], []
    for _ in range(3000):
        y, mo, d = (
            rng.choice([1899, 1900, 2000, 2004, 2010, 2100, 4501]),
            rng.randrange(0, 14),
            rng.randrange(0, 33),
        )
        h, mi, s = rng.randrange(0, 26), rng.randrange(0, 62), rng.randrange(0, 62)
        values.append(
            rng.choice(
                [
                    f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}.0",
                    f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}",
                    f"{y:04d}-{mo}-{d}",
                    f"{y:04d}",
                    f" {y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d} ",
                    rng.choice(NASTY[5]),
                ]
            )
        )
        grans.append(rng.choice([None, 0, 4, 6, 8, 3, "4", "x", 4.5]))
        ups.append(rng.choice(NASTY[6] + [str(rng.randrange(1, 2 * 10**9))]))
    today = dt.date(2026, 12, 1)
    iso, gran = clean_dates(pa.array(values), grans, pa.array(ups), today=today)
    want = [
        clean_date(v, g, uploaded=from_unix(u), today=today)
        for v, g, u in zip(values, grans, ups, strict=True)
    ]
    got = list(zip(iso.to_pylist(), gran.to_pylist(), strict=True))
    rows = zip(values, grans, ups, got, want, strict=True)
    assert [(v, g, u, a, b) for v, g, u, a, b in rows if a != b] == []
    assert sum(1 for w, _ in want if w) > 300


def test_table_writes_strip_credentials_like_row_writes(tmp_path):
    from geopak_data.records import SOURCE_SCHEMA, empty_record, records_to_table
    from geopak_data.sources.base import write_unit, write_unit_table

    texts = ["", "plain", "http://h/p", "see https://u:p@h/x", "x http://h/?api_key=K y", "a@b"]
    texts += ["http://www.flickr.com/photos/1@N00/5/", "HTTP://u:p@h/", "http://h/p#?key=1"]
    recs = [
        empty_record(
            key=f"yfcc-{i}",
            source="yfcc",
            source_id=str(i),
            url=u,
            license_url=lu,
            title=t,
            attribution=a,
        )
        for i, (u, lu, t, a) in enumerate(
            (u, lu, t, a)
            for u in ("http://x/a.jpg", "http://u:p@x/a.jpg", "http://x/a?token=T&b=1")
            for lu in ("", "http://u:p@cc/")
            for t in texts
            for a in texts[::-1]
        )
    ]
    rows, cols = PartStore(tmp_path / "rows"), PartStore(tmp_path / "cols")
    write_unit(rows, "u", recs)
    write_unit_table(cols, "u", records_to_table(recs, SOURCE_SCHEMA))
    assert cols.read("u").to_pylist() == rows.read("u").to_pylist()
    assert "K" not in str(cols.read("u").to_pylist())
