"""YFCC100M: scan the ``yfcc100m_dataset`` metadata for geotagged photos inside the bbox.

The file is 100M lines (tens of GB), so it is streamed (constant memory) in blocks of
``crawl.yfcc.chunk_bytes`` that end at a line end, read into one reused buffer. Each block is
one discovery unit (``c0000042``): a killed scan resumes by skipping blocks whose part exists.

Discovery is columnar from end to end, because it keeps about one row in a hundred and any
per-row Python is paid for all of them: ``yfccscan`` finds the kept photos of a block with a
numpy byte scan and hands them over as an Arrow table of their raw fields (``KEPT_SCHEMA``);
``records_table`` maps that table onto the discovery record columns with pyarrow compute
(URL-decoding, licence names through a lookup of the few distinct (name, URL) pairs, dates
through ``dates.clean_dates``), calling Python only for the rare values the vectorised rules
do not cover; the part is written straight from that table. Licences pass the one licence
policy of every source (the families of ``crawl.flickr.licenses``, as for Flickr and GLDv2):
a row with no licence, or one the policy refuses, is a discovery reject ``license_not_free``
(Commons' reason), decided once per distinct (licence, URL) pair. A Parquet input gives the same
kept table from its columns.

Format (tab-separated, no header, 25 columns, 1-based): 1 line number, 2 photo id, 3 hash,
4 user NSID, 5 user nickname, 6 date taken, 7 date uploaded, 8 capture device, 9 title,
10 description, 11 user tags (comma-separated), 12 machine tags, 13 longitude, 14 latitude,
15 accuracy, 16 page URL, 17 download URL, 18 licence name, 19 licence URL, 20 server id,
21 farm id, 22 secret, 23 original secret, 24 original extension, 25 marker (0 photo,
1 video). Text fields are URL-encoded with ``+`` for spaces; missing coordinates are empty.
A Parquet file with the column names of ``YFCC_COLUMNS`` (or the common spellings in
``_ALIASES``) is read the same way; it may add Flickr's ``datetakengranularity``.

The original Yahoo Webscope release (``yfcc100m_dataset-0`` .. ``-9``) has 23 columns: the
same fields without the line number (column 1) and the hash (column 3). Such a file is
recognised by its first lines and read as it is: each block gets the two empty columns
inserted (one C-level regex substitution per block) before the 25-column scan.

Dates: YFCC holds placeholders (``4501-01-01``-style years, unset camera clocks before 1900)
and dates after the upload; they are stored as missing (see ``dates.py``).
"""

from __future__ import annotations

import bz2
import collections
import gzip
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote, unquote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from geopak_core.errors import GeopakError, not_a_file
from geopak_core.io import PartStore, atomic_path
from geopak_core.progress import log

from ..config import PipelineConfig
from ..country import crawl_bbox
from ..dates import clean_dates
from ..licenses import FLICKR_LICENSES, classify, policy
from ..records import REJECT_SCHEMA, SOURCE_SCHEMA, make_key
from .base import Progress, Source, discovery_rejects, stored_table
from .yfccscan import KEPT_SCHEMA, YFCC_COLUMNS, Block, scan_all

# The columns a Parquet input is read for.
NEEDED = (
    "photoid",
    "uid",
    "unickname",
    "datetaken",
    "dateuploaded",
    "title",
    "usertags",
    "longitude",
    "latitude",
    "accuracy",
    "pageurl",
    "downloadurl",
    "licensename",
    "licenseurl",
    "marker",
)
# Columns only a Parquet conversion may have (never in the TSV).
OPTIONAL = ("datetakengranularity",)
WEBSCOPE_COLUMNS = len(YFCC_COLUMNS) - 2  # the 2014 Webscope files: no line number, no hash
_TEXT = ("unickname", "capturedevice", "title", "description", "licensename")

# Other spellings seen in YFCC conversions (the SQLite dump, the Webscope readme, jfolz/yfcc100m).
_ALIASES = {
    "line": "linenumber",
    "id": "photoid",
    "photovideoidentifier": "photoid",
    "photohash": "hash",
    "usernsid": "uid",
    "userid": "uid",
    "usernickname": "unickname",
    "nickname": "unickname",
    "lon": "longitude",
    "lng": "longitude",
    "lat": "latitude",
    "longlatacc": "accuracy",
    "photovideopageurl": "pageurl",
    "photovideodownloadurl": "downloadurl",
    "license": "licensename",
    "license_name": "licensename",
    "video": "marker",
    "photovideomarker": "marker",
    "photosvideomarker": "marker",
    "dateuploaded": "dateuploaded",
    "granularity": "datetakengranularity",
    "datetakengranularity": "datetakengranularity",
}

