"""The interface every crawl source implements (Flickr, Google Places, YFCC100M, GLDv2).

A source only *discovers*: it turns an API or a metadata file into discovery records
(``records.SOURCE_SCHEMA``) and commits them as parts, one per deterministic, sortable unit
(a tile/window/page, a chunk of a file). The crawl stage (``crawl.py``) merges the parts in
unit order, de-duplicates by key and hands the records to the shared downloader.

Why units: a crawl killed at any instant resumes by skipping the units whose part already
exists, and merging parts in unit order gives exactly the table of an uninterrupted run.

Why ``request_for``: API keys must never land in the work folder, logs or shards. A record
stores a key-free URL; the source adds credentials (headers or query parameters) only when
the bytes are fetched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from geopak_core.io import PartStore

from ..config import PipelineConfig
from ..records import SOURCE_SCHEMA, records_to_table, without_credentials


class Progress(Protocol):
    """What ``discover`` gets as ``progress``: a tqdm-like bar (``progress.update(n)``)."""

    def update(self, n: float = 1) -> Any: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...


class NullProgress:
    """A progress sink that ignores everything (for library use and tests)."""

    def update(self, n: float = 1) -> None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None


class Source(ABC):
    """One place photos come from.

    Subclasses set ``name`` (a key of the registry ``sources.SOURCES``) and take
    ``(config: PipelineConfig, endpoint: str | None = None, **opts)``. Whether the source's
    terms forbid redistributing the photo bytes (``restricted``) is read from the registry.
    """

    name: str = ""

    @property
    def restricted(self) -> bool:
        from ..source_registry import SOURCES

        spec = SOURCES.get(self.name)
        return bool(spec and spec.restricted)

    def __init__(self, config: PipelineConfig, endpoint: str | None = None, **opts: Any):
        self.config = config
        self.endpoint = endpoint
        self.opts = opts

    @abstractmethod
    def discover(self, parts: PartStore, *, progress: Progress) -> None:
        """Write discovery records as parts, one per deterministic unit name.

        Unit names sort in the order their records should appear (e.g. ``t003-w0012-p0004``
        or ``c000017``). Units already in ``parts`` (``parts.has(unit)``) are skipped so a
        killed discovery resumes where it stopped. Call ``progress.update(n)`` with the number
        of records found. Raise ``GeopakError`` for user mistakes (missing key, bad file).
        """

    def request_for(self, record: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
        """The (url, headers) used to fetch a record's bytes; credentials are added here only.

        A metadata URL that carried credentials (``user:pass@``, ``?api_key=``) is stored
        without them; the original is remembered in memory by this process's discovery and
        used for the request. A crawl resumed in a new process has only the stored URL: the
        credentials ``GEOPAK_URL_CREDENTIALS`` holds for its origin are put back
        (``credentials.with_env_credentials``)."""
        from ..credentials import with_env_credentials

        url = str(record["url"])
        known = _REQUEST_URLS.get((str(record.get("key", "")), url))
        return (known if known is not None else with_env_credentials(url)), {}

    #: True when ``refresh_url`` can re-resolve a record's URL (signed CDN links that expire)
    refreshes_urls: bool = False

    def refresh_url(self, record: Mapping[str, Any]) -> str | None:
        """A fresh download URL for ``record`` whose stored URL was refused (HTTP 403/410: a
        signed link that expired between discovery and download), or None when there is none.

        Called by the downloader (once per record, in a worker thread) only for sources with
        ``refreshes_urls``; the image is fetched again once from the new URL, which the crawl
        then records (without credentials) in place of the stored one."""
        return None

    def inputs(self) -> dict[str, Path]:
        """Local files the discovery reads (fingerprinted by the runner: a change re-runs)."""
        return {}

    def extra(self) -> dict[str, Any]:
        """Other settings that change the output (recorded in the manifest, never secrets)."""
        return {"endpoint": self.endpoint or ""}

    def round_inputs(self) -> dict[str, Path]:
        """Files that steer *which* units are visited, not what a unit holds (a coverage plan).

        A change re-opens discovery: finished units are kept and the plan's other units are
        visited, so a new planning round never repeats finished work.
        """
        return {}

    def describe(self) -> str:
        """One line for logs: what is crawled and from where (never a secret)."""
        where = f" via {self.endpoint}" if self.endpoint else ""
        return f"{self.name}{where}"


# (key, stored URL) -> URL with its credentials, for this process's downloads only.
_REQUEST_URLS: dict[tuple[str, str], str] = {}


def _stored(records: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    for record in records:
        rec, request_url = without_credentials(record)
        if rec.get("url") != request_url:
            _REQUEST_URLS[(str(rec.get("key", "")), str(rec["url"]))] = request_url
        yield rec


REJECTS_SUBDIR = "rejects"


def discovery_rejects(parts: PartStore) -> PartStore:
    """The part store (beside a discovery's parts) holding what discovery turned down.

    A source that excludes records itself (a non-free licence, a panorama, a thinned frame)
    must say so: the crawl stage merges these into ``rejects.parquet`` with their reasons.
    """
    return PartStore(parts.folder / REJECTS_SUBDIR)


def write_unit(
    parts: PartStore,
    unit: str,
    records: Iterable[Mapping[str, Any]],
    rejects: Iterable[Mapping[str, Any]] | None = None,
) -> int:
    """Commit one unit's discovery records atomically; returns how many were written.

    An empty unit is committed too (as an empty part) so a resumed run does not repeat it.
    ``rejects`` (records with ``reason`` and ``detail``) are committed first: the records
    part is the unit's commit mark, so a kill in between rewrites the same rejects again.
    Credentials inside URLs are never stored (``records.without_credentials``).
    """
    rows = list(rejects or [])
    if rows:
        from ..records import reject_rows

        table_r = reject_rows(
            rows,
            stage="discover",
            reason=[str(r.get("reason", "")) for r in rows],
            detail=[str(r.get("detail", "")) for r in rows],
        )
        discovery_rejects(parts).write(unit, table_r)
    table = records_to_table(_stored(records), SOURCE_SCHEMA)
    parts.write(unit, table)
    return table.num_rows


# A text field whose credential stripping can change it: a URL with userinfo or a query.
_MAY_HOLD_CREDENTIALS = r"https?://[^\s/?#]*@|https?://[^\s#]*\?"


def write_unit_table(parts: PartStore, unit: str, table: pa.Table) -> int:
    """``write_unit`` for records that are already a ``SOURCE_SCHEMA`` table (a columnar
    source), credentials stripped by ``stored_table``."""
    table = stored_table(table)
    parts.write(unit, table)
    return table.num_rows


def stored_table(table: pa.Table) -> pa.Table:
    """A ``SOURCE_SCHEMA`` table as it may be stored: the credential rule of ``write_unit``
    (``records.without_credentials``), applied in Python only to the rows a vectorised test
    finds able to hold credentials."""
    import numpy as np
    import pyarrow.compute as pc

    cols = ("key", "url", "license_url", "title", "attribution")
    sure = np.zeros(table.num_rows, bool)
    for name, pattern in (
        ("url", "[@=]"),
        ("license_url", "[@=]"),
        ("title", _MAY_HOLD_CREDENTIALS),
        ("attribution", _MAY_HOLD_CREDENTIALS),
    ):
        hit = pc.match_substring_regex(table.column(name), pattern)
        sure |= np.asarray(hit.to_numpy(), bool)
    if sure.any():
        rows = np.flatnonzero(sure)
        clean = list(_stored(table.select(cols).take(pa.array(rows)).to_pylist()))
        for name in cols[1:]:
            i = table.schema.get_field_index(name)
            col = pc.replace_with_mask(
                table.column(name).combine_chunks(),
                pa.array(sure),
                pa.array([r[name] for r in clean], pa.string()),
            )
            table = table.set_column(i, name, col)
    return table
