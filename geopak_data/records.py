"""The common photo record every source maps onto, and the rejects table.

Columns are added stage by stage (crawl -> download -> filter -> tag -> cluster); each stage
keeps every column it received, so provenance and licence travel all the way into the shards.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.parquet as pq

# Discovery: what a source knows about a photo before downloading it.
SOURCE_FIELDS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()),
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("url", pa.string()),
    ("lat", pa.float64()),
    ("lon", pa.float64()),
    ("accuracy", pa.int32()),  # Flickr/YFCC geo accuracy 1 (world) .. 16 (street); null if unknown
    ("license", pa.string()),  # human-readable licence name, e.g. "CC BY-SA 2.0"
    ("license_id", pa.string()),  # the source's own licence id
    ("license_url", pa.string()),
    ("owner", pa.string()),
    ("title", pa.string()),
    ("tags", pa.string()),  # space separated
    ("date_taken", pa.string()),  # ISO 8601 as precise as known (2013-05: month only), may be empty
    # Flickr datetakengranularity: 0 exact, 4 month, 6 year, 8 circa; null when not given
    ("date_granularity", pa.int8()),
    ("attribution", pa.string()),
    ("restricted", pa.bool_()),  # True when the source's terms forbid redistributing the bytes
    # Leakage group: records sharing a non-empty group_id always land in the same split
    # (e.g. one Mapillary sequence: neighbouring frames of one drive).
    ("group_id", pa.string()),
]
SOURCE_SCHEMA = pa.schema(SOURCE_FIELDS)

# Download: what the downloader adds for a stored image.
DOWNLOAD_FIELDS: list[tuple[str, pa.DataType]] = [
    ("image_path", pa.string()),  # relative to the work folder
    ("sha256", pa.string()),  # of the stored (re-encoded) JPEG bytes
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("bytes", pa.int64()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
]
DOWNLOADED_SCHEMA = pa.schema(SOURCE_FIELDS + DOWNLOAD_FIELDS)

REJECT_FIELDS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()),
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("url", pa.string()),
    ("stage", pa.string()),
    (
        "reason",
        pa.string(),
    ),  # a short stable code: http_404, not_an_image, blur, outside_pakistan...
    ("detail", pa.string()),  # human-readable detail
]
REJECT_SCHEMA = pa.schema(REJECT_FIELDS)

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Query parameters that carry credentials (API keys, OAuth tokens, URL signatures): stripped
# from every URL that is stored, logged or shipped; kept only for the request itself.
SECRET_PARAMS = re.compile(
    r"^(key|api_?key|apikey|token|access_token|id_token|refresh_token|auth|authorization"
    r"|signature|sig|secret|client_secret|password|passwd|pwd|oauth_.*|x-goog-api-key"
    r"|x-goog-signature|x-goog-credential|x-amz-signature|x-amz-credential"
    r"|x-amz-security-token)$",
    re.I,
)
# Ids up to this length are used as they are; longer ones are cut with a hash suffix, so a key
# is at most 24 + 1 + 59 characters (well under every file system's 255-byte name limit).
MAX_ID_CHARS = 64


def make_key(source: str, source_id: str) -> str:
    """A stable, dataset-unique sample key without dots or slashes.

    ``flickr`` + ``52345`` -> ``flickr-52345``. Ids with other characters, and ids longer than
    ``MAX_ID_CHARS``, are sanitised/shortened and get a short hash suffix, so two different ids
    can never collide and a key (hence an image file name, a tar member name) always has a
    bounded length: a 260-character id must not hit the file system's name limit.
    """
    sid = str(source_id)
    safe = _KEY_SAFE.sub("_", sid)
    if safe != sid or not safe or len(safe) > MAX_ID_CHARS:
        safe = f"{safe[:48]}_{hashlib.sha1(sid.encode('utf-8')).hexdigest()[:10]}"
    return f"{_KEY_SAFE.sub('_', source)[:24]}-{safe}"


def strip_credentials(url: str) -> str:
    """``url`` without userinfo (``user:pass@``) and without credential query parameters
    (``SECRET_PARAMS``); every other byte is kept as it was, so a URL without credentials is
    returned unchanged (keys and fetch lists stay stable). What records and shards store."""
    if not url or ("@" not in url and "=" not in url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url  # unparsable: the download rejects it (bad_url); nothing to split off safely
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        kept = [p for p in query.split("&") if not SECRET_PARAMS.match(unquote(p.split("=", 1)[0]))]
        query = "&".join(kept)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URL_IN_TEXT = re.compile(r"https?://\S+")
URL_FIELDS = ("url", "license_url")


def without_credentials(record: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """(the record as stored: URLs and URLs inside its text without credentials, the URL to
    request with them). The second is only ever held in memory for the download."""
    rec = dict(record)
    request_url = str(rec.get("url") or "")
    for name in URL_FIELDS:
        if isinstance(rec.get(name), str):
            rec[name] = strip_credentials(rec[name])
    for name in ("attribution", "title"):
        text = rec.get(name)
        if isinstance(text, str) and "://" in text:
            rec[name] = _URL_IN_TEXT.sub(lambda m: strip_credentials(m.group(0)), text)
    return rec, request_url


@functools.cache
def _defaults() -> dict[str, Any]:
    """Every field's default (empty string / False / None), computed once: discovery builds
    one record per kept photo, and asking pyarrow each field's type each time was a tenth of
    the YFCC discovery's CPU."""
    rec: dict[str, Any] = {}
    for name, typ in SOURCE_FIELDS:
        if pa.types.is_string(typ):
            rec[name] = ""
        elif pa.types.is_boolean(typ):
            rec[name] = False
        else:
            rec[name] = None
    return rec


def empty_record(**values: Any) -> dict[str, Any]:
    """A discovery record with every field present (defaults: empty string / None / False)."""
    rec = dict(_defaults())  # a copy: the cached defaults are never handed out
    rec.update(values)
    if not rec["key"]:
        rec["key"] = make_key(rec["source"], rec["source_id"])
    return rec


def records_to_table(
    records: Iterable[Mapping[str, Any]], schema: pa.Schema = SOURCE_SCHEMA
) -> pa.Table:
    """Rows (dicts) as a table of ``schema``; keys a row lacks become nulls, extra keys are dropped."""
    rows = list(records)
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.table(cols, schema=schema)


def reject_rows(
    table_or_rows: Any, *, stage: str, reason: str | list[str], detail: str | list[str] = ""
) -> pa.Table:
    """Rejects for the given records (a table or list of dicts), all with one reason or one each."""
    if isinstance(table_or_rows, pa.Table):
        rows = table_or_rows.select(
            [c for c in ("key", "source", "source_id", "url") if c in table_or_rows.column_names]
        ).to_pylist()
    else:
        rows = list(table_or_rows)
    n = len(rows)
    reasons = reason if isinstance(reason, list) else [reason] * n
    details = detail if isinstance(detail, list) else [detail] * n
    out = {
        "key": [r.get("key", "") for r in rows],
        "source": [r.get("source", "") for r in rows],
        "source_id": [str(r.get("source_id", "")) for r in rows],
        "url": [r.get("url", "") for r in rows],
        "stage": [stage] * n,
        "reason": reasons,
        "detail": details,
    }
    return pa.table(out, schema=REJECT_SCHEMA)


def read_table(path: Any) -> pa.Table:
    """Read a Parquet table (one place to change reading options for every stage)."""
    return pq.read_table(path)