# YFCC licence names -> Flickr licence ids (flickr.photos.licenses.getInfo).
_FLICKR_LICENSE_IDS = {
    "attribution-noncommercial-sharealike license": "1",
    "attribution-noncommercial license": "2",
    "attribution-noncommercial-noderivs license": "3",
    "attribution license": "4",
    "attribution-sharealike license": "5",
    "attribution-noderivs license": "6",
    "no known copyright restrictions": "7",
    "public domain dedication (cc0)": "9",
    "public domain mark": "10",
}
_CC_URL = re.compile(
    r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d+(?:\.\d+)?)", re.I
)


def map_license(name: str, url: str = "") -> tuple[str, str]:
    """(short name, Flickr licence id) for a YFCC licence name and URL.

    ``"Attribution-ShareAlike License"`` + ``.../by-sa/2.0/`` -> ``("CC BY-SA 2.0", "5")``.
    The version comes from the URL when it has one; unknown names are kept as they are.
    """
    lid = _FLICKR_LICENSE_IDS.get(name.strip().lower(), "")
    m = _CC_URL.search(url or "")
    if m:
        kind, code, version = m.group(1).lower(), m.group(2).lower(), m.group(3)
        if kind == "licenses":
            return f"CC {code.upper()} {version}", lid
        if code == "zero":
            return f"CC0 {version}", lid or "9"
        if code == "mark":
            return f"Public Domain Mark {version}", lid or "10"
    if lid:
        return FLICKR_LICENSES[int(lid)][0], lid
    return name.strip(), ""


def _norm(name: str) -> str:
    n = re.sub(r"[^a-z0-9]", "", name.lower())
    return _ALIASES.get(n, n)


def _tags(value: str) -> str:
    """Comma-separated, URL-encoded user tags -> space-separated tags (spaces inside removed)."""
    out = []
    for t in value.split(","):
        t = unquote_plus(t).strip().replace(" ", "")
        if t:
            out.append(t)
    return " ".join(out)


# ----------------------------------------------------------------------------- reading


def _compressed(path: Path) -> bool:
    """Whether pyarrow's ``compression="detect"`` reads ``path`` through a codec (by suffix)."""
    try:
        pa.Codec.detect(str(path))
    except (TypeError, ValueError):
        return False
    return True


def _raw_blocks(path: Path, chunk_bytes: int) -> Iterator[memoryview]:
    """The (decompressed) file in blocks of about ``chunk_bytes`` ending at a line end.

    Block boundaries depend only on the bytes and ``chunk_bytes``, so unit numbers are the
    same in every run (what lets a killed scan resume by unit): the first ``chunk_bytes`` of
    what is left, cut after their last newline (``k * chunk_bytes`` for a line longer than
    that); the last block gets a final newline when the file has none. A yielded block is
    valid only until the next one is asked for.
    """
    if not _compressed(path):
        yield from _mapped_blocks(path, chunk_bytes)
        return
    yield from _stream_blocks(path, chunk_bytes)


def _rfind_newline(buf: Any, start: int, end: int) -> int:
    """The last newline of ``buf[start:end]`` (-1: none). One place, so a test can count the
    bytes searched: each byte of a long line must be searched once (linear time)."""
    return buf.rfind(b"\n", start, end)


_MAPPED_LAG = 6  # > scan_all's blocks in flight (at most 5) plus the one being consumed


