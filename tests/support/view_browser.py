"""Drive the viewer in headless Chromium (Playwright) and report what the page showed.

Run by tests/data/view/test_view_browser.py inside a network namespace that has only
loopback (``unshare -n``), so neither the server nor the browser can reach anything else:

    python tests/support/view_browser.py SHARDS CKPT PHOTO RESULT.json SCREENSHOT_DIR

The server runs in a thread of this process; the browser is Debian's ``chromium``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

CHROMIUM = os.environ.get("GEOPAK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def start_server(app: web.Application) -> tuple[str, Any]:
    """Serve ``app`` on 127.0.0.1 (a free port) from a background thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def _start() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        ready.set()

    def _run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_start())
        loop.run_forever()

    threading.Thread(target=_run, daemon=True).start()
    ready.wait(60)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)

    return box["url"], stop


def drive(url: str, photo: Path, shots: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"console_errors": [], "requests": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("console", lambda m: m.type == "error" and out["console_errors"].append(m.text))
        page.on("pageerror", lambda e: out["console_errors"].append(str(e)))
        page.on("request", lambda r: out["requests"].append(r.url))
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready", timeout=60_000)
        if page.evaluate("document.body.dataset.ready") != "1":
            raise RuntimeError(
                f"page failed to start: {out['console_errors']} "
                f"{page.locator('[role=alert]').all_inner_texts()}"
            )
        count = page.get_by_test_id("sample-count")
        out["count_initial"] = int(count.inner_text())
        page.screenshot(path=str(shots / "01-loaded.png"))

        page.select_option("[data-testid=filter-split]", "val")
        out["count_val"] = int(count.inner_text())
        page.select_option("[data-testid=filter-split]", "")
        out["count_reset"] = int(count.inner_text())

        # click the first sample where it is drawn
        page.evaluate(
            """() => { const i = state.visible[0];
                 map.setView([state.data.lat[i], state.data.lon[i]], 15, {animate: false}); }"""
        )
        page.wait_for_timeout(200)
        target = page.evaluate(
            """() => { const i = state.visible[0];
                 const p = map.latLngToContainerPoint([state.data.lat[i], state.data.lon[i]]);
                 return {key: state.data.key[i], x: p.x, y: p.y}; }"""
        )
        box = page.get_by_test_id("map").bounding_box()
        page.mouse.click(box["x"] + target["x"], box["y"] + target["y"])
        detail = page.get_by_test_id("sample-detail")
        detail.wait_for(state="visible", timeout=30_000)
        out["clicked_key"] = target["key"]
        out["detail_key"] = detail.locator("[data-field=key]").inner_text()
        out["detail_license"] = detail.locator("[data-field=license]").inner_text()
        out["detail_owner"] = detail.locator("[data-field=owner]").inner_text()
        page.wait_for_function("document.getElementById('thumb').complete")
        out["thumb_width"] = page.evaluate("document.getElementById('thumb').naturalWidth")
        page.screenshot(path=str(shots / "02-sample.png"))

        page.get_by_test_id("upload").set_input_files(str(photo))
        pred = page.get_by_test_id("prediction")
        pred.wait_for(state="visible", timeout=60_000)
        out["prediction"] = {
            f: pred.locator(f"[data-field={f}]").inner_text()
            for f in ("lat", "lon", "province", "confidence", "distance_km")
        }
        out["hypothesis_rows"] = pred.locator("#hypotheses tbody tr").count()
        page.get_by_test_id("show-cells").check()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "03-prediction.png"))
        browser.close()
    return out


def main() -> None:
    shards, ckpt, photo, result, shots = (Path(a) for a in sys.argv[1:6])
    shots.mkdir(parents=True, exist_ok=True)
    from geopak_data.view.dataset import ViewData
    from geopak_data.view.server import build_app
    from geopak_model import GeopakPredictor

    app = build_app(ViewData.open(shards), predictor=GeopakPredictor(ckpt, device="cpu"))
    url, stop = start_server(app)
    try:
        out = drive(url, photo, shots)
    finally:
        stop()
    out["url"] = url
    result.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
