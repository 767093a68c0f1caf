"""The YFCC100M TSV scan: one block of lines in, the kept photos out as an Arrow table.

Why a byte-level scan: discovery reads 100M lines to keep about one in a hundred, so the
cost is finding the fields, not using them. pyarrow's CSV reader (measured: about as fast as
this scan for the three filter columns alone) parses every requested column of every row:
the fields a kept row needs, parsed for all rows, cost twice the whole scan, and it gives no
line offsets to fetch them for the kept rows only. Here one numpy pass finds every tab and
newline of the block; a line with exactly 25 fields gets its three filter fields (longitude,
latitude, marker) checked and converted vectorised, and only the kept lines' other fields
are gathered (one fancy-index copy) into Arrow string columns.

Exactness: the rules are those of reading the line as text, ``line.split("\\t")`` after a
UTF-8 decode with replacement (``_parse_line``, the reference). The vectorised part decides
only what it recognises: a line of 25 fields whose coordinates are both empty, or both plain
decimals of up to 15 digits (parsed in numpy into the correctly rounded double, the value
Python's ``float`` gives), with the marker ``0``, ``1`` or empty. Every other line (a wrong field count, a
blank line, an exponent or spaces in a coordinate, an odd marker, CRLF) is read by
``_parse_line`` itself; both results are merged in line order. A malformed line costs one
Python call, never the block.

Counts: ``rows`` are the lines with 25 fields that are not blank (a line of 24 tabs only is
blank); ``malformed`` the non-blank lines without 25 fields and the lines whose coordinates
are both set but are no numbers (or whose marker is no integer).
"""

from __future__ import annotations

import collections
import os
import queue
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
_IDX = {c: i for i, c in enumerate(YFCC_COLUMNS)}
# The text fields a kept row carries on to the record mapping (as they are in the file).
TEXT_FIELDS = (
    "photoid",
    "uid",
    "unickname",
    "datetaken",
    "dateuploaded",
    "title",
    "usertags",
    "pageurl",
    "downloadurl",
    "licensename",
    "licenseurl",
)
# The kept-rows table every reader (TSV and Parquet) produces; the mapping reads only these
# (and ``datetakengranularity`` when a Parquet file has it).
KEPT_SCHEMA = pa.schema(
    [(c, pa.string()) for c in TEXT_FIELDS]
    + [("longitude", pa.float64()), ("latitude", pa.float64()), ("accuracy", pa.int32())]
)
_NSEP = len(YFCC_COLUMNS)  # separators per line: 24 tabs and the newline
_LON, _LAT, _ACC, _MARKER = _IDX["longitude"], _IDX["latitude"], _IDX["accuracy"], _IDX["marker"]
# A coordinate the vectorised path converts itself: a plain decimal of up to 15 digits. Anything
# else (exponent, "+", spaces, "nan", "1.", ".5", more digits) is read by _parse_line.
_MAX_DIGITS = 15  # digits of a coordinate the vectorised path converts (see _plain_values)
_POW10 = np.array([float(10**k) for k in range(_MAX_DIGITS + 3)])  # exact doubles
# Byte classes of a coordinate field.
_DIGIT, _DOT, _MINUS, _OTHER, _PAST_END = 0, 1, 2, 3, 4
_CLASS = np.full(256, _OTHER, np.uint8)
_CLASS[ord("0") : ord("9") + 1] = _DIGIT
_CLASS[ord(".")] = _DOT
_CLASS[ord("-")] = _MINUS
_INT32_MAX = 2**31 - 1
_MAX_WORKERS = 4  # blocks scanned at once (each holds a block-sized mask)


@dataclass
class Block:
    """One discovery unit of the metadata: how many rows it held and the rows kept."""

    rows: int
    kept: pa.Table  # KEPT_SCHEMA (Parquet input: plus datetakengranularity when present)
    malformed: int = 0  # non-blank lines skipped: wrong column count, unparsable coordinates


def empty_kept() -> pa.Table:
    """A kept table without rows."""
    return KEPT_SCHEMA.empty_table()


class Scratch:
    """Buffers reused from block to block (a fresh block-sized mask costs page faults)."""

    def __init__(self) -> None:
        self._mask = np.empty(0, bool)

    def mask(self, n: int) -> Any:
        if self._mask.size < n:
            self._mask = np.empty(n, bool)
        return self._mask[:n]


# ----------------------------------------------------------------------------- the reference


