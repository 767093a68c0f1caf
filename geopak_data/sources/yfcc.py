"""YFCC100M: scan the ``yfcc100m_dataset`` metadata for geotagged photos inside the bbox.

The file is 100M lines (tens of GB), so it is streamed (constant memory) in blocks of
``crawl.yfcc.chunk_bytes`` that end at a line end. In each block pyarrow's multi-threaded CSV
parser converts only the three filter columns (longitude, latitude, marker), the bbox/marker
filter is vectorised (``pyarrow.compute``), and only the few kept lines are split in Python
(found by their offsets). A block with malformed or empty lines falls back to a line-by-line
parse that skips the bad lines. Each block is one discovery unit (``c0000042``): a killed
scan resumes by skipping blocks whose part exists.

Format (tab-separated, no header, 25 columns, 1-based): 1 line number, 2 photo id, 3 hash,
4 user NSID, 5 user nickname, 6 date taken, 7 date uploaded, 8 capture device, 9 title,
10 description, 11 user tags (comma-separated), 12 machine tags, 13 longitude, 14 latitude,
15 accuracy, 16 page URL, 17 download URL, 18 licence name, 19 licence URL, 20 server id,
21 farm id, 22 secret, 23 original secret, 24 original extension, 25 marker (0 photo,
1 video). Text fields are URL-encoded with ``+`` for spaces; missing coordinates are empty.
A Parquet file with the column names of ``YFCC_COLUMNS`` (or the common spellings in
``_ALIASES``) is read the same way.
"""

from __future__ import annotations

import bz2
import gzip
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pyarrow as pa
import pyarrow.compute as pc

from ..config import PipelineConfig
from ..errors import GeopakError
from ..io import PartStore, atomic_path
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
NEEDED = ("photoid", "uid", "unickname", "datetaken", "title", "usertags", "longitude", "latitude", "accuracy", "pageurl", "downloadurl", "licensename", "licenseurl", "marker")
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
_SHORT_BY_ID = {"1": "CC BY-NC-SA 2.0", "2": "CC BY-NC 2.0", "3": "CC BY-NC-ND 2.0", "4": "CC BY 2.0", "5": "CC BY-SA 2.0", "6": "CC BY-ND 2.0", "7": "No known copyright restrictions", "9": "CC0 1.0", "10": "Public Domain Mark 1.0"}
_CC_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d+(?:\.\d+)?)", re.I)


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
        return _SHORT_BY_ID[lid], lid
    return name.strip(), ""


def _norm(name: str) -> str:
    n = re.sub(r"[^a-z0-9]", "", name.lower())
    return _ALIASES.get(n, n)


def _iso_date(value: str) -> str:
    """``2010-05-21 14:20:33.0`` -> ``2010-05-21T14:20:33`` (empty stays empty)."""
    v = value.strip()
    if not v:
        return ""
    v = v.replace(" ", "T", 1)
    return v[:-2] if v.endswith(".0") else v


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


_FILTER_COLS = ("longitude", "latitude", "marker")
_IDX = {c: i for i, c in enumerate(YFCC_COLUMNS)}


def _raw_blocks(path: Path, chunk_bytes: int) -> Iterator[memoryview]:
    """The (decompressed) file in blocks of about ``chunk_bytes`` ending at a line end.

    Block boundaries depend only on the bytes and ``chunk_bytes``, so unit numbers are the
    same in every run (what lets a killed scan resume by unit). Blocks are views into one
    buffer per read: no copy beyond the read itself.
    """
    stream = pa.input_stream(str(path), compression="detect")
    try:
        carry = b""
        while True:
            pieces = [carry]
            have = len(carry)
            while have < chunk_bytes:
                data = stream.read(chunk_bytes - have)
                if not data:
                    break
                pieces.append(data)
                have += len(data)
            buf = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if not buf:
                return
            if have < chunk_bytes:  # end of file
                yield memoryview(buf if buf.endswith(b"\n") else buf + b"\n")
                return
            cut = buf.rfind(b"\n")
            if cut < 0:  # one line longer than a block: keep reading
                carry = buf
                continue
            yield memoryview(buf)[: cut + 1]
            carry = buf[cut + 1 :]
    finally:
        stream.close()


def _row_from_fields(f: list[str], lon: float, lat: float) -> dict[str, Any]:
    acc = f[_IDX["accuracy"]].strip()
    row: dict[str, Any] = {c: f[_IDX[c]] for c in NEEDED if c not in ("longitude", "latitude", "accuracy", "marker")}
    row.update(longitude=lon, latitude=lat, accuracy=int(acc) if acc.isdigit() else None, marker=0)
    return row


