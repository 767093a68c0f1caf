"""The shard folder format, defined once: names, schemas, the tar writer and the readers' checks.

A geopak shard folder (the contract's "Shard folder") is what the data tower writes and the
model tower reads, so both import its definition from here and from nowhere else::

    DIR/{train,val,test}/geopak-{split}-NNNNNN.tar   # {key}.jpg + {key}.json per sample
    DIR/index.parquet                                 # INDEX_SCHEMA: one row per sample
    DIR/cells.parquet                                 # CELL_COLUMNS first, then n_{split}, extras
    DIR/regions.parquet                               # the region table: province_id, province, iso
    DIR/stats.json                                    # stats_document(): every count the card shows
    DIR/README.md, DIR/map.png                        # the dataset card and its map

Tars are written by :func:`write_tar` with the standard library's ``tarfile`` header encoder
(PAX format, fixed mtime/owner/mode, members ``.jpg`` then ``.json``), so the same samples give
the same bytes on every machine, and sizes can be computed before writing
(:func:`sample_tar_bytes`, :func:`tar_size`). The writer goes through
``geopak_core.io.atomic_path``: a reader sees the old tar or the complete new one.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import GeopakError
from .io import atomic_path
from .regions import PAKISTAN, REGIONS_FILE, RegionTable, id_arrow_type, regions_in

SPLITS: tuple[str, ...] = ("train", "val", "test")
FORMAT_VERSION = 1  # bump when the tar layout or the json changes: every shard is rewritten
TAR_MTIME = 0  # fixed member mtime: identical content gives identical bytes
TAR_USER = "geopak"
TAR_MODE = 0o444
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
REQUIRED_FILES = ("index.parquet", "cells.parquet", "stats.json", "README.md")
# regions.parquet (REGIONS_FILE) is written by every build; folders from before the region
# table lack it and are read as Pakistan's (``read_regions``), so it is not required here.

# The json of every sample, in this order (the contract's fields, then provenance, then split).
JSON_FIELDS: tuple[str, ...] = (
    "key",
    "lat",
    "lon",
    "province",
    "province_id",
    "cell_id",
    "cell_center_lat",
    "cell_center_lon",
    "source",
    "source_id",
    "url",
    "license",
    "license_url",
    "owner",
    "title",
    "date_taken",
    "attribution",
    "width",
    "height",
    "split",
)
# Appended to the json (and the index) only for synthetic datasets, so real data keeps its bytes.
SYNTHETIC_FIELD = "synthetic"
# What every reader may rely on in a sample's json (the contract's minimum).
LABEL_FIELDS: tuple[str, ...] = ("lat", "lon", "province_id", "cell_id")

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("province", pa.string()),
        ("province_id", pa.int8()),
        ("cell_id", pa.int32()),
        ("cell_center_lat", pa.float64()),
        ("cell_center_lon", pa.float64()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("url", pa.string()),
        ("license", pa.string()),
        ("license_url", pa.string()),
        ("owner", pa.string()),
        ("title", pa.string()),
        ("date_taken", pa.string()),
        ("attribution", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("restricted", pa.bool_()),
        ("group", pa.int64()),
    ]
)

# cells.parquet: the contract's columns first (in this order), then n_{split}, then extras.
CELL_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "province_id",
    "province",
    "center_lat",
    "center_lon",
    "radius_km",
    "n_samples",
    "urban",
)
# What a reader needs to build the model's heads.
CELL_REQUIRED: tuple[str, ...] = ("cell_id", "province_id", "center_lat", "center_lon", "radius_km")
# The cells table as the cluster stage writes it (W/cluster/cells.parquet); the shard folder's
# table is this one with n_samples recounted and n_{split} added.
CELLS_SCHEMA = pa.schema(
    [
        ("cell_id", pa.int32()),
        ("province_id", pa.int8()),
        ("province", pa.string()),
        ("center_lat", pa.float64()),
        ("center_lon", pa.float64()),
        ("radius_km", pa.float64()),
        ("n_samples", pa.int32()),
        ("urban", pa.bool_()),
        ("limit_km", pa.float64()),
        ("isolated", pa.bool_()),
        ("center_key", pa.string()),
        ("neighbours", pa.list_(pa.int32())),
        ("crs", pa.string()),
    ]
)


def with_region_ids(schema: pa.Schema, regions: RegionTable) -> pa.Schema:
    """``schema`` (INDEX_SCHEMA, CELLS_SCHEMA) with ``province_id`` typed for ``regions``:
    the int8 of the constants when the table fits (Pakistan's folders keep their bytes),
    int16 for countries with more than 127 first-level units."""
    i = schema.get_field_index("province_id")
    want = id_arrow_type(regions.n)
    if schema.field(i).type == want:
        return schema
    return schema.set(i, pa.field("province_id", want))


# stats.json's top-level keys (every one always present).
STATS_KEYS: tuple[str, ...] = (
    "format",
    "dataset",
    "geopak_version",
    "config_hash",
    "shard_config_hash",
    "seed",
    "fractions",
    "split_rule",
    "samples",
    "splits",
    "regions",  # the region table's file, country and count (regions.parquet)
    "provinces",
    "cells",
    "sources",
    "licenses",
    "rejects",
    "rejects_total",
    "excluded",
    "groups",
    "filter_notes",
    "restricted_included",
    "years",
)
# "synthetic": present (true) only for synthetic datasets; "coverage": the work folder's last
# `geopak-data coverage` summary (photos per region against targets), when it ran.
STATS_OPTIONAL: tuple[str, ...] = ("synthetic", "coverage")


# ----------------------------------------------------------------------------- names


def shard_file_name(split: str, number: int) -> str:
    """``geopak-train-000000.tar``: the contract's file name of shard ``number`` of ``split``."""
    return f"geopak-{split}-{number:06d}.tar"


def shard_name(split: str, number: int) -> str:
    """``train/geopak-train-000000.tar``: a shard's name relative to the shard folder."""
    return f"{split}/{shard_file_name(split, number)}"


def shard_glob(split: str) -> str:
    """The glob that matches every shard of ``split`` inside ``DIR/split``."""
    return f"geopak-{split}-*.tar"


def list_shards(root: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of ``split`` under ``root``, in name (= number) order."""
    folder = Path(root) / split
    return sorted(folder.glob(shard_glob(split))) if folder.is_dir() else []


# ----------------------------------------------------------------------------- sample json


# One encoder for every sample: json.dumps with options builds a new encoder on each call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_bytes(obj: dict[str, Any]) -> bytes:
    """A sample's json member: compact, UTF-8, keys in the order given."""
    return _JSON.encode(obj).encode("utf-8")


# ----------------------------------------------------------------------------- cells


def cell_id_order(
    ids: Sequence[Any] | np.ndarray, *, where: str = "cell table", hint: str = ""
) -> np.ndarray:
    """The row order that sorts ``ids``; GeopakError unless they are exactly 0..n-1.

    Every reader of a cells table relies on row i being cell i (the model's head layout, the
    sample json's cell centre), so this is the one place that check lives.
    """
    arr = np.asarray(ids, dtype=np.int64)
    order = np.argsort(arr, kind="stable")
    if not np.array_equal(arr[order], np.arange(len(arr))):
        raise GeopakError(
            f"{where}: cell_id must be contiguous from 0" + (f"; {hint}" if hint else "")
        )
    return order


def read_table(path: Path, columns: Sequence[str] | None = None, *, hint: str = "") -> pa.Table:
    """A Parquet table of the shard folder (or the work folder); one-line error if unreadable."""
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise GeopakError(f"{path} is missing" + (f": {hint}" if hint else ""))
    try:
        return pq.read_table(path, columns=list(columns) if columns else None)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GeopakError(f"cannot read {path}: {first}") from None


def require_columns(
    names: Iterable[str], required: Sequence[str], *, where: str, hint: str
) -> None:
    """GeopakError naming the missing columns of a table (``hint`` says how to fix it)."""
    have = set(names)
    missing = [c for c in required if c not in have]
    if missing:
        raise GeopakError(f"{where}: missing columns {', '.join(missing)}; {hint}")


# ----------------------------------------------------------------------------- tars


def padded(n: int) -> int:
    """``n`` rounded up to whole tar blocks."""
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime, ti.mode, ti.uname, ti.gname = TAR_MTIME, TAR_MODE, TAR_USER, TAR_USER
    return ti


def _slow_header(name: str, size: int) -> bytes:
    return _tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_USTAR_SIZE_LIMIT = 8**11  # what the ustar size field (11 octal digits) holds without PAX
_TEMPLATE: list[tuple[bytes, bytes, bytes, int]] = []  # header bytes 100:124, 136:148, 156:512


def _template() -> tuple[bytes, bytes, bytes, int]:
    """The fixed fields of every member's header (mode, owner, mtime, magic...) and their byte
    sum, taken from ``tarfile`` itself so the fast path cannot drift from it."""
    if not _TEMPLATE:
        block = _slow_header("", 0)
        mid, mtime, tail = block[100:124], block[136:148], block[156:BLOCK]
        _TEMPLATE.append((mid, mtime, tail, sum(mid) + sum(mtime) + sum(tail)))
    return _TEMPLATE[0]


def member_header(name: str, size: int) -> bytes:
    """The header block(s) of one member (a PAX extension first for long or non-ASCII names).

    The common member (an ASCII name of at most 100 bytes, under 8 GiB) gets the ustar block
    ``tarfile`` would write, assembled from a template: name, size and checksum are the only
    fields that vary. ``tarfile``'s own encoder (about 20 us a member, a third of the time
    it takes to write a tar of 30 KB photos) builds every other header.
    """
    if len(name) > 100 or not name.isascii() or not 0 <= size < _USTAR_SIZE_LIMIT:
        return _slow_header(name, size)
    mid, mtime, tail, fixed = _template()
    raw = name.encode("ascii")
    size_field = b"%011o\0" % size
    chksum = fixed + sum(raw) + sum(size_field) + 256  # 256: the checksum field as 8 spaces
    return b"".join((raw, bytes(100 - len(raw)), mid, size_field, mtime, b"%06o\0 " % chksum, tail))


def _header_bytes(name: str) -> int:
    if len(name) < 100 and name.isascii():
        return BLOCK
    return len(member_header(name, 0))


def sample_tar_bytes(key: str, jpg_size: int, json_size: int) -> int:
    """Bytes one sample adds to a tar: two headers plus two padded payloads."""
    return (
        _header_bytes(f"{key}.jpg")
        + padded(jpg_size)
        + _header_bytes(f"{key}.json")
        + padded(json_size)
    )


def sample_tar_sizes(
    keys: Sequence[str], jpg_sizes: Sequence[int] | np.ndarray, json_sizes: Sequence[int]
) -> np.ndarray:
    """:func:`sample_tar_bytes` of many samples at once (int64), for the shard plan."""
    jpg = np.asarray(jpg_sizes, dtype=np.int64)
    js = np.asarray(json_sizes, dtype=np.int64)
    heads = np.fromiter(
        (
            2 * BLOCK
            if len(k) < 95 and k.isascii()  # both names ("k.json" is 5 longer) fit a block
            else _header_bytes(f"{k}.jpg") + _header_bytes(f"{k}.json")
            for k in keys
        ),
        dtype=np.int64,
        count=len(keys),
    )
    return heads + (jpg + BLOCK - 1) // BLOCK * BLOCK + (js + BLOCK - 1) // BLOCK * BLOCK


def tar_size(sample_bytes: int) -> int:
    """Final tar size for members totalling ``sample_bytes``: end-of-archive blocks, record padding."""
    return (sample_bytes + 2 * BLOCK + RECORD - 1) // RECORD * RECORD


def write_samples(fh: Any, samples: Iterable[tuple[str, bytes, bytes]]) -> int:
    """Write ``(key, jpg, json)`` samples to an open binary file as one complete tar.

    Byte for byte what ``tarfile.open(mode="w|")`` (and so ``webdataset.TarWriter``) writes for
    the same members, without the per-member stream machinery. Returns the bytes written.
    """
    n = 0
    for key, jpg, meta in samples:
        for name, payload in ((f"{key}.jpg", jpg), (f"{key}.json", meta)):
            head = member_header(name, len(payload))
            pad = -len(payload) % BLOCK
            fh.write(head)
            fh.write(payload)
            if pad:
                fh.write(b"\0" * pad)
            n += len(head) + len(payload) + pad
    end = tar_size(n) - n
    fh.write(b"\0" * end)
    return n + end


def file_identity(path: Path) -> dict[str, int] | None:
    """(size, mtime_ns, inode) of a file, or None: how a later run knows a tar is the one it wrote."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def write_tar(
    path: Path,
    samples: Iterable[tuple[str, bytes, bytes]],
    on_ready: Callable[[dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Write ``(key, jpg, json)`` samples to ``path`` atomically; return the file's identity.

    ``on_ready(identity)`` runs after the temporary file is complete and fsynced but before
    the rename, so bookkeeping that names the final file can never point at a torn one. The
    folder is not fsynced here (once per folder is enough: ``geopak_core.io.fsync_dir``); a
    rename lost to a power cut shows as a missing file, which a resumed run rewrites.
    """
    ident: dict[str, int] = {}

    def ready(tmp: Path) -> None:
        ident.update(file_identity(tmp) or {})
        if on_ready is not None:
            on_ready(dict(ident))

    with atomic_path(path, before_replace=ready, durable=False) as tmp:
        with open(tmp, "wb", buffering=1 << 20) as fh:
            write_samples(fh, samples)
            fh.flush()
            os.fsync(fh.fileno())
    return ident


def scan_json(shard: Path) -> Iterable[dict[str, Any]]:
    """The json member of every sample in one tar, in order (no image is decoded)."""
    with tarfile.open(shard) as tf:
        for member in tf:
            if member.name.endswith(".json"):
                fh = tf.extractfile(member)
                if fh is not None:
                    yield json.loads(fh.read())


# ----------------------------------------------------------------------------- stats.json


def _by(index: Any, col: str) -> dict[Any, dict[str, int]]:
    """{value of ``col``: {split: samples, ..., "total": n}} in sorted value order (what a
    pandas groupby on ``[col, "split"]`` counts, by numpy in a third of the time)."""
    out: dict[Any, dict[str, int]] = {}
    if not len(index):
        return out
    values = index[col].to_numpy(dtype=object)
    keep = np.asarray([v is not None and v == v for v in values], dtype=bool)  # no None/NaN
    split_of = {s: i for i, s in enumerate(SPLITS)}
    split_idx = np.asarray([split_of[str(s)] for s in index["split"].tolist()], dtype=np.int64)
    uniq, inv = np.unique(values[keep], return_inverse=True)
    counts = np.bincount(
        inv * len(SPLITS) + split_idx[keep], minlength=len(uniq) * len(SPLITS)
    ).reshape(-1, len(SPLITS))
    for value, row in zip(uniq.tolist(), counts.tolist(), strict=True):
        out[value] = {**dict(zip(SPLITS, row, strict=True)), "total": sum(row)}
    return out


def _zero() -> dict[str, int]:
    return {**{s: 0 for s in SPLITS}, "total": 0}


def _province_rows(index: Any, cells: Any, regions: RegionTable) -> list[dict[str, Any]]:
    prov = _by(index, "province_id")
    per = cells.groupby("province_id").size().to_dict() if len(cells) else {}
    return [
        {
            "province_id": pid,
            "province": regions.names[pid],
            **prov.get(pid, _zero()),
            "cells": int(per.get(pid, 0)),
        }
        for pid in range(regions.n)
    ]


def _cell_rows(index: Any, cells: Any, regions: RegionTable) -> list[dict[str, Any]]:
    counts = _by(index, "cell_id")
    return [
        {
            "cell_id": int(c["cell_id"]),
            "province_id": int(c["province_id"]),
            "province": regions.names[int(c["province_id"])],
            "radius_km": round(float(c["radius_km"]), 4),
            "urban": bool(c["urban"]),
            **counts.get(int(c["cell_id"]), _zero()),
        }
        for c in cells.to_dict("records")
    ]


def _years(index: Any) -> dict[str, Any]:
    """When the photos were taken: years of ``date_taken`` (ISO text; empty = no date)."""
    years = sorted(
        int(d[:4]) for d in (index["date_taken"] if len(index) else []) if str(d)[:4].isdigit()
    )
    out: dict[str, Any] = {"dated": len(years), "undated": int(len(index) - len(years))}
    if years:
        out.update(first=years[0], last=years[-1], median=years[len(years) // 2])
    return out


def stats_document(
    *,
    index: Any,
    cells: Any,
    shard_sizes: dict[str, int],
    dataset: str,
    geopak_version: str,
    config_hash: str = "",
    shard_config_hash: str = "",
    seed: int = 0,
    fractions: dict[str, float] | None = None,
    split_rule: str = "",
    rejects: dict[str, dict[str, int]] | None = None,
    filter_notes: list[str] | None = None,
    excluded: dict[str, int] | None = None,
    groups: dict[str, int] | None = None,
    synthetic: bool = False,
    regions: RegionTable = PAKISTAN,
) -> dict[str, Any]:
    """``stats.json``: every count the card and ``stats`` show, computed from index and cells.

    ``index`` and ``cells`` are pandas frames of the folder's two tables; ``shard_sizes`` maps
    each shard's name (``train/geopak-train-000000.tar``) to its size in bytes; ``regions``
    is the folder's region table (``regions.parquet``).
    """
    rejects = rejects or {}
    splits = {}
    for s in SPLITS:
        names = [k for k in shard_sizes if k.startswith(f"{s}/")]
        splits[s] = {
            "samples": int((index["split"] == s).sum()) if len(index) else 0,
            "shards": len(names),
            "bytes": int(sum(shard_sizes[k] for k in names)),
        }
    licenses = index.groupby("license").size().to_dict() if len(index) else {}
    doc = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "geopak_version": geopak_version,
        "config_hash": config_hash,
        "shard_config_hash": shard_config_hash,
        "seed": seed,
        "fractions": dict(fractions or {}),
        "split_rule": split_rule,
        "samples": int(len(index)),
        "splits": splits,
        "regions": regions_entry(regions),
        "provinces": _province_rows(index, cells, regions),
        "cells": _cell_rows(index, cells, regions),
        "sources": {str(k): v for k, v in sorted(_by(index, "source").items())},
        "licenses": {str(k): int(v) for k, v in sorted(licenses.items())},
        "rejects": rejects,
        "rejects_total": int(sum(sum(r.values()) for r in rejects.values())),
        "excluded": dict(excluded or {}),
        "groups": dict(groups or {}),
        "filter_notes": list(filter_notes or []),
        "restricted_included": int(index["restricted"].sum()) if len(index) else 0,
        "years": _years(index),
    }
    if synthetic:  # only then: stats.json of real data keeps its bytes
        doc["synthetic"] = True
    return doc


def cells_with_counts(
    cells: Any, cell_ids: np.ndarray, split_ids: np.ndarray, regions: RegionTable = PAKISTAN
) -> Any:
    """The shard folder's cells table: ``n_samples`` and ``n_{split}`` counted from the samples.

    ``cell_ids``/``split_ids`` (index into SPLITS) hold one entry per sample in the folder.
    """
    out = cells.copy()
    n = len(out)
    out["n_samples"] = np.bincount(cell_ids, minlength=n).astype(np.int64)
    for si, split in enumerate(SPLITS):
        out[f"n_{split}"] = np.bincount(cell_ids[split_ids == si], minlength=n).astype(np.int64)
    out["province"] = [regions.names[int(p)] for p in out["province_id"]]
    front = [c for c in CELL_COLUMNS if c in out.columns]
    return out[front + [c for c in out.columns if c not in front]]


# ----------------------------------------------------------------------------- verification


def verify_shard(
    path: Path, keys: Sequence[str] | None = None, sha256: Sequence[str] | None = None
) -> str:
    """What is wrong with one tar ('' when nothing): every reader runs this before trusting
    a shard, because a tar stream ends silently at a damaged header or a truncation and a
    reader would train or evaluate on part of the data without a word.

    Checks: the file exists and is a complete tar (nothing but end-of-archive zeros after the
    last member); every sample has a ``.jpg`` and a ``.json`` that parses; with ``keys`` (from
    ``index.parquet``) the samples are exactly those keys, in that order; with ``sha256`` the
    jpg bytes hash to the recorded digest (empty entries are not checked).
    """
    if not path.is_file():
        return "missing"
    want_sha = dict(zip(keys, sha256, strict=True)) if keys is not None and sha256 else {}
    members: dict[str, set[str]] = {}  # sample key -> member extensions, in tar order
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                problem = _member_problem(tf, m, members, want_sha)
                if problem:
                    return problem
            end = tf.offset
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"not a readable tar ({str(exc) or type(exc).__name__})"
    got = list(members)
    incomplete = [k for k in got if members[k] != {"jpg", "json"}]
    return (
        _tail_problem(path, end)
        or (f"sample {incomplete[0]} lacks its .jpg or .json" if incomplete else "")
        or (_keys_problem(list(keys), got) if keys is not None else "")
    )


def _member_problem(
    tf: tarfile.TarFile,
    m: tarfile.TarInfo,
    members: dict[str, set[str]],
    want_sha: dict[str, str],
) -> str:
    import hashlib

    stem, _, ext = m.name.rpartition(".")
    if not m.isfile() or not stem or "/" in m.name:
        return f"unexpected member {m.name!r}"
    members.setdefault(stem, set()).add(ext)
    fh = tf.extractfile(m)
    data = fh.read() if fh is not None else b""
    if len(data) != m.size:
        return f"member {m.name} is truncated"
    if ext == "json":
        try:
            json.loads(data)
        except ValueError as exc:
            return f"member {m.name} is not valid JSON ({exc})"
    elif ext == "jpg" and want_sha.get(stem):
        if hashlib.sha256(data).hexdigest() != want_sha[stem]:
            return f"member {m.name} does not match its sha256 in index.parquet"
    return ""


def _tail_problem(path: Path, end: int) -> str:
    """After the last member only end-of-archive zeros may follow, at least two blocks."""
    with open(path, "rb") as fh:
        fh.seek(end)
        while block := fh.read(1 << 16):
            if block.strip(b"\0"):
                return f"damaged member header at byte {end} (the tar stream ends there)"
    size = path.stat().st_size
    if size - end < 2 * BLOCK:
        return f"truncated at byte {size} (no end-of-archive marker)"
    return ""


def _keys_problem(keys: list[str], got: list[str]) -> str:
    if keys == got:
        return ""
    lost = sorted(set(keys) - set(got))
    extra = sorted(set(got) - set(keys))
    if lost:
        what = f"{len(lost)} sample(s) of index.parquet missing (e.g. {lost[0]})"
    elif extra:
        what = f"{len(extra)} sample(s) not in index.parquet (e.g. {extra[0]})"
    else:
        what = "samples in another order than index.parquet"
    return f"{len(got)} samples, index.parquet lists {len(keys)}: {what}"


def expected_by_shard(index: Any) -> dict[str, tuple[list[str], list[str]]]:
    """index.parquet (a pyarrow Table with key, shard[, sha256]) as {shard: (keys, sha256s)}."""
    cols = index.column_names
    keys = index.column("key").to_pylist()
    shards = index.column("shard").to_pylist()
    shas = index.column("sha256").to_pylist() if "sha256" in cols else [""] * len(keys)
    out: dict[str, tuple[list[str], list[str]]] = {}
    for k, s, h in zip(keys, shards, shas, strict=True):
        ks, hs = out.setdefault(str(s), ([], []))
        ks.append(str(k))
        hs.append(str(h or ""))
    return out


def verify_folder(
    root: Path,
    splits: Sequence[str] = SPLITS,
    *,
    check_sha256: bool = True,
    cache: bool = True,
) -> dict[str, tuple[int, str]]:
    """{shard name: (samples index.parquet lists for it, problem)} for every bad shard of
    ``splits``: each listed shard is verified against its keys (and sha256), and a tar on disk
    that the index does not list is a problem too. Empty when the folder is sound.

    With ``cache`` a tar that verified clean before, as the very same file against the same
    keys and hashes, is not read again (``geopak_core.verified``); ``cache=False`` reads all."""
    root = Path(root)
    index_path = root / "index.parquet"
    if not index_path.is_file():
        raise GeopakError(f"{index_path} is missing: not a complete geopak shard folder")
    import pyarrow.parquet as pq

    columns = ["key", "split", "shard"]
    try:
        names = pq.read_schema(index_path).names
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise GeopakError(f"cannot read {index_path}: {str(exc).splitlines()[0]}") from None
    require_columns(names, columns, where=str(index_path), hint="re-run `geopak-data shard`")
    if check_sha256 and "sha256" in names:
        columns.append("sha256")
    table = read_table(index_path, columns)
    want = set(splits)
    mask = [s in want for s in table.column("split").to_pylist()]
    expected = expected_by_shard(table.filter(pa.array(mask, pa.bool_())))
    bad = _verify_listed(root, expected, check_sha256=check_sha256, cache=cache)
    for split in splits:
        for p in list_shards(root, split):
            name = p.relative_to(root).as_posix()
            if name not in expected:
                bad[name] = (0, "not listed in index.parquet")
    return bad


def _verify_listed(
    root: Path,
    expected: dict[str, tuple[list[str], list[str]]],
    *,
    check_sha256: bool,
    cache: bool,
) -> dict[str, tuple[int, str]]:
    """``verify_shard`` for every shard the index lists, skipping those known good."""
    from .verified import VerifiedShards, expectation, identity

    record = VerifiedShards(root) if cache else None
    bad: dict[str, tuple[int, str]] = {}
    for name, (keys, shas) in sorted(expected.items()):
        sha = shas if check_sha256 else None
        ident, expect = identity(root / name), expectation(keys, sha)
        if record is not None and record.known_good(name, ident, expect):
            continue
        problem = verify_shard(root / name, keys, sha)
        if problem:
            bad[name] = (len(keys), problem)
            if record is not None:
                record.forget(name)
        elif record is not None:
            record.remember(name, ident, expect)
    if record is not None:
        record.save()
    return bad


def require_sound(root: Path, *, what: str) -> None:
    """``verify_folder`` for every split, as one ``GeopakError`` naming the first bad shard
    (``what`` says which command refuses, e.g. "publish")."""
    bad = verify_folder(Path(root))
    if bad:
        name, (n, problem) = next(iter(sorted(bad.items())))
        more = f" (and {len(bad) - 1} more bad shard(s))" if len(bad) > 1 else ""
        raise GeopakError(
            f"{what}: {Path(root) / name}: {problem}{more}; rebuild the shards with `geopak-data shard`"
        )


# ----------------------------------------------------------------------------- regions.parquet


def regions_entry(regions: RegionTable) -> dict[str, Any]:
    """What ``stats.json`` says about the region table (the card shows the same)."""
    return {
        "file": REGIONS_FILE,
        "country": regions.country,
        "count": regions.n,
        "level": "first-level administrative unit (JSON keys province / province_id)",
    }


def write_regions(folder: str | Path, regions: RegionTable, *, durable: bool = True) -> Path:
    """Write the shard folder's ``regions.parquet`` (``province_id``, ``province``, ``iso``, ``area_km2``)."""
    return regions.write(Path(folder) / REGIONS_FILE, durable=durable)


def read_regions(folder: str | Path) -> RegionTable:
    """A shard folder's region table: ``regions.parquet``, else recovered from ``cells.parquet``
    (folders written before the region table existed hold Pakistan's ids)."""
    return regions_in(folder)
