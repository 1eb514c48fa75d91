"""The thickness -> intensity digits: the DeepSCM mechanism, determinism, the cache."""

import numpy as np
import pytest

from cage.experiments.digits import data as digits_data
from cage.experiments.digits import morpho
from cage.experiments.digits.data import DigitsConfig


@pytest.fixture(scope="module")
def small():
    return digits_data.build(DigitsConfig(n_digits=40, draws=2, seed=3))


def test_mechanism_moments_match_the_closed_form():
    rng = np.random.default_rng(0)
    t, i = digits_data.sample_thickness_intensity(200_000, rng)
    # t = 0.5 + Gamma(10, rate 5): mean 2.5, variance 10 / 25 = 0.4.
    assert t.mean() == pytest.approx(2.5, abs=0.01)
    assert t.var() == pytest.approx(0.4, abs=0.01)
    assert i.min() >= 64 and i.max() <= 255
    # At t = 2.5 the logit is 0.5 * eps: i is centred on 64 + 191 / 2.
    near = np.abs(t - 2.5) < 0.02
    assert np.median(i[near]) == pytest.approx(64 + 191 / 2, abs=3)
    assert np.corrcoef(t, i)[0, 1] > 0.8


def test_images_carry_the_sampled_intensity_and_thickness(small):
    fg = [morpho.intensity(im.astype(float)) for im in small.images]
    assert np.allclose(fg, small.intensity, atol=2.0)
    assert np.corrcoef(small.thickness, small.measured["thickness"])[0, 1] > 0.8
    assert small.images.shape == (80, 28, 28) and small.images.dtype == np.uint8
    assert np.array_equal(small.source, np.repeat(np.arange(40), 2))


def test_attributes_are_binary_median_splits(small):
    a = small.attributes
    assert set(a) == set(digits_data.ATTRIBUTES)
    for name in ("thick", "bright", "slanted", "wide"):
        assert set(np.unique(a[name])) <= {0, 1}
        assert a[name].mean() == pytest.approx(0.5, abs=0.02)
    assert np.array_equal(a["thick"], (small.thickness > np.median(small.thickness)).astype(int))
    assert np.array_equal(a["round"], np.isin(small.labels, (0, 6, 8, 9)).astype(int))
    # The causal mechanism makes thick digits mostly bright.
    assert (a["thick"] == a["bright"]).mean() > 0.7


def test_build_is_deterministic_and_cached(tmp_path, small):
    config = DigitsConfig(n_digits=40, draws=2, seed=3)
    first = digits_data.load(config, tmp_path)
    assert np.array_equal(first.images, small.images)
    files = list(tmp_path.glob("digits-*.npz"))
    assert len(files) == 1 and config.key() in files[0].name
    again = digits_data.load(config, tmp_path)
    assert np.array_equal(again.images, first.images)
    for name in digits_data.ATTRIBUTES:
        assert np.array_equal(again.attributes[name], first.attributes[name])
    other = digits_data.build(DigitsConfig(n_digits=40, draws=2, seed=4))
    assert not np.array_equal(other.images, first.images)
    assert DigitsConfig(seed=4).key() != DigitsConfig(seed=3).key()


def test_unwritable_cache_is_a_clear_error(tmp_path):
    from cage_eval.errors import RunDirError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="CAGE_EVAL_CACHE"):
        digits_data.load(DigitsConfig(n_digits=10, draws=1), blocker / "sub")
