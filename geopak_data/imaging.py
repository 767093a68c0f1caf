"""Turn downloaded bytes into the stored image: sniff, decode, check, orient, resize, encode.

Why each step:

* **sniff** by magic bytes, not Content-Type: servers routinely send HTML error pages (or
  anything) as ``image/jpeg``; only the bytes say what they are.
* **decode fully** with Pillow: a truncated or corrupt file must be rejected here, not crash
  a training run months later.
* **pixel limit before decoding**: a tiny PNG can declare 100k x 100k pixels (a decompression
  bomb); its header is read and refused before any pixel is allocated.
* **EXIF orientation applied**: the stored JPEG carries no EXIF, so a phone photo must be
  rotated upright now or it stays sideways for ever.
* **RGB, bounded size, JPEG re-encode, sha256**: every stored sample has one format, the
  hash of the stored bytes gives exact de-duplication downstream.

Everything here is CPU-bound and thread-safe (decoding, Pillow or simplejpeg, and resizing
release the GIL), so the downloader runs it in a thread pool. Pillow's JPEG encode into memory
holds the GIL for most of its time (py-spy ``--gil``: about 40 % of the GIL time of the
image threads), which is why two image threads do not quite use two cores; the encoder stays
Pillow's because the stored bytes and their sha256 must not change (simplejpeg's encoder
gives other bytes at the same quality and 4:2:0 subsampling: same headers, other scan data).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# Magic bytes of the formats Pillow can decode and the crawl accepts.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)

_ORIENTATION_TAG = 0x0112
_TRANSPOSED = {5, 6, 7, 8}  # orientations that swap width and height


class ImageRejected(Exception):
    """Bytes that will not become a stored image; ``reason`` is a stable reject code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StoredImage:
    """The re-encoded JPEG and what the record keeps about it."""

    data: bytes
    sha256: str
    width: int
    height: int
    original_width: int  # upright (orientation applied), before resizing
    original_height: int
    source_format: str