def _mapped_blocks(path: Path, chunk_bytes: int) -> Iterator[memoryview]:
    """Blocks of a plain file as views of a read-only memory map: no copy at all (reading
    into a buffer cost more than the whole scan of the bytes). The pages of finished blocks
    are dropped from the map (they stay in the page cache) once ``_MAPPED_LAG`` newer blocks
    were handed out (never a block still being scanned: ``scan_all`` keeps at most
    ``_MAX_WORKERS + 1`` in flight), so the memory stays that of a few blocks whatever the
    file's size. The file must not be truncated while
    it is scanned (a memory map then faults)."""
    import mmap

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    released = 0  # the map's pages below this offset were handed back
    starts: collections.deque[int] = collections.deque()  # where the latest blocks begin
    try:
        pos = 0
        while pos < size:
            end, searched = pos + chunk_bytes, pos
            cut = -1
            while end <= size:
                cut = _rfind_newline(mm, searched, end)
                if cut >= 0:
                    break
                searched, end = end, end + chunk_bytes
            if cut < 0:  # the tail: what is left, with a final newline
                yield (
                    view[pos:size]
                    if mm[size - 1] == 10
                    else memoryview(view[pos:size].tobytes() + b"\n")
                )
                return
            yield view[pos : cut + 1]
            pos = cut + 1
            starts.append(pos)
            if len(starts) > _MAPPED_LAG:  # blocks this far behind are scanned and dropped
                done = starts.popleft() // mmap.PAGESIZE * mmap.PAGESIZE
                if done > released:
                    mm.madvise(mmap.MADV_DONTNEED, released, done - released)
                    released = done
    finally:
        try:
            view.release()
            mm.close()
        except BufferError:  # a caller still holds a view: the map goes with the last one
            pass


def _stream_blocks(path: Path, chunk_bytes: int) -> Iterator[memoryview]:
    """Blocks of a compressed file, decompressed into one reused buffer (a fresh allocation
    and a join per block cost more than the scan itself). A line longer than a block makes
    the buffer grow (by doubling: linear) until the line ends."""
    stream = pa.input_stream(str(path), compression="detect")
    try:
        buf = bytearray(chunk_bytes)
        view = memoryview(buf)
        have = 0  # bytes at the start of buf: the carried tail of the previous block
        want = chunk_bytes
        searched = 0  # bytes of buf already known to hold no line end (a long line's head)
        while True:
            eof = False
            while have < want:
                if want > len(buf):  # only for a line longer than a block: grow by doubling,
                    bigger = bytearray(max(want, 2 * len(buf)))  # so a long line costs O(n)
                    bigger[:have] = view[:have]
                    buf, view = bigger, memoryview(bigger)
                got = stream.readinto(view[have:want])
                if not got:
                    eof = True
                    break
                have += got
            if not have:
                return
            if eof:
                if buf[have - 1] != 10:
                    yield memoryview(bytes(view[:have]) + b"\n")
                else:
                    yield view[:have]
                return
            cut = _rfind_newline(buf, searched, have)  # only the bytes read since the last look
            if cut < 0:  # one line longer than a block: keep reading
                searched = have
                want = have + chunk_bytes
                continue
            yield view[: cut + 1]
            rest = have - cut - 1
            view[:rest] = bytes(view[cut + 1 : have])
            have, want, searched = rest, chunk_bytes, 0
    finally:
        stream.close()


def _as_float(col: pa.Array) -> pa.Array:
    """Numbers as float64. Text is read like the TSV reads it: surrounding spaces ignored,
    an empty value is missing, and a value that is no number is missing too (that row is
    then not kept) rather than a failure of the whole file."""
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return pc.cast(col, pa.float64())
    col = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    try:
        return pc.cast(col, pa.float64())
    except pa.ArrowInvalid:
        return pa.array([_float_or_none(v) for v in col.to_pylist()], pa.float64())


def _as_int32(col: pa.Array) -> pa.Array:
    """Whole numbers as int32; a fraction or a value beyond int32 is unknown (null), not a
    failure of the whole file."""
    whole = pc.and_(pc.equal(pc.floor(col), col), pc.less_equal(pc.abs(col), 2**31 - 1))
    return pc.cast(pc.if_else(whole, col, pa.scalar(None, pa.float64())), pa.int32())


def _float_or_none(v: str | None) -> float | None:
    try:
        return None if v is None else float(v)
    except ValueError:
        return None


def _check_scalar_columns(path: Path, schema: pa.Schema, by_norm: dict[str, str]) -> None:
    """Coordinates, accuracy and marker must be numbers or text: a list or struct column
    (a nested export) is a one-line error naming it, not a cast traceback."""
    for c in ("longitude", "latitude", "accuracy", "marker"):
        name = by_norm.get(c)
        if name is None:
            continue
        typ = schema.field(name).type
        if pa.types.is_nested(typ) or not (
            pa.types.is_integer(typ)
            or pa.types.is_floating(typ)
            or pa.types.is_string(typ)
            or pa.types.is_large_string(typ)
            or pa.types.is_decimal(typ)
            or pa.types.is_null(typ)
        ):
            raise GeopakError(
                f"{path}: column {name!r} is {typ}; YFCC {c} must be a number (or text holding one) per row"
            )