def _in_box(lon: float, lat: float, bbox: tuple[float, float, float, float]) -> bool:
    return bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]


def _scan_block_slow(block: bytes | memoryview, bbox: tuple[float, float, float, float]) -> Block:
    """Line-by-line fallback for a block with malformed or empty lines (never the common case)."""
    rows = 0
    kept = []
    for raw in bytes(block).split(b"\n"):
        if not raw.strip():
            continue
        f = raw.decode("utf-8", "replace").split("\t")
        if len(f) != len(YFCC_COLUMNS):
            continue
        rows += 1
        try:
            lon, lat = float(f[_IDX["longitude"]]), float(f[_IDX["latitude"]])
            marker = int(f[_IDX["marker"]] or 0)
        except ValueError:
            continue
        if marker == 0 and _in_box(lon, lat, bbox):
            kept.append(_row_from_fields(f, lon, lat))
    return Block(rows, kept)


def _scan_block(block: bytes | memoryview, bbox: tuple[float, float, float, float]) -> Block:
    """Filter one block: pyarrow parses only the three filter columns (multi-threaded), the
    mask is vectorised, and only kept lines are split in Python."""
    import numpy as np
    import pyarrow.csv as pacsv

    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
    lines = len(ends)
    try:
        table = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=list(YFCC_COLUMNS), block_size=max(1 << 20, len(block) // 8 + 1), use_threads=True),
            # No invalid_row_handler: a malformed line raises and the block takes the slow path
            # (a handler would be given the line as text and fail noisily on non-UTF-8 bytes).
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(include_columns=list(_FILTER_COLS), column_types={"longitude": pa.float64(), "latitude": pa.float64(), "marker": pa.int8()}),
        )
    except pa.ArrowInvalid:
        return _scan_block_slow(block, bbox)
    if table.num_rows != lines:  # rows no longer line up with lines
        return _scan_block_slow(block, bbox)
    mask = select(table, bbox).column("_keep").to_numpy(zero_copy_only=False) if table.num_rows else np.zeros(0, bool)
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


def _as_float(col: pa.Array) -> pa.Array:
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return pc.cast(col, pa.float64())
    col = pc.cast(col, pa.string())
    col = pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), pa.scalar(None, pa.string()), col)
    return pc.cast(col, pa.float64())


def _parquet_blocks(path: Path, rows: int, bbox: tuple[float, float, float, float]) -> Iterator[Block]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise GeopakError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    by_norm = {_norm(n): n for n in pf.schema_arrow.names}
    missing = [c for c in ("photoid", "longitude", "latitude", "downloadurl") if c not in by_norm]
    if missing:
        raise GeopakError(f"{path}: YFCC Parquet lacks column(s) {', '.join(missing)} (have: {', '.join(pf.schema_arrow.names)})")
    use = [c for c in NEEDED if c in by_norm]
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
                cols[c] = pa.nulls(n, pa.int8()) if c == "marker" else (pa.nulls(n, pa.int32()) if c == "accuracy" else pa.array([""] * n, pa.string()))
        table = pa.table(cols)
        keep = select(table, bbox).column("_keep")
        yield Block(n, table.filter(keep).to_pylist())