def sniff(data: bytes) -> str | None:
    """The image format named by the leading magic bytes, or None (HTML, text, video...)."""
    head = data[:16]
    for magic, fmt in _SIGNATURES:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":  # ISO base media file: AVIF / HEIF still images
        size = int.from_bytes(data[:4], "big")
        brands = {data[i : i + 4] for i in range(8, min(max(size, 16), 64), 4)} - {b"\0\0\0\0"}
        if brands & {b"avif", b"avis"}:
            return "avif"
        if brands & {b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1"}:
            return "heif"
    return None


def _decodable(fmt: str) -> bool:
    """Whether this Pillow can decode ``fmt`` (AVIF needs Pillow >= 11.2 built with libavif;
    HEIF/HEIC has no decoder in Pillow itself)."""
    if fmt == "avif":
        from PIL import features

        return bool(features.check("avif"))
    return fmt != "heif"


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most ``max_side``, aspect kept, never upscaled."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any mode (CMYK, P, LA, L, I;16, RGBA...) to RGB; transparency composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clipping at 255.
        im = im.point(lambda v: v * (1 / 256)).convert("L")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _load_simplejpeg():
    try:
        import simplejpeg
    except ImportError:  # optional: Pillow decodes everything on its own
        return None
    return simplejpeg


_simplejpeg = _load_simplejpeg()
# "simplejpeg" when it is installed, else "pillow"; benchmarks set it to compare the two.
JPEG_DECODER = "simplejpeg" if _simplejpeg is not None else "pillow"

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _draft_scale(size: tuple[int, int], request: tuple[int, int] | None) -> int:
    """The DCT scale (1, 2, 4 or 8) Pillow's ``draft`` picks for ``request``."""
    if request is None:
        return 1
    scale = min(size[0] // max(1, request[0]), size[1] // max(1, request[1]))
    return next(sc for sc in (8, 4, 2, 1) if scale >= sc)


def _fast_jpeg(
    im: Image.Image, data: bytes, request: tuple[int, int] | None, orientation: int
) -> Image.Image | None:
    """An RGB JPEG decoded by simplejpeg (libjpeg-turbo) at the scale Pillow's draft would use,
    orientation applied; None when this is not such a JPEG or simplejpeg is absent (then
    Pillow decodes it).

    Why: simplejpeg decodes straight into a numpy array, ~1.3x faster than Pillow at the same
    DCT scale on 2 cores (bench/bench_download.py measures it). Same libjpeg scale, same
    islow IDCT and upsampling, so the same pixels, and the stored JPEG (still encoded by
    Pillow) keeps its bytes and sha256. ``strict`` decoding raises on truncated or corrupt
    data, which becomes ``corrupt_image`` exactly as with Pillow.
    """
    if JPEG_DECODER != "simplejpeg" or _simplejpeg is None:
        return None
    if im.format != "JPEG" or im.mode != "RGB":
        return None
    scale = _draft_scale(im.size, request)
    w, h = im.size
    arr = _simplejpeg.decode_jpeg(
        data,
        colorspace="RGB",
        min_width=-(-w // scale),
        min_height=-(-h // scale),
        strict=True,
    )
    out = Image.fromarray(arr, "RGB")
    method = _TRANSPOSE.get(orientation)
    return out.transpose(method) if method is not None else out


def process_image(
    data: bytes, *, max_side: int = 1024, quality: int = 90, max_pixels: int = 89_478_485
) -> StoredImage:
    """Decode ``data`` and return the stored JPEG, or raise ``ImageRejected``.

    Reasons: ``not_an_image`` (no image signature), ``unsupported_format`` (a real image
    format this Pillow cannot decode: HEIF, or AVIF without libavif), ``decompression_bomb`` (declared pixels
    over ``max_pixels``), ``corrupt_image`` (header or pixel data fails to decode).
    """
    fmt = sniff(data)
    if fmt is None:
        head = data[:32].lstrip().lower()
        kind = (
            "HTML"
            if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))
            else "unknown bytes"
        )
        raise ImageRejected("not_an_image", f"{kind} ({len(data)} bytes), no image signature")
    if not _decodable(fmt):
        raise ImageRejected(
            "unsupported_format",
            f"{fmt.upper()} image, but this Pillow has no {fmt.upper()} decoder"
            + (" (Pillow >= 11.2 with libavif reads AVIF)" if fmt == "avif" else ""),
        )
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression_bomb", str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected("corrupt_image", f"{fmt}: {exc}") from None
    try:
        w, h = im.size
        if w < 1 or h < 1:
            raise ImageRejected("corrupt_image", f"{fmt}: empty size {w}x{h}")
        if w * h > max_pixels:
            raise ImageRejected(
                "decompression_bomb", f"{w}x{h} = {w * h} pixels > limit {max_pixels}"
            )
        orientation = 1
        try:
            orientation = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
        except Exception:  # a broken EXIF block is not a broken image
            orientation = 1
        ow, oh = (h, w) if orientation in _TRANSPOSED else (w, h)
        tw, th = target_size(ow, oh, max_side)
        draft = (th, tw) if orientation in _TRANSPOSED else (tw, th)
        fast = _fast_jpeg(im, data, draft if (tw, th) != (ow, oh) else None, orientation)
        if fast is not None:
            im.close()
            im = fast
        else:
            if im.format == "JPEG" and (tw, th) != (ow, oh):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling): same output
                # quality after the final resize, a fraction of the decode time.
                im.draft("RGB", draft)
            im.load()
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
        if im.size != (tw, th):
            im = im.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=quality, optimize=False)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression_bomb", str(exc)) from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        MemoryError,
        IndexError,
        TypeError,
        KeyError,
    ) as exc:
        raise ImageRejected("corrupt_image", f"{fmt}: {exc}") from None
    finally:
        im.close()
    stored = out.getvalue()
    return StoredImage(
        data=stored,
        sha256=hashlib.sha256(stored).hexdigest(),
        width=tw,
        height=th,
        original_width=ow,
        original_height=oh,
        source_format=fmt,
    )
