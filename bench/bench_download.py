"""Benchmark: geopak's downloader vs img2dataset on the same loopback images.

Serves the same generated JPEGs from one loopback image host in its own process (so no
client shares a GIL with it): ``bench/_statichost.py`` by default, whose CPU per request is
small next to the per-image work on these shared cores, or ``--host imageserver`` (the tests'
aiohttp host, ~0.3 ms per request), and downloads every image with

* geopak: ``download.download_items`` (aiohttp, decode/orient/resize/re-encode/sha256 in a
  thread pool), one process, ``--cores`` image threads;
* img2dataset: ``img2dataset.download`` with ``processes_count = --cores`` (its own
  process-per-core design), ``resize_mode="keep_ratio_largest"``, ``resize_only_if_bigger``,

with the same target size (longest side ``--size``), the same JPEG quality and sha256 on,
and the crawl's own no-network limit: the same per-image work (``download._store``: decode,
orient, resize, encode, sha256, write) on the same bytes in memory, in ``--cores`` threads,
once with Pillow decoding and once with simplejpeg (when installed). It prints images/s for
each, as medians of ``--rounds`` alternated rounds (the order rotates; never the best run),
and the ratios: geopak / its limit (goal >= 0.9x), simplejpeg limit / Pillow limit (what the
faster decoder raises the limit by), geopak / img2dataset.

img2dataset is not a project dependency (its pins would downgrade pandas/webdataset here).
Install it into its own venv and point the bench at that interpreter::

    python -m venv /tmp/i2d-venv && /tmp/i2d-venv/bin/pip install img2dataset
    python bench/bench_download.py --quick --img2dataset-python /tmp/i2d-venv/bin/python

(or set GEOPAK_IMG2DATASET_PYTHON). Without it only the geopak figure is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter

from _report import alternated, emit, machine_facts, median  # noqa: E402

GEOPAK_RUNNER = r"""
import asyncio, json, sys, time, resource
from pathlib import Path
from geopak_data.config import DownloadConfig, RetryConfig
from geopak_data.download import DownloadItem, download_items
import geopak_data.imaging as imaging
imaging.JPEG_DECODER = sys.argv[7]
urls = Path(sys.argv[1]).read_text().split()
out = Path(sys.argv[2]); cores = int(sys.argv[3]); size = int(sys.argv[4])
quality = int(sys.argv[5]); conc = int(sys.argv[6])
cfg = DownloadConfig(concurrency=conc, per_host=conc, max_side=size, jpeg_quality=quality, workers=cores)
retry = RetryConfig(retries=0, timeout_s=60)
items = [DownloadItem(i, u, out / f"{i % 100:02d}" / f"{i:06d}.jpg") for i, u in enumerate(urls)]
ok = [0]
def on(o):
    ok[0] += o.ok
r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
asyncio.run(download_items(items, config=cfg, on_outcome=on, allow_private_hosts=True, retry=retry))
dt = time.perf_counter() - t0; r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"ok": ok[0], "seconds": dt, "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)}))
"""

# The crawl's own no-network limit: the same per-image work the downloader hands its thread
# pool (geopak_data.download._store: decode, orient, resize, encode, sha256, atomic write), on
# the same bytes already in memory, in the same number of threads. argv[7]: the JPEG decoder.
LIMIT_RUNNER = r"""
import json, sys, time, resource
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import geopak_data.imaging as imaging
from geopak_data.config import DownloadConfig
from geopak_data.download import _store
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
cores = int(sys.argv[3]); size = int(sys.argv[4]); quality = int(sys.argv[5])
imaging.JPEG_DECODER = sys.argv[7]
cfg = DownloadConfig(max_side=size, jpeg_quality=quality, workers=cores)
blobs = [(p.read_bytes(), out / p.parent.name / p.name) for p in sorted(folder.glob("*.jpg"))]
jobs = [(d, out / f"{i % 100:02d}" / f"{i:06d}.jpg") for i, (d, _) in enumerate(blobs)]
for _, dest in jobs:
    dest.parent.mkdir(parents=True, exist_ok=True)
r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
with ThreadPoolExecutor(cores) as pool:
    ok = sum(1 for _ in pool.map(lambda j: _store(j[0], j[1], cfg), jobs))
dt = time.perf_counter() - t0; r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"ok": ok, "seconds": dt, "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)}))
"""

I2D_RUNNER = r"""
import json, sys, time, resource, os
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from img2dataset import download
urls, out = sys.argv[1], sys.argv[2]
cores, size, quality, threads = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
t0 = time.perf_counter()
download(url_list=urls, output_folder=out, processes_count=cores, thread_count=threads, image_size=size,
         resize_mode="keep_ratio_largest", resize_only_if_bigger=True, encode_quality=quality, encode_format="jpg",
         output_format="files", input_format="txt", timeout=60, retries=0, number_sample_per_shard=1000,
         distributor="multiprocessing", compute_hash="sha256", enable_wandb=False)
