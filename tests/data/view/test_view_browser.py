"""The viewer in a real browser: Playwright driving Debian's chromium, offline.

The server and the browser run together inside a network namespace with only loopback
(``unshare -n`` + ``ip link set lo up``), so the page provably needs nothing off the
machine. Needs root (CI is) and /usr/bin/chromium (``.ci/run`` installs it with apt); the
README says so. Screenshots land in ``test-artifacts/view/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest
from support.loopbackns import namespace_problem, run_offline
from support.viewdata import make_view_data

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "support" / "view_browser.py"
ARTIFACTS = Path(os.environ.get("GEOPAK_TEST_ARTIFACTS", REPO / "test-artifacts")) / "view"


def _can_isolate() -> str | None:
    if not Path(os.environ.get("GEOPAK_CHROMIUM", "/usr/bin/chromium")).exists():
        return "chromium is not installed (apt-get install chromium; .ci/run does)"
    return namespace_problem()


def test_page_in_a_real_browser(tmp_path):
    why = _can_isolate()
    if why:
        pytest.skip(why)
    shards, ckpt = make_view_data(tmp_path, n=150)
    index = pq.read_table(shards / "index.parquet").to_pandas()
    # a dataset photo, extracted from its tar, as the upload
    import tarfile

    first = index.iloc[0]
    with tarfile.open(shards / first["shard"]) as tf:
        photo_bytes = tf.extractfile(f"{first['key']}.jpg").read()
    photo = tmp_path / "upload.jpg"
    photo.write_bytes(photo_bytes)
    result = tmp_path / "result.json"
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    proc = run_offline(SCRIPT, shards, ckpt, photo, result, ARTIFACTS, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result.read_text())

    assert out["console_errors"] == []
    assert {urlparse(u).hostname for u in out["requests"]} == {"127.0.0.1"}
    assert out["count_initial"] == len(index) == out["count_reset"]
    assert out["count_val"] == int((index["split"] == "val").sum()) != len(index)
    row = index.set_index("key").loc[out["clicked_key"]]
    assert out["detail_key"] == out["clicked_key"]
    assert out["detail_license"] == row["license"] and out["detail_owner"] == row["owner"]
    assert out["thumb_width"] > 0
    pred = out["prediction"]
    assert -90 <= float(pred["lat"]) <= 90 and -180 <= float(pred["lon"]) <= 180
    assert pred["province"] and out["hypothesis_rows"] >= 1
    if "sha256" in index.columns and hashlib.sha256(photo_bytes).hexdigest() == first["sha256"]:
        assert pred["distance_km"].endswith("km")
    for shot in ("01-loaded.png", "02-sample.png", "03-prediction.png"):
        assert (ARTIFACTS / shot).stat().st_size > 1000