def _accuracy(text: str) -> int | None:
    """Accuracy as the file gives it: digits (surrounding spaces ignored), else unknown."""
    acc = text.strip()
    try:
        value = int(acc) if acc.isdigit() else None
    except ValueError:  # a digit int() refuses ("²")
        return None
    return value if value is not None and value <= _INT32_MAX else None


def _parse_line(raw: bytes, bbox: tuple[float, float, float, float]) -> tuple[str, Any]:
    """One line read as text: ``("blank", None)``, ``("malformed", None)``, ``("bad", None)``
    (25 fields but coordinates or marker no numbers: a row and malformed), ``("row", None)``
    or ``("kept", fields)``. The definition every faster path must agree with."""
    if not raw.strip():
        return "blank", None
    f = raw.decode("utf-8", "replace").split("\t")
    if len(f) != _NSEP:
        return "malformed", None
    lon_s, lat_s = f[_LON].strip(), f[_LAT].strip()
    if not lon_s or not lat_s:
        return "row", None  # no coordinates: a normal YFCC row, never kept
    try:
        lon, lat = float(lon_s), float(lat_s)
        marker = int(f[_MARKER] or 0)
    except ValueError:
        return "bad", None
    if marker == 0 and bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]:
        return "kept", (f, lon, lat)
    return "row", None


def _python_lines(
    block: memoryview | bytes,
    bounds: list[tuple[int, int, int]],
    bbox: tuple[float, float, float, float],
) -> tuple[int, int, list[int], list[Any]]:
    """``_parse_line`` on the lines ``(index, start, end)``: (rows, malformed, kept line
    indices, kept (fields, lon, lat))."""
    rows = bad = 0
    where: list[int] = []
    kept: list[Any] = []
    for i, a, b in bounds:
        status, got = _parse_line(bytes(block[a:b]), bbox)
        rows += status in ("row", "bad", "kept")
        bad += status in ("malformed", "bad")
        if got is not None:
            where.append(i)
            kept.append(got)
    return rows, bad, where, kept


def _python_table(kept: list[Any]) -> pa.Table:
    """Rows kept by ``_parse_line`` as a kept table."""
    cols: dict[str, Any] = {c: [f[_IDX[c]] for f, _, _ in kept] for c in TEXT_FIELDS}
    cols["longitude"] = [lon for _, lon, _ in kept]
    cols["latitude"] = [lat for _, _, lat in kept]
    cols["accuracy"] = [_accuracy(f[_ACC]) for f, _, _ in kept]
    return pa.table(cols, schema=KEPT_SCHEMA)


# ----------------------------------------------------------------------------- vectorised


def _gather(arr: Any, starts: Any, lengths: Any) -> pa.Array:
    """The byte fields ``arr[starts[i] : starts[i] + lengths[i]]`` as one binary array (one copy)."""
    n = len(starts)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = arr[np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))]
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _decoded(col: pa.Array) -> pa.Array:
    """Binary fields as text, invalid UTF-8 replaced like ``bytes.decode(errors="replace")``."""
    try:
        return col.cast(pa.large_string()).cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([b.decode("utf-8", "replace") for b in col.to_pylist()], pa.string())


def _accuracies(col: pa.Array) -> pa.Array:
    """Accuracy text -> int32 (``_accuracy`` per value, vectorised for plain digits)."""
    plain = pc.match_substring_regex(col, r"^[0-9]{1,9}$")
    if pc.all(plain).as_py():
        return pc.cast(col, pa.int32())
    return pa.array([_accuracy(v) for v in col.to_pylist()], pa.int32())