def scan_blocks(path: str | Path, bbox: tuple[float, float, float, float] | list[float], *, chunk_bytes: int = 32 * 1024 * 1024) -> Iterator[Block]:
    """The metadata file block by block (deterministic blocks), each with its kept rows:
    photos (marker 0) with valid coordinates inside ``bbox`` (lon_min, lat_min, lon_max, lat_max)."""
    p = Path(path)
    box = tuple(float(v) for v in bbox)
    if p.suffix.lower() in (".parquet", ".pq"):
        yield from _parquet_blocks(p, max(1024, chunk_bytes // 256), box)  # type: ignore[arg-type]
        return
    for block in _raw_blocks(p, chunk_bytes):
        yield _scan_block(block, box)  # type: ignore[arg-type]


def check_metadata(path: str | Path, sniff_bytes: int = 1 << 20) -> None:
    """Refuse a file that is not YFCC metadata before any work starts (a wrong ``--metadata``
    is a one-line user error, not a crawl of zero photos): a TSV must have a line with the 25
    columns in its first ``sniff_bytes``; a Parquet file must have the needed columns."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            names = pq.ParquetFile(p).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise GeopakError(f"{p}: not a readable Parquet file: {str(exc).splitlines()[0]}") from None
        missing = [c for c in ("photoid", "longitude", "latitude", "downloadurl") if c not in {_norm(n) for n in names}]
        if missing:
            raise GeopakError(f"{p}: YFCC Parquet lacks column(s) {', '.join(missing)} (have: {', '.join(names)})")
        return
    try:
        stream = pa.input_stream(str(p), compression="detect")
        try:
            head = stream.read(sniff_bytes)
        finally:
            stream.close()
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise GeopakError(f"{p}: not a readable yfcc100m_dataset file: {str(exc).splitlines()[0]}") from None
    lines = head.split(b"\n")
    if len(head) == sniff_bytes:
        lines = lines[:-1]  # the last one may be cut
    lines = [ln for ln in lines if ln.strip()]
    if lines and not any(ln.count(b"\t") == len(YFCC_COLUMNS) - 1 for ln in lines):
        raise GeopakError(f"{p}: not a yfcc100m_dataset file: no line has the {len(YFCC_COLUMNS)} tab-separated columns")


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
    page = row.get("pageurl") or ""
    who = f" by {owner}" if owner else ""
    attribution = f'"{title or sid}"{who}, {short or "licence unknown"}' + (f", {page}" if page else "") + " (Flickr, via YFCC100M)"
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
        date_taken=_iso_date(unquote_plus(row.get("datetaken") or "")),
        attribution=attribution,
        restricted=False,
    )


class YfccSource(Source):
    """Photos from the YFCC100M metadata file (``--metadata``), kept when inside ``crawl.bbox``."""

    name = "yfcc"
    restricted = False

    def __init__(self, config: PipelineConfig, endpoint: str | None = None, *, metadata: str | Path | None = None, chunk_bytes: int | None = None, **opts: Any):
        super().__init__(config, endpoint, **opts)
        path = metadata or config.crawl.yfcc.metadata
        if not path:
            raise GeopakError("yfcc: no metadata file; pass --metadata FILE or set crawl.yfcc.metadata")
        self.metadata = Path(path)
        if not self.metadata.is_file():
            raise GeopakError(f"yfcc metadata file not found: {self.metadata}")
        self.chunk_bytes = int(chunk_bytes or config.crawl.yfcc.chunk_bytes)
        self.bbox = tuple(config.crawl.bbox)
        check_metadata(self.metadata)

    def inputs(self) -> dict[str, Path]:
        return {"metadata": self.metadata}

    def extra(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint or "", "chunk_bytes": self.chunk_bytes}

    def describe(self) -> str:
        return f"yfcc: {self.metadata.name} inside bbox {list(self.bbox)}"

    def discover(self, parts: PartStore, *, progress: Progress) -> None:
        scanned = 0
        blocks = scan_blocks(self.metadata, self.bbox, chunk_bytes=self.chunk_bytes)
        i = 0
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError, EOFError) as exc:
                raise GeopakError(f"{self.metadata}: not a readable yfcc100m_dataset file: {str(exc).splitlines()[0]}") from None
            if i == 0 and block.rows == 0:
                raise GeopakError(f"{self.metadata}: not a yfcc100m_dataset file: no line has the {len(YFCC_COLUMNS)} tab-separated columns")
            unit = f"c{i:07d}"
            i += 1
            scanned += block.rows
            if parts.has(unit):
                continue
            n = write_unit(parts, unit, (to_record(r) for r in block.kept))
            progress.update(n)
            progress.set_postfix_str(f"{scanned:,} rows scanned", refresh=False)


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
    from ..io import atomic_write_parquet

    lines = [yfcc_line(r, i).split("\t") for i, r in enumerate(rows)]
    cols: dict[str, list[Any]] = {c: [ln[j] for ln in lines] for j, c in enumerate(YFCC_COLUMNS)}
    table = pa.table(cols)
    for c, typ in (("longitude", pa.float64()), ("latitude", pa.float64()), ("accuracy", pa.int32()), ("marker", pa.int8())):
        table = table.set_column(table.schema.get_field_index(c), c, _cast_col(table.column(c), typ))
    atomic_write_parquet(path, table)
    return Path(path)


def _cast_col(col: pa.ChunkedArray, typ: pa.DataType) -> pa.ChunkedArray:
    col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    return pc.cast(pc.cast(col, pa.float64()), typ)
