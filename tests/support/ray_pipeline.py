"""The pipeline with the local and the Ray executor on the same photos; a JSON report.

Run by tests/data/test_executor_ray.py inside a network namespace with only loopback
(``unshare -n`` + ``ip link set lo up``):

    python tests/support/ray_pipeline.py ROOT N_PHOTOS REPORT.json [kill]

Runs crawl yfcc -> filter -> tag -> cluster -> shard three times on one synthetic source
served by a loopback image host with latency: ``local``, ``ray`` and (with ``kill``) ``ray``
again while a worker process is killed with SIGKILL mid-download and mid-filter. Reports the
sha256 of every output file, the image host's peak concurrency per run, and every TCP
address seen in the namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PER_HOST = 2


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def tcp_addresses() -> set[str]:
    """Local and remote IPv4/IPv6 addresses of every TCP socket in this namespace."""
    seen = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            cols = line.split()
            for addr in cols[1:3]:
                seen.add(addr.split(":")[0])
    return seen


def killer(patterns: list[str], stop: threading.Event, killed: list[str]) -> None:
    """SIGKILL the first Ray worker seen running each task name (once per name)."""
    todo = list(patterns)
    while todo and not stop.is_set():
        for pat in list(todo):
            out = subprocess.run(["pgrep", "-f", pat], capture_output=True, text=True).stdout
            pids = [int(p) for p in out.split() if int(p) != os.getpid()]
            if pids:
                time.sleep(0.3)  # let it be mid-unit
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pat)
                except ProcessLookupError:
                    continue
                todo.remove(pat)
        time.sleep(0.05)


def run(work: Path, cfg, executor: str) -> None:
    from geopak_data.cluster import run_cluster
    from geopak_data.crawl import run_crawl
    from geopak_data.filter import run_filter
    from geopak_data.shard import run_shard
    from geopak_data.tag import run_tag

    run_crawl(source="yfcc", work=work, config=cfg, allow_private_hosts=True, executor=executor)
    run_filter(work=work, config=cfg, executor=executor)
    run_tag(work=work, config=cfg)
    run_cluster(work=work, config=cfg)
    run_shard(work=work, config=cfg, out=work / "shards")


def embed_both(root: Path) -> dict[str, dict[str, str]]:
    """The embedding cache of the local run's shards, built by each executor (tiny preset)."""
    import torch

    from geopak_model.embed import embed

    torch.set_num_threads(1)  # Ray workers run one thread per task: compare like with like
    out = {}
    for ex in ("local", "ray"):
        feats = root / f"feats-{ex}"
        embed(
            shards=root / "local" / "shards",
            out=feats,
            preset="tiny",
            device="cpu",
            batch_size=16,
            executor=ex,
        )
        out[ex] = {k: v for k, v in tree_digest(feats).items() if k.endswith(".npz")}
    return out


def peak(base: str) -> int:
    with urllib.request.urlopen(f"{base}/stats") as r:  # loopback only, in the namespace
        return int(json.loads(r.read())["max_inflight"])


def main() -> None:
    root, n = Path(sys.argv[1]), int(sys.argv[2])
    report_path = Path(sys.argv[3])
    with_kill = len(sys.argv) > 4 and sys.argv[4] == "kill"
    from geopak_data.demo import generate_source
    from geopak_data.imageserver import start_image_server
    from geopak_data.runner import work_config

    report: dict = {"runs": {}, "killed": [], "addresses": []}
    addresses: set[str] = set()
    source = root / "source"
    runs = ["local", "ray"] + (["ray-kill"] if with_kill else [])
    for name in runs:
        # a fresh host per run: its /stats peak is this run's alone (same port, same URLs)
        base, stop = start_image_server(
            source / "images", port=report.get("port", 0), fixtures=False, latency_s=0.05
        )
        report["port"] = int(base.rsplit(":", 1)[1])
        meta = generate_source(source, n_photos=n, seed=0, base_url=base)
        work = root / name
        cfg = work_config(
            work,
            REPO / "pipelines" / "demo.toml",
            overrides={
                "crawl.yfcc.metadata": str(meta.resolve()),
                "crawl.sources": ["yfcc"],
                "download.per_host": PER_HOST,
                "download.concurrency": 8,
                "download.batch_size": 16,
                "filter.batch_size": 32,
            },
        )
        halt, killed = threading.Event(), []
        watcher = None
        if name == "ray-kill":
            watcher = threading.Thread(
                target=killer, args=(["ray::download_unit", "ray::measure_task"], halt, killed)
            )
            watcher.start()
        try:
            run(work, cfg, "local" if name == "local" else "ray")
            addresses |= tcp_addresses()
            report["runs"][name] = {
                "peak_per_host": peak(base),
                "shards": tree_digest(work / "shards"),
                "records": tree_digest(work / "filter"),
            }
        finally:
            halt.set()
            if watcher is not None:
                watcher.join()
            stop()
        report["killed"] += killed
    report["embed"] = embed_both(root)
    addresses |= tcp_addresses()
    report["addresses"] = sorted(addresses)
    report_path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
