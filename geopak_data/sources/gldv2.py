"""Google Landmarks Dataset v2: ``train.csv`` images of landmarks located inside the bbox.

GLDv2 labels images with a ``landmark_id`` but gives no coordinates, so the user supplies a
landmark table (``--landmarks``: ``landmark_id,lat,lon[,name]``, e.g. built from the
landmarks' Wikimedia/Wikidata pages). Only landmarks inside ``crawl.bbox`` are kept and
their images get the landmark's coordinates. ``train_attribution.csv``
(``id,url,author,license,title``; the images are from Wikimedia Commons) is required: it is
the only place GLDv2 gives an image's licence (Google: "verify the license for each image
yourself"). Without ``--attribution-csv`` it is taken from beside ``train.csv``, where the
release puts it.

The Commons fields are cleaned: ``license`` is a credit string that may name several
licences (``GFDL(http://...)/CC BY-SA 3.0(https://.../by-sa/3.0)``); all are parsed
(``licenses.parse_credit``) and kept in ``license_id`` (``GFDL | CC BY-SA 3.0``), the most
permissive is the record's ``license``/``license_url`` and the attribution line says it was
chosen. Images are filtered by the same licence policy as Flickr (the families of
``crawl.flickr.licenses``); an image with no attribution row or no recognised licence is
dropped as unknown. Titles lose ``File:`` and the file extension; authors lose talk-page
signatures (``Name (talk) 15:17, 13 July 2018 (UTC)`` -> ``Name``) and ``User:`` prefixes.

``train.csv`` (4.1M rows) and ``train_attribution.csv`` are streamed with pyarrow in blocks
and filtered vectorised (``pyarrow.compute.is_in``), so memory stays bounded by the number of
kept images. Kept rows are written in ``train.csv`` order, ``UNIT_ROWS`` per unit.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from geopak_core.errors import GeopakError
from geopak_core.geo import in_bbox, valid_coordinates
from geopak_core.io import PartStore

from ..config import PipelineConfig
from ..country import crawl_bbox
from ..licenses import most_permissive, parse_credit, policy
from ..records import empty_record, make_key
from .base import Progress, Source, write_unit

log = logging.getLogger("geopak.gldv2")

UNIT_ROWS = 10_000
_BLOCK = 16 * 1024 * 1024
_TAG = re.compile(r"<[^>]+>")
_FILE_EXT = re.compile(r"\.(jpe?g|png|gif|tiff?|webp|svg|bmp)$", re.I)
# MediaWiki signature pieces: "(talk)", "(talk · contribs)", "15:17, 13 July 2018 (UTC)".
_SIGNATURE = re.compile(
    r"\((?:talk|contribs|discuss)[^)]*\)|\d{1,2}:\d{2},?\s+\d{1,2}\s+\w+\s+\d{4}\s*\(UTC\)",
    re.I,
)


def _clean(text: str) -> str:
    """Attribution fields can hold HTML (``<a href=...>Name</a>``): keep the visible text."""
    return " ".join(html.unescape(_TAG.sub("", text or "")).split())


def clean_title(text: str) -> str:
    """``File:Badshahi_Mosque_2019.jpg`` -> ``Badshahi Mosque 2019``."""
    t = _clean(text)
    if t.lower().startswith("file:"):
        t = t[5:]
    return " ".join(_FILE_EXT.sub("", t).replace("_", " ").split())


def clean_author(text: str) -> str:
    """``Ali (talk) 15:17, 13 July 2018 (UTC)`` -> ``Ali``; ``User:Ali`` -> ``Ali``."""
    t = _SIGNATURE.sub(" ", _clean(text))
    t = re.sub(r"^(?:user|benutzer|utilisateur):", "", t.strip(), flags=re.I)
    return " ".join(t.split()).strip(" -,;")


class _SkipBadRows:
    """pyarrow ``invalid_row_handler``: a row with the wrong number of fields is skipped and
    counted (a 4.1M-row file with one broken line must not stop the crawl)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, row: Any) -> str:
        self.count += 1
        return "skip"


