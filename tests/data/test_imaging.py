"""imaging.process_image: sniffing, full decode, bomb limit, colour modes, EXIF orientation."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from geopak_data.imageserver import HTML_PAGE, make_bomb_png, make_corrupt_jpeg, make_jpeg, make_png
from geopak_data.imaging import ImageRejected, process_image, sniff, target_size


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_sniff_by_magic_bytes_not_name():
    assert sniff(make_jpeg(32, 32)) == "jpeg"
    assert sniff(make_png(32, 32)) == "png"
    assert sniff(b"GIF89a....") == "gif"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff(HTML_PAGE) is None
    assert sniff(b"") is None


def test_target_size_keeps_aspect_and_never_upscales():
    assert target_size(4000, 3000, 1024) == (1024, 768)
    assert target_size(3000, 4000, 1024) == (768, 1024)
    assert target_size(800, 600, 1024) == (800, 600)
    assert target_size(10000, 10, 100) == (100, 1)


def test_jpeg_resized_reencoded_and_hashed():
    out = process_image(make_jpeg(640, 480), max_side=256, quality=85)
    im = _decode(out.data)
    assert im.format == "JPEG" and im.mode == "RGB"
    assert im.size == (256, 192) == (out.width, out.height)
    assert (out.original_width, out.original_height) == (640, 480)
    assert out.sha256 == hashlib.sha256(out.data).hexdigest()
    # deterministic: the same bytes give the same stored file (kill + rerun == same set)
    assert process_image(make_jpeg(640, 480), max_side=256, quality=85).sha256 == out.sha256


@pytest.mark.parametrize(
    "data",
    [
        make_png(120, 80, mode="RGBA"),
        make_png(120, 80, mode="P"),
        make_png(120, 80, mode="LA"),
        make_jpeg(120, 80, mode="CMYK"),
        make_jpeg(120, 80, mode="L"),
    ],
    ids=["rgba-png", "palette-png", "la-png", "cmyk-jpeg", "gray-jpeg"],
)
def test_modes_become_rgb(data):
    out = process_image(data, max_side=1024)
    im = _decode(out.data)
    assert im.mode == "RGB" and im.size == (120, 80)


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = _decode(process_image(buf.getvalue()).data)
    r, g, b = out.getpixel((20, 20))
    assert min(r, g, b) > 240


def test_exif_rotation_applied_upright():
    # stored 600x400 with a red block at the stored top-left; orientation 6 means "rotate 90
    # degrees clockwise to display", so upright the image is 400x600 with red at top-right.
    arr = np.full((400, 600, 3), 40, np.uint8)
    arr[:100, :100] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = process_image(buf.getvalue(), max_side=300)
    im = _decode(out.data)
    assert im.size == (200, 300) == (out.width, out.height)
    assert (out.original_width, out.original_height) == (400, 600)
    assert "exif" not in im.info or 0x0112 not in im.getexif()
    top_right = np.asarray(im)[:30, -30:].mean(axis=(0, 1))
    top_left = np.asarray(im)[:30, :30].mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1] < 60
    assert top_left[0] < 80


def test_html_is_not_an_image():
    with pytest.raises(ImageRejected) as ei:
        process_image(HTML_PAGE)
    assert ei.value.reason == "not_an_image" and "HTML" in ei.value.detail


def test_corrupt_jpeg_rejected():
    with pytest.raises(ImageRejected) as ei:
        process_image(make_corrupt_jpeg())
    assert ei.value.reason == "corrupt_image"


def test_decompression_bomb_rejected_before_decoding():
    with pytest.raises(ImageRejected) as ei:
        process_image(make_bomb_png(100_000, 100_000))
    assert ei.value.reason == "decompression_bomb"
    # our own limit applies too, well below Pillow's default
    with pytest.raises(ImageRejected) as ei:
        process_image(make_jpeg(200, 200), max_pixels=10_000)
    assert ei.value.reason == "decompression_bomb"


def test_truncated_png_rejected():
    data = make_png(200, 200, mode="RGB")
    with pytest.raises(ImageRejected) as ei:
        process_image(data[: len(data) // 2])
    assert ei.value.reason == "corrupt_image"


def _oriented(data: bytes, orientation: int, subsampling: int) -> bytes:
    im = Image.open(io.BytesIO(data))
    exif = im.getexif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=92, exif=exif.tobytes(), subsampling=subsampling)
    return out.getvalue()


@pytest.mark.parametrize("size", [(1024, 768), (1600, 1200), (333, 500), (2049, 1537), (90, 70)])
def test_simplejpeg_decode_stores_the_same_bytes_as_pillow(size, monkeypatch):
    """The fast JPEG path decodes at Pillow's DCT scale, so the stored JPEG (and its sha256,
    on which de-duplication rests) does not depend on which decoder is installed."""
    pytest.importorskip("simplejpeg")
    import geopak_data.imaging as imaging

    base = make_jpeg(*size, seed=size[0], quality=90)
    for orientation, sub in ((1, 2), (6, 0), (3, 2), (8, 1), (5, 2)):
        data = base if orientation == 1 else _oriented(base, orientation, sub)
        for max_side in (512, 1024):
            got = {}
            for decoder in ("pillow", "simplejpeg"):
                monkeypatch.setattr(imaging, "JPEG_DECODER", decoder)
                got[decoder] = process_image(data, max_side=max_side, quality=90)
            assert got["simplejpeg"] == got["pillow"], (orientation, max_side)


def test_simplejpeg_decode_rejects_truncated_and_corrupt_jpegs_like_pillow(monkeypatch):
    pytest.importorskip("simplejpeg")
    import geopak_data.imaging as imaging

    data = make_jpeg(1024, 768, seed=3)
    for decoder in ("pillow", "simplejpeg"):
        monkeypatch.setattr(imaging, "JPEG_DECODER", decoder)
        for bad in (data[: len(data) // 2], make_corrupt_jpeg()):
            with pytest.raises(ImageRejected) as err:
                process_image(bad, max_side=512)
            assert err.value.reason == "corrupt_image", decoder


def test_without_simplejpeg_pillow_decodes(monkeypatch):
    import geopak_data.imaging as imaging

    monkeypatch.setattr(imaging, "_simplejpeg", None)
    img = process_image(make_jpeg(1024, 768, seed=4), max_side=512)
    assert (img.width, img.height) == (512, 384)
