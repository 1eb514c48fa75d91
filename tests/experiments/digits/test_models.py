"""The shipped digits models: they match the built-in config, encode/decode real digits, and the
training code is deterministic."""

import numpy as np
import pytest
import torch

from cage.compute.runtime import deterministic_torch
from cage.config.experiment import load_experiment
from cage.experiments.digits import data as digits_data
from cage.experiments.digits.kind import parse_options
from cage.experiments.digits.models import (
    BUNDLE_FILES,
    ModelConfigs,
    _read_bundle,
    read_shipped_meta,
    shipped_dir,
)
from cage.experiments.digits.obs_classifier import ObsClassifierConfig, train_obs_classifier
from cage.generators.base import EncodingGenerator
from cage.generators.vae import VAEConfig, state_to_bytes, train_vae


@pytest.fixture(scope="module")
def shipped():
    configs = parse_options(load_experiment("digits")).models
    models = _read_bundle(shipped_dir(), configs)
    assert models is not None, "the shipped weights do not match the built-in digits config"
    return configs, models


def test_shipped_bundle_is_small_and_matches_the_builtin_config(shipped):
    configs, models = shipped
    sizes = [(shipped_dir() / name).stat().st_size for name in BUNDLE_FILES]
    assert sum(sizes) < 3_000_000
    meta = read_shipped_meta()
    assert meta["key"] == configs.key()
    assert min(meta["obs"]["accuracy_recon"].values()) > 0.8
    assert isinstance(models.generator, EncodingGenerator)


def test_generator_reconstructs_real_digits(shipped):
    _, models = shipped
    base, _ = digits_data.base_digits(30)
    x = torch.as_tensor(base[:, None], dtype=torch.float32)
    with deterministic_torch():
        z = models.generator.encode(x)
        recon = models.generator.decode(z)
        prior = models.generator.decode(models.generator.sample(64, 0))
    assert z.shape == (30, 16) and recon.shape == (30, 1, 28, 28)
    assert 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0
    assert float(torch.mean((recon - x) ** 2)) < 0.02
    # Prior samples are digit-like: mostly dark background with a bright stroke.
    border = torch.cat([prior[..., :3, :].flatten(1), prior[..., -3:, :].flatten(1)], 1)
    assert float(border.mean()) < 0.08
    assert float(prior.amax(dim=(1, 2, 3)).median()) > 0.5


def test_observation_classifier_reads_attributes_of_reconstructions(shipped):
    _, models = shipped
    data = digits_data.build(digits_data.DigitsConfig(n_digits=60, draws=2, seed=11))
    x = torch.as_tensor(data.float_images())
    with deterministic_torch():
        recon = models.generator.decode(models.generator.encode(x))
        probs = models.psi(recon)
    for attr in ("bright", "round", "thick"):
        acc = np.mean((probs[attr] > 0.5) == (data.attributes[attr] == 1))
        assert acc > 0.75, (attr, acc)


def test_training_is_deterministic_and_seeded():
    data = digits_data.build(digits_data.DigitsConfig(n_digits=16, draws=1))
    x = data.float_images()
    cfg = VAEConfig(latent_dim=4, channels=(4, 8), max_steps=4, batch_size=8)
    a, rep = train_vae(x, cfg)
    b, _ = train_vae(x, cfg)
    c, _ = train_vae(x, VAEConfig(latent_dim=4, channels=(4, 8), max_steps=4, batch_size=8,
                                  seed=1))
    assert rep.steps == 4 and len(rep.losses) >= 1
    assert state_to_bytes(a) == state_to_bytes(b) != state_to_bytes(c)
    psi1, r1 = train_obs_classifier(x, x, data.attributes, ObsClassifierConfig(max_steps=3))
    psi2, _ = train_obs_classifier(x, x, data.attributes, ObsClassifierConfig(max_steps=3))
    assert state_to_bytes(psi1.model) == state_to_bytes(psi2.model)
    assert set(r1.accuracy_real) == set(digits_data.ATTRIBUTES)


def test_bundle_key_changes_with_any_training_setting():
    base = ModelConfigs(digits_data.DigitsConfig(), VAEConfig(), ObsClassifierConfig())
    assert ModelConfigs(digits_data.DigitsConfig(), VAEConfig(epochs=41),
                        ObsClassifierConfig()).key() != base.key()
    assert ModelConfigs(digits_data.DigitsConfig(draws=2), VAEConfig(),
                        ObsClassifierConfig()).key() != base.key()
