"""Pure image-quality measures used by the filter stage (Pillow, numpy, scipy, ImageHash).

The filter stage measures every image once and stores the numbers; thresholds are applied
afterwards, so changing a threshold never re-decodes a million photos. Why these measures:

* **full decode**: a truncated JPEG can have a valid header and still fail half-way; only
  decoding all of its data proves it is usable for training. The decode is *reduced*: JPEGs
  are decoded straight to grey levels at the smallest DCT scale (1/2, 1/4, 1/8) that still
  covers ``MEASURE_SIDE`` (libjpeg reads every coefficient either way, so damage is still
  found), and every measure comes from that one grey copy. This is most of why the filter
  runs near the cost of reading the images.
* **short side / aspect**: tiny thumbnails and panoramas strips carry little scene content at
  the model's input size.
* **variance of the Laplacian** (5-point stencil, reflected borders, on grey levels): low when an image is
  out of focus, motion-blurred or flat. It is measured on a copy scaled to a fixed long
  side (``MEASURE_SIDE``), so one threshold means the same for a 4000 px and a 600 px photo.
* **grey-level entropy** (Pillow's histogram entropy, bits): low for blank, near-uniform or
  posterised images (a white wall, a black frame, a logo).
* **perceptual hash** (ImageHash pHash, 64 bits): near-identical pictures (re-encodes,
  resizes, light edits) have hashes a few bits apart, so near-duplicates can be grouped.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MEASURE_SIDE = 512  # long side of the grey copy the blur/entropy measures use
MEASURE_VERSION = 2  # bump when a measure changes, so stored measurements are not reused


@dataclass
class ImageMeasures:
    """What the filter stores for one image; ``error`` is set (and the rest empty) on failure."""

    ok: bool
    error: str = ""  # human-readable decode failure
    width: int = 0
    height: int = 0
    file_sha256: str = ""
    laplacian_var: float = float("nan")
    entropy: float = float("nan")
    phash: str = ""  # 16 hex digits (ImageHash's string form)


@contextmanager
def _decode_errors() -> Iterator[None]:
    """Every way Pillow fails to read an image, as ``ValueError`` with a short reason (the
    filter's reject detail), the same for every decode."""
    try:
        yield
    except FileNotFoundError:
        raise ValueError("file missing") from None
    except UnidentifiedImageError:
        raise ValueError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"decode failed: {str(exc)[:160] or type(exc).__name__}") from None


def decode_image(path: str | Path | io.BytesIO) -> Image.Image:
    """Open and decode every pixel (raises ``ValueError`` with a short reason on failure)."""
    with _decode_errors(), Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def grey_for_measures(im: Image.Image, side: int = MEASURE_SIDE) -> Image.Image:
    """A grey copy whose long side is ``side`` (downscaled only: small images stay as they are)."""
    g = im.convert("L")
    w, h = g.size
    scale = side / max(w, h)
    if scale < 1.0:
        g = g.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return g


def laplacian_variance(grey: Image.Image | np.ndarray) -> float:
    """Variance of the discrete Laplacian of a grey image (0..255 levels): a focus measure.

    The same numbers as ``scipy.ndimage.laplace(a, mode="reflect").var()`` on float64: the
    stencil sums small integers, which float32 holds exactly, and the variance accumulates in
    float64; slicing a padded copy is several times faster than the generic filter."""
    a = np.asarray(grey, dtype=np.float32)
    if a.ndim != 2 or min(a.shape) < 3:
        return 0.0
    p = np.pad(a, 1, mode="symmetric")  # scipy's "reflect": d c b a | a b c d | d c b a
    lap = p[:-2, 1:-1] + p[2:, 1:-1]
    lap += p[1:-1, :-2]
    lap += p[1:-1, 2:]
    a *= 4.0
    lap -= a
    flat = lap.ravel()
    n = flat.size
    mean = float(flat.sum(dtype=np.float64)) / n
    return max(0.0, float(np.dot(flat, flat)) / n - mean * mean)


def grey_entropy(grey: Image.Image) -> float:
    """Shannon entropy (bits, 0..8) of the grey-level histogram."""
    return float(grey.convert("L").entropy())


