"""Pretrained weights by name: the Hub (open_clip) and the Places365 file, over loopback.

A :class:`WeightsHost` answers like the Hugging Face Hub (``HF_ENDPOINT`` points at it) for
the files open_clip asks for, serving a real (tiny) open_clip checkpoint, and like the
Places365 project's file server for a Places365-layout ``.pth.tar``. The hub library reads
``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` / ``HF_HOME`` when it is imported, so the commands run in
subprocesses with those variables set, exactly as a user runs them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch
import torchvision
from support.fakes import serve
from support.fakes.weights_server import WeightsHost
from support.ports import refused_url

from geopak_core.errors import GeopakError
from geopak_model import weights
from geopak_model.config import PRESETS_DIR, load_model_config

REPO = "geopak-test/tiny-clip"
PLACES = "models_places365/resnet18_places365.pth.tar"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    """A whole tiny open_clip CLIP (open_clip's own file layout) and a ResNet-18 Places365
    checkpoint in the project's layout (``state_dict`` with ``module.`` keys), half precision
    to keep the file small."""
    torch.manual_seed(3)
    cfg = load_model_config("tiny")
    clip = open_clip.CLIP(**cfg.clip_model_cfg)
    buf = io.BytesIO()
    torch.save(clip.state_dict(), buf)
    ref = torchvision.models.resnet18(num_classes=365)
    sd = {
        f"module.{k}": (v.half() if v.is_floating_point() else v)
        for k, v in ref.state_dict().items()
    }
    buf2 = io.BytesIO()
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": sd}, buf2)
    return {"clip": buf.getvalue(), "places": buf2.getvalue()}


@pytest.fixture
def host(blobs):
    h = WeightsHost(
        hub={REPO: {"open_clip_pytorch_model.bin": blobs["clip"]}},
        files={PLACES: blobs["places"]},
    )
    with serve(h.app()) as base:
        h.base = base  # type: ignore[attr-defined]
        yield h


def write_config(tmp_path: Path, base: str, *, sha: str = "", clip: bool = True) -> Path:
    """The tiny preset, with its encoders' weights named instead of random."""
    text = (PRESETS_DIR / "tiny.toml").read_text().replace("random_init = true\n", "")
    head = f'places_weights_url = "{base}/files/{PLACES}"\nplaces_weights_sha256 = "{sha}"\n'
    if clip:
        head += f'clip_pretrained = "hf-hub:{REPO}"\n'
    else:
        head += "random_init = true\n"
    path = tmp_path / "named.toml"
    path.write_text(head + text)
    return path


def env_for(tmp_path: Path, base: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GEOPAK_CACHE"))}
    env.update(
        HF_ENDPOINT=base,
        HF_HOME=str(tmp_path / "hf"),
        GEOPAK_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        OMP_NUM_THREADS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        **extra,
    )
    return env


def geopak_train(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geopak_model.train_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- the command


def test_fetch_once_then_nothing_then_offline(tmp_path, host, blobs):
    cfg = write_config(tmp_path, host.base, sha=_sha(blobs["places"]))
    env = env_for(tmp_path, host.base)
    first = geopak_train(["weights", "--config", str(cfg)], env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 2
    clip_line, places_line = lines
    assert clip_line.startswith("clip: ") and _sha(blobs["clip"]) in clip_line
    assert f"{len(blobs['clip'])} bytes" in clip_line and REPO in clip_line
    assert places_line.startswith("places: ") and _sha(blobs["places"]) in places_line
    assert str(tmp_path / "cache" / "weights" / "resnet18_places365.pth.tar") in places_line
    clip_path = Path(clip_line.split()[1])
    assert clip_path.is_file() and str(tmp_path / "hf") in str(clip_path)
    assert host.content_gets() == 2

    again = geopak_train(["weights", "--config", str(cfg)], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert host.content_gets() == 2  # nothing downloaded the second time

    offline = geopak_train(["weights", "--config", str(cfg)], {**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == first.stdout


def test_offline_without_cache_is_one_line(tmp_path, host, blobs):
    cfg = write_config(tmp_path, host.base, sha=_sha(blobs["places"]))
    res = geopak_train(
        ["weights", "--config", str(cfg)], env_for(tmp_path, host.base, HF_HUB_OFFLINE="1")
    )
    assert res.returncode == 2
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert "CLIP weights" in err and "HF_HUB_OFFLINE" in err
    assert "geopak-train weights" in err and "clip_weights" in err
    assert host.content_gets() == 0


class RefusingHost:
    """A TCP port that accepts connections and closes them at once (a network that drops every
    request), counting how many connections a client opened."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_unreachable_hub_fails_with_one_line_after_one_attempt(tmp_path, blobs):
    """No network: one request finds the Hub unreachable and the command stops with one line
    (the hub library alone retried the metadata call 7 times per candidate file name)."""
    cfg = write_config(tmp_path, "http://127.0.0.1:9", clip=True)
    refusing = RefusingHost()
    try:
        res = geopak_train(["weights", "--config", str(cfg)], env_for(tmp_path, refusing.base))
    finally:
        refusing.close()
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert f"the Hub at {refusing.base} cannot be reached" in err and "clip_weights" in err
    assert refusing.accepted == 1
    # a closed port (connection refused) is the same one line
    with refused_url() as down:
        res = geopak_train(["weights", "--config", str(cfg)], env_for(tmp_path, down))
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert f"the Hub at {down} cannot be reached" in res.stderr


def test_unreachable_hub_still_serves_the_cached_file(tmp_path, host, blobs):
    cfg = write_config(tmp_path, host.base, sha=_sha(blobs["places"]))
    first = geopak_train(["weights", "--config", str(cfg)], env_for(tmp_path, host.base))
    assert first.returncode == 0, first.stderr
    with refused_url() as down:
        again = geopak_train(["weights", "--config", str(cfg)], env_for(tmp_path, down))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_training_stops_on_missing_weights_and_random_init_is_explicit(tmp_path, host, blobs):
    """No silent random init: training with weights that cannot be had is one line, naming
    the two ways out; --random-init is the explicit escape."""
    cfg = write_config(tmp_path, host.base, sha=_sha(blobs["places"]))
    from geopak_model.testing import make_toy_shards

    shards = make_toy_shards(tmp_path / "shards", n=40, per_shard=20, seed=2)
    env = env_for(tmp_path, host.base, HF_HUB_OFFLINE="1")
    common = ["--shards", str(shards), "--config", str(cfg), "--device", "cpu"]
    res = geopak_train(["embed", *common, "--out", str(tmp_path / "feats")], env)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "CLIP weights" in res.stderr and "not in the Hugging Face cache" in res.stderr
    assert not (tmp_path / "feats" / "model.pt").exists()
    res = geopak_train(
        ["embed", *common, "--out", str(tmp_path / "feats"), "--random-init", "--splits", "val"],
        env,
    )
    assert res.returncode == 0, res.stderr
    from geopak_model.checkpoint import read_payload

    enc = read_payload(tmp_path / "feats" / "model.pt")["encoders"]
    assert enc["clip"]["source"] == enc["places"]["source"] == "random"


def _two_cells():
    """Two cells (Karachi in Sindh, Lahore in Punjab): enough heads to build a model."""
    from geopak_model.cells import CellTable

    return CellTable(
        cell_id=[0, 1],
        province_id=[0, 1],
        center_lat=[25, 31],
        center_lon=[67, 74],
        radius_km=[5, 5],
    )


def test_a_config_naming_no_weights_needs_random_init(tmp_path):
    text = (PRESETS_DIR / "tiny.toml").read_text().replace("random_init = true\n", "")
    (tmp_path / "bare.toml").write_text(text)
    from geopak_model.model import build_model

    cells = _two_cells()
    with pytest.raises(weights.WeightsUnavailable, match="no CLIP weights named.*--random-init"):
        build_model(load_model_config(str(tmp_path / "bare.toml")), cells)


def test_corrupted_clip_file_is_refused_and_not_kept(tmp_path, host, blobs):
    cfg = write_config(tmp_path, host.base, sha=_sha(blobs["places"]))
    env = env_for(tmp_path, host.base)
    host.mode["open_clip_pytorch_model.bin"] = "corrupt"
    res = geopak_train(["weights", "--config", str(cfg)], env)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "digest mismatch" in res.stderr and "CLIP" in res.stderr
    blobs_dir = next((tmp_path / "hf").rglob("blobs"))
    assert not [p for p in blobs_dir.iterdir() if not p.name.endswith(".incomplete")]
    host.mode.clear()
    res = geopak_train(["weights", "--config", str(cfg)], env)
    assert res.returncode == 0, res.stderr
    assert _sha(blobs["clip"]) in res.stdout


# ----------------------------------------------------------------------------- places, in-process


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GEOPAK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GEOPAK_OFFLINE", raising=False)
    return tmp_path / "cache" / "weights"


def places_config(host, sha: str = ""):
    return load_model_config(
        "tiny",
        places_weights_url=f"{host.base}/files/{PLACES}",
        places_weights_sha256=sha,
    )


def test_places_download_verifies_and_loads(cache, host, blobs):
    wf = weights.fetch_places(places_config(host, _sha(blobs["places"])))
    assert wf.path == cache / "resnet18_places365.pth.tar"
    assert wf.sha256 == _sha(blobs["places"]) and wf.size == len(blobs["places"])
    assert listing(cache) == [".download.lock", "resnet18_places365.pth.tar"]
    again = weights.fetch_places(places_config(host, _sha(blobs["places"])))
    assert again == wf and host.content_gets() == 1
    # The file loads into the Places encoder of a model built from that config.
    from geopak_model.model import build_model

    cells = _two_cells()
    model = build_model(places_config(host, _sha(blobs["places"])), cells)
    assert model.encoder_provenance["places"]["sha256"] == wf.sha256
    assert model.encoder_provenance["clip"]["source"] == "random"


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_places_bad_download_refused_and_not_cached(cache, host, blobs, fault):
    host.mode[PLACES] = fault
    with pytest.raises(GeopakError) as err:
        weights.fetch_places(places_config(host, _sha(blobs["places"])))
    assert "\n" not in str(err.value) and "Places365" in str(err.value)
    if fault == "corrupt":
        assert "digest mismatch" in str(err.value)
    assert listing(cache) == [".download.lock"]  # no partial or wrong file left behind


def test_places_truncated_without_pinned_digest_refused(cache, host):
    host.mode[PLACES] = "truncate"
    with pytest.raises(GeopakError, match="download .* failed"):
        weights.fetch_places(places_config(host))
    assert listing(cache) == [".download.lock"]


def test_places_unpinned_records_first_digest(cache, host, blobs):
    wf = weights.fetch_places(places_config(host))
    assert wf.sha256 == _sha(blobs["places"])
    recorded = cache / "resnet18_places365.pth.tar.sha256"
    assert recorded.read_text().strip() == wf.sha256
    # A cached file altered later no longer matches what was recorded: removed, fetched again.
    data = bytearray(wf.path.read_bytes())
    data[100] ^= 0xFF
    wf.path.write_bytes(bytes(data))
    again = weights.fetch_places(places_config(host))
    assert again.sha256 == wf.sha256 and host.content_gets() == 2


def test_places_offline_without_cache(cache, host, blobs, monkeypatch):
    monkeypatch.setenv("GEOPAK_OFFLINE", "1")
    with pytest.raises(weights.WeightsUnavailable) as err:
        weights.fetch_places(places_config(host, _sha(blobs["places"])))
    msg = str(err.value)
    assert "not cached" in msg and "offline" in msg
    assert "geopak-train weights" in msg and "places_weights" in msg
    assert host.content_gets() == 0


def _kill_once_partial(cfg: Path, env: dict, partials, never: str) -> None:
    """``geopak-train weights`` in a child, SIGKILLed as soon as the first of ``partials()``
    (its temporary download files) holds a byte; fails with ``never`` if none ever does."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "geopak_model.train_cli", "weights", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = partials()
            if found and found[0].stat().st_size > 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail(never)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_kill9_mid_download_then_rerun_completes(tmp_path, host, blobs):
    cfg = write_config(tmp_path, host.base, sha=_sha(blobs["places"]), clip=False)
    env = env_for(tmp_path, host.base)
    host.mode[PLACES] = "slow"
    folder = tmp_path / "cache" / "weights"
    _kill_once_partial(
        cfg,
        env,
        lambda: list(folder.glob("tmp*")) if folder.is_dir() else [],
        "the download never started",
    )
    assert not (folder / "resnet18_places365.pth.tar").exists()  # only a temporary file
    host.mode.clear()
    res = geopak_train(["weights", "--config", str(cfg)], env)
    assert res.returncode == 0, res.stderr
    assert _sha(blobs["places"]) in res.stdout
    assert listing(folder) == [".download.lock", "resnet18_places365.pth.tar"]


@pytest.mark.slow
def test_kill9_mid_hub_download_then_rerun_completes(tmp_path, host, blobs):
    """A killed hub download is a ``.incomplete`` file, never linked into the snapshot, so
    never loaded; the rerun downloads into a new one (huggingface_hub >= 1 restarts rather
    than share a partial file between processes), verifies the sha256, and removes the
    leftover once it is stale."""
    # The hub library writes in 10 MiB pieces: a file that size is needed to see one on disk.
    sd = torch.load(io.BytesIO(blobs["clip"]), weights_only=True)
    sd["pad"] = torch.zeros(3 * 2**20)
    buf = io.BytesIO()
    torch.save(sd, buf)
    big = buf.getvalue()
    host.hub[REPO]["open_clip_pytorch_model.bin"] = big
    cfg = write_config(tmp_path, host.base, sha=_sha(blobs["places"]))
    env = env_for(tmp_path, host.base)
    host.mode["open_clip_pytorch_model.bin"] = "slow"
    _kill_once_partial(
        cfg,
        env,
        lambda: list((tmp_path / "hf").rglob("*.incomplete")),
        "the hub download never started",
    )
    assert not list((tmp_path / "hf").rglob("snapshots/*/open_clip_pytorch_model.bin"))
    host.mode.clear()
    res = geopak_train(["weights", "--config", str(cfg)], env)
    assert res.returncode == 0, res.stderr
    assert _sha(big) in res.stdout
    leftovers = list((tmp_path / "hf").rglob("*.incomplete"))
    assert len(leftovers) <= 1  # the killed process's file, until it is stale
    for part in leftovers:
        old = time.time() - 3600
        os.utime(part, (old, old))
    res = geopak_train(["weights", "--config", str(cfg)], env)
    assert res.returncode == 0 and _sha(big) in res.stdout
    assert not list((tmp_path / "hf").rglob("*.incomplete"))


# ----------------------------------------------------------------------------- provenance


def test_checkpoint_records_provenance_and_predict_eval_print_it(tmp_path, small_shards, blobs):
    """Local files (which win over names) -> provenance with their digests in the checkpoint;
    geopak-predict / geopak-eval show it with -v and in JSON."""
    from geopak_model import eval_cli, predict_cli
    from geopak_model.checkpoint import save_checkpoint
    from geopak_model.data import open_shard_folder
    from geopak_model.factory import make_model

    (tmp_path / "clip.bin").write_bytes(blobs["clip"])
    (tmp_path / "places.pth.tar").write_bytes(blobs["places"])
    text = (PRESETS_DIR / "tiny.toml").read_text().replace("random_init = true\n", "")
    text = text.replace('clip_weights = ""', 'clip_weights = "clip.bin"')
    text = text.replace('places_weights = ""', 'places_weights = "places.pth.tar"')
    head = 'clip_pretrained = "hf-hub:nobody/never-fetched"\nplaces_weights_url = "http://127.0.0.1:9/x"\n'
    (tmp_path / "local.toml").write_text(head + text)
    model, _ = make_model(
        folder=open_shard_folder(small_shards), model_config=str(tmp_path / "local.toml")
    )
    prov = model.encoder_provenance
    assert prov["clip"]["source"] == "file" and prov["clip"]["sha256"] == _sha(blobs["clip"])
    assert prov["places"]["sha256"] == _sha(blobs["places"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    again, _ = make_model(checkpoint=ckpt)
    assert again.encoder_provenance == prov

    image = next((small_shards / "test").glob("*.tar"), None) or next(small_shards.rglob("*.tar"))
    import tarfile

    with tarfile.open(image) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
        (tmp_path / "photo.jpg").write_bytes(tar.extractfile(member).read())
    out = io.StringIO()
    err = io.StringIO()
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        rc = predict_cli.main(
            [str(tmp_path / "photo.jpg"), "-c", str(ckpt), "--json", "-v", "--device", "cpu"]
        )
    assert rc == 0
    row = json.loads(out.getvalue().strip().splitlines()[-1])
    assert row["encoders"]["clip"]["sha256"] == _sha(blobs["clip"])
    assert "encoders: clip: file" in err.getvalue() and _sha(blobs["places"]) in err.getvalue()

    out = io.StringIO()
    with redirect_stdout(out):
        rc = eval_cli.main(
            [
                "--shards",
                str(small_shards),
                "--checkpoint",
                str(ckpt),
                "--split",
                "val",
                "--json",
                "--device",
                "cpu",
                "--workers",
                "0",
            ]
        )
    assert rc == 0
    result = json.loads(out.getvalue())
    assert result["encoders"]["places"]["sha256"] == _sha(blobs["places"])


def test_openai_tag_needs_quickgelu():
    assert weights.clip_needs_quickgelu(load_model_config("base", clip_pretrained="openai"))
    assert not weights.clip_needs_quickgelu(load_model_config("base"))
    with pytest.raises(GeopakError, match="clip_pretrained"):
        weights.clip_needs_quickgelu(load_model_config("base", clip_pretrained="no_such_tag"))


@pytest.mark.slow
def test_openai_tag_builds_quickgelu_tower():
    from geopak_model.encoders import ClipEncoder

    enc = ClipEncoder(load_model_config("base", clip_pretrained="openai"))
    assert type(enc.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    enc = ClipEncoder(load_model_config("base"))
    assert type(enc.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"


def test_base_preset_names_real_weights():
    cfg = load_model_config("base")
    assert cfg.clip_pretrained == "laion2b_s34b_b88k" and not cfg.random_init
    pcfg = weights.clip_pretrained_cfg(cfg)
    assert pcfg["hf_hub"].startswith("laion/CLIP-ViT-B-16-laion2B-s34B-b88K")
    assert cfg.places_weights_url.endswith("/resnet50_places365.pth.tar")
    assert cfg.places_weights_sha256 == weights.PLACES365_RESNET50_SHA256
    assert load_model_config("tiny").random_init
