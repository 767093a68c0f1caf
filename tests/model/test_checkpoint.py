"""Checkpoints: self-contained round trip, training state in ``extra``, safe loading only."""

from __future__ import annotations

import os
import pickle
import random
import zipfile

import numpy as np
import pytest
import torch

from geopak_core.errors import GeopakError
from geopak_model.cells import CellTable
from geopak_model.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from geopak_model.config import load_model_config
from geopak_model.inference import predict_batch
from geopak_model.model import GeopakModel

torch.set_num_threads(1)  # 2 shared cores: more threads only spin


def tiny_model(seed: int = 0) -> GeopakModel:
    torch.manual_seed(seed)
    cells = CellTable(
        cell_id=np.arange(4),
        province_id=[0, 0, 1, 4],
        center_lat=[24.86, 25.40, 31.52, 35.92],
        center_lon=[67.0, 68.37, 74.36, 74.31],
        radius_km=[5.0, 10.0, 8.0, 40.0],
        n_samples=[9, 3, 5, 2],
    )
    model = GeopakModel(load_model_config("tiny", tau_km=12.5), cells)
    with torch.no_grad():  # non-trivial offsets, so the round trip covers the offset head too
        for p in model.offset_head.parameters():
            p.normal_(0, 0.1)
    return model


def test_round_trip_gives_identical_predictions(tmp_path):
    model = tiny_model()
    model.set_phase(2, unfreeze_last_n=1)
    clip, places = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    before = predict_batch(model, clip, places)
    path = save_checkpoint(tmp_path / "run" / "best.pt", model)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp left

    loaded, payload = load_checkpoint(path)
    after = predict_batch(loaded, clip, places)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not loaded.training and loaded.phase == 2
    assert loaded.config == model.config and loaded.config.tau_km == 12.5
    assert loaded.cells.to_dict() == model.cells.to_dict()
    assert payload["provinces"][0] == "Sindh" and payload["preprocessing"]["places"]["size"] == 64
    # The contract: the file itself loads with torch's safe loader.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "geopak-checkpoint" and raw["config"]["preset"] == "tiny"


def test_training_state_round_trip(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.param_groups(1e-3, 1e-5))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    out["province_logits"].sum().backward()
    opt.step()
    sched.step()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    extra = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": 17,
        "epoch": 2,
        "rng": capture_rng_state(),
    }
    expect = (random.random(), float(np.random.rand()), torch.rand(1).item())
    save_checkpoint(tmp_path / "last.pt", model, extra=extra)

    loaded, payload = load_checkpoint(tmp_path / "last.pt")
    assert payload["extra"]["step"] == 17 and payload["extra"]["epoch"] == 2
    opt2 = torch.optim.AdamW(loaded.param_groups(1e-3, 1e-5))
    opt2.load_state_dict(payload["extra"]["optimizer"])
    state = opt2.state_dict()["state"]
    assert state and all(
        torch.equal(state[i]["exp_avg"], extra["optimizer"]["state"][i]["exp_avg"]) for i in state
    )
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(payload["extra"]["rng"])
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expect


def test_save_refuses_non_plain_extra(tmp_path):
    with pytest.raises(TypeError, match="numpy"):
        save_checkpoint(tmp_path / "x.pt", tiny_model(), extra={"rng": {"numpy": np.zeros(3)}})
    assert not list(tmp_path.iterdir())  # nothing written


class Evil:
    """Unpickling this runs a shell command (creates a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_rejected_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    # 1) A torch zip checkpoint that looks like ours but carries an object with a reduce hook.
    payload = torch.load(save_checkpoint(tmp_path / "good.pt", tiny_model()), weights_only=True)
    payload["extra"] = {"x": Evil(str(marker))}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(GeopakError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    # 2) A legacy raw pickle with the same trick.
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"format": "geopak-checkpoint", "x": Evil(str(marker))}, fh)
    with pytest.raises(GeopakError):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GeopakError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(GeopakError, match="not a GEOPAK checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(GeopakError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    # Truncated (a run killed while copying the file): a clear error, not a traceback.
    good = save_checkpoint(tmp_path / "good.pt", tiny_model())
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(GeopakError):
        load_checkpoint(tmp_path / "cut.pt")
    assert zipfile.is_zipfile(good)


def test_weights_that_do_not_match_config(tmp_path):
    payload = torch.load(save_checkpoint(tmp_path / "a.pt", tiny_model()), weights_only=True)
    payload["config"]["fusion_dim"] = 256
    torch.save(payload, tmp_path / "b.pt")
    with pytest.raises(GeopakError, match="do not match"):
        load_checkpoint(tmp_path / "b.pt")
    payload["config"]["fusion_dim"] = -1
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(GeopakError, match="fusion_dim"):
        load_checkpoint(tmp_path / "c.pt")
