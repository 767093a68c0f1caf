"""The resumable stage runner and the work folder's manifest.

A work folder holds one ``manifest.json`` with an entry per stage: status, config hash and
the config it was run with, fingerprints of its inputs and outputs, counts and timings.

``run_stage`` decides what to do:

* finished, same config, same inputs, outputs intact -> nothing to do, and it says so;
* finished but the config or an input changed -> it says what changed and runs again;
* interrupted (status still ``running``, e.g. after kill -9) -> it resumes; stages commit
  their work in atomic units (``io.PartStore``) so a resumed run ends with exactly the
  output of an uninterrupted one.

Stages downstream of a re-run stage notice on their next run that their input fingerprint
changed; stages whose inputs did not change stay done. That is "redo only what depends on it".
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore, atomic_write_json, atomic_write_text, file_sha256, read_json
from geopak_core.progress import log

from .config import PipelineConfig, config_hash, dump_toml, getattr_path, load_config

MANIFEST = "manifest.json"
WORK_CONFIG = "pipeline.toml"
_BIG_FILE = 256 * 1024 * 1024


@dataclass
class StageResult:
    """What a stage function returns: counts for the manifest and the summary line."""

    counts: dict[str, int] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    summary: str = ""
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    counts: dict[str, int]
    summary: str
    seconds: float
    changes: list[str] = field(default_factory=list)


@dataclass
class StageContext:
    """Everything a stage function needs: where to write, its config, what happened before."""

    work: Path
    name: str
    stage_dir: Path
    config: PipelineConfig
    config_hash: str
    previous: dict[str, Any] | None
    resumed: bool

    def part_store(self, sub: str, key: str) -> PartStore:
        """Parts for one kind of unit work, namespaced by a hash of what they depend on.

        Parts made under another hash (older config) are removed: they can never be reused.
        """
        root = self.stage_dir / ".parts"
        root.mkdir(parents=True, exist_ok=True)
        for other in root.glob(f"{sub}-*"):
            if other.name != f"{sub}-{key}":
                shutil.rmtree(other, ignore_errors=True)
        return PartStore(root / f"{sub}-{key}")


def stage_dir(work: Path, name: str) -> Path:
    """A stage's folder under the work folder; ``crawl:yfcc`` maps to ``crawl/yfcc``."""
    return Path(work) / name.replace(":", "/")


def fingerprint(path: Path) -> str:
    """sha256 of a file (size+mtime for very large external inputs); '' if missing."""
    p = Path(path)
    if not p.exists():
        return ""
    if p.is_dir():
        parts = sorted(
            str(q.relative_to(p)) + ":" + fingerprint(q)
            for q in p.rglob("*")
            if q.is_file() and not q.name.startswith(".")
        )
        return config_hash(parts)
    st = p.stat()
    if st.st_size > _BIG_FILE:
        return f"size{st.st_size}-mtime{st.st_mtime_ns}"
    return file_sha256(p)


# The file descriptors of the locks this process holds. A forked child (the shard stage's map,
# geopak_data.sidejob) would otherwise share them: an flock belongs to the open file, so a
# child still alive after its parent's kill -9 would keep the stage locked against the rerun.
_HELD_LOCKS: set[int] = set()


def _drop_locks_in_child() -> None:
    """After a fork, in the child: point every held lock's descriptor at /dev/null (the
    parent keeps the lock; the number stays valid, so nothing else in the child breaks)."""
    if not _HELD_LOCKS:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in list(_HELD_LOCKS):
            os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh.fileno(), flags)
        except BlockingIOError:
            raise GeopakError(
                f"another geopak process is running this stage ({path.name}); wait for it or stop it"
            ) from None
        _HELD_LOCKS.add(fh.fileno())
        try:
            yield
        finally:
            _HELD_LOCKS.discard(fh.fileno())
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class Manifest:
    """Read-modify-write of ``manifest.json`` under a file lock (stages may run in parallel)."""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.path = self.work / MANIFEST
        self.lock = self.work / ".manifest.lock"

    def load(self) -> dict[str, Any]:
        try:
            data = read_json(self.path, default=None)
        except GeopakError as exc:
            raise GeopakError(
                f"{exc}; move it aside and run again: stages re-run and reuse their finished parts"
            ) from None
        if data is None:
            return {"version": 1, "stages": {}}
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise GeopakError(
                f"{self.path} is not a geopak manifest (no 'stages' table); move it aside and run again"
            )
        return data

    def entry(self, name: str) -> dict[str, Any] | None:
        return self.load()["stages"].get(name)

    def update(self, name: str, **values: Any) -> dict[str, Any]:
        with _locked(self.lock):
            # writers hold the lock, so a temporary file seen now was left by a killed one
            for stale in self.work.glob(f".{MANIFEST}.*.tmp"):
                stale.unlink(missing_ok=True)
            data = self.load()
            entry = data["stages"].setdefault(name, {})
            entry.update(values)
            atomic_write_json(self.path, data)
            return entry


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{key} added ({new[k]!r})")
            elif k not in new:
                out.append(f"{key} removed")
            else:
                out.extend(_diff(old[k], new[k], key))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _previous_done(
    name: str, prev: dict[str, Any], work: Path, chash: str, snapshot: dict, input_fps: dict
) -> tuple[StageOutcome | None, list[str]]:
    """A finished previous run: its outcome if nothing changed, else what changed."""
    outputs_ok = all(fingerprint(work / rel) == fp for rel, fp in prev.get("outputs", {}).items())
    if prev.get("config_hash") == chash and prev.get("inputs") == input_fps and outputs_ok:
        counts = prev.get("counts", {})
        msg = f"{name}: already done ({_fmt_counts(counts)}); nothing to do"
        log.debug(msg)  # the caller reports the outcome (once)
        return StageOutcome(name, True, counts, msg, 0.0), []
    changes: list[str] = []
    if prev.get("config_hash") != chash:
        changes += [f"config {c}" for c in _diff(prev.get("config", {}), snapshot)]
    for label in sorted(set(prev.get("inputs", {})) | set(input_fps)):
        if prev.get("inputs", {}).get(label) != input_fps.get(label):
            changes.append(f"input {label} changed")
    if not outputs_ok:
        changes.append("outputs were modified or removed")
    log.info("%s: re-running because %s", name, "; ".join(changes) or "of a change")
    return None, changes


