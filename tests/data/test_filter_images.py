"""The test fixture in support.images is what it claims to be."""

from __future__ import annotations

from support.images import blurred, flat, textured


def test_generated_images_have_the_intended_properties():
    from geopak_data.quality import grey_entropy, grey_for_measures, laplacian_variance

    sharp = grey_for_measures(textured(1))
    soft = grey_for_measures(blurred(1))
    assert laplacian_variance(sharp) > 300 > 30 > laplacian_variance(soft)
    assert grey_entropy(soft) > 4  # blurred, not blank: must be caught by the blur rule
    assert grey_entropy(grey_for_measures(flat())) == 0.0