def perceptual_hash(im: Image.Image) -> str:
    """64-bit DCT perceptual hash as 16 hex digits (ImageHash's ``phash``).

    ImageHash squeezes the image to 32x32 with Lanczos; from a 512 px photo that one resize
    cost more than decoding it. The image is first box-reduced by an integer factor to no
    less than 128 px per side (what Pillow's ``reducing_gap`` does), which leaves the 32x32
    input, and so the hash, all but unchanged (bench/bench_filter.py reports the bits)."""
    import imagehash

    factor = max(1, min(im.size) // 128)
    small = im.convert("L").reduce(factor) if factor > 1 else im
    return str(imagehash.phash(small, hash_size=8))


def parse_phash(values: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hashes, valid mask) from hex strings (imagehash's ``str``) or integers."""
    n = len(values)
    out = np.zeros(n, dtype=np.uint64)
    ok = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            if isinstance(v, str):
                s = v.strip()
                if not s:
                    continue
                out[i] = np.uint64(int(s, 16) & 0xFFFFFFFFFFFFFFFF)
            elif isinstance(v, float) and not np.isfinite(v):
                continue
            else:
                out[i] = np.uint64(int(v) & 0xFFFFFFFFFFFFFFFF)
            ok[i] = True
        except (TypeError, ValueError):
            continue
    return out, ok


def phash_to_int(hashes: list[str] | np.ndarray) -> np.ndarray:
    """Hex pHash strings -> uint64 array (empty or unreadable -> 0; callers mask them)."""
    return parse_phash(list(hashes))[0]


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 arrays (broadcasts)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


def size_problem(
    width: int, height: int, *, min_side: int, max_aspect: float
) -> tuple[str, str] | None:
    """``(reason, detail)`` when the image is too small or too elongated, else None."""
    short, long = min(width, height), max(width, height)
    if short < min_side:
        return "too_small", f"{width}x{height}: short side {short} < {min_side} px"
    if short > 0 and long / short > max_aspect:
        return "bad_aspect", f"{width}x{height}: aspect {long / short:.2f} > {max_aspect:g}"
    return None


def decode_for_measures(data: bytes, side: int = MEASURE_SIDE) -> tuple[Image.Image, int, int]:
    """One reduced decode: ``(grey copy with long side <= side, width, height)``.

    JPEGs decode straight to grey at the smallest DCT scale covering ``side``; other formats
    decode fully and convert. Raises ``ValueError`` with a short reason on any failure."""
    with _decode_errors(), Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        if im.format == "JPEG" and im.mode in ("L", "RGB", "YCbCr"):
            scale = side / max(width, height)
            if scale < 1.0:
                im.draft("L", (max(1, int(width * scale)), max(1, int(height * scale))))
            else:
                im.draft("L", im.size)
        im.load()
        grey = im if im.mode == "L" else im.convert("L")
        grey.load()
    return grey_for_measures(grey, side), width, height


def measure_image(
    path: str | Path, *, want_rgb: bool = False
) -> tuple[ImageMeasures, Image.Image | None]:
    """Decode an image once and measure it; the decoded RGB image too when ``want_rgb``
    (the indoor scorer needs colour; without it only the reduced grey decode is made)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return ImageMeasures(ok=False, error="file missing"), None
    except OSError as exc:
        return ImageMeasures(ok=False, error=f"unreadable: {exc.strerror or exc}"), None
    digest = hashlib.sha256(data).hexdigest()
    try:
        if want_rgb:
            rgb = decode_image(io.BytesIO(data))
            grey, width, height = grey_for_measures(rgb), rgb.width, rgb.height
        else:
            rgb = None
            grey, width, height = decode_for_measures(data)
    except ValueError as exc:
        return ImageMeasures(ok=False, error=str(exc), file_sha256=digest), None
    m = ImageMeasures(
        ok=True,
        width=width,
        height=height,
        file_sha256=digest,
        laplacian_var=laplacian_variance(grey),
        entropy=grey_entropy(grey),
        phash=perceptual_hash(grey),
    )
    return m, rgb


__all__ = [
    "MEASURE_SIDE",
    "MEASURE_VERSION",
    "ImageMeasures",
    "decode_for_measures",
    "decode_image",
    "grey_entropy",
    "grey_for_measures",
    "hamming_distance",
    "laplacian_variance",
    "measure_image",
    "perceptual_hash",
    "parse_phash",
    "phash_to_int",
    "size_problem",
]
