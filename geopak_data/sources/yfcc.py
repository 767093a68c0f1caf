"""YFCC100M: scan the ``yfcc100m_dataset`` metadata for geotagged photos inside the bbox.

The file is 100M lines (tens of GB), so it is streamed (constant memory) in blocks of
``crawl.yfcc.chunk_bytes`` that end at a line end, read into one reused buffer. Only
longitude, latitude and marker decide whether a line is kept, so a block is first scanned at
the byte level in numpy (no per-row Python): tab and newline positions give every line's
fields, the lines that are photos with both coordinates get those two short fields parsed
(``pyarrow.compute``, after a strict plain-decimal check), the bbox mask is vectorised, and
only the few kept lines are decoded and split in Python. A block that scan does not fully
recognise (a line without exactly 25 fields, a marker other than ``0``/``1``, a coordinate
that is not a plain decimal, CRLF, control bytes) takes the previous exact path instead:
pyarrow's CSV parser on the three filter columns, and for malformed or empty lines a
line-by-line parse that skips the bad lines. Each block is one discovery unit
(``c0000042``): a killed scan resumes by skipping blocks whose part exists.

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
import gzip
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pyarrow as pa
import pyarrow.compute as pc

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore, atomic_path
from geopak_core.progress import log

from ..config import PipelineConfig
from ..country import crawl_bbox
from ..dates import clean_date, from_unix
from ..licenses import FLICKR_LICENSES
from ..records import empty_record, make_key
from .base import Progress, Source, write_unit

YFCC_COLUMNS: tuple[str, ...] = (
    "linenumber",
    "photoid",
    "hash",
    "uid",
    "unickname",
    "datetaken",
    "dateuploaded",
    "capturedevice",
    "title",
    "description",
    "usertags",
    "machinetags",
    "longitude",
    "latitude",
    "accuracy",
    "pageurl",
    "downloadurl",
    "licensename",
    "licenseurl",
    "serverid",
    "farmid",
    "secret",
    "secretoriginal",
    "ext",
    "marker",
)
# Columns the scan converts (the rest are parsed but never materialised).
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


@dataclass
class Block:
    """One discovery unit of the metadata: how many rows it held and the rows kept."""

    rows: int
    kept: list[dict[str, Any]]
    malformed: int = 0  # non-blank lines skipped: wrong column count, unparsable coordinates


_FILTER_COLS = ("longitude", "latitude", "marker")
_IDX = {c: i for i, c in enumerate(YFCC_COLUMNS)}


def _raw_blocks(path: Path, chunk_bytes: int) -> Iterator[memoryview]:
    """The (decompressed) file in blocks of about ``chunk_bytes`` ending at a line end.

    Block boundaries depend only on the bytes and ``chunk_bytes``, so unit numbers are the
    same in every run (what lets a killed scan resume by unit). The file is read straight
    into one reused buffer (a fresh allocation and a join per block cost more than the scan
    itself), so a yielded block is valid only until the next one is asked for. A line longer
    than a block makes the buffer grow until the line ends.
    """
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
            cut = buf.rfind(b"\n", searched, have)  # only the bytes read since the last look
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


def _row_from_fields(f: list[str], lon: float, lat: float) -> dict[str, Any]:
    acc = f[_IDX["accuracy"]].strip()
    row: dict[str, Any] = {
        c: f[_IDX[c]] for c in NEEDED if c not in ("longitude", "latitude", "accuracy", "marker")
    }
    row.update(longitude=lon, latitude=lat, accuracy=int(acc) if acc.isdigit() else None, marker=0)
    return row


def _in_box(lon: float, lat: float, bbox: tuple[float, float, float, float]) -> bool:
    return bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]


def _scan_block_slow(block: bytes | memoryview, bbox: tuple[float, float, float, float]) -> Block:
    """Line-by-line fallback for a block with malformed or empty lines (never the common case)."""
    rows = 0
    bad = 0
    kept = []
    for raw in bytes(block).split(b"\n"):
        if not raw.strip():
            continue
        f = raw.decode("utf-8", "replace").split("\t")
        if len(f) != len(YFCC_COLUMNS):
            bad += 1
            continue
        rows += 1
        lon_s, lat_s = f[_IDX["longitude"]].strip(), f[_IDX["latitude"]].strip()
        if not lon_s or not lat_s:
            continue  # no coordinates: a normal YFCC row, never kept
        try:
            lon, lat = float(lon_s), float(lat_s)
            marker = int(f[_IDX["marker"]] or 0)
        except ValueError:
            bad += 1
            continue
        if marker == 0 and _in_box(lon, lat, bbox):
            kept.append(_row_from_fields(f, lon, lat))
    return Block(rows, kept, bad)


def _scan_block_arrow(block: bytes | memoryview, bbox: tuple[float, float, float, float]) -> Block:
    """Exact path for a block the byte-level scan does not recognise: pyarrow parses only the
    three filter columns (multi-threaded), the mask is vectorised, only kept lines are split
    in Python; malformed or empty lines send the block on to the line-by-line parse."""
    import numpy as np
    import pyarrow.csv as pacsv

    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
    lines = len(ends)
    try:
        table = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(
                column_names=list(YFCC_COLUMNS),
                block_size=max(1 << 20, len(block) // 8 + 1),
                use_threads=True,
            ),
            # No invalid_row_handler: a malformed line raises and the block takes the slow path
            # (a handler would be given the line as text and fail noisily on non-UTF-8 bytes).
            parse_options=pacsv.ParseOptions(
                delimiter="\t", quote_char=False, escape_char=False, newlines_in_values=False
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(_FILTER_COLS),
                column_types={
                    "longitude": pa.float64(),
                    "latitude": pa.float64(),
                    "marker": pa.int8(),
                },
            ),
        )
    except pa.ArrowInvalid:
        return _scan_block_slow(block, bbox)
    if table.num_rows != lines:  # rows no longer line up with lines
        return _scan_block_slow(block, bbox)
    mask = (
        select(table, bbox).column("_keep").to_numpy(zero_copy_only=False)
        if table.num_rows
        else np.zeros(0, bool)
    )
    hits = np.flatnonzero(mask)
    if hits.size == 0:
        return Block(lines, [])
    starts = np.concatenate(([0], ends[:-1] + 1))
    lon = table.column("longitude").to_numpy(zero_copy_only=False)
    lat = table.column("latitude").to_numpy(zero_copy_only=False)
    kept = []
    for i in hits.tolist():
        f = bytes(block[starts[i] : ends[i]]).decode("utf-8", "replace").split("\t")
        kept.append(_row_from_fields(f, float(lon[i]), float(lat[i])))
    return Block(lines, kept)


_NSEP = len(YFCC_COLUMNS)  # separators per line: 24 tabs and the newline
# 0-based index (among a line's separators) of the tab that ends longitude (column 13),
# latitude (14) and original extension (24, so the marker follows it); the newline is last.
_LON_END, _LAT_END, _MARKER_TAB = _IDX["longitude"], _IDX["latitude"], _IDX["marker"] - 1
# A coordinate the fast path parses itself: a plain decimal, which Python's float(), pyarrow's
# CSV reader and pyarrow's cast all turn into the same correctly rounded double. Anything else
# (exponent, sign "+", spaces, "nan", "1.", ".5", very long) sends the block to the exact path.
_PLAIN_DECIMAL = r"^-?[0-9]{1,20}(?:\.[0-9]{1,20})?$"
_MAX_COORD = 42  # the longest plain decimal above: refused early without gathering it


class _Scratch:
    """Buffers reused from block to block (a fresh block-sized mask costs page faults)."""

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._mask = np.empty(0, bool)
        self._pattern = np.empty(0, np.uint8)
        self._other: _Scratch | None = None

    def other(self) -> _Scratch:
        """The buffers of the second thread."""
        if self._other is None:
            self._other = _Scratch()
        return self._other

    def mask(self, n: int) -> Any:
        if self._mask.size < n:
            self._mask = self._np.empty(n, bool)
        return self._mask[:n]

    def pattern(self, lines: int) -> Any:
        """The separator bytes of ``lines`` well-formed lines: 24 tabs and a newline each."""
        if self._pattern.size < lines * _NSEP:
            one = self._np.array([9] * (_NSEP - 1) + [10], self._np.uint8)
            self._pattern = self._np.tile(one, max(lines, 2 * self._pattern.size // _NSEP))
        return self._pattern[: lines * _NSEP]


def _plain_decimals(arr: Any, starts: Any, lengths: Any) -> Any:
    """float64 values of the byte fields ``arr[starts[i] : starts[i] + lengths[i]]``, or None when
    any field is not a plain decimal. The fields are gathered into one contiguous binary array
    (vectorised), checked with one regex and converted with one cast."""
    import numpy as np

    n = len(starts)
    if int(lengths.max()) > _MAX_COORD:
        return None
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 1 << 31:  # beyond 32-bit offsets (a block of gigabytes)
        return None
    data = arr[np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))]
    fields = pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )
    if not pc.all(pc.match_substring_regex(fields, _PLAIN_DECIMAL)).as_py():
        return None
    values = pc.cast(fields.view(pa.string()), pa.float64())  # plain ASCII decimals: valid UTF-8
    return np.frombuffer(values.buffers()[1], np.float64, count=n, offset=values.offset * 8)


_PARALLEL_BYTES = 4 << 20  # blocks at least this big are scanned as two halves in two threads


def _scan_block_fast(
    block: bytes | memoryview, bbox: tuple[float, float, float, float], scratch: _Scratch
) -> Block | None:
    """The byte-level scan of one block, or None when it does not recognise the block (then
    ``_scan_block_arrow`` decides). A big block is cut at the line end nearest its middle and
    the halves are scanned in two threads (numpy releases the GIL); lines are independent,
    so the two results joined are the result of one scan, and either half refusing refuses
    the block."""
    size = len(block)
    if size >= _PARALLEL_BYTES and (os.cpu_count() or 1) > 1:
        view = memoryview(block)
        near = bytes(view[size // 2 : size // 2 + (1 << 16)]).find(b"\n")
        if 0 <= near < size - size // 2 - 1:
            cut = size // 2 + near + 1
            second: list[Any] = []

            def run() -> None:
                try:
                    second.append(_scan_lines(view[cut:], bbox, scratch.other()))
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    second.append(exc)

            worker = threading.Thread(target=run, name="yfcc-scan", daemon=True)
            worker.start()
            try:
                first = _scan_lines(view[:cut], bbox, scratch)
            finally:
                worker.join()
            if not second:
                raise RuntimeError("yfcc: scan thread ended without a result")
            if isinstance(second[0], BaseException):
                raise second[0]
            if first is None or second[0] is None:
                return None
            return Block(first.rows + second[0].rows, first.kept + second[0].kept)
    return _scan_lines(block, bbox, scratch)


def _scan_lines(
    block: bytes | memoryview, bbox: tuple[float, float, float, float], scratch: _Scratch
) -> Block | None:
    """The byte-level scan of some whole lines (see the module docstring), or None when they
    hold anything it does not recognise, so that ``_scan_block_arrow`` decides (same result).

    Every line must have exactly 24 tabs and no other byte below 11, end with ``\\n`` and
    carry the marker ``0`` or ``1``; the coordinates of the lines that are photos with both
    coordinates must be plain decimals. On such a block the exact paths agree line by line
    (a video or a line with an empty coordinate is counted and never kept by either), so
    this gives the same rows, kept lines and values.
    """
    import numpy as np

    size = len(block)
    arr = np.frombuffer(block, np.uint8)
    if size == 0 or arr[-1] != 10:
        return None
    mask = scratch.mask(size)
    np.less_equal(arr, 10, out=mask)  # tabs and newlines (and control bytes: refused below)
    seps = np.flatnonzero(mask)
    if seps.size % _NSEP:
        return None
    lines = seps.size // _NSEP
    if not np.array_equal(arr[seps], scratch.pattern(lines)):
        return None
    # the five separators used, copied out in one pass: before/after longitude, after
    # latitude, before the marker, the newline
    cols = seps.reshape(lines, _NSEP)[:, [_LON_END - 1, _LON_END, _LAT_END, _MARKER_TAB, _NSEP - 1]]
    lon_start, lon_end, lat_end, line_end = cols[:, 0] + 1, cols[:, 1], cols[:, 2], cols[:, 4]
    marker_at = cols[:, 3] + 1
    if not np.array_equal(line_end, marker_at + 1):  # the marker is one byte
        return None
    marker = arr[marker_at]
    photo = marker == 48
    if not np.all(photo | (marker == 49)):
        return None
    cand = np.flatnonzero(photo & (lon_end > lon_start) & (lat_end > lon_end + 1))
    if cand.size == 0:
        return Block(lines, [])
    starts = np.empty(2 * cand.size, np.int64)
    starts[0::2] = lon_start[cand]
    starts[1::2] = lon_end[cand] + 1
    lengths = np.empty(2 * cand.size, np.int64)
    lengths[0::2] = lon_end[cand] - starts[0::2]
    lengths[1::2] = lat_end[cand] - starts[1::2]
    values = _plain_decimals(arr, starts, lengths)
    if values is None:
        return None
    lon, lat = values[0::2], values[1::2]
    keep = (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])
    kept = []
    for j in np.flatnonzero(keep).tolist():
        i = int(cand[j])
        start = int(line_end[i - 1]) + 1 if i else 0
        f = bytes(block[start : int(line_end[i])]).decode("utf-8", "replace").split("\t")
        kept.append(_row_from_fields(f, float(lon[j]), float(lat[j])))
    return Block(lines, kept)


def _scan_block(
    block: bytes | memoryview,
    bbox: tuple[float, float, float, float],
    scratch: _Scratch | None = None,
) -> Block:
    """Filter one block: the byte-level numpy scan when it recognises the block, else the exact
    pyarrow / line-by-line paths. ``scratch`` carries reused buffers from block to block."""
    fast = _scan_block_fast(block, bbox, scratch or _Scratch())
    return fast if fast is not None else _scan_block_arrow(block, bbox)


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
                cols[c] = pc.cast(_as_float(arr), pa.int32())
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
        yield Block(n, table.filter(keep).to_pylist())


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
    scratch = _Scratch()
    for block in _raw_blocks(p, chunk_bytes):
        if layout == "webscope23":
            block = memoryview(webscope_to_25(block))
        yield _scan_block(block, box, scratch)  # type: ignore[arg-type]


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


def to_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One kept YFCC row -> a discovery record (text URL-decoded, licence mapped)."""
    sid = str(row["photoid"]).strip()
    owner = unquote_plus(row.get("unickname") or "") or str(row.get("uid") or "")
    title = unquote_plus(row.get("title") or "")
    license_name = unquote_plus(row.get("licensename") or "")
    license_url = row.get("licenseurl") or ""
    short, lid = map_license(license_name, license_url)
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
        accuracy=None if row.get("accuracy") is None else int(row["accuracy"]),
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
            raise GeopakError(f"yfcc metadata file not found: {self.metadata}")
        self.chunk_bytes = int(chunk_bytes or config.crawl.yfcc.chunk_bytes)
        self.bbox = crawl_bbox(config)  # crawl.bbox, else the country's
        self.layout = check_metadata(self.metadata)

    def inputs(self) -> dict[str, Path]:
        return {"metadata": self.metadata}

    def extra(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint or "", "chunk_bytes": self.chunk_bytes}

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
            n = write_unit(parts, unit, (to_record(r) for r in block.kept))
            progress.update(n)
            progress.set_postfix_str(f"{scanned:,} rows scanned", refresh=False)
        if self.malformed:
            log.warning(
                "yfcc: %d malformed line(s) of %s skipped (not %d tab-separated columns, or "
                "coordinates that are no numbers)",
                self.malformed,
                self.metadata.name,
                len(YFCC_COLUMNS),
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
