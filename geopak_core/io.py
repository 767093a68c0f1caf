"""Atomic file writes and crash-safe Parquet part stores.

Every file a stage produces is written to a temporary name in the same folder, flushed and
fsynced, then renamed into place: a reader (or a resumed stage) sees either the old file or
the complete new one, never a torn write, even after SIGKILL.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import (os.umask can only be read by setting it): mkstemp creates 0600 files,
# and shards, tables and images must get the usual permissions of a new file instead.
FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    suffix: str = "",
    *,
    before_replace: Callable[[Path], None] | None = None,
    durable: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    ``before_replace(tmp)`` runs once the temporary file is complete and fsynced, just before
    the rename: bookkeeping that names the final file (the shard stage's state) is saved then,
    so it can never point at a torn file.

    The rename alone makes the write atomic against process death (kill -9). ``durable``
    (the default) also fsyncs the file and its folder so it survives a power loss; writers of
    many small files whose loss a resumed run detects (downloaded images, the shard stage's
    bookkeeping) pass ``durable=False`` and make their own commit points durable.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f"{suffix}.tmp", dir=target.parent
        )
    except OSError as exc:  # full disk, read-only folder: name the file meant, not a temp name
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, FILE_MODE)
        try:
            yield tmp_path
            if durable:
                with open(tmp_path, "rb") as fh:
                    os.fsync(fh.fileno())
            if before_replace is not None:
                before_replace(tmp_path)
            os.replace(tmp_path, target)
        except OSError as exc:
            if exc.filename is None or str(exc.filename) == str(tmp_path):
                # name the file being written, not its temporary twin
                raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
            raise
        if durable:
            fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the renames inside ``folder`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` so a reader sees the old file or the whole new one, never a torn write."""
    if not durable:
        _write_renamed(Path(path), data)
        return
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


_TMP_SEQ = itertools.count()


def _write_renamed(target: Path, data: bytes) -> None:
    """``atomic_path(durable=False)`` for one bytes object in the fewest system calls: a temp
    file created with the final mode (``O_EXCL``, a process-unique name that
    ``clean_stale_temps`` recognises), written, renamed over ``target``; the folder is made
    only when it is missing.

    Why: the crawl writes one such file per image; ``mkstemp``'s random names, the extra
    ``chmod``, ``mkdir`` and ``stat`` per file cost as much as a third of storing a small
    image, mostly while holding the GIL the downloader's event loop needs.
    """
    folder = target.parent
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    made = False
    while True:
        tmp = os.path.join(folder, f".{target.name}.{os.getpid()}-{next(_TMP_SEQ)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies: FILE_MODE, as atomic_path
            break
        except FileExistsError:  # left by a killed process that had our pid: next name
            continue
        except FileNotFoundError as exc:
            if made:
                raise OSError(exc.errno, exc.strerror, str(target)) from exc
            folder.mkdir(parents=True, exist_ok=True)
            made = True
        except OSError as exc:  # full disk, read-only folder: name the file meant
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """UTF-8 text written atomically (see ``atomic_write_bytes``), whatever the locale."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, durable: bool = True) -> None:
    """JSON written atomically with sorted keys, so reruns produce byte-identical files."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_text(path, text, durable=durable)


def atomic_write_parquet(path: str | os.PathLike, table: pa.Table, *, durable: bool = True) -> None:
    """A zstd Parquet file written atomically, so a killed stage never leaves half a table."""
    with atomic_path(path, durable=durable) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def make_durable(paths: list[Path]) -> None:
    """fsync ``paths`` (written with ``durable=False``) at once, then each folder once.

    A stage that writes several small files fsyncs them together at its commit point instead
    of one after the other (each fsync waits for the disk): the same guarantee once this
    returns, the waits overlapped. A rename is atomic without it; this is for power loss.
    """
    from concurrent.futures import ThreadPoolExecutor

    def sync(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    files = [Path(p) for p in paths if Path(p).is_file()]
    if not files:
        return
    with ThreadPoolExecutor(
        max_workers=min(8, len(files)), thread_name_prefix="geopak-fsync"
    ) as pool:
        list(pool.map(sync, files))
    for folder in sorted({p.parent for p in files}):
        fsync_dir(folder)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON at ``path`` (``default`` if there is none); a damaged file is a one-line
    ``GeopakError`` naming it, never a traceback."""
    from geopak_core.errors import GeopakError

    p = Path(path)
    if not p.exists():
        return default
    try:
        return json.loads(p.read_text("utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise GeopakError(f"{p} is damaged (not valid JSON: {exc})") from None


def folder_arg(value: str) -> Path:
    """argparse type for a folder that is created when missing (``--work``, ``--out``): an
    existing file, or a path under a file, is refused in one line before any work starts."""
    import argparse

    p = Path(value)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise argparse.ArgumentTypeError(f"{q} is a file, not a folder")
            break
    return p


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large shards never sit whole in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def clean_stale_temps(folder: str | os.PathLike) -> int:
    """Remove ``*.tmp`` files left by a killed writer; returns how many were removed."""
    n = 0
    root = Path(folder)
    if not root.exists():
        return 0
    for tmp in root.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            n += 1
    return n


class PartStore:
    """A folder of Parquet parts, one per completed unit of work.

    A stage splits its work into deterministic units (a page of API results, a batch of
    downloads). When a unit finishes its rows are committed atomically as ``<unit>.parquet``;
    a resumed stage skips units whose part exists. Concatenating the parts in unit order gives
    exactly the table an uninterrupted run produces: nothing lost, nothing duplicated.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.folder)

    def _path(self, unit: str) -> Path:
        if "/" in unit or unit.startswith("."):
            raise ValueError(f"bad unit id {unit!r}")
        return self.folder / f"{unit}.parquet"

    def has(self, unit: str) -> bool:
        return self._path(unit).exists()

    def done_units(self) -> set[str]:
        return {p.stem for p in self.folder.glob("*.parquet")}

    def write(self, unit: str, table: pa.Table) -> None:
        atomic_write_parquet(self._path(unit), table)

    def read(self, unit: str) -> pa.Table:
        return pq.read_table(self._path(unit))

    def read_all(self, units: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        names = units if units is not None else sorted(self.done_units())
        tables = [self.read(u) for u in names if self.has(u)]
        if not tables:
            if schema is None:
                raise ValueError("no parts and no schema")
            return schema.empty_table()
        if schema is not None:
            tables = [t.select(schema.names).cast(schema) for t in tables]
        return pa.concat_tables(tables, promote_options="default")

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