def _csv_blocks(
    path: Path, columns: list[str] | None = None, skipped: _SkipBadRows | None = None
) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    stream = pa.input_stream(str(path), compression="detect")
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=_BLOCK, use_threads=True),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=skipped or _SkipBadRows()
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns or [],
                column_types=dict.fromkeys(columns or [], pa.string()),
                strings_can_be_null=False,
            ),
        )
        yield from reader
    except pa.ArrowInvalid as exc:
        raise GeopakError(
            f"{path}: not a readable CSV with columns {', '.join(columns or [])}: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        stream.close()


def _header(path: Path) -> list[str]:
    import pyarrow.csv as pacsv

    stream = pa.input_stream(str(path), compression="detect")
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            parse_options=pacsv.ParseOptions(invalid_row_handler=_SkipBadRows()),
            convert_options=pacsv.ConvertOptions(column_types={}),
        )
        return list(reader.schema.names)
    except (pa.ArrowInvalid, StopIteration) as exc:
        raise GeopakError(
            f"{path}: not a readable CSV: {str(exc).splitlines()[0] if str(exc) else 'empty'}"
        ) from None
    finally:
        stream.close()


def _pick(names: list[str], wanted: tuple[str, ...], path: Path, what: str) -> str:
    lower = {n.strip().lower(): n for n in names}
    for w in wanted:
        if w in lower:
            return lower[w]
    raise GeopakError(
        f"{path}: no {what} column (expected one of {', '.join(wanted)}; found {', '.join(names)})"
    )


