"""GeopakPredictor and the geopak-predict CLI on a tiny checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geopak_core.errors import GeopakError
from geopak_core.regions import PAKISTAN
from geopak_model import GeopakPredictor
from geopak_model.cells import CellTable
from geopak_model.checkpoint import save_checkpoint
from geopak_model.config import load_model_config
from geopak_model.model import GeopakModel
from geopak_model.predict_cli import draw_map, main

torch.set_num_threads(1)  # 2 shared cores: more threads only spin
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cells = CellTable(
        cell_id=np.arange(5),
        province_id=[0, 0, 1, 3, 4],
        center_lat=[24.86, 25.40, 31.52, 33.68, 35.92],
        center_lon=[67.00, 68.37, 74.36, 73.05, 74.31],
        radius_km=[5.0, 10.0, 8.0, 3.0, 40.0],
    )
    model = GeopakModel(load_model_config("tiny"), cells)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", model)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(120, 90), (64, 64), (50, 140)]):
        p = folder / f"photo{i}.{'png' if i == 1 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8), mode="L").save(
        folder / "grey.png"
    )
    paths.append(folder / "grey.png")
    return paths


def test_predict_returns_the_contract_keys(ckpt, images):
    p = GeopakPredictor(checkpoint_path=ckpt, device="cpu")
    r = p.predict(images[0])
    assert {"province", "province_id", "lat", "lon", "confidence", "hypotheses"} <= set(r)
    assert r["province"] == PAKISTAN.names[r["province_id"]]
    assert 0.0 < r["confidence"] <= 1.0
    assert 1 <= len(r["hypotheses"]) <= 10
    h = r["hypotheses"][0]
    assert set(h) == {"province", "province_id", "cell", "lat", "lon", "probability"}
    probs = [x["probability"] for x in r["hypotheses"]]
    assert probs == sorted(probs, reverse=True)
    json.dumps(r)  # plain Python types only
    # A PIL image and its file give the same answer; a greyscale image is accepted.
    same = p.predict(Image.open(images[0]))
    assert same["lat"] == pytest.approx(r["lat"], abs=1e-6)
    assert p.predict(images[3])["province"] in PAKISTAN.names


def test_predict_many_matches_single_predictions(ckpt, images):
    p = GeopakPredictor(ckpt, device="cpu")
    many = p.predict_many(images, batch_size=3)
    assert len(many) == len(images)
    for img, r in zip(images, many, strict=True):
        single = p.predict(img)
        assert (
            r["lat"] == pytest.approx(single["lat"], abs=1e-4)
            and r["province_id"] == single["province_id"]
        )
    best = GeopakPredictor(ckpt, device="cpu", mode="best").predict(images[0])
    assert (best["lat"], best["lon"]) == pytest.approx(
        (best["hypotheses"][0]["lat"], best["hypotheses"][0]["lon"])
    )


def test_predictor_user_errors(ckpt, tmp_path):
    with pytest.raises(GeopakError, match="image not found"):
        GeopakPredictor(ckpt, device="cpu").predict(tmp_path / "nope.jpg")
    (tmp_path / "fake.jpg").write_text("not a jpeg")
    with pytest.raises(GeopakError, match="not a readable image"):
        GeopakPredictor(ckpt, device="cpu").predict(tmp_path / "fake.jpg")
    with pytest.raises(GeopakError, match="use predict_many"):
        GeopakPredictor(ckpt, device="cpu").predict([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    with pytest.raises(GeopakError, match="checkpoint not found"):
        GeopakPredictor(tmp_path / "missing.pt")
    # a folder is named as one, not said to be missing
    with pytest.raises(GeopakError, match="checkpoint .* is a folder, not a file"):
        GeopakPredictor(tmp_path)
    with pytest.raises(GeopakError, match="image .* is a folder, not a file"):
        GeopakPredictor(ckpt, device="cpu").predict(tmp_path)


def test_oversized_image_is_a_user_error(ckpt, images, monkeypatch):
    """Pillow's decompression-bomb guard raises an error that is not an OSError."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # photo0 is 120 x 90 > 2 x 1000 pixels
    with pytest.raises(GeopakError, match="too many pixels"):
        GeopakPredictor(ckpt, device="cpu").predict(images[0])


def test_map_with_and_without_polygons(ckpt, images, tmp_path, monkeypatch, box_boundaries):
    p = GeopakPredictor(ckpt, device="cpu")
    items = list(zip(images[:2], p.predict_many(images[:2]), strict=True))
    with_polys = draw_map(items, tmp_path / "a.png", boundaries=str(box_boundaries))
    monkeypatch.delenv("GEOPAK_BOUNDARIES", raising=False)
    monkeypatch.setenv("GEOPAK_BOUNDARIES_CACHE", str(tmp_path / "empty-cache"))
    without = draw_map(items, tmp_path / "b.png")
    for f in (with_polys, without):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(f).size[0] > 100
    # Polygons add ink: the two renderings differ.
    assert with_polys.read_bytes() != without.read_bytes()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GEOPAK_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "geopak_model.predict_cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_cli_json_and_map(ckpt, images, tmp_path):
    out_png = tmp_path / "map.png"
    res = _cli(
        str(images[0]),
        str(images[1]),
        "--checkpoint",
        str(ckpt),
        "--json",
        "--map",
        str(out_png),
        "--device",
        "cpu",
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["image"] for r in rows] == [str(images[0]), str(images[1])]
    for r in rows:
        assert {"province", "lat", "lon", "confidence", "hypotheses"} <= set(r)
        assert all(
            {"province", "cell", "lat", "lon", "probability"} <= set(h) and "cell_id" not in h
            for h in r["hypotheses"]
        )
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_cli_user_errors_are_one_line(ckpt, images, tmp_path, capsys):
    res = _cli(str(tmp_path / "missing.jpg"), "--checkpoint", str(ckpt))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"geopak-predict: error: image not found: {tmp_path / 'missing.jpg'}"
    ]
    # The same entry point in-process (a second interpreter start would only cost time).
    assert main([str(tmp_path), "--checkpoint", str(ckpt)]) != 0
    assert capsys.readouterr().err.strip() == (
        f"geopak-predict: error: image {tmp_path} is a folder, not a file"
    )
    (tmp_path / "bad.pt").write_text("garbage")
    assert main([str(images[0]), "--checkpoint", str(tmp_path / "bad.pt")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("geopak-predict: error:")
        and "bad.pt" in err[0]
        and "checkpoint" in err[0]
    )
    assert main([str(images[0]), "--checkpoint", str(ckpt), "--top-cells", "0"]) != 0
    assert "--top-cells" in capsys.readouterr().err
