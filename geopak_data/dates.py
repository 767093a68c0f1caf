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
    if uploaded is not None:
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


__all__ = ["CIRCA", "EXACT", "MIN_YEAR", "MONTH", "YEAR", "clean_date", "from_unix", "is_day"]
