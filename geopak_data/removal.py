"""The removal list: photos their owners (or we) asked to take out of the dataset.

A plain text file (config ``shard.removal_list``), one entry per line, ``#`` starts a comment.
An entry may be

* a sample key, e.g. ``flickr-52345`` (as printed in ``{key}.json`` and ``index.parquet``);
* ``source:source_id``, e.g. ``flickr:52345``;
* a bare source id, e.g. ``52345`` -- it matches that id in *every* source, because the same
  Flickr photo can arrive through both the Flickr API and YFCC100M;
* the photo's URL as stored in the ``url`` column.

Removal happens at ``shard`` time so that an owner's request is honoured without re-crawling:
only the shards that held a removed photo are rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geopak_core.errors import GeopakError


@dataclass(frozen=True)
class RemovalList:
    """Parsed entries of a removal list (empty when no list is configured)."""

    entries: frozenset[str] = field(default_factory=frozenset)
    path: str = ""

    def __len__(self) -> int:
        return len(self.entries)

    def mask(
        self,
        *,
        key: Sequence[object],
        source: Sequence[object],
        source_id: Sequence[object],
        url: Sequence[object],
    ) -> np.ndarray:
        """True for every record that one of the entries names."""
        e = self.entries
        if not e:
            return np.zeros(len(key), dtype=bool)
        return np.fromiter(
            (
                str(k) in e or str(sid) in e or f"{src}:{sid}" in e or (bool(u) and str(u) in e)
                for k, src, sid, u in zip(key, source, source_id, url, strict=True)
            ),
            dtype=bool,
            count=len(key),
        )


def parse_removal_text(text: str) -> frozenset[str]:
    """The entries of a removal list: one per line, ``#`` comments stripped except in URL lines
    (a URL may contain ``#``)."""
    out = set()
    for line in text.splitlines():
        entry = (
            line.split("#", 1)[0].strip()
            if not line.lstrip().startswith(("http://", "https://"))
            else line.strip()
        )
        if entry:
            out.add(entry)
    return frozenset(out)


def load_removal_list(path: str | Path | None) -> RemovalList:
    """Read the configured list; a configured path that does not exist is a user error."""
    if not path:
        return RemovalList()
    p = Path(path)
    if not p.is_file():
        raise GeopakError(
            f"removal list not found: {p} (config shard.removal_list); create it (one key or "
            "source id per line) or unset the key"
        )
    try:
        text = p.read_text("utf-8")
    except UnicodeDecodeError:
        raise GeopakError(f"removal list {p} is not UTF-8 text") from None
    return RemovalList(parse_removal_text(text), str(p))
