"""Resume: a run killed with SIGKILL (or interrupted) and resumed ends with the same weights,
metrics and logs as an uninterrupted run; nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from geopak_core.errors import GeopakError
from geopak_model import train as T
from geopak_model.checkpoint import load_checkpoint, read_payload

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")]

REPO = Path(__file__).resolve().parents[2]

# From pixels, so shuffling, augmentation, dropout and accumulation all take part.
SETTINGS = dict(
    phase=1,
    epochs=2,
    batch_size=8,
    grad_accum=2,
    balance="both",
    seed=3,
    shuffle_buffer=30,
    checkpoint_every=2,
    num_workers=0,
    plots=False,
    log_every=1,
)


def _cli_args(shards: Path, out: Path) -> list[str]:
    return [
        "--shards", str(shards), "--out", str(out), "--phase", "1", "--preset", "tiny", "--epochs", "2",
        "--batch-size", "8", "--grad-accum", "2", "--balance", "both", "--seed", "3", "--shuffle-buffer", "30",
        "--checkpoint-every", "2", "--workers", "0", "--no-plots", "--log-every", "1", "--device", "cpu",
    ]  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_payload(path)["state_dict"]


def _rows(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in path.read_text().splitlines()
    ]


def _feature_run(shards: Path, features: Path, **kw) -> dict:
    """The settings of a phase-1 run from the embedding cache, batches of 16, no workers or
    plots; ``kw`` adds the run's own."""
    return dict(
        shards=shards,
        features=features,
        phase=1,
        batch_size=16,
        num_workers=0,
        plots=False,
        **kw,
    )


def _train_interrupted(monkeypatch, name: str, when, **settings) -> None:
    """``T.train(**settings)`` with ``T.<name>`` raising KeyboardInterrupt on the call for which
    ``when(call number, keyword args)`` holds; the real function is back afterwards."""
    real = getattr(T, name)
    calls = {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if when(calls["n"], kw):
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(T, name, dying)
    with pytest.raises(KeyboardInterrupt):
        T.train(**settings)
    monkeypatch.setattr(T, name, real)


def test_sigkilled_run_resumes_to_identical_weights(small_shards, tmp_path, one_thread):
    # the uninterrupted reference, in this process (one thread, like the child below)
    ref = T.train(shards=small_shards, out=tmp_path / "ref", preset="tiny", **SETTINGS)
    assert ref["finished"] and ref["step"] >= 8

    # the same run in a child process, killed with SIGKILL right after its first checkpoint
    run = tmp_path / "killed"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "GEOPAK_NO_PROGRESS": "1",
        "PYTHONPATH": str(REPO),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "geopak_model.train_cli", *_cli_args(small_shards, run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "child never wrote a checkpoint"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    state = read_payload(run / "last.pt")["extra"]["train"]
    assert not state["finished"] and 0 < state["step"] < ref["step"]

    # without --resume the folder is protected; with it the run finishes
    with pytest.raises(GeopakError, match="unfinished run .* pass --resume"):
        T.train(shards=small_shards, out=run, preset="tiny", **SETTINGS)
    resumed = T.train(shards=small_shards, out=run, preset="tiny", resume=True, **SETTINGS)
    assert resumed["step"] == ref["step"]

    a, b = _weights(tmp_path / "ref" / "last.pt"), _weights(run / "last.pt")
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"weights differ after resume: {diff[:5]}"
    assert torch.equal(
        _weights(tmp_path / "ref" / "best.pt")["province_head.0.weight"],
        _weights(run / "best.pt")["province_head.0.weight"],
    )
    # nothing lost, nothing duplicated in the logs
    assert _rows(tmp_path / "ref" / "metrics.jsonl") == _rows(run / "metrics.jsonl")
    ref_log, run_log = _rows(tmp_path / "ref" / "train_log.jsonl"), _rows(run / "train_log.jsonl")
    assert [r["step"] for r in run_log] == [r["step"] for r in ref_log]
    assert [r["loss"] for r in run_log] == pytest.approx([r["loss"] for r in ref_log], rel=1e-6)

    # a finished run resumed again does no work and says so
    again = T.train(shards=small_shards, out=run, preset="tiny", resume=True, **SETTINGS)
    assert again["already_done"] and again["step"] == ref["step"]


def test_interrupted_feature_run_resumes_to_identical_weights(
    toy_shards, toy_features, tmp_path, monkeypatch, one_thread
):
    """Interrupted (KeyboardInterrupt) in the middle of an epoch, between two checkpoints."""
    settings = _feature_run(
        toy_shards, toy_features, epochs=3, seed=5, checkpoint_every=4, balance="sample"
    )
    ref = T.train(out=tmp_path / "ref", **settings)

    # two steps after the checkpoint of step 16, in the second epoch
    _train_interrupted(
        monkeypatch, "_optimizer_step", lambda n, kw: n == 19, out=tmp_path / "run", **settings
    )
    state = read_payload(tmp_path / "run" / "last.pt")["extra"]["train"]
    assert state["step"] == 16 and state["epoch"] == 1 and state["micro_in_epoch"] > 0
    T.train(out=tmp_path / "run", resume=True, **settings)
    a, b = _weights(tmp_path / "ref" / "last.pt"), _weights(tmp_path / "run" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "ref" / "metrics.jsonl") == _rows(tmp_path / "run" / "metrics.jsonl")
    assert ref["step"] > 19


def test_resume_refuses_another_phase(toy_shards, toy_features, tmp_path, one_thread):
    T.train(
        shards=toy_shards,
        features=toy_features,
        out=tmp_path / "r",
        phase=0,
        epochs=1,
        max_steps=2,
        num_workers=0,
        plots=False,
    )
    model, payload = load_checkpoint(tmp_path / "r" / "last.pt")
    assert payload["extra"]["train"]["finished"]
    with pytest.raises(GeopakError, match="holds a phase 0 run"):
        T.train(
            shards=toy_shards,
            features=toy_features,
            out=tmp_path / "r",
            phase=1,
            resume=True,
            num_workers=0,
        )


def test_killed_between_last_step_and_final_validation(
    toy_shards, toy_features, tmp_path, monkeypatch, one_thread
):
    """The last step's checkpoint is written, the final validation never happens: resuming
    validates, writes best.pt and marks the run finished, with the reference's metrics."""
    settings = _feature_run(toy_shards, toy_features, epochs=2, checkpoint_every=13, balance="none")
    ref = T.train(out=tmp_path / "ref", **settings)
    assert ref["step"] == 26  # 13 steps per epoch: checkpoints fall on the epochs' last steps

    _train_interrupted(
        monkeypatch, "_validate", lambda n, kw: kw["step"] == 26, out=tmp_path / "run", **settings
    )
    state = read_payload(tmp_path / "run" / "last.pt")["extra"]["train"]
    assert state["step"] == 26 and not state["finished"]
    assert len(_rows(tmp_path / "run" / "metrics.jsonl")) == 1

    T.train(out=tmp_path / "run", resume=True, **settings)
    assert read_payload(tmp_path / "run" / "last.pt")["extra"]["train"]["finished"]
    assert _rows(tmp_path / "ref" / "metrics.jsonl") == _rows(tmp_path / "run" / "metrics.jsonl")
    a, b = _weights(tmp_path / "ref" / "best.pt"), _weights(tmp_path / "run" / "best.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