def _byte_rows(arr: Any, starts: Any, width: int) -> tuple[Any, Any]:
    """(the ``width`` bytes from each start as a (width, n) uint8 matrix, whether they lie
    inside ``arr``). Read as 8-byte words through an unaligned overlapping view: a gather of
    n words per 8 bytes instead of one index per byte."""
    words = -(-width // 8)
    size = arr.size
    whole = starts + 8 * words <= size
    if size < 8 * words:
        return np.zeros((width, len(starts)), np.uint8), whole & False
    view = np.ndarray((size - 7,), dtype=np.uint64, buffer=arr, strides=(1,))
    at = np.minimum(starts, size - 8 * words)  # a window past the end reads elsewhere: not whole
    cols = [view[at + 8 * k] for k in range(words)]
    return np.stack(cols, 1).view(np.uint8)[:, :width].T.copy(), whole


def _plain_values(arr: Any, starts: Any, lengths: Any) -> tuple[Any, Any]:
    """(float64 values, ok mask) of byte fields: ok where the field is a plain decimal of at
    most ``_MAX_DIGITS`` digits (``-?[0-9]+(\\.[0-9]+)?``), parsed in numpy.

    Why exact: such a field is an integer mantissa below 10**15 < 2**53 (summed exactly in
    float64) over a power of ten up to 10**15, both exact doubles, and IEEE division rounds
    correctly: the value is the correctly rounded double of the decimal, which is what
    Python's ``float`` gives (Clinger's fast path).
    """
    n = len(starts)
    width = int(min(lengths.max(initial=0), _MAX_DIGITS + 2))
    if n == 0 or width == 0:
        return np.zeros(n, np.float64), np.zeros(n, bool)
    chars, whole = _byte_rows(arr, starts, width)
    pos = np.arange(width)
    cls = _CLASS[chars]
    cls[pos[:, None] >= lengths] = _PAST_END
    is_dot = cls == _DOT
    ndot = np.count_nonzero(is_dot, 0)
    minus = cls[0] == _MINUS
    at = np.argmax(is_dot, 0)
    ndig = lengths - ndot - minus
    ok = (
        whole
        & (lengths <= width)
        & ~np.any(cls == _OTHER, 0)
        & (np.count_nonzero(cls == _MINUS, 0) == minus)  # a minus only in front
        & (ndot <= 1)
        & ((ndot == 0) | ((at > minus) & (at < lengths - 1)))  # digits on both sides of a dot
        & (ndig >= 1)
        & (ndig <= _MAX_DIGITS)
    )
    digit = cls == _DIGIT
    mantissa = np.zeros(n, np.float64)
    for j in range(width):
        mantissa = np.where(digit[j], mantissa * 10.0 + (chars[j] - 48.0), mantissa)
    frac = np.where(ok & (ndot == 1), lengths - 1 - at, 0)
    values = mantissa / _POW10[frac]
    values = np.where(minus, -values, values)
    return np.where(ok, values, 0.0), ok


@dataclass
class _Lines:
    """Where the lines of a block are: separators, newlines, the 25-field lines."""

    seps: Any  # byte offset of every tab and newline
    nl: Any  # index in seps of each line's newline
    reg: Any  # indices of the lines with 25 fields
    base: Any  # index in seps of each such line's first tab
    grid: Any = None  # seps as (lines, 25) when every line has 25 fields (strided columns)

    def start(self, lines: Any) -> Any:
        """Byte offset where each of ``lines`` starts."""
        prev = self.nl[np.maximum(lines - 1, 0)]
        return np.where(lines > 0, self.seps[prev] + 1, 0)

    def field(self, k: int) -> tuple[Any, Any]:
        """(start, end) byte offsets of field ``k`` (0-based, k >= 1) of the 25-field lines."""
        if self.grid is not None:
            return self.grid[:, k - 1] + 1, self.grid[:, k]
        return self.seps[self.base + k - 1] + 1, self.seps[self.base + k]


def _find_lines(arr: Any, scratch: Scratch) -> _Lines:
    mask = scratch.mask(arr.size)
    np.less_equal(arr, 10, out=mask)  # tabs and newlines (and bytes 0-8, dropped below)
    seps = np.flatnonzero(mask)
    kind = arr[seps]
    if kind.size and kind.min() < 9:  # control bytes are field content, not separators
        real = kind >= 9
        seps, kind = seps[real], kind[real]
    nl = np.flatnonzero(kind == 10)
    count = np.diff(nl, prepend=-1)  # separators per line, its newline included
    if count.size and count.min() == count.max() == _NSEP:  # the usual block: no odd line
        every = np.arange(nl.size)
        return _Lines(seps, nl, every, every * _NSEP, seps.reshape(nl.size, _NSEP))
    reg = np.flatnonzero(count == _NSEP)
    return _Lines(seps, nl, reg, nl[reg] - (_NSEP - 1))


def _kept_table(arr: Any, lines: _Lines, rows: Any, lon: Any, lat: Any) -> pa.Table:
    """The kept table of the 25-field lines ``rows`` (indices into ``lines.reg``)."""
    sub = _Lines(lines.seps, lines.nl, lines.reg[rows], lines.base[rows])  # no grid: a gather
    ks = [_IDX[c] for c in TEXT_FIELDS] + [_ACC]
    bounds = [sub.field(k) for k in ks]
    starts = np.concatenate([a for a, _ in bounds])
    ends = np.concatenate([b for _, b in bounds])
    allf = _gather(arr, starts, ends - starts)
    n = len(rows)
    cols = {c: _decoded(allf.slice(j * n, n)) for j, c in enumerate(TEXT_FIELDS)}
    cols["longitude"] = pa.array(lon, pa.float64())
    cols["latitude"] = pa.array(lat, pa.float64())
    cols["accuracy"] = _accuracies(_decoded(allf.slice(len(TEXT_FIELDS) * n, n)))
    return pa.table(cols, schema=KEPT_SCHEMA)


def scan_lines(
    block: memoryview | bytes, bbox: tuple[float, float, float, float], scratch: Scratch
) -> Block:
    """Whole lines (``block`` ends with a newline: a last line without one is not read) ->
    rows, kept table, malformed count."""
    arr = np.frombuffer(block, np.uint8)
    if arr.size == 0:
        return Block(0, empty_kept())
    lines = _find_lines(arr, scratch)
    lon_a, lon_b = lines.field(_LON)
    lat_a, lat_b = lines.field(_LAT)
    mk_a, mk_b = lines.field(_MARKER)
    mlen = mk_b - mk_a
    mbyte = arr[np.minimum(mk_a, arr.size - 1)]
    photo = (mlen == 0) | ((mlen == 1) & (mbyte == 48))
    video = (mlen == 1) & (mbyte == 49)
    both = (lon_b > lon_a) & (lat_b > lat_a)
    cand = np.flatnonzero(both)
    starts = np.concatenate([lon_a[cand], lat_a[cand]])
    values, ok = _plain_values(arr, starts, np.concatenate([lon_b[cand], lat_b[cand]]) - starts)
    m = cand.size
    lon, lat = values[:m], values[m:]
    decided = ok[:m] & ok[m:] & (photo | video)[cand]
    inside = (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])
    keep = np.flatnonzero(decided & inside & photo[cand])
    # the lines read one by one: not 25 fields, or coordinates/marker not recognised above
    odd = np.ones(lines.nl.size, bool)
    odd[lines.reg] = False
    odd[lines.reg[cand[~decided]]] = True
    line_start = np.where(lines.base > 0, lines.seps[lines.base - 1] + 1, 0)
    blank = np.flatnonzero((mk_b - line_start == _NSEP - 1) & ~both)  # 24 tabs, nothing else
    odd_lines = np.flatnonzero(odd)
    bounds = zip(
        odd_lines.tolist(),
        lines.start(odd_lines).tolist(),
        lines.seps[lines.nl[odd_lines]].tolist(),
        strict=True,
    )
    p_rows, bad, where, p_kept = _python_lines(block, list(bounds), bbox)
    rows = lines.reg.size - int((~decided).sum()) - blank.size + p_rows
    table = _kept_table(arr, lines, cand[keep], lon[keep], lat[keep])
    if p_kept:
        order = np.argsort(np.concatenate([lines.reg[cand[keep]], where]), kind="stable")
        table = pa.concat_tables([table, _python_table(p_kept)]).take(pa.array(order))
    return Block(rows, table, bad)


