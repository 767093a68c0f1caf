"""The viewer's web server: an aiohttp app over one ``ViewData`` and, optionally, a model.

JSON API (all GET unless noted; filters are ``split``, ``province``, ``source``, ``license``):

=====================  ======================================================================
``/api/meta``          what is loaded: folder, kind, counts, category labels, model provenance
``/api/regions``       region polygons as GeoJSON (simplified), empty when none are at hand
``/api/samples``       columns ``key``, ``lat``, ``lon`` + category codes/labels (filters apply);
                       ``?format=records&offset=&limit=`` gives full rows instead
``/api/counts``        sample counts per category for the filters
``/api/sample/{key}``  one sample's detail (licence, owner, attribution, ...)
``/api/image/{key}``   its stored JPEG, read only from the shard tar / the work folder
``/api/cells``         the geocells (centre, radius, region, size)
``/api/rejects``       reason counts and a sample of rejected records per reason (work folder)
``/api/predict``       POST an image (multipart field ``image`` or the raw body), or
                       ``?key=`` for a dataset sample: the model's answer, its hypotheses and,
                       for a dataset photo, the distance to the truth
=====================  ======================================================================

Static files: the page itself from ``geopak_data/view/static`` and Leaflet from the
``XStatic-Leaflet`` wheel's own folder, so the page needs no network at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from aiohttp import web

from geopak_core.errors import GeopakError
from geopak_core.geo import haversine_km
from geopak_core.progress import log

from .dataset import CATEGORIES, ViewData, decode_upload, regions_geojson

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
DATA: web.AppKey[ViewData] = web.AppKey("data", ViewData)
PREDICTOR: web.AppKey[Any] = web.AppKey("predictor", object)
REGIONS: web.AppKey[dict] = web.AppKey("regions", dict)
LIMITS: web.AppKey[dict] = web.AppKey("limits", dict)


def leaflet_dir() -> Path:
    """Leaflet's files as installed by the XStatic-Leaflet wheel."""
    import xstatic.pkg.leaflet as xl

    return Path(xl.BASE_DIR)


def _filters(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if k in CATEGORIES}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, allow_nan=False))


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status=status)


async def index(request: web.Request) -> web.StreamResponse:
    """The viewer page; never cached, so a restarted server's page is always current."""
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def meta(request: web.Request) -> web.Response:
    """GET /api/meta: what is loaded (folder, counts, labels, model provenance)."""
    data = request.app[DATA]
    predictor = request.app[PREDICTOR]
    out = data.meta()
    out["tiles"] = request.app[LIMITS]["tiles"]
    out["model"] = (
        None
        if predictor is None
        else {
            "checkpoint": str(predictor.checkpoint_path),
            "provenance": predictor.payload.get("provenance"),
        }
    )
    return _json(out)


async def regions(request: web.Request) -> web.Response:
    """GET /api/regions: the region polygons as GeoJSON."""
    return _json(request.app[REGIONS])


async def samples(request: web.Request) -> web.Response:
    """GET /api/samples: columns for the map, or full rows with ``?format=records``."""
    data = request.app[DATA]
    try:
        filters = _filters(request)
        if request.query.get("format") == "records":
            offset = max(0, int(request.query.get("offset", 0)))
            limit = min(1000, max(1, int(request.query.get("limit", 100))))
            return _json(data.records(filters, offset=offset, limit=limit))
        return _json(data.columns(filters))
    except ValueError:
        return _error("offset and limit must be integers", 400)


async def counts(request: web.Request) -> web.Response:
    """GET /api/counts: sample counts per category under the filters."""
    return _json(request.app[DATA].counts(_filters(request)))


async def sample(request: web.Request) -> web.Response:
    """GET /api/sample/{key}: one sample's detail, 404 when unknown."""
    detail = request.app[DATA].detail(request.match_info["key"])
    if detail is None:
        return _error("no such sample", 404)
    return _json(detail)


async def image(request: web.Request) -> web.StreamResponse:
    """GET /api/image/{key}: the stored JPEG, read off the event loop."""
    data = request.app[DATA]
    body = await asyncio.to_thread(data.image_bytes, request.match_info["key"])
    if body is None:
        return _error("no image for this key", 404)
    return web.Response(
        body=body, content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
    )


