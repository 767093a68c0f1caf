"""The indoor check with real (tiny, randomly initialised) open_clip and Places365 models.

The weights are random, so the scores mean nothing; what is tested is the wiring: local
weights are loaded through the real libraries, every decodable image gets a probability,
the threshold rule applies, and the report says which method ran.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from support.images import SMALL_CFG, add_record, jpeg, textured, write_crawl

from geopak_core.errors import GeopakError
from geopak_data.config import load_config
from geopak_data.filter import run_filter
from geopak_data.indoor import (
    PLACES365_LABELS,
    ClipIndoorScorer,
    indoor_status,
    load_indoor_scorer,
    read_places_io_labels,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def places_weights(tmp_path_factory):
    import torchvision

    folder = tmp_path_factory.mktemp("places365")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=365)
    # saved like CSAIL's checkpoints: {"state_dict": {"module.<name>": tensor}}
    torch.save(
        {
            "epoch": 90,
            "arch": "resnet18",
            "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        },
        folder / "resnet18_places365.pth.tar",
    )
    (folder / PLACES365_LABELS).write_text(
        "".join(f"/x/category{i} {1 if i % 3 == 0 else 2}\n" for i in range(365))
    )
    return folder / "resnet18_places365.pth.tar"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    cfg = {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {
                "image_size": 32,
                "layers": 1,
                "width": 32,
                "patch_size": 16,
                "head_width": 16,
            },
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": 32,
                "heads": 2,
                "layers": 1,
            },
        },
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights yet: random init
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def _crawl(work):
    rows: dict = {}
    keys = [add_record(work, rows, "flickr", f"i{i}", jpeg(textured(400 + i))) for i in range(5)]
    add_record(work, rows, "flickr", "broken", b"not an image")
    write_crawl(work, rows)
    return keys


def test_places365_scores_and_rule(tmp_path, places_weights):
    work = tmp_path / "W"
    keys = _crawl(work)
    cfg = load_config(
        None,
        {
            **SMALL_CFG,
            "filter.places365_weights": str(places_weights),
            "filter.indoor_threshold": 1.0,
        },
    )
    out = run_filter(work=work, config=cfg)
    assert "NOT APPLIED" not in out.summary and out.counts["indoor_applied"] == 1
    kept = pq.read_table(work / "filter" / "records.parquet")
    probs = np.array(kept.column("indoor_prob").to_pylist(), dtype=float)
    assert kept.column("key").to_pylist() == sorted(keys)
    assert np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()
    report = json.loads((work / "filter" / "report.json").read_text())
    assert (
        report["checks"]["indoor"]["method"] == "places365"
        and report["checks"]["indoor"]["applied"]
    )
    assert report["not_applied"] == {}

    # the same scores against a threshold below them reject every image as indoor (no re-scoring)
    low = load_config(
        None,
        {
            **SMALL_CFG,
            "filter.places365_weights": str(places_weights),
            "filter.indoor_threshold": float(probs.min()),
        },
    )
    run_filter(work=work, config=low)
    rejects = pq.read_table(work / "filter" / "rejects.parquet")
    reasons = dict(
        zip(rejects.column("key").to_pylist(), rejects.column("reason").to_pylist(), strict=True)
    )
    assert {k: reasons[k] for k in keys} == dict.fromkeys(keys, "indoor")
    assert reasons["flickr-broken"] == "decode_failed"


def test_clip_local_dir_scorer(clip_dir):
    cfg = load_config(None, {"filter.clip_weights": str(clip_dir)})
    st = indoor_status(cfg.filter)
    assert st.applied and st.method == "clip"
    scorer = load_indoor_scorer(cfg.filter)
    assert isinstance(scorer, ClipIndoorScorer)
    p = scorer.score([textured(i) for i in range(3)])
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    assert scorer.score([]).shape == (0,)


def test_bad_indoor_configuration_is_a_one_line_error(tmp_path, places_weights):
    with pytest.raises(GeopakError, match="filter.clip_weights"):
        indoor_status(load_config(None, {"filter.clip_weights": str(tmp_path / "none.pt")}).filter)
    lonely = tmp_path / "w.pth"
    lonely.write_bytes(places_weights.read_bytes())
    with pytest.raises(GeopakError, match="IO_places365.txt"):
        indoor_status(load_config(None, {"filter.places365_weights": str(lonely)}).filter)
    (tmp_path / PLACES365_LABELS).write_text("/a/b 1\n")
    with pytest.raises(GeopakError, match="365 categories"):
        read_places_io_labels(tmp_path / PLACES365_LABELS)
    junk = tmp_path / "junk" / "w.pth"
    junk.parent.mkdir()
    junk.write_bytes(b"not a checkpoint")
    (junk.parent / PLACES365_LABELS).write_text(
        (places_weights.parent / PLACES365_LABELS).read_text()
    )
    with pytest.raises(GeopakError, match="cannot load"):
        load_indoor_scorer(load_config(None, {"filter.places365_weights": str(junk)}).filter)
    wrong = tmp_path / "clip.pt"
    torch.save({"nothing": torch.zeros(1)}, wrong)
    with pytest.raises(GeopakError, match="cannot load as open_clip"):
        load_indoor_scorer(
            load_config(
                None, {"filter.clip_weights": str(wrong), "filter.clip_model": "ViT-S-32"}
            ).filter
        )