dt = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF); rc = resource.getrusage(resource.RUSAGE_CHILDREN)
import glob
ok = sum(json.load(open(f)).get("successes", 0) for f in glob.glob(os.path.join(out, "*_stats.json")))
print(json.dumps({"ok": ok, "seconds": dt, "cpu": ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime}))
"""


def make_images(folder: Path, n: int, width: int, height: int, unique: int) -> list[str]:
    """``n`` JPEG files (``unique`` distinct pictures, copied under different names)."""
    from geopak_data.imageserver import make_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    blobs = [make_jpeg(width, height, seed=s, quality=90) for s in range(unique)]
    names = []
    for i in range(n):
        name = f"img{i:06d}.jpg"
        (folder / name).write_bytes(blobs[i % unique])
        names.append(name)
    return names


def start_servers(
    folder: Path, procs: int, host: str = "lean"
) -> tuple[list[subprocess.Popen], str]:
    """``procs`` image-server processes sharing one loopback port (SO_REUSEPORT), images
    preloaded in memory: the host should not be what limits either client. ``host``:
    ``lean`` (``bench/_statichost.py``, a few tens of microseconds of CPU per request) or
    ``imageserver`` (the tests' aiohttp host, ~0.3 ms per request taken from the same cores)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = []
    base = ""
    for _ in range(procs):
        if host == "lean":
            cmd = [sys.executable, str(Path(__file__).resolve().parent / "_statichost.py")]
            cmd += ["--folder", str(folder), "--reuse-port", "--port", str(port)]
        else:
            cmd = [sys.executable, "-m", "geopak_data.imageserver", "--folder", str(folder)]
            cmd += ["--no-fixtures", "--preload", "--reuse-port", "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        servers.append(proc)
        if not base.startswith("http://"):
            for p in servers:
                p.kill()
            raise SystemExit("image server did not start")
    return servers, base


def cpu_of(procs: list[subprocess.Popen]) -> float:
    """CPU seconds used so far by the server processes (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in procs:
        try:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_json(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def find_img2dataset(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    env = os.environ.get("GEOPAK_IMG2DATASET_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("img2dataset") is not None:
        return sys.executable
    return None


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="600 images (well under a minute per client on a quiet machine)",
    )
    ap.add_argument(
        "--images", type=int, default=0, help="number of images (default 3000; --quick 600)"
    )
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--size", type=int, default=512, help="target longest side for both clients")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality for both clients")
    ap.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (img2dataset) / image threads (geopak)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="requests in flight (geopak) / threads per process (img2dataset)",
    )
    ap.add_argument(
        "--img2dataset-python",
        default=None,
        metavar="PY",
        help="interpreter of a venv with img2dataset installed",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternated rounds (the order rotates each round); medians are reported",
    )
    ap.add_argument(
        "--server-procs", type=int, default=1, help="image-server processes sharing the port"
    )
    ap.add_argument(
        "--host",
        choices=("lean", "imageserver"),
        default="lean",
        help="the loopback image host: lean (bench/_statichost.py, default: the host's CPU "
        "on these shared cores stays small) or imageserver (the tests' aiohttp host)",
    )
    args = ap.parse_args()
    n = args.images or (600 if args.quick else 3000)
    i2d_py = find_img2dataset(args.img2dataset_python)
    print(machine_facts(("aiohttp", "pillow", "simplejpeg")))

    with tempfile.TemporaryDirectory(prefix="geopak-bench-") as td:
        root = Path(td)
        t0 = time.perf_counter()
        names = make_images(root / "served", n, args.width, args.height, unique=min(n, 48))
        print(
            f"generated {n} JPEGs {args.width}x{args.height} "
            f"({(root / 'served' / names[0]).stat().st_size / 1e3:.0f} kB each) in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        servers, base = start_servers(root / "served", args.server_procs, args.host)
        try:
            urls = root / "urls.txt"
            urls.write_text("\n".join(f"{base}/i/{name}" for name in names) + "\n")
            env = dict(os.environ, PYTHONPATH=str(REPO), GEOPAK_NO_PROGRESS="1")
            common = [str(args.cores), str(args.size), str(args.quality), str(args.concurrency)]
            counter = iter(range(10**9))

            def run(label: str, py: str, code: str, source: str, extra: list[str], e: dict) -> dict:
                out = root / f"out-{next(counter)}"
                s0 = cpu_of(servers)
                res = run_json([py, "-c", code, source, str(out), *common, *extra], e)
                res["server_cpu"] = cpu_of(servers) - s0
                shutil.rmtree(out, ignore_errors=True)
                print(
                    f"{label:<22} {res['ok']}/{n} ok in {res['seconds']:.2f}s -> "
                    f"{res['ok'] / res['seconds']:.1f} images/s"
                    f" (client cpu {res['cpu']:.1f}s, server cpu {res['server_cpu']:.1f}s)",
                    flush=True,
                )
                return res

            decoders = ["pillow"] + (
                ["simplejpeg"] if importlib.util.find_spec("simplejpeg") else []
            )
            best_dec = decoders[-1]
            served = str(root / "served")
            runs = {
                f"geopak ({best_dec})": lambda: run(
                    f"geopak ({best_dec})",
                    sys.executable,
                    GEOPAK_RUNNER,
                    str(urls),
                    [best_dec],
                    env,
                ),
            }
            for dec in decoders:
                runs[f"limit ({dec})"] = lambda dec=dec: run(
                    f"limit ({dec})", sys.executable, LIMIT_RUNNER, served, [dec], env
                )
            if i2d_py:
                runs["img2dataset"] = lambda: run(
                    "img2dataset", i2d_py, I2D_RUNNER, str(urls), [], {**env, "PYTHONPATH": ""}
                )
            results = alternated(runs, args.rounds)
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(10)

    rate = {k: median([x["ok"] / x["seconds"] for x in v]) for k, v in results.items()}
    # CPU seconds per image: on a shared machine wall time swings 2x between rounds, the CPU
    # a client spends per image much less; both ratios are printed.
    cpu = {k: median([x["cpu"] / max(1, x["ok"]) for x in v]) for k, v in results.items()}
    print(
        f"\nsame {n} images {args.width}x{args.height}, {args.cores} cores, longest side "
        f"{args.size}, quality {args.quality}, {args.host} loopback host;"
        f" medians of {args.rounds} alternated rounds"
    )
    for k, v in rate.items():
        print(f"{k:<22} {v:8.1f} images/s  {cpu[k] * 1000:6.2f} client CPU ms/image")
    g = rate[f"geopak ({best_dec})"]
    limit = rate[f"limit ({best_dec})"]
    g_cpu, l_cpu = cpu[f"geopak ({best_dec})"], cpu[f"limit ({best_dec})"]
    # Paired by round (the two ran minutes apart at most, under about the same load): the
    # median of the per-round ratios, less swayed by the load drifting between rounds.
    paired = median(
        [
            (a["ok"] / a["seconds"]) / (b["ok"] / b["seconds"])
            for a, b in zip(
                results[f"geopak ({best_dec})"], results[f"limit ({best_dec})"], strict=True
            )
        ]
    )
    print(
        f"ratio geopak / own no-network limit = {g / limit:.2f}x by wall time "
        f"(median of per-round ratios {paired:.2f}x), "
        f"{l_cpu / g_cpu:.2f}x by CPU per image (goal >= 0.9x)"
    )
    if len(decoders) > 1:
        print(
            "limit raised by simplejpeg decoding: "
            f"{rate['limit (simplejpeg)'] / rate['limit (pillow)']:.2f}x of Pillow's by wall time, "
            f"{cpu['limit (pillow)'] / cpu['limit (simplejpeg)']:.2f}x by CPU per image"
        )
    if "img2dataset" in rate:
        print(f"ratio geopak/img2dataset = {g / rate['img2dataset']:.2f}x")
    else:
        print(
            "img2dataset: not available, no comparison. It is not a project dependency; install it into its own venv:"
        )
        print("  python -m venv /tmp/i2d-venv && /tmp/i2d-venv/bin/pip install img2dataset")
        print(
            "  python bench/bench_download.py --img2dataset-python /tmp/i2d-venv/bin/python   "
            "(or GEOPAK_IMG2DATASET_PYTHON=...)"
        )

    setup = (
        f"{n} images {args.width}x{args.height} -> {args.size} px, {args.cores} cores, "
        f"{args.host} loopback host, medians of {args.rounds} alternated rounds"
    )
    emit(
        "download",
        "crawl images/s vs own no-network limit",
        g,
        "images/s",
        vs=f"the same per-image work without network ({best_dec} decode)",
        vs_value=limit,
        note=f"{setup}; per-round ratios' median {paired:.2f}x; by CPU per image "
        f"{l_cpu / g_cpu:.2f}x; goal ratio >= 0.9",
    )
    if len(decoders) > 1:
        emit(
            "download",
            "no-network limit images/s, simplejpeg decode",
            rate["limit (simplejpeg)"],
            "images/s",
            vs="Pillow decode",
            vs_value=rate["limit (pillow)"],
            note=f"{setup}; by CPU per image {cpu['limit (pillow)'] / cpu['limit (simplejpeg)']:.2f}x; "
            "same stored bytes (simplejpeg decodes at Pillow's DCT scale, Pillow encodes)",
        )
    emit(
        "download",
        "download images/s vs img2dataset",
        g,
        "images/s",
        vs="img2dataset",
        vs_value=rate.get("img2dataset"),
        note=setup
        if "img2dataset" in rate
        else f"img2dataset not installed (set GEOPAK_IMG2DATASET_PYTHON); {setup}",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
