"""Which shards were already verified, so opening a shard folder again does not re-hash it.

``shardfmt.verify_folder`` reads every tar and hashes every image against ``index.parquet``
(tens of seconds per GB); a trainer, an evaluation or ``stats`` opens the same folder many
times. A tar that verified clean is remembered by its file identity (size, mtime_ns,
ctime_ns, inode, device) together with a digest of what it was checked against (its keys in
order and their sha256, or "no sha256"). Any write to the file changes its ctime, which no
user can set back, so a changed, truncated or replaced tar no longer matches and is verified
again; so is every tar when ``index.parquet`` lists other keys or hashes for it. Silent bit
rot that leaves the file's identity alone is not caught after the first check (a fresh
``verify_folder(..., cache=False)`` still reads everything).

Kept in the user cache (``GEOPAK_CACHE``, else the platform's cache folder), one small file
per folder under a name derived from the folder's real path, never in the shard folder: a
reader leaves the dataset exactly as it found it. Written atomically (parallel readers, e.g.
DDP ranks, at worst lose an entry); a damaged or unreadable record is simply no record; the
oldest records go once there are more than ``KEEP``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .io import atomic_write_json

VERSION = 1
KEEP = 500  # records (folders) kept in the cache


def expectation(keys: Sequence[str], sha256: Sequence[str] | None) -> str:
    """A digest of what a shard is verified against: its keys in order and their sha256."""
    h = hashlib.sha256(f"geopak-verified-v{VERSION}".encode())
    h.update(b"\x1e" + "\x1f".join(keys).encode("utf-8", "surrogateescape"))
    h.update(b"\x1e" + (b"no-sha256" if sha256 is None else "\x1f".join(sha256).encode()))
    return h.hexdigest()


def identity(path: Path) -> list[int] | None:
    """What changes whenever the file's content can have changed (None: no such file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def record_file(root: Path) -> Path:
    """Where the record of shard folder ``root`` lives."""
    base = os.environ.get("GEOPAK_CACHE")
    if base:
        folder = Path(base)
    else:
        import platformdirs

        folder = Path(platformdirs.user_cache_dir("geopak", appauthor=False))
    digest = hashlib.sha256(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return folder / "verified" / f"{digest[:24]}.json"


def _read(path: Path, root: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("root") != root:
        return {}
    shards = data.get("shards")
    return shards if isinstance(shards, dict) else {}


class VerifiedShards:
    """The record of one shard folder's verified tars (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._real = str(self.root.resolve())
        self.path = record_file(self.root)
        self._shards: dict[str, Any] = _read(self.path, self._real)
        self._changed = False

    def known_good(self, name: str, ident: list[int] | None, expect: str) -> bool:
        """Whether shard ``name`` verified clean as exactly this file, against ``expect``."""
        entry = self._shards.get(name)
        return (
            ident is not None
            and isinstance(entry, dict)
            and entry.get("id") == ident
            and entry.get("expect") == expect
        )

    def remember(self, name: str, ident: list[int] | None, expect: str) -> None:
        """Record a clean verification of the file whose identity was ``ident`` before it."""
        if ident is not None and identity(self.root / name) == ident:
            self._shards[name] = {"id": ident, "expect": expect}
            self._changed = True

    def forget(self, name: str) -> None:
        """Drop what is known of ``name`` (it is bad now, or gone)."""
        if self._shards.pop(name, None) is not None:
            self._changed = True

    def save(self) -> None:
        """Write the record (nothing happens when the cache cannot be written)."""
        if not self._changed:
            return
        data = {"version": VERSION, "root": self._real, "shards": self._shards}
        try:
            atomic_write_json(self.path, data, durable=False)
        except OSError:
            return
        self._changed = False
        _prune(self.path.parent)


def _prune(folder: Path) -> None:
    """Keep the newest ``KEEP`` records."""
    try:
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    except OSError:
        return
    for old in files[: max(0, len(files) - KEEP)]:
        try:
            old.unlink()
        except OSError:
            pass
