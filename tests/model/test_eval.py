"""geopak-eval on a hand-checked toy case, and its user errors.

The toy case: two cells at the issue's reference points, Karachi (24.8607, 67.0011; Sindh)
and Lahore (31.5204, 74.3587; Punjab), 1,033 km apart. A tiny model whose heads are hand-set
to answer "Sindh, the Karachi cell, no offset" for every image is evaluated on four test
photos: two at the Karachi centre, one 0.1 degree north of it, one at the Lahore centre.
By hand:

    errors     0, 0, 11.1195 (0.1 deg x 111.195 km), 1033.x km
    median     (0 + 11.12) / 2           = 5.56 km
    mean       (11.12 + 1033.x) / 4      = 261.1 km
    p90        11.12 + 0.7 (1033.x - 11.12) (numpy's linear rule, position 2.7)
    acc        1 km: 2/4, 25 / 200 / 750 km: 3/4
    province   3/4 (Sindh 1.0, Punjab 0.0); cell top-1 3/4, top-5 4/4 (only two cells)

The training split has three photos in Karachi and one in Lahore, so both baselines answer
Karachi too and score the same as the model.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from geopak_core.geo import EARTH_RADIUS_KM, haversine_km
from geopak_model import eval_cli
from geopak_model.cells import CellTable
from geopak_model.checkpoint import save_checkpoint
from geopak_model.config import load_model_config
from geopak_model.model import build_model
from geopak_model.testing import sample_meta, write_shard_folder

pytestmark = pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")

KHI = (24.8607, 67.0011)
LHR = (31.5204, 74.3587)
CELLS = [
    {
        "cell_id": 0,
        "province_id": 0,
        "province": "Sindh",
        "center_lat": KHI[0],
        "center_lon": KHI[1],
        "radius_km": 10.0,
        "n_samples": 0,
        "urban": True,
    },
    {
        "cell_id": 1,
        "province_id": 1,
        "province": "Punjab",
        "center_lat": LHR[0],
        "center_lon": LHR[1],
        "radius_km": 10.0,
        "n_samples": 0,
        "urban": True,
    },
]


def _jpg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def hand_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand")
    points = {
        "train": [KHI, KHI, KHI, LHR],
        "val": [KHI, LHR],
        "test": [KHI, KHI, (KHI[0] + 0.1, KHI[1]), LHR],
    }
    samples = []
    for split, pts in points.items():
        for i, (lat, lon) in enumerate(pts):
            cell = CELLS[0] if lat < 28 else CELLS[1]
            samples.append(
                {
                    "split": split,
                    "jpg": _jpg((40 * i, 90, 200)),
                    "json": sample_meta(f"{split}-{i}", lat, lon, cell, 32),
                }
            )
    shards = write_shard_folder(root / "shards", samples, CELLS, per_shard=3)

    torch.manual_seed(0)
    model = build_model(load_model_config("tiny"), CellTable.from_parquet(shards / "cells.parquet"))
    with torch.no_grad():  # every image -> Sindh with certainty, the Karachi cell, zero offset
        last = model.province_head[-1]
        last.weight.zero_()
        last.bias.fill_(-40.0)
        last.bias[0] = 40.0
        for head in model.cell_heads.values():
            head[-1].weight.zero_()
        model.offset_head[-1].weight.zero_()
        model.offset_head[-1].bias.zero_()
    ckpt = save_checkpoint(root / "hand.pt", model)
    return shards, ckpt


def test_geopak_eval_reproduces_the_hand_checked_case(hand_case, capsys):
    shards, ckpt = hand_case
    rc = eval_cli.main(
        [
            "--shards",
            str(shards),
            "--checkpoint",
            str(ckpt),
            "--json",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)

    d_khi_lhr = float(haversine_km(*KHI, *LHR))
    assert d_khi_lhr == pytest.approx(1033, abs=1)
    e_north = 0.1 * math.pi * EARTH_RADIUS_KM / 180.0  # 11.1195 km
    expected = {
        "n": 4,
        "median_km": e_north / 2,
        "mean_km": (e_north + d_khi_lhr) / 4,
        "p90_km": e_north + 0.7 * (d_khi_lhr - e_north),
        "acc_1km": 0.5,
        "acc_25km": 0.75,
        "acc_200km": 0.75,
        "acc_750km": 0.75,
        "province_acc": 0.75,
        "cell_top1": 0.75,
        "cell_top5": 1.0,
    }
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-3), key
    assert out["province_acc_by_province"] == {"Sindh": 1.0, "Punjab": 0.0}
    assert out["split"] == "test"
    for name in ("densest_cell", "geographic_median"):
        base = out["baselines"][name]
        for key, value in expected.items():
            assert base[key] == pytest.approx(value, abs=1e-2), (name, key)


def test_geopak_eval_table_and_plots(hand_case, capsys, tmp_path):
    shards, ckpt = hand_case
    rc = eval_cli.main(
        [
            "--shards",
            str(shards),
            "--checkpoint",
            str(ckpt),
            "--split",
            "val",
            "--workers",
            "0",
            "--plots",
            str(tmp_path),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "median_km" in text and "densest_cell" in text and "geographic_median" in text
    assert "Punjab" in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["val_confusion.png", "val_error_cdf.png", "val_province_accuracy.png"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--shards", "{tmp}/missing", "--checkpoint", "{ckpt}"], "shard folder not found"),
        (["--shards", "{shards}", "--checkpoint", "{tmp}/nope.pt"], "checkpoint not found"),
        (["--shards", "{shards}", "--checkpoint", "{bad}"], "not a readable checkpoint"),
        (["--shards", "{shards}", "--checkpoint", "{ckpt}", "--split", "dev"], "invalid choice"),
    ],
)
def test_geopak_eval_user_errors_are_one_line(hand_case, tmp_path, capsys, args, needle):
    shards, ckpt = hand_case
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    argv = [a.format(tmp=tmp_path, ckpt=ckpt, shards=shards, bad=bad) for a in args]
    with pytest.raises(SystemExit) if "invalid choice" in needle else _no_raise():
        rc = eval_cli.main(argv)
        assert rc == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_metrics_agree_with_numpy_errors(hand_case):
    """The JSON figures are the plain numpy statistics of the end-to-end errors."""
    from geopak_model.evaluate import evaluate_checkpoint

    shards, ckpt = hand_case
    res = evaluate_checkpoint(
        shards=shards, checkpoint=ckpt, split="test", num_workers=0, device="cpu"
    )
    errs = haversine_km(
        KHI[0], KHI[1], [KHI[0], KHI[0], KHI[0] + 0.1, LHR[0]], [KHI[1], KHI[1], KHI[1], LHR[1]]
    )
    assert res["median_km"] == pytest.approx(float(np.median(errs)), abs=1e-3)
    assert res["p90_km"] == pytest.approx(float(np.percentile(errs, 90)), abs=1e-3)
