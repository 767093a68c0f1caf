"""Stable hashes: the same value in every process, on every machine, for every Python.

Python's ``hash`` is salted per process (PYTHONHASHSEED), so anything that must come out the
same on a re-run -- the shard stage's shuffle, the training loader's seeds -- hashes through
here instead (blake2b over the parts joined by a unit separator).
"""

from __future__ import annotations

import hashlib


def stable_u64(*parts: object) -> int:
    """A 64-bit integer from printable parts; the same in every process and on every machine."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from printable parts (fits a signed int64, as torch and numpy want)."""
    return stable_u64(*parts) & ((1 << 63) - 1)
