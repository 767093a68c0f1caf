"""A work folder's state as {relative path: sha256}, to assert that a refused command
changed nothing (the fault-injection tests' "nothing else in the work folder changed")."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def snapshot(root: Path, *, ignore: tuple[str, ...] = (".lock",)) -> dict[str, str]:
    """Every regular file under ``root`` (lock files aside) with the sha256 of its bytes."""
    root = Path(root)
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and not p.name.endswith(ignore):
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


_LOG = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")


def one_line(text: str) -> str:
    """The single error line of a CLI's stderr (log lines aside); fails when there are several
    or a traceback."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not _LOG.match(ln)]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]
