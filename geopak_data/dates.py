"""Capture dates as sources give them: placeholders out, coarse dates kept coarse.

Why: real metadata holds dates that are not dates. YFCC100M has placeholder years far in the
future (``4501-01-01``-style: a camera clock never set), dates before photography was common
(an unset clock reads 1900 or 1970, scanners store the print's date) and Flickr marks dates
it only knows to the month, the year or "circa" with ``datetakengranularity`` (0 exact to the
second, 4 month, 6 year, 8 circa). Such a date fed into "same owner, same day" leakage
groups (``splits.py``) joins photos that have nothing in common, so:

* a date before ``MIN_YEAR``, after the upload (when known) or after today is stored as
  missing (empty), with no granularity;
* a coarse date is stored with the precision it has, as reduced-precision ISO 8601
  (``2013-05`` for month, ``2013`` for year or circa), and its granularity code is kept
  (``date_granularity``), so nothing downstream can read a day out of it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

MIN_YEAR = 1900
EXACT, MONTH, YEAR, CIRCA = 0, 4, 6, 8
GRANULARITIES = frozenset({EXACT, MONTH, YEAR, CIRCA})
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?)?)?$"
)


def _parse(value: str) -> tuple[dt.datetime, str] | None:
    """(datetime, ISO text as precise as the input) or None when it is not a calendar date."""
    m = _DATE.match(value.strip())
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) if g else None for g in m.groups())
    try:
        when = dt.datetime(y, mo or 1, d or 1, h or 0, mi or 0, s or 0)  # type: ignore[arg-type]
    except ValueError:
        return None
    if d is None:
        return when, f"{y:04d}" if mo is None else f"{y:04d}-{mo:02d}"
    if h is None:
        return when, f"{y:04d}-{mo:02d}-{d:02d}"
    return when, when.strftime("%Y-%m-%dT%H:%M:%S")


def clean_date(
    value: object,
    granularity: object = None,
    *,
    uploaded: dt.datetime | None = None,
    today: dt.date | None = None,
) -> tuple[str, int | None]:
    """``(ISO date, granularity)`` for a source's capture date; ``("", None)`` when missing.

    ``granularity`` is Flickr's code (0, 4, 6, 8, as int or str; None: unknown, read as exact).
    ``uploaded`` (naive UTC) is the upload time when the source gives it: a photo is not taken
    more than a day after it was uploaded (time zones aside). ``today`` defaults to the UTC date.
    """
    text = "" if value is None else str(value).strip()
    parsed = _parse(text) if text else None
    if parsed is None:
        return "", None
    when, iso = parsed
    gran = _granularity(granularity)
    limit = dt.datetime.combine(today or dt.datetime.now(dt.UTC).date(), dt.time()) + dt.timedelta(
        days=2
    )
    if uploaded is not None and uploaded < dt.datetime.max - dt.timedelta(days=1):
        limit = min(limit, uploaded + dt.timedelta(days=1))
    if when.year < MIN_YEAR or when > limit:
        return "", None
    if gran == MONTH:
        iso = iso[:7]
    elif gran in (YEAR, CIRCA):
        iso = iso[:4]
    elif len(iso) == 7:
        gran = MONTH
    elif len(iso) == 4:
        gran = YEAR
    return iso, gran


def _granularity(value: object) -> int | None:
    try:
        g = int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return g if g in GRANULARITIES else None


def from_unix(value: object) -> dt.datetime | None:
    """A naive UTC datetime from unix seconds (int or str), None when absent or unreadable."""
    try:
        ts = int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if ts <= 0:
        return None
    try:
        return dt.datetime.fromtimestamp(ts, tz=dt.UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None


def is_day(value: object, granularity: object = None) -> bool:
    """True when a stored date names a calendar day (not a month, a year or circa)."""
    g = _granularity(granularity)
    if g is not None and g != EXACT:
        return False
    s = "" if value is None else str(value).strip()
    return len(s) >= 10 and s[4] == "-" and s[7] == "-"


# The form almost every YFCC capture date has ("2010-05-21 14:20:33.0"): what clean_dates
# decides vectorised. Any other text goes through clean_date itself.
_COMMON = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?$"
_UNIX = r"^[0-9]{1,10}$"  # unix seconds up to the year 2286
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def clean_dates(
    values: Any,
    granularity: list[Any] | None = None,
    uploaded: Any = None,
    *,
    today: dt.date | None = None,
) -> tuple[Any, Any]:
    """``clean_date`` of every row of a string array, vectorised: ``(ISO dates, granularity)``
    as a string and an int8 array.

    ``granularity`` holds each row's raw code (or is None: unknown), ``uploaded`` (a string
    array or None) each row's upload time in unix seconds as text (``from_unix``). Why: a
    metadata scan keeps thousands of photos per second, and one Python call per date was the
    largest cost of mapping them. Dates in the full ``YYYY-MM-DD HH:MM:SS[.f]`` form with a
    plain upload time are decided with numpy; every other value is handed to ``clean_date``
    (the same rule, so both agree by construction of the test that compares them)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(values)
    values = values.cast(pa.string())
    grans = [_granularity(g) for g in granularity] if granularity is not None else [None] * n
    up = uploaded.cast(pa.string()) if uploaded is not None else pa.array([""] * n, pa.string())
    common = _np_bool(pc.match_substring_regex(values, _COMMON))
    up_plain = _np_bool(pc.match_substring_regex(up, _UNIX))
    common &= up_plain | _np_bool(pc.equal(up, ""))
    chars = _prefix(values, 19)  # "YYYY-MM-DD HH:MM:SS" where common
    digits = chars.astype(np.int64) - 48

    def num(a: int, b: int) -> Any:
        return digits[:, a:b] @ (10 ** np.arange(b - a - 1, -1, -1))

    y, mo, d, h, mi, s = (
        num(a, b) for a, b in ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19))
    )
    common &= (mo > 0) & (d > 0)  # clean_date reads a month or day 00 as 01: left to it
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    dim = np.array(_MONTH_DAYS)[np.clip(mo, 1, 12) - 1] + ((mo == 2) & leap)
    valid = common & (mo <= 12) & (d <= dim) & (h <= 23) & (mi <= 59) & (s <= 59)
    valid &= y >= MIN_YEAR
    days = (
        (np.where(valid, y, 1970) - 1970).astype("datetime64[Y]").astype("datetime64[M]")
        + np.where(valid, mo - 1, 0)
    ).astype("datetime64[D]") + np.where(valid, d - 1, 0)
    when = days.astype(np.int64) * 86400 + h * 3600 + mi * 60 + s
    day = today or dt.datetime.now(dt.UTC).date()
    limit = np.full(n, (day - dt.date(1970, 1, 1)).days * 86400 + 2 * 86400, np.int64)
    up_s = pc.cast(pc.if_else(pa.array(up_plain), up, "0"), pa.int64()).to_numpy(
        zero_copy_only=False
    )
    limit = np.where(up_plain & (up_s > 0), np.minimum(limit, up_s + 86400), limit)
    keep = valid & (when <= limit)
    g = np.array([-1 if v is None else v for v in grans], np.int64)
    chars[:, 10] = ord("T")
    length = np.where(g == MONTH, 7, np.where((g == YEAR) | (g == CIRCA), 4, 19))
    out_iso = _strings(chars, np.where(keep, length, 0))
    out_gran = [grans[i] if keep[i] else None for i in range(n)]
    rest = np.flatnonzero(~common)
    if rest.size:
        vals, ups = values.take(pa.array(rest)).to_pylist(), up.take(pa.array(rest)).to_pylist()
        raw = granularity if granularity is not None else [None] * n
        got = [
            clean_date(v, raw[i], uploaded=from_unix(u))
            for i, v, u in zip(rest.tolist(), vals, ups, strict=True)
        ]
        out_iso = pc.replace_with_mask(
            out_iso, pa.array(~common), pa.array([iso_ for iso_, _ in got], pa.string())
        )
        for i, (_, gr) in zip(rest.tolist(), got, strict=True):
            out_gran[i] = gr
    return out_iso, pa.array(out_gran, pa.int8())