async def cells(request: web.Request) -> web.Response:
    """GET /api/cells: the geocells."""
    return _json(request.app[DATA].cell_rows())


async def rejects(request: web.Request) -> web.Response:
    """GET /api/rejects: reject reasons with counts and examples."""
    return _json(request.app[DATA].reject_summary())


async def _upload_bytes(request: web.Request) -> bytes:
    limit = request.app[LIMITS]["upload_bytes"]
    if request.content_length is not None and request.content_length > limit + 65536:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if getattr(part, "name", None) == "image":
                return await _read_capped(part.read_chunk, limit)
        raise GeopakError("no 'image' field in the upload")
    return await _read_capped(request.content.read, limit)


async def _read_capped(read: Any, limit: int) -> bytes:
    """Read a body in chunks, refusing it as soon as it passes ``limit`` bytes."""
    chunks, total = [], 0
    while chunk := await read(65536):
        total += len(chunk)
        if total > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
        chunks.append(chunk)
    return b"".join(chunks)


def _predict_sync(app: web.Application, raw: bytes | None, key: str | None) -> dict[str, Any]:
    data = app[DATA]
    truth = None
    if key is not None:
        truth = data.detail(key)
        raw = data.image_bytes(key)
        if truth is None or raw is None:
            raise GeopakError(f"no image for sample {key!r}")
    assert raw is not None
    img = decode_upload(raw, max_pixels=app[LIMITS]["max_pixels"])
    if truth is None:
        truth = data.truth_for_sha256(hashlib.sha256(raw).hexdigest())
    result = app[PREDICTOR].predict(img)
    if truth is not None:
        result["truth"] = {k: truth.get(k) for k in ("key", "lat", "lon", "province")}
        result["distance_km"] = round(
            float(haversine_km(result["lat"], result["lon"], truth["lat"], truth["lon"])), 3
        )
    return result


async def predict(request: web.Request) -> web.Response:
    """POST/GET /api/predict: the model's answer for an upload or a dataset sample (409 with no
    model)."""
    if request.app[PREDICTOR] is None:
        return _error("no model loaded: start the viewer with --checkpoint CKPT", 409)
    key = request.query.get("key")
    try:
        raw = None if key is not None else await _upload_bytes(request)
        result = await asyncio.to_thread(_predict_sync, request.app, raw, key)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[LIMITS]["upload_bytes"]
        return _error(f"upload too large (limit {limit // (1024 * 1024)} MiB)", 413)
    except GeopakError as exc:
        return _error(str(exc), 400)
    return _json(_finite(result))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def build_app(
    data: ViewData,
    *,
    predictor: Any = None,
    boundaries: str | Path | None = None,
    upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = 89_478_485,
    tiles: str | None = None,
) -> web.Application:
    """The viewer as an aiohttp application (tests and notebooks can run it themselves)."""
    app = web.Application(client_max_size=upload_bytes + 65536)
    app[DATA] = data
    app[PREDICTOR] = predictor
    app[REGIONS] = regions_geojson(boundaries, country=data.country)
    app[LIMITS] = {"upload_bytes": upload_bytes, "max_pixels": max_pixels, "tiles": tiles}
    app.router.add_get("/", index)
    app.router.add_get("/api/meta", meta)
    app.router.add_get("/api/regions", regions)
    app.router.add_get("/api/samples", samples)
    app.router.add_get("/api/counts", counts)
    app.router.add_get("/api/sample/{key}", sample)
    app.router.add_get("/api/image/{key}", image)
    app.router.add_get("/api/cells", cells)
    app.router.add_get("/api/rejects", rejects)
    app.router.add_post("/api/predict", predict)
    app.router.add_get("/api/predict", predict)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_static("/vendor/leaflet/", leaflet_dir(), follow_symlinks=False)
    return app


def serve(app: web.Application, *, host: str, port: int, on_ready: Any = None) -> None:
    """Run until interrupted; ``on_ready(url)`` is called once the socket listens."""

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        real_port = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{real_port}/"
        log.info("viewer listening on %s", url)
        if on_ready is not None:
            on_ready(url)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise GeopakError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