def scan_block(
    block: memoryview | bytes, bbox: tuple[float, float, float, float], scratch: Scratch
) -> Block:
    """``scan_lines`` of one block (a last line without its newline gets one)."""
    view = memoryview(block)
    if len(view) and view[len(view) - 1] != 10:  # the file's last line without its newline
        view = memoryview(bytes(view) + b"\n")
    return scan_lines(view, bbox, scratch)


def scan_all(
    blocks: Iterator[memoryview | bytes],
    bbox: tuple[float, float, float, float],
    *,
    workers: int | None = None,
) -> Iterator[Block]:
    """``scan_block`` of every block, ``workers`` blocks at a time in threads (numpy and
    pyarrow release the GIL), yielded in block order. Why blocks and not halves of one block:
    independent blocks need no join per block, so a thread that the machine slows down never
    holds the other one up. Each block must stay valid until its result is yielded (views of a
    memory map do; a reused read buffer must be copied by the caller)."""
    from concurrent.futures import ThreadPoolExecutor

    n = workers or max(1, min(_MAX_WORKERS, os.cpu_count() or 1))
    if n == 1:
        scratch = Scratch()
        for block in blocks:
            yield scan_block(block, bbox, scratch)
        return
    free: queue.SimpleQueue[Scratch] = queue.SimpleQueue()
    for _ in range(n):
        free.put(Scratch())

    def work(block: memoryview | bytes) -> Block:
        scratch = free.get()
        try:
            return scan_block(block, bbox, scratch)
        finally:
            free.put(scratch)

    pending: collections.deque[Future[Block]] = collections.deque()
    with ThreadPoolExecutor(n, thread_name_prefix="yfcc-scan") as pool:
        try:
            for block in blocks:
                pending.append(pool.submit(work, block))
                if len(pending) > n:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