def _previous_unfinished(name: str, prev: dict[str, Any], chash: str, input_fps: dict) -> bool:
    """A killed, failed or interrupted previous run: whether this one resumes it."""
    resumed = prev.get("config_hash") == chash and prev.get("inputs") == input_fps
    how = {
        "running": "was killed",
        "failed": f"failed ({prev.get('error', '')})",
        "interrupted": "was interrupted",
    }[prev["status"]]
    log.info(
        "%s: previous run %s; %s",
        name,
        how,
        "resuming where it stopped" if resumed else "its config or inputs changed, starting over",
    )
    return resumed


def _call_recording_failure(manifest: Manifest, name: str, fn: Callable, ctx: StageContext) -> Any:
    """``fn(ctx)``; a failure is recorded in the manifest (as failed or interrupted) and re-raised."""
    try:
        return fn(ctx)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            manifest.update(
                name,
                status=status,
                pid=None,
                error=f"{type(exc).__name__}: {exc}"[:1000],
                finished=time.time(),
            )
        except (OSError, GeopakError) as inner:
            # a full or read-only disk fails this write too: the stage's own error is the
            # one to report (the entry stays 'running', which a rerun resumes from)
            log.warning("%s: could not record the failure in %s (%s)", name, MANIFEST, inner)
        raise


def run_stage(
    *,
    work: Path,
    name: str,
    config: PipelineConfig,
    sections: list[str],
    inputs: dict[str, Path],
    fn: Callable[[StageContext], StageResult],
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> StageOutcome:
    """Run stage ``name`` unless it is already done with the same config and inputs.

    ``sections`` are the config sections the stage depends on (e.g. ``["filter"]``);
    ``inputs`` maps a label to a file or folder whose content the stage reads; ``extra`` holds
    other settings that change the output (e.g. a command-line endpoint). Only these decide
    whether the stage must run again.
    """
    work = Path(work)
    manifest = Manifest(work)
    snapshot = {s: dataclasses.asdict(getattr_path(config, s)) for s in sections}
    if extra:
        snapshot["_extra"] = extra
    chash = config_hash(snapshot)
    input_fps = {label: fingerprint(Path(p)) for label, p in inputs.items()}
    missing = [label for label, fp in input_fps.items() if not fp]
    if missing:
        raise GeopakError(
            f"{name}: missing input {', '.join(missing)} "
            f"({', '.join(str(inputs[m]) for m in missing)}); run the earlier stage first"
        )

    sdir = stage_dir(work, name)
    work.mkdir(parents=True, exist_ok=True)  # only now: a stage that cannot start leaves nothing
    with _locked(work / f".{name.replace(':', '_')}.lock", blocking=False):
        prev = manifest.entry(name)
        changes: list[str] = ["forced"] if force else []
        resumed = False
        if prev and not force and prev.get("status") == "done":
            done, changes = _previous_done(name, prev, work, chash, snapshot, input_fps)
            if done is not None:
                return done
        elif prev and not force and prev.get("status") in ("running", "failed", "interrupted"):
            resumed = _previous_unfinished(name, prev, chash, input_fps)

        started = time.time()
        manifest.update(
            name,
            status="running",
            pid=os.getpid(),
            config_hash=chash,
            config=snapshot,
            inputs=input_fps,
            started=started,
        )
        ctx = StageContext(
            work=work,
            name=name,
            stage_dir=sdir,
            config=config,
            config_hash=chash,
            previous=prev,
            resumed=resumed,
        )
        sdir.mkdir(parents=True, exist_ok=True)
        result = _call_recording_failure(manifest, name, fn, ctx)
        seconds = time.time() - started
        outputs = {
            str(Path(o).resolve().relative_to(work.resolve())): fingerprint(Path(o))
            for o in result.outputs
        }
        manifest.update(
            name,
            status="done",
            pid=None,
            error=None,
            counts=result.counts,
            outputs=outputs,
            notes=result.notes,
            finished=time.time(),
            seconds=round(seconds, 3),
        )
    summary = result.summary or f"{name}: {_fmt_counts(result.counts)}"
    summary = f"{summary} in {seconds:.1f}s"
    log.debug(summary)  # the caller reports the outcome (once): a command prints it
    return StageOutcome(name, False, result.counts, summary, seconds, changes)


def _fmt_counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no counts"


def work_config(
    work: Path,
    config_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    check: Callable[[PipelineConfig], None] | None = None,
) -> PipelineConfig:
    """The config a stage command uses: ``--config`` (remembered in the work folder), else the
    work folder's remembered one, else the defaults.

    ``check`` runs on the loaded config before anything is written (a missing API key or
    input file must not leave a half-made work folder behind)."""
    work = Path(work)
    remembered = work / WORK_CONFIG
    if config_path is not None:
        cfg = load_config(config_path, overrides)
    elif remembered.exists():
        cfg = load_config(remembered, overrides)
    else:
        cfg = load_config(None, overrides)
    if check is not None:
        check(cfg)
    if config_path is not None:
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(remembered, dump_toml(cfg))
    return cfg