def _prefix(values: Any, width: int) -> Any:
    """The first ``width`` bytes of each string of a pyarrow string array as an (n, width)
    uint8 matrix (zeros past a string's end), in one gather."""
    import numpy as np

    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int32, count=n + 1, offset=values.offset * 4)
    buf = values.buffers()[2]
    data = np.frombuffer(buf, np.uint8) if buf is not None and buf.size else np.zeros(1, np.uint8)
    pos = np.arange(width)
    chars = data[np.minimum(offsets[:-1, None] + pos, data.size - 1)]
    chars[pos >= (offsets[1:] - offsets[:-1])[:, None]] = 0
    return chars


def _strings(chars: Any, lengths: Any) -> Any:
    """A pyarrow string array of the first ``lengths[i]`` bytes of each row of ``chars``."""
    import numpy as np
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = np.ascontiguousarray(chars[np.arange(chars.shape[1]) < lengths[:, None]])
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data))


def _np_bool(arr: Any) -> Any:
    import numpy as np

    return np.asarray(arr.to_numpy(zero_copy_only=False), bool)


__all__ = [
    "CIRCA",
    "EXACT",
    "MIN_YEAR",
    "MONTH",
    "YEAR",
    "clean_date",
    "clean_dates",
    "from_unix",
    "is_day",
]
