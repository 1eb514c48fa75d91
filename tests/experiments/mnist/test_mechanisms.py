"""The falsification variants of Morpho-MNIST: the direction each generates, the same marginals as
the shipped (forward) data, and keys that leave the shipped weights valid."""

import numpy as np
import pytest
from scipy import stats

from cage.config.experiment import load_experiment
from cage.experiments.mnist import data as mnist
from cage.experiments.mnist.data import MorphoMNISTConfig
from cage.experiments.mnist.kind import parse_options
from cage.experiments.mnist.models import MorphoModelConfigs, shipped_meta

N = 100_000


def _causes(mechanism, noise, seed=0):
    return mnist.sample_mechanism(N, np.random.default_rng(seed), noise, mechanism)


@pytest.mark.parametrize("noise", [0.5, 1.5])
@pytest.mark.parametrize("mechanism", ["reversed", "none"])
def test_every_variant_keeps_both_marginals_exactly(mechanism, noise):
    forward, other = _causes("forward", noise), _causes(mechanism, noise)
    # The same multiset of thickness values and of intensity values: only the pairing differs.
    np.testing.assert_array_equal(np.sort(other.t), np.sort(forward.t))
    np.testing.assert_array_equal(np.sort(other.i), np.sort(forward.i))
    assert not np.array_equal(other.t, forward.t) or not np.array_equal(other.i, forward.i)


def test_forward_is_deepscm_unchanged():
    a = _causes("forward", 0.5)
    t, i = mnist.sample_causes(N, np.random.default_rng(0), 0.5)
    np.testing.assert_array_equal(a.t, t)
    np.testing.assert_array_equal(a.i, i)
    assert a.order == ("thickness", "intensity")


@pytest.mark.parametrize("noise", [0.5, 1.5])
def test_forward_intensity_is_thickness_plus_independent_noise(noise):
    c = _causes("forward", noise)
    # The effect is a function of the cause and its own noise, and that noise is independent of
    # the cause (regression of the effect's logit on the cause leaves exactly s * eps).
    np.testing.assert_allclose(mnist.intensity_logit(c.i), 2 * (c.t - 2.5) + noise * c.noise,
                               atol=1e-6)
    assert abs(np.corrcoef(c.noise, c.t)[0, 1]) < 0.01
    assert abs(stats.spearmanr(c.noise, c.t)[0]) < 0.01


@pytest.mark.parametrize("noise", [0.5, 1.5])
def test_reversed_thickness_is_intensity_plus_independent_noise(noise):
    c = _causes("reversed", noise)
    assert c.order == ("intensity", "thickness")
    # Thickness is a monotone function of intensity's logit plus noise drawn independently of
    # the intensity: the generating order is intensity first.
    score = mnist.intensity_logit(c.i) + mnist.reversed_noise(noise) * c.noise
    np.testing.assert_array_equal(np.argsort(c.t, kind="stable"),
                                  np.argsort(score, kind="stable"))
    assert abs(np.corrcoef(c.noise, c.i)[0, 1]) < 0.01
    assert abs(stats.spearmanr(c.noise, c.i)[0]) < 0.01
    # And the noise matters: it is what thickness has beyond intensity.
    assert stats.spearmanr(c.noise, c.t)[0] > 0.2


@pytest.mark.parametrize("noise", [0.5, 1.5])
def test_reversed_has_the_forward_strength_of_dependence(noise):
    fwd, rev = _causes("forward", noise), _causes("reversed", noise)
    r_fwd = stats.spearmanr(fwd.t, fwd.i)[0]
    r_rev = stats.spearmanr(rev.t, rev.i)[0]
    assert r_rev == pytest.approx(r_fwd, abs=0.03)


def test_no_mechanism_leaves_thickness_and_intensity_independent():
    c = _causes("none", 0.5)
    assert c.order == () and c.noise is None
    assert abs(stats.spearmanr(c.t, c.i)[0]) < 0.01


def test_the_issue_formula_is_the_reversed_mechanism_up_to_a_monotone_map():
    # t = 2.5 + 0.45 logit((i - 64)/191) + 0.25 eps: noise 0.25 / 0.45 = 0.56 in logit units.
    assert mnist.reversed_noise(0.5) == pytest.approx(0.25 / 0.45, abs=0.02)


def test_shipped_keys_unchanged_and_variants_keyed_apart():
    forward = MorphoMNISTConfig()
    assert "mechanism" not in forward.image_fields()
    keys = {m: MorphoMNISTConfig(mechanism=m).image_key() for m in mnist.MECHANISMS}
    assert len(set(keys.values())) == 3
    # The shipped weights of the two forward experiments are still found by their keys, and the
    # reversed and no-mechanism DeepSCM-coupling variants ship their own.
    for name in ("morphomnist", "morphomnist_loose", "morphomnist_reversed", "morphomnist_none"):
        configs = parse_options(load_experiment(name)).models
        assert shipped_meta(configs.file_stem("flow")) is not None
        assert shipped_meta(configs.file_stem("obs")) is not None


@pytest.mark.parametrize("name, mechanism, noise", [
    ("morphomnist_reversed", "reversed", 0.5), ("morphomnist_none", "none", 0.5),
    ("morphomnist_loose_reversed", "reversed", 1.5), ("morphomnist_loose_none", "none", 1.5),
])
def test_variant_experiments_differ_from_their_coupling_only_in_the_mechanism(name, mechanism,
                                                                               noise):
    options = parse_options(load_experiment(name))
    base = parse_options(load_experiment("morphomnist" if noise == 0.5 else "morphomnist_loose"))
    assert options.models.data.mechanism == mechanism
    assert options.models.data.intensity_noise == noise
    assert options.models.flow == base.models.flow and options.models.obs == base.models.obs
    assert isinstance(options.models, MorphoModelConfigs)


def test_an_unknown_mechanism_is_refused():
    from cage_eval.errors import ConfigError

    config = load_experiment("morphomnist", overrides=['data.mechanism="sideways"'])
    with pytest.raises(ConfigError, match=r"\[data\] mechanism = 'sideways': must be one of"):
        parse_options(config)


@pytest.mark.parametrize("name", [
    "morphomnist", "morphomnist_loose", "morphomnist_reversed", "morphomnist_none",
    "morphomnist_loose_reversed", "morphomnist_loose_none"])
def test_the_morphomnist_experiments_declare_their_arrows_falsified(name):
    # The falsification (docs/morphomnist.md) found the same arrow with the mechanism reversed:
    # the default call there is "?" (reason "falsified").
    assert "reversed" in load_experiment(name).cage.falsified