def load_landmarks(
    path: Path, bbox: tuple[float, float, float, float] | list[float]
) -> dict[str, tuple[float, float, str]]:
    """landmark_id -> (lat, lon, name) for landmarks with valid coordinates inside ``bbox``."""
    import pyarrow.csv as pacsv

    names = _header(path)
    cid = _pick(names, ("landmark_id", "id"), path, "landmark_id")
    clat = _pick(names, ("lat", "latitude"), path, "latitude")
    clon = _pick(names, ("lon", "lng", "longitude"), path, "longitude")
    cname = next(
        (n for n in names if n.strip().lower() in ("name", "title", "landmark_name")), None
    )
    cols = [c for c in (cid, clat, clon, cname) if c]
    skipped = _SkipBadRows()
    try:
        t = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(invalid_row_handler=skipped),
            convert_options=pacsv.ConvertOptions(
                include_columns=cols,
                column_types=dict.fromkeys(cols, pa.string()),
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise GeopakError(f"{path}: bad landmark table: {str(exc).splitlines()[0]}") from None
    lat, bad_lat = _floats(t.column(clat))
    lon, bad_lon = _floats(t.column(clon))
    if skipped.count or (bad_lat | bad_lon).any():
        log.warning(
            "gldv2: %s: %d malformed row(s) and %d landmark(s) whose coordinates are no "
            "numbers skipped",
            path.name,
            skipped.count,
            int((bad_lat | bad_lon).sum()),
        )
    keep = valid_coordinates(lat, lon) & in_bbox(lat, lon, tuple(bbox))
    ids = t.column(cid).to_pylist()
    label = t.column(cname).to_pylist() if cname else [""] * t.num_rows
    return {
        str(ids[i]).strip(): (float(lat[i]), float(lon[i]), label[i] or "")
        for i in range(t.num_rows)
        if keep[i]
    }


def _beside(train_csv: Path) -> Path | None:
    """GLDv2 ships ``train_attribution.csv`` next to ``train.csv``: found there, it need not be
    named (the contract's command gives only --train-csv and --landmarks)."""
    found = train_csv.with_name("train_attribution.csv")
    if found.is_file() and found != train_csv:
        log.info("gldv2: licences from %s (beside %s)", found, train_csv.name)
        return found
    return None


def _floats(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values, not-a-number mask) of a text column: empty cells are NaN (no coordinates),
    cells that are no numbers ("abc", "31.5.4") are NaN too and flagged, so one bad landmark
    is dropped instead of stopping the crawl."""
    text = [str(v).strip() for v in column.to_pylist()]
    values = np.full(len(text), np.nan)
    bad = np.zeros(len(text), dtype=bool)
    for i, v in enumerate(text):
        if v:
            try:
                values[i] = float(v)
            except ValueError:
                bad[i] = True
    return values, bad


class Gldv2Source(Source):
    """GLDv2 ``train.csv`` joined with a landmark -> (lat, lon) table; Commons licences."""

    name = "gldv2"

    def __init__(
        self,
        config: PipelineConfig,
        endpoint: str | None = None,
        *,
        train_csv: str | Path | None = None,
        landmarks: str | Path | None = None,
        attribution_csv: str | Path | None = None,
        **opts: Any,
    ):
        super().__init__(config, endpoint, **opts)
        g = config.crawl.gldv2
        self.train_csv = self._path(
            train_csv or g.train_csv, "train CSV", "--train-csv", "crawl.gldv2.train_csv"
        )
        self.landmarks = self._path(
            landmarks or g.landmarks, "landmark table", "--landmarks", "crawl.gldv2.landmarks"
        )
        att = attribution_csv or g.attribution_csv or _beside(self.train_csv)
        self.attribution_csv = (
            self._path(att, "attribution CSV", "--attribution-csv", "") if att else None
        )
        self.bbox = crawl_bbox(config)  # crawl.bbox, else the country's
        self.allowed = policy(config.crawl.flickr.licenses)
        self.stats = {"kept": 0, "licence_refused": 0, "licence_unknown": 0}
        # Wrong files are one-line errors before any work starts (headers only: cheap).
        lm_names = _header(self.landmarks)
        for wanted, what in (
            (("landmark_id", "id"), "landmark_id"),
            (("lat", "latitude"), "latitude"),
            (("lon", "lng", "longitude"), "longitude"),
        ):
            _pick(lm_names, wanted, self.landmarks, what)
        train_names = _header(self.train_csv)
        for col in ("id", "url", "landmark_id"):
            _pick(train_names, (col,), self.train_csv, col)
        if self.attribution_csv is None:
            raise GeopakError(
                "gldv2: no attribution CSV; GLDv2 gives each image's licence only in "
                "train_attribution.csv (id,url,author,license,title) and images of unknown "
                f"licence are not kept: put it beside {self.train_csv.name}, pass "
                "--attribution-csv FILE or set crawl.gldv2.attribution_csv"
            )

    @staticmethod
    def _path(value: Any, what: str, flag: str, key: str) -> Path:
        if not value:
            raise GeopakError(
                f"gldv2: no {what}; pass {flag} FILE" + (f" or set {key}" if key else "")
            )
        p = Path(value)
        if not p.is_file():
            raise GeopakError(f"gldv2 {what} not found: {p}")
        return p

    def inputs(self) -> dict[str, Path]:
        out = {"train_csv": self.train_csv, "landmarks": self.landmarks}
        if self.attribution_csv:
            out["attribution_csv"] = self.attribution_csv
        return out

    def describe(self) -> str:
        return f"gldv2: {self.train_csv.name} x {self.landmarks.name} inside bbox {list(self.bbox)}"

    def extra(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint or "", "licence_families": sorted(self.allowed)}

    def _kept_images(self, marks: dict[str, tuple[float, float, str]]) -> pa.Table:
        names = _header(self.train_csv)
        cid = _pick(names, ("id",), self.train_csv, "id")
        curl = _pick(names, ("url",), self.train_csv, "url")
        clm = _pick(names, ("landmark_id",), self.train_csv, "landmark_id")
        value_set = pa.array(sorted(marks), pa.string())
        pieces = []
        skipped = _SkipBadRows()
        for b in _csv_blocks(self.train_csv, [cid, curl, clm], skipped):
            lm = pc.utf8_trim_whitespace(b.column(clm))
            mask = pc.is_in(lm, value_set=value_set)
            t = pa.table({"id": b.column(cid), "url": b.column(curl), "landmark_id": lm}).filter(
                mask
            )
            if t.num_rows:
                pieces.append(t)
        if skipped.count:
            log.warning(
                "gldv2: %d malformed row(s) of %s skipped (not the header's number of fields)",
                skipped.count,
                self.train_csv.name,
            )
        if not pieces:
            return pa.table(
                {
                    "id": pa.array([], pa.string()),
                    "url": pa.array([], pa.string()),
                    "landmark_id": pa.array([], pa.string()),
                }
            )
        return pa.concat_tables(pieces)

    def _attribution(self, ids: pa.Array) -> dict[str, dict[str, str]]:
        if self.attribution_csv is None or len(ids) == 0:
            return {}
        names = _header(self.attribution_csv)
        cid = _pick(names, ("id",), self.attribution_csv, "id")
        want = {
            k: next((n for n in names if n.strip().lower() == k), None)
            for k in ("url", "author", "license", "title")
        }
        cols = [cid] + [c for c in want.values() if c]
        out: dict[str, dict[str, str]] = {}
        for b in _csv_blocks(self.attribution_csv, cols):
            t = pa.Table.from_batches([b]).filter(pc.is_in(b.column(cid), value_set=ids))
            for row in t.to_pylist():
                out.setdefault(row[cid], {k: row[c] if c else "" for k, c in want.items()})
        return out

    def discover(self, parts: PartStore, *, progress: Progress) -> None:
        marks = load_landmarks(self.landmarks, self.bbox)
        kept = self._kept_images(marks)
        attrib = self._attribution(
            pc.unique(kept.column("id").combine_chunks())
            if kept.num_rows
            else pa.array([], pa.string())
        )
        rows = kept.to_pylist()
        for u, start in enumerate(range(0, max(len(rows), 1), UNIT_ROWS)):
            unit = f"c{u:07d}"
            chunk = rows[start : start + UNIT_ROWS]
            if parts.has(unit):
                continue
            recs = [self._record(r, marks, attrib) for r in chunk]
            progress.update(write_unit(parts, unit, (r for r in recs if r is not None)))
        log.info(
            "gldv2: %d images kept; %d refused by the licence policy, %d of unknown licence",
            self.stats["kept"],
            self.stats["licence_refused"],
            self.stats["licence_unknown"],
        )

    def _record(
        self,
        row: dict[str, Any],
        marks: dict[str, tuple[float, float, str]],
        attrib: dict[str, dict[str, str]],
    ) -> dict[str, Any] | None:
        """The discovery record of one image, or None when its licence is unknown or refused."""
        sid = row["id"].strip()
        lat, lon, name = marks[row["landmark_id"]]
        a = attrib.get(sid, {})
        licences = parse_credit(_clean(a.get("license", "")))
        best = most_permissive(lic for lic in licences if lic.family != "other")
        if best is None:
            self.stats["licence_unknown"] += 1
            return None
        if best.family not in self.allowed:
            self.stats["licence_refused"] += 1
            return None
        self.stats["kept"] += 1
        author = clean_author(a.get("author", ""))
        title = clean_title(a.get("title", "")) or name
        page = a.get("url", "")
        lic_text = best.name + (f" ({best.url})" if best.url else "")
        if len(licences) > 1:
            lic_text += f"; chosen as the most permissive of {', '.join(x.name for x in licences)}"
        credit = (
            f'"{title or sid}"'
            + (f" by {author}" if author else "")
            + f", {lic_text}"
            + (f", {page}" if page else "")
            + " (Wikimedia Commons, via Google Landmarks v2)"
        )
        return empty_record(
            key=make_key("gldv2", sid),
            source="gldv2",
            source_id=sid,
            url=row["url"].strip(),
            lat=lat,
            lon=lon,
            accuracy=None,
            license=best.name,
            license_id=" | ".join(x.name for x in licences),
            license_url=best.url,
            owner=author,
            title=title,
            tags=f"landmark:{row['landmark_id']}",
            date_taken="",
            attribution=credit,
            restricted=False,
        )