def _parquet_blocks(
    path: Path, rows: int, bbox: tuple[float, float, float, float]
) -> Iterator[Block]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise GeopakError(
            f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}"
        ) from None
    by_norm = {_norm(n): n for n in pf.schema_arrow.names}
    missing = [c for c in ("photoid", "longitude", "latitude", "downloadurl") if c not in by_norm]
    if missing:
        raise GeopakError(
            f"{path}: YFCC Parquet lacks column(s) {', '.join(missing)} (have: {', '.join(pf.schema_arrow.names)})"
        )
    _check_scalar_columns(path, pf.schema_arrow, by_norm)
    if pf.metadata.num_rows == 0:
        raise GeopakError(f"{path}: empty metadata file (no rows)")
    use = [c for c in NEEDED + OPTIONAL if c in by_norm]
    for batch in pf.iter_batches(batch_size=rows, columns=[by_norm[c] for c in use]):
        cols: dict[str, pa.Array] = {}
        for c, arr in zip(use, batch.columns, strict=True):
            if c in ("longitude", "latitude"):
                cols[c] = _as_float(arr)
            elif c == "accuracy":
                cols[c] = _as_int32(_as_float(arr))
            elif c == "marker":
                cols[c] = pc.cast(_as_float(arr), pa.int8())
            else:
                cols[c] = pc.fill_null(pc.cast(arr, pa.string()), "")
        n = batch.num_rows
        for c in NEEDED:
            if c not in cols:
                cols[c] = (
                    pa.nulls(n, pa.int8())
                    if c == "marker"
                    else (
                        pa.nulls(n, pa.int32())
                        if c == "accuracy"
                        else pa.array([""] * n, pa.string())
                    )
                )
        table = pa.table(cols)
        keep = select(table, bbox).column("_keep")
        names = KEPT_SCHEMA.names + [c for c in OPTIONAL if c in cols]
        yield Block(n, table.filter(keep).select(names))


_WEBSCOPE_LINE = re.compile(rb"(?m)^([^\t\n]*)\t")


def webscope_to_25(block: bytes | memoryview) -> bytes:
    """23-column Webscope lines -> 25-column lines: an empty line number before the photo id
    and an empty hash after it (neither is read), so the 25-column scan applies unchanged."""
    return _WEBSCOPE_LINE.sub(rb"\t\1\t\t", bytes(block))


