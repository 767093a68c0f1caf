"""``geopak-data view``: a local web page to look at a dataset and ask the model.

Like the demo, the viewer sits on top of both towers: it reads the shard format (or a work
folder) and, with ``--checkpoint``, loads ``geopak_model.GeopakPredictor``. The server is
aiohttp (already a dependency); the map is Leaflet, served from the XStatic-Leaflet wheel's
own files so the page works with no network.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

from geopak_core.errors import GeopakError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def run_view(
    *,
    path: str | Path,
    checkpoint: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    boundaries: str | Path | None = None,
    tiles: str | None = None,
    max_upload_mb: int = 16,
    device: str | None = None,
    on_ready: Any = None,
) -> None:
    """Serve the viewer for the shard folder or work folder ``path`` until interrupted."""
    from ..country import work_boundaries
    from .dataset import ViewData
    from .server import build_app, serve

    data = ViewData.open(path)
    if boundaries is None and data.kind == "work":
        boundaries = work_boundaries(data.root)
    predictor = None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise GeopakError(f"checkpoint not found: {checkpoint}")
        from geopak_model import GeopakPredictor

        predictor = GeopakPredictor(checkpoint_path=checkpoint, device=device or "cpu")
    app = build_app(
        data,
        predictor=predictor,
        boundaries=boundaries,
        tiles=tiles,
        upload_bytes=max_upload_mb * 1024 * 1024,
    )
    serve(app, host=host, port=port, on_ready=on_ready)


def _host(value: str) -> str:
    if value != "localhost":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None
    return value


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0: any free port), got {n}")
    return n


def register(sub: Any) -> None:
    """Add ``geopak-data view`` to the CLI."""
    p = sub.add_parser(
        "view",
        help="local web viewer: map of the samples, details, rejects, ask the model",
        description=(
            "Serve a local web page over a shard folder (DIR) or a work folder (--work W): the "
            "samples on a map of the region polygons (colour and filter by split, region, "
            "source, licence), geocells with their radius, each sample's photo, licence and "
            "attribution, the rejected records with their reasons, and with --checkpoint a "
            "photo upload answered by the model. Binds to 127.0.0.1 unless --host says "
            "otherwise. The JSON API is documented in the README."
        ),
        epilog="example: geopak-data view demo-work/shards --checkpoint demo-work/runs/phase1/best.pt",
    )
    p.add_argument(
        "dir", nargs="?", type=Path, metavar="DIR", help="a shard folder (with index.parquet)"
    )
    p.add_argument(
        "--work",
        "-w",
        type=Path,
        metavar="W",
        help="a work folder instead of DIR, shows rejects too (default: none; give DIR or --work)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="CKPT",
        help="a GEOPAK checkpoint to ask (default: none, no model panel)",
    )
    p.add_argument(
        "--host",
        type=_host,
        default=DEFAULT_HOST,
        help=f"address to bind (default: {DEFAULT_HOST}; 0.0.0.0 exposes the viewer to the network)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port (default: {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--boundaries",
        type=Path,
        metavar="FILE",
        help="region polygons for the base map (default: GEOPAK_BOUNDARIES, else the verified cache)",
    )
    p.add_argument(
        "--tiles",
        metavar="URL",
        help=(
            "optional background tile URL template, e.g. "
            "https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: none, works offline)"
        ),
    )
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=16,
        help="largest photo upload accepted, in MiB (default: 16)",
    )
    p.add_argument("--device", default=None, help="device for the model (default: cpu)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if (args.dir is None) == (args.work is None):
        raise GeopakError("give a shard folder DIR or --work W (one of them)")
    if not 1 <= args.max_upload_mb <= 1024:
        raise GeopakError(f"--max-upload-mb must be 1-1024, got {args.max_upload_mb}")

    def ready(url: str) -> None:
        print(f"geopak viewer: {url}  (Ctrl-C to stop)", flush=True)

    try:
        run_view(
            path=args.dir or args.work,
            checkpoint=args.checkpoint,
            host=args.host,
            port=args.port,
            boundaries=args.boundaries,
            tiles=args.tiles,
            max_upload_mb=args.max_upload_mb,
            device=args.device,
            on_ready=ready,
        )
    except KeyboardInterrupt:
        print("geopak viewer: stopped", file=sys.stderr)
    return 0
