"""Image-quality measures on small generated images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support.images import blurred, flat, jpeg, textured

from geopak_data.quality import (
    MEASURE_SIDE,
    grey_entropy,
    grey_for_measures,
    hamming_distance,
    laplacian_variance,
    measure_image,
    perceptual_hash,
    phash_to_int,
    size_problem,
)


def test_laplacian_variance_separates_sharp_from_blurred_and_flat():
    sharp = laplacian_variance(grey_for_measures(textured(3)))
    soft = laplacian_variance(grey_for_measures(blurred(3)))
    assert sharp > 10 * soft
    assert laplacian_variance(grey_for_measures(flat())) == 0.0
    # a single bright pixel: the discrete Laplacian is -4 there and +1 at its 4 neighbours
    a = np.zeros((9, 9))
    a[4, 4] = 1.0
    lap = laplacian_variance(a)
    expected = np.var(np.r_[-4.0, [1.0] * 4, [0.0] * 76])
    assert abs(lap - expected) < 1e-12


def test_entropy_flat_vs_noise():
    assert grey_entropy(flat()) == 0.0
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8))
    assert grey_entropy(noise) > 7.9
    two = Image.fromarray(np.r_[np.zeros((8, 16)), np.full((8, 16), 255)].astype(np.uint8))
    assert abs(grey_entropy(two) - 1.0) < 1e-9


def test_measures_use_a_fixed_scale():
    big = textured(4, (1400, 700))
    g = grey_for_measures(big)
    assert max(g.size) == MEASURE_SIDE and g.size == (512, 256)
    small = textured(4, (100, 80))
    assert grey_for_measures(small).size == (100, 80)  # never upscaled


def test_phash_near_copies_are_close_and_different_pictures_far():
    a = textured(5, (200, 150))
    copy = Image.open(io.BytesIO(jpeg(a.resize((160, 120)), quality=60)))
    other = textured(6, (200, 150))
    ha, hc, ho = phash_to_int([perceptual_hash(a), perceptual_hash(copy), perceptual_hash(other)])
    assert hamming_distance(ha, hc) <= 4
    assert hamming_distance(ha, ho) > 12
    assert len(perceptual_hash(a)) == 16


def test_hamming_distance_and_hex_round_trip():
    h = phash_to_int(["ffffffffffffffff", "0000000000000000", "8000000000000001", ""])
    assert h.dtype == np.uint64
    assert hamming_distance(h[0], h[1]) == 64
    assert hamming_distance(h[2], h[1]) == 2
    assert h[3] == 0


def test_size_problem():
    assert size_problem(300, 300, min_side=256, max_aspect=3) is None
    assert size_problem(255, 400, min_side=256, max_aspect=3)[0] == "too_small"
    reason, detail = size_problem(1000, 300, min_side=256, max_aspect=3)
    assert reason == "bad_aspect" and "3.33" in detail
    assert size_problem(300, 900, min_side=256, max_aspect=3) is None  # exactly 3:1 is fine


def test_measure_image_decodes_fully(tmp_path):
    good = tmp_path / "good.jpg"
    data = jpeg(textured(7, (160, 120)))
    good.write_bytes(data)
    m, im = measure_image(good, want_rgb=True)
    assert m.ok and (m.width, m.height) == (160, 120) and im.mode == "RGB"
    assert m.laplacian_var > 100 and 0 < m.entropy <= 8 and len(m.phash) == 16
    assert len(m.file_sha256) == 64
    grey_only, none = measure_image(good)  # the reduced grey decode: same measures
    assert (
        none is None
        and grey_only.phash == m.phash
        and (grey_only.width, grey_only.height) == (160, 120)
    )
    assert grey_only.laplacian_var == pytest.approx(m.laplacian_var, rel=0.02)

    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])  # valid header, half the scan data
    for want_rgb in (True, False):
        m, im = measure_image(truncated, want_rgb=want_rgb)
        assert not m.ok and im is None and "decode failed" in m.error
        assert m.file_sha256  # the bytes are still identified

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"<html>not an image</html>")
    m, _ = measure_image(junk)
    assert not m.ok and "not a recognised image" in m.error

    m, _ = measure_image(tmp_path / "missing.jpg")
    assert not m.ok and m.error == "file missing"


def test_laplacian_variance_equals_scipy_on_float64():
    """The float32 slicing stencil gives scipy.ndimage.laplace(mode='reflect').var()'s numbers."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for i in range(20):
        a = rng.integers(0, 256, (int(rng.integers(3, 300)), int(rng.integers(3, 300))))
        if i % 2:
            a = ndimage.gaussian_filter(a.astype(float), 2)
        a = np.clip(a, 0, 255).astype(np.uint8)
        ref = float(ndimage.laplace(a.astype(np.float64), mode="reflect").var())
        assert laplacian_variance(a) == pytest.approx(ref, rel=1e-4, abs=1e-6)


def test_reduced_decode_keeps_the_measures_of_a_large_photo(tmp_path):
    """A 2000 px JPEG decoded at 1/2 scale straight to grey: same size reported, blur and
    entropy within a few percent of the full decode, pHash within 2 bits."""
    big = tmp_path / "big.jpg"
    big.write_bytes(jpeg(textured(9, (2000, 1500))))
    full, _ = measure_image(big, want_rgb=True)
    reduced, _ = measure_image(big)
    assert (reduced.width, reduced.height) == (full.width, full.height) == (2000, 1500)
    assert reduced.laplacian_var == pytest.approx(full.laplacian_var, rel=0.15)
    assert reduced.entropy == pytest.approx(full.entropy, rel=0.03)
    assert bin(int(reduced.phash, 16) ^ int(full.phash, 16)).count("1") <= 2