def scan_blocks(
    path: str | Path,
    bbox: tuple[float, float, float, float] | list[float],
    *,
    chunk_bytes: int = 32 * 1024 * 1024,
    layout: str = "yfcc25",
) -> Iterator[Block]:
    """The metadata file block by block (deterministic blocks), each with its kept rows:
    photos (marker 0) with valid coordinates inside ``bbox`` (lon_min, lat_min, lon_max, lat_max).
    ``layout``: ``"yfcc25"`` (the 25-column file) or ``"webscope23"`` (see the module doc)."""
    p = Path(path)
    box = tuple(float(v) for v in bbox)
    if p.suffix.lower() in (".parquet", ".pq"):
        yield from _parquet_blocks(p, max(1024, chunk_bytes // 256), box)  # type: ignore[arg-type]
        return
    copy = _compressed(p)  # blocks of a compressed file share one buffer: scanned from copies

    def blocks() -> Iterator[memoryview | bytes]:
        for block in _raw_blocks(p, chunk_bytes):
            if layout == "webscope23":
                yield webscope_to_25(block)
            else:
                yield bytes(block) if copy else block

    yield from scan_all(blocks(), box)  # type: ignore[arg-type]


def check_metadata(path: str | Path, sniff_bytes: int = 1 << 20) -> str:
    """Refuse a file that is not YFCC metadata before any work starts (a wrong ``--metadata``
    is a one-line user error, not a crawl of zero photos): a TSV must have a line with the 25
    columns (or, the 2014 Webscope layout, 23) in its first ``sniff_bytes``; a Parquet file
    must have the needed columns. Returns the layout: ``yfcc25``, ``webscope23`` or ``parquet``."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            names = pq.ParquetFile(p).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise GeopakError(
                f"{p}: not a readable Parquet file: {str(exc).splitlines()[0]}"
            ) from None
        missing = [
            c
            for c in ("photoid", "longitude", "latitude", "downloadurl")
            if c not in {_norm(n) for n in names}
        ]
        if missing:
            raise GeopakError(
                f"{p}: YFCC Parquet lacks column(s) {', '.join(missing)} (have: {', '.join(names)})"
            )
        return "parquet"
    try:
        stream = pa.input_stream(str(p), compression="detect")
        try:
            head = stream.read(sniff_bytes)
        finally:
            stream.close()
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise GeopakError(
            f"{p}: not a readable yfcc100m_dataset file: {str(exc).splitlines()[0]}"
        ) from None
    lines = head.split(b"\n")
    if len(head) == sniff_bytes:
        lines = lines[:-1]  # the last one may be cut
    lines = [ln for ln in lines if ln.strip()]
    if not lines and len(head) < sniff_bytes:  # empty, or blank lines only: the same mistake
        raise GeopakError(f"{p}: empty metadata file (no data lines)")
    if not lines or any(ln.count(b"\t") == len(YFCC_COLUMNS) - 1 for ln in lines):
        return "yfcc25"
    old = [ln for ln in lines if ln.count(b"\t") == WEBSCOPE_COLUMNS - 1]
    if old and len(old) * 2 > len(lines):
        return "webscope23"
    raise GeopakError(
        f"{p}: not a yfcc100m_dataset file: no line has the {len(YFCC_COLUMNS)} tab-separated "
        f"columns (nor the {WEBSCOPE_COLUMNS} of the 2014 Webscope release)"
    )


def select(table: pa.Table, bbox: tuple[float, float, float, float]) -> pa.Table:
    """``table`` with a boolean ``_keep`` column: marker 0 (or empty) and the coordinates
    inside ``bbox``; missing coordinates are never kept. Vectorised."""
    lon_min, lat_min, lon_max, lat_max = bbox
    lon = table.column("longitude")
    lat = table.column("latitude")
    marker = pc.fill_null(table.column("marker"), 0)
    mask = pc.and_kleene(
        pc.and_kleene(pc.greater_equal(lon, lon_min), pc.less_equal(lon, lon_max)),
        pc.and_kleene(pc.greater_equal(lat, lat_min), pc.less_equal(lat, lat_max)),
    )
    mask = pc.fill_null(pc.and_kleene(mask, pc.equal(marker, 0)), False)
    return table.append_column("_keep", mask)


# ----------------------------------------------------------------------------- mapping


def _patched(
    col: pa.Array, where: Any, fn: Callable[[Any], Any], source: pa.Array | None = None
) -> pa.Array:
    """``col`` with the values where the numpy mask ``where`` is set replaced by ``fn`` of
    the same rows of ``source`` (default ``col``), computed in Python for those rows only."""
    if not where.any():
        return col
    mask = pa.array(where)
    values = [fn(v) for v in (col if source is None else source).filter(mask).to_pylist()]
    return pc.replace_with_mask(col, mask, pa.array(values, col.type))


def _mask(arr: pa.Array) -> Any:
    return np.asarray(arr.to_numpy(zero_copy_only=False), bool)


def _unquote_plus(col: pa.Array) -> pa.Array:
    """``urllib.parse.unquote_plus`` of every value (``+`` -> space vectorised; the percent
    escapes, rare in names and titles, decoded in Python for the values that have one)."""
    spaced = pc.replace_substring(col, "+", " ")
    return _patched(spaced, _mask(pc.match_substring(spaced, "%")), unquote)


def _tags_col(col: pa.Array) -> pa.Array:
    """``_tags`` of every value: printable ASCII without ``%`` vectorised (``+`` dropped, runs
    of commas one space), anything else through ``_tags``."""
    simple = _mask(pc.match_substring_regex(col, r"^[!-$&-~]*$"))
    joined = pc.replace_substring_regex(pc.replace_substring(col, "+", ""), ",+", " ")
    return _patched(pc.utf8_trim(joined, " "), ~simple, _tags, source=col)


def _licences(names: pa.Array, urls: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``map_license`` of every (name, URL) row: called once per distinct pair (a handful)."""
    n = len(names)
    if n == 0:
        return pa.array([], pa.string()), pa.array([], pa.string())
    dn, du = names.dictionary_encode(), urls.dictionary_encode()
    code = dn.indices.to_numpy().astype(np.int64) * len(du.dictionary) + du.indices.to_numpy()
    pairs, inverse = np.unique(code, return_inverse=True)
    got = [
        map_license(
            dn.dictionary[int(c) // len(du.dictionary)].as_py(),
            du.dictionary[int(c) % len(du.dictionary)].as_py(),
        )
        for c in pairs.tolist()
    ]
    take = pa.array(inverse.reshape(-1))
    return (
        pa.array([a for a, _ in got], pa.string()).take(take),
        pa.array([b for _, b in got], pa.string()).take(take),
    )


def _ids(photoid: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(source_id, key) of every row: ``str(photoid).strip()`` and ``make_key("yfcc", id)``;
    plain ids (the YFCC numbers) need neither, the rest go through them in Python."""
    plain = _mask(pc.match_substring_regex(photoid, r"^[A-Za-z0-9_-]{1,64}$"))
    sid = _patched(photoid, ~plain, lambda v: str(v).strip())
    key = _patched(
        pc.binary_join_element_wise("yfcc", sid, "-"),
        ~plain,
        lambda v: make_key("yfcc", v),
        source=sid,
    )
    return sid, key


def _if_empty(col: pa.Array, then: Any, other: Any) -> pa.Array:
    return pc.if_else(pc.equal(col, ""), then, other)


def records_table(kept: pa.Table) -> pa.Table:
    """Kept YFCC rows (``KEPT_SCHEMA``) -> discovery records (``SOURCE_SCHEMA``), vectorised:
    text URL-decoded, licence mapped, dates cleaned, the attribution line composed."""
    col = {c: kept.column(c).combine_chunks() for c in kept.column_names}
    n = kept.num_rows
    sid, key = _ids(col["photoid"])
    nick = _unquote_plus(col["unickname"])
    owner = _if_empty(nick, col["uid"], nick)
    title = _unquote_plus(col["title"])
    short, lid = _licences(_unquote_plus(col["licensename"]), col["licenseurl"])
    gran = col.get("datetakengranularity")
    taken, granularity = clean_dates(
        _unquote_plus(col["datetaken"]),
        None if gran is None else gran.to_pylist(),
        col["dateuploaded"],
    )
    page = col["pageurl"]
    attribution = pc.binary_join_element_wise(
        '"',
        _if_empty(title, sid, title),
        '"',
        _if_empty(owner, "", pc.binary_join_element_wise(" by ", owner, "")),
        ", ",
        _if_empty(short, "licence unknown", short),
        _if_empty(page, "", pc.binary_join_element_wise(", ", page, "")),
        " (Flickr, via YFCC100M)",
        "",
    )
    out = {
        "key": key,
        "source": pa.array(["yfcc"] * n, pa.string()),
        "source_id": sid,
        "url": col["downloadurl"],
        "lat": col["latitude"],
        "lon": col["longitude"],
        "accuracy": col["accuracy"],
        "license": short,
        "license_id": lid,
        "license_url": col["licenseurl"],
        "owner": owner,
        "title": title,
        "tags": _tags_col(col["usertags"]),
        "date_taken": taken,
        "date_granularity": granularity,
        "attribution": attribution,
        "restricted": pa.array([False] * n, pa.bool_()),
        "group_id": pa.array([""] * n, pa.string()),
    }
    return pa.table(out, schema=SOURCE_SCHEMA)


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` produced one step ahead in a background thread, in the same order.

    Why: discovery is two halves that can overlap. Scanning a block is numpy and pyarrow work
    that releases the GIL (and reads the file); turning its kept rows into records and writing
    the Parquet part is Python that holds it. Scanning block i+1 while block i is mapped and
    written keeps both cores busy. Blocks are independent of the read buffer (their kept rows
    are copies), so they may wait in the queue. An error in the producer is raised here, at the
    point of the stream where it happened; closing this generator (or the consumer failing)
    stops the producer.
    """
    import queue

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put((None, x)):
                    return
            put((None, done))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            put((exc, None))

    worker = threading.Thread(target=produce, name="yfcc-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            exc, x = q.get()
            if exc is not None:
                raise exc
            if x is done:
                return
            yield x
    finally:
        stop.set()
        worker.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()


class YfccSource(Source):
    """Photos from the YFCC100M metadata file (``--metadata``), kept when inside ``crawl.bbox``."""

    name = "yfcc"

    def __init__(
        self,
        config: PipelineConfig,
        endpoint: str | None = None,
        *,
        metadata: str | Path | None = None,
        chunk_bytes: int | None = None,
        **opts: Any,
    ):
        super().__init__(config, endpoint, **opts)
        path = metadata or config.crawl.yfcc.metadata
        if not path:
            raise GeopakError(
                "yfcc: no metadata file; pass --metadata FILE or set crawl.yfcc.metadata"
            )
        self.metadata = Path(path)
        if not self.metadata.is_file():
            raise GeopakError(not_a_file(self.metadata, "yfcc metadata file"))
        self.chunk_bytes = int(chunk_bytes or config.crawl.yfcc.chunk_bytes)
        self.bbox = crawl_bbox(config)  # crawl.bbox, else the country's
        self.layout = check_metadata(self.metadata)
        # The one licence policy (the families of crawl.flickr.licenses), as for Flickr and GLDv2.
        self.allowed = policy(config.crawl.flickr.licenses)

    def inputs(self) -> dict[str, Path]:
        return {"metadata": self.metadata}

    def extra(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint or "",
            "chunk_bytes": self.chunk_bytes,
            "licence_families": sorted(self.allowed),
        }

    def describe(self) -> str:
        old = " (2014 Webscope 23-column layout)" if self.layout == "webscope23" else ""
        return f"yfcc: {self.metadata.name}{old} inside bbox {list(self.bbox)}"

    def discover(self, parts: PartStore, *, progress: Progress) -> None:
        self.malformed = 0
        blocks = prefetched(
            scan_blocks(self.metadata, self.bbox, chunk_bytes=self.chunk_bytes, layout=self.layout)
        )
        try:
            self._write_blocks(blocks, parts, progress)
        finally:
            blocks.close()  # stops the scan thread whatever happened here

    def _write_blocks(self, blocks: Iterator[Block], parts: PartStore, progress: Progress) -> None:
        scanned = 0
        i = 0
        pending: list[tuple[str, pa.Table]] = []
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError, EOFError) as exc:
                raise GeopakError(
                    f"{self.metadata}: not a readable yfcc100m_dataset file: {str(exc).splitlines()[0]}"
                ) from None
            if i == 0 and block.rows == 0:
                raise GeopakError(
                    f"{self.metadata}: not a yfcc100m_dataset file: no line has the "
                    f"{len(YFCC_COLUMNS)} tab-separated columns"
                )
            unit = f"c{i:07d}"
            i += 1
            scanned += block.rows
            self.malformed += block.malformed
            if parts.has(unit):
                continue
            pending.append((unit, block.kept))
            if len(pending) >= _MAP_UNITS or sum(t.num_rows for _, t in pending) >= _MAP_ROWS:
                _write_mapped(parts, pending, progress, self.allowed)
                pending = []
            progress.set_postfix_str(f"{scanned:,} rows scanned", refresh=False)
        _write_mapped(parts, pending, progress, self.allowed)
        if self.malformed:
            log.warning(
                "yfcc: %d malformed line(s) of %s skipped (not %d tab-separated columns, or "
                "coordinates that are no numbers)",
                self.malformed,
                self.metadata.name,
                len(YFCC_COLUMNS),
            )


# Kept rows of this many blocks (or this many rows) are mapped in one go: the mapping's cost is
# mostly per call, not per row. Few, so that mapping still overlaps the scan of the next blocks
# (and the last batch, mapped after the scan, is small); a kill loses at most these blocks.
_MAP_UNITS = 2
_MAP_ROWS = 20_000


def _write_mapped(
    parts: PartStore,
    pending: list[tuple[str, pa.Table]],
    progress: Progress,
    allowed: frozenset[str],
) -> None:
    """Map the kept rows of ``pending`` (unit, kept table) together, then commit one part
    per unit in unit order (mapping is per row, so this equals mapping unit by unit). Rows
    the licence policy refuses go to the unit's discovery rejects (committed first: the
    records part is the unit's commit mark)."""
    if not pending:
        return
    mapped = stored_table(records_table(pa.concat_tables([t for _, t in pending])))
    refused, detail = licence_refused(mapped, allowed)
    at = 0
    for unit, kept in pending:
        part = mapped.slice(at, kept.num_rows)
        bad = refused[at : at + kept.num_rows]
        if bad.any():
            why = detail[at : at + kept.num_rows][bad].tolist()
            discovery_rejects(parts).write(unit, _licence_rejects(part.filter(pa.array(bad)), why))
            part = part.filter(pa.array(~bad))
        parts.write(unit, part)
        at += kept.num_rows
        progress.update(part.num_rows)


def _licence_rejects(rows: pa.Table, detail: list[str]) -> pa.Table:
    """``records.reject_rows`` of the refused records, columnar (a policy may refuse many)."""
    n = rows.num_rows
    cols = {c: rows.column(c) for c in ("key", "source", "source_id", "url")}
    cols["stage"] = pa.array(["discover"] * n, pa.string())
    cols["reason"] = pa.array(["license_not_free"] * n, pa.string())
    cols["detail"] = pa.array(detail, pa.string())
    return pa.table(cols, schema=REJECT_SCHEMA)


def licence_refused(records: pa.Table, allowed: frozenset[str]) -> tuple[Any, Any]:
    """(numpy mask of the records whose licence is unknown or not one of the ``allowed``
    families, the reason's detail per record). Vectorised: ``licenses.classify`` runs once per
    distinct (licence, URL) pair, a handful in the whole file."""
    pairs = pc.binary_join_element_wise(
        records.column("license"), records.column("license_url"), "\t"
    ).combine_chunks()
    enc = pairs.dictionary_encode()
    verdicts = [_verdict(str(p), allowed) for p in enc.dictionary.to_pylist()]
    idx = enc.indices.to_numpy(zero_copy_only=False)
    detail = np.array([*verdicts, ""], object)[idx]
    return np.asarray(detail != "", bool), detail


def _verdict(pair: str, allowed: frozenset[str]) -> str:
    """Why a ``license<TAB>license_url`` pair is refused ("" when it is allowed)."""
    name, _, url = pair.partition("\t")
    if not name and not url:
        return "licence unknown: the row names none"
    lic = classify(name, url)
    if lic.family in allowed:
        return ""
    return (
        f"licence {name or url!r} is not one of the allowed families ({', '.join(sorted(allowed))})"
    )


# ----------------------------------------------------------------------------- writing (tests, demo)


def _field(col: str, value: Any) -> str:
    if value is None:
        return ""
    if col == "usertags" or col == "machinetags":
        tags = value.split() if isinstance(value, str) else list(value)
        return ",".join(quote_plus(str(t)) for t in tags)
    if col in _TEXT:
        return quote_plus(str(value))
    s = str(value)
    return s.replace("\t", " ").replace("\n", " ")


def yfcc_line(row: Mapping[str, Any], line_number: int = 0) -> str:
    """One ``yfcc100m_dataset`` line (no newline) from a mapping of ``YFCC_COLUMNS`` names.

    Missing columns are empty; text is URL-encoded with ``+`` for spaces like the real file;
    ``usertags`` may be a list or a space-separated string.
    """
    values = dict(row)
    values.setdefault("linenumber", line_number)
    values.setdefault("marker", 0)
    return "\t".join(_field(c, values.get(c)) for c in YFCC_COLUMNS)


def write_yfcc_tsv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as a ``yfcc100m_dataset`` file (``.gz``/``.bz2`` by suffix), atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        suffix = p.suffix.lower()
        opener = gzip.open if suffix == ".gz" else bz2.open if suffix == ".bz2" else open
        with opener(tmp, "wt", encoding="utf-8", newline="\n") as fh:  # type: ignore[operator]
            for i, row in enumerate(rows):
                fh.write(yfcc_line(row, i) + "\n")
    return p


def write_yfcc_parquet(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """The same rows as a Parquet file with ``YFCC_COLUMNS`` names (text kept URL-encoded)."""
    from geopak_core.io import atomic_write_parquet

    lines = [yfcc_line(r, i).split("\t") for i, r in enumerate(rows)]
    cols: dict[str, list[Any]] = {c: [ln[j] for ln in lines] for j, c in enumerate(YFCC_COLUMNS)}
    table = pa.table(cols)
    for c, typ in (
        ("longitude", pa.float64()),
        ("latitude", pa.float64()),
        ("accuracy", pa.int32()),
        ("marker", pa.int8()),
    ):
        table = table.set_column(
            table.schema.get_field_index(c), c, _cast_col(table.column(c), typ)
        )
    atomic_write_parquet(path, table)
    return Path(path)


def _cast_col(col: pa.ChunkedArray, typ: pa.DataType) -> pa.ChunkedArray:
    col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    return pc.cast(pc.cast(col, pa.float64()), typ)
