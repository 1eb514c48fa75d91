"""Morpho-MNIST measurements against closed forms on drawn shapes, and the thickness perturbation."""

import numpy as np
import pytest

from cage.experiments.digits import morpho
from cage.experiments.digits.data import base_digits


def bar(width: int, *, rows=(6, 22), col0=12) -> np.ndarray:
    """A vertical bar `width` pixels wide: thickness = width, area = width * height."""
    img = np.zeros((28, 28))
    img[rows[0]:rows[1], col0:col0 + width] = 1.0
    return img


@pytest.mark.parametrize("method", morpho.THICKNESS_METHODS)
@pytest.mark.parametrize("width", [2, 3, 5])
def test_thickness_of_a_bar_is_its_width(width, method):
    # The medial axis of a w-wide bar runs down its middle at distance w/2 from the background;
    # the end caps pull the mean down a little, hence the tolerance of 0.35 px.
    assert morpho.thickness(bar(width), method=method) == pytest.approx(width, abs=0.35)


def test_area_width_height_of_a_rectangle():
    m = morpho.measure(bar(6))
    assert m.area == pytest.approx(6 * 16, rel=0.06)
    # bound_frac = 0.02 drops 1% of the mass on each side of a uniform extent.
    assert m.width == pytest.approx(6 * 0.98, abs=0.3)
    assert m.height == pytest.approx(16 * 0.98, abs=0.3)
    assert m.slant == pytest.approx(0.0, abs=1e-9)


def test_slant_of_a_sheared_bar():
    # A bar whose column shifts by +0.5 per row going down leans left (top to the left):
    # shear dx/dy = 0.5, slant = arctan(-0.5).
    img = np.zeros((28, 28))
    for r in range(4, 24):
        c = 6 + (r - 4) // 2
        img[r, c:c + 3] = 1.0
    assert morpho.measure(img).slant == pytest.approx(np.arctan(-0.5), abs=0.05)
    assert morpho.measure(img[:, ::-1]).slant == pytest.approx(np.arctan(0.5), abs=0.05)


def test_intensity_is_the_median_foreground_value_and_scales():
    img = bar(4) * 0.8
    img[10, 13] = 0.6
    assert morpho.intensity(img) == pytest.approx(0.8)
    assert morpho.intensity(0.5 * img) == pytest.approx(0.4)
    assert morpho.intensity(np.zeros((28, 28))) == 0.0


@pytest.mark.parametrize("target", [1.5, 2.5, 5.0])
def test_set_thickness_reaches_the_target_on_a_bar(target):
    out = morpho.set_thickness(bar(3), target)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert morpho.thickness(out) == pytest.approx(target, abs=0.45)


def test_set_thickness_is_monotone_on_real_digits():
    digits, _ = base_digits(6)
    for d in digits:
        measured = [morpho.thickness(morpho.set_thickness(d, t)) for t in (1.5, 2.5, 3.5, 4.5)]
        assert np.all(np.diff(measured) > 0), measured
        # Thickening is accurate; thinning is capped short of the medial axis, so allow more.
        assert measured[-1] == pytest.approx(4.5, abs=0.6)


def test_empty_image_measures_zero_and_stays_empty():
    blank = np.zeros((28, 28))
    assert morpho.measure(blank).thickness == 0.0
    assert not morpho.set_thickness(blank, 3.0).any()


def test_methods_agree_on_digits():
    digits, _ = base_digits(20)
    a = np.array([morpho.thickness(d, method="thinning") for d in digits])
    b = np.array([morpho.thickness(d, method="medial_axis") for d in digits])
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert np.abs(a - b).mean() < 0.3


def test_unknown_method_is_a_programmer_error():
    with pytest.raises(ValueError, match="method"):
        morpho.thickness(bar(3), method="nope")
