"""A crawl resumed in a new process gets the metadata URLs' credentials back from the
environment (``GEOPAK_URL_CREDENTIALS``), against a loopback mirror that refuses requests
without them; nothing of them is stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.fakes import serve
from support.fakes.mirror_server import MirrorFake
from support.snapshot import one_line

from geopak_core.errors import GeopakError
from geopak_data.cli import main
from geopak_data.credentials import ENV_CREDENTIALS, with_env_credentials
from geopak_data.sources import base
from geopak_data.sources.yfcc import write_yfcc_tsv

REPO = Path(__file__).resolve().parents[2]
CONF = "[retry]\nretries = 0\ntimeout_s = 5.0\n[download]\nbatch_size = 2\nworkers = 1\nconcurrency = 2\n"


def _meta(tmp_path: Path, fake: MirrorFake, host: str, n: int) -> Path:
    rows = [
        dict(
            photoid=7000 + i,
            longitude=70.0 + i * 0.01,
            latitude=30.0,
            downloadurl=f"http://{fake.user}:{fake.password}@{host}/p/{i}.jpg?v=1&api_key={fake.api_key}",
            title=f"photo {i}",
            licensename="Attribution License",
        )
        for i in range(n)
    ]
    return write_yfcc_tsv(tmp_path / "m.tsv", rows)


def _argv(tmp_path: Path, meta: Path) -> list[str]:
    conf = tmp_path / "p.toml"
    conf.write_text(CONF)
    return ["crawl", "yfcc", "--work", str(tmp_path / "w"), "--metadata", str(meta),
            "--allow-private-hosts", "--config", str(conf)]  # fmt: skip


def _no_secret_stored(work: Path, fake: MirrorFake) -> None:
    for p in work.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert fake.password.encode() not in data and fake.api_key.encode() not in data, p


def test_merge_rules() -> None:
    env = "https://other.example/?token=X http://bob:pw@127.0.0.1:8080/anything?api_key=K&lang=en"
    # the same origin gets the userinfo and the credential parameters, in the entry's order
    assert (
        with_env_credentials("http://127.0.0.1:8080/p/1.jpg?v=1", env)
        == "http://bob:pw@127.0.0.1:8080/p/1.jpg?v=1&api_key=K"
    )
    # what the URL already has is kept; another port, scheme or host gets nothing
    assert (
        with_env_credentials("http://ann:x@127.0.0.1:8080/a?api_key=Z", env)
        == "http://ann:x@127.0.0.1:8080/a?api_key=Z"
    )
    for other in ("http://127.0.0.1:8081/a", "https://127.0.0.1:8080/a", "http://localhost:8080/a"):
        assert with_env_credentials(other, env) == other
    assert (
        with_env_credentials("https://other.example:443/x", env)
        == "https://other.example:443/x?token=X"
    )
    assert with_env_credentials("http://127.0.0.1:8080/a", "") == "http://127.0.0.1:8080/a"
    with pytest.raises(GeopakError, match=f"^{ENV_CREDENTIALS}: entry 2 is not a URL") as err:
        with_env_credentials("http://h/a", "http://h/?key=1 not-a-url")
    assert "not-a-url" not in str(err.value)


def test_a_crawl_resumed_in_a_new_process_gets_the_credentials_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = MirrorFake(down=True)
    with serve(fake.app()) as server:
        host = server.split("://", 1)[1]
        meta = _meta(tmp_path, fake, host, 6)
        argv = _argv(tmp_path, meta)
        assert main(argv) == 0  # discovered; the mirror was away: every download failed
        assert "0 downloaded, 6 failed (http_5xx 6)" in capsys.readouterr().out
        fake.down = False
        base._REQUEST_URLS.clear()  # a new process: the in-memory originals are gone
        monkeypatch.delenv(ENV_CREDENTIALS, raising=False)
        assert main([*argv, "--retry-failed"]) == 0  # the stored URL alone is refused
        assert "0 downloaded, 6 failed (http_401 6)" in capsys.readouterr().out
        monkeypatch.setenv(
            ENV_CREDENTIALS, f"http://{fake.user}:{fake.password}@{host}/?api_key={fake.api_key}"
        )
        assert main([*argv, "--retry-failed"]) == 0
        assert "6 downloaded, 0 failed" in capsys.readouterr().out
    assert fake.served() == 6
    recs = pq.read_table(tmp_path / "w/crawl/yfcc/records.parquet").to_pylist()
    assert sorted(r["url"] for r in recs) == sorted(
        f"http://{host}/p/{i}.jpg?v=1" for i in range(6)
    )
    _no_secret_stored(tmp_path / "w", fake)


def test_a_bad_entry_stops_the_crawl_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    fake = MirrorFake()
    with serve(fake.app()) as server:
        meta = _meta(tmp_path, fake, server.split("://", 1)[1], 2)
        argv = _argv(tmp_path, meta)
        monkeypatch.setenv(ENV_CREDENTIALS, "mirror-without-scheme")
        monkeypatch.setattr(base, "_REQUEST_URLS", {})  # as if resumed: nothing in memory
        monkeypatch.setattr(
            base, "_stored", lambda recs: (base.without_credentials(r)[0] for r in recs)
        )
        assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{ENV_CREDENTIALS}: entry 1 is not a URL" in line


@pytest.mark.slow
def test_kill9_mid_download_then_resume_in_a_new_process(tmp_path: Path) -> None:
    fake = MirrorFake(delay_s=0.15)
    n = 12
    with serve(fake.app()) as server:
        host = server.split("://", 1)[1]
        meta = _meta(tmp_path, fake, host, n)
        cmd = [sys.executable, "-m", "geopak_data.cli", *_argv(tmp_path, meta)]
        env = {**os.environ, "GEOPAK_NO_PROGRESS": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}  # fmt: skip
        env.pop(ENV_CREDENTIALS, None)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while fake.served() < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        first = fake.served()
        assert 4 <= first < n  # killed mid-way, with the credentials of its own discovery
        env[ENV_CREDENTIALS] = f"http://{fake.user}:{fake.password}@{host}/?api_key={fake.api_key}"
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert f"{n} downloaded, 0 failed" in res.stdout
        assert all(ok for _, ok in fake.log)  # no request went out without the credentials
    recs = pq.read_table(tmp_path / "w/crawl/yfcc/records.parquet").to_pylist()
    assert len(recs) == n and all((tmp_path / "w" / r["image_path"]).is_file() for r in recs)
    _no_secret_stored(tmp_path / "w", fake)
