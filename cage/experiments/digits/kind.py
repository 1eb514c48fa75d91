"""The built-in image experiment: thickness -> intensity digits, CAGE, counterfactual pairs.

``setup`` builds (or loads from the cache) the Morpho-MNIST-style digits of :mod:`cage.experiments.digits.data`,
loads the shipped VAE and observation classifier (or trains and caches them when the configuration
differs from the shipped one), and encodes every image with the posterior mean. ``finish`` makes the
same-source and same-destination pairs for every DAG CAGE called (``->``/``<-``) and every DAG
declared in ``[pairs] dags``, writes
``pairs.csv``, ``images/`` and ``sheets/`` and returns the ``pairs`` entry of ``manifest.json``.

Kind-specific sections of the experiment TOML (all keys optional; defaults in the dataclasses)::

    [data]            draws, n_digits, seed, scale                   (cage.experiments.digits.data.DigitsConfig)
    [vae]             latent_dim, channels, epochs, batch_size, lr, beta, seed, max_steps
    [obs_classifier]  epochs, batch_size, lr, test_fraction, seed, max_steps
    [pairs]           n_same_source, n_same_destination, target_probability, alpha_min,
                      alpha_growth, alpha_steps, check_threshold, max_invalid_share,
                      outcome, dags, png_scale, sheet_pairs

``[pairs] dags`` (e.g. ``["thick->bright"]``) declares DAGs to make pairs for whatever CAGE calls:
the known mechanism of synthetic data, declared, not inferred. Pairs are made for every DAG CAGE
called (``->``/``<-``) in the ``[pairs] outcome`` variant plus the declared ones, never because of
a ``?`` (undetermined) or ``⊥`` call; the manifest records each DAG's source (``inferred`` or
``declared``) next to CAGE's call and p(delta tau).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.compute.runtime import deterministic_torch
from cage.config.experiment import ExperimentConfig
from cage.config.sections import check_sections, dataclass_from_section
from cage.experiments.base import ExperimentSetup
from cage.experiments.digits import data as digits_data
from cage.experiments.digits.models import DigitsModels, ModelConfigs, load_or_train
from cage.experiments.digits.obs_classifier import ObsClassifierConfig
from cage.generators.vae import VAEConfig
from cage.pairs.make import PairConfig, PairMaker
from cage.pairs.output import (
    OUTPUT_KEYS,
    OutputOptions,
    check_separable,
    check_values,
    make_pairs,
    open_store,
    pair_checks,
    parse_pair_sections,
    select_dags,
    write_pairs,
)
from cage_eval.errors import ConfigError


@dataclass(frozen=True)
class DigitsOptions:
    """All kind-specific options of a digits experiment."""

    models: ModelConfigs
    pairs: PairConfig
    output: OutputOptions


@dataclass
class DigitsSetup(ExperimentSetup):
    """:class:`ExperimentSetup` plus what ``finish`` needs: the dataset, models and options."""

    dataset: digits_data.DigitsDataset | None = None
    models: DigitsModels | None = None
    options: DigitsOptions | None = None


_KNOWN = {
    "data": {f.name for f in dataclasses.fields(digits_data.DigitsConfig)},
    "vae": {f.name for f in dataclasses.fields(VAEConfig)},
    "obs_classifier": {f.name for f in dataclasses.fields(ObsClassifierConfig)},
    "pairs": {f.name for f in dataclasses.fields(PairConfig)} - {"seed"} | set(OUTPUT_KEYS),
}


def parse_options(config: ExperimentConfig) -> DigitsOptions:
    """Validate the kind-specific sections of a digits experiment.

    Raises
    ------
    ConfigError
        Unknown section or key, wrong type, or a value out of range.
    """
    check_sections(config, _KNOWN, "digits")
    data = dataclass_from_section(digits_data.DigitsConfig, config, "data")
    vae = dataclass_from_section(VAEConfig, config, "vae")
    obs = dataclass_from_section(ObsClassifierConfig, config, "obs_classifier")
    pairs, output = parse_pair_sections(config)
    checks = [
        (data.draws >= 1, "data", "draws", data.draws, "at least 1"),
        (data.n_digits is None or data.n_digits >= 10, "data", "n_digits", data.n_digits,
         "at least 10"),
        (data.scale >= 1, "data", "scale", data.scale, "at least 1"),
        (vae.latent_dim >= 2, "vae", "latent_dim", vae.latent_dim, "at least 2"),
        (len(vae.channels) == 2 and min(vae.channels) >= 1, "vae", "channels",
         list(vae.channels), "two positive integers"),
        (vae.epochs >= 1, "vae", "epochs", vae.epochs, "at least 1"),
        (obs.epochs >= 1, "obs_classifier", "epochs", obs.epochs, "at least 1"),
    ]
    check_values(config, checks + pair_checks(pairs, output))
    return DigitsOptions(models=ModelConfigs(data=data, vae=vae, obs=obs), pairs=pairs,
                         output=output)


def setup(config: ExperimentConfig, *, cache_dir: Path) -> DigitsSetup:
    """Dataset, generator, observation classifier and encoded latents (see module docstring)."""
    for m1, m2 in config.cage.pairs:
        for a in (m1, m2):
            if a not in digits_data.ATTRIBUTES:
                raise ConfigError(f"{config.where('cage', 'pairs')}: unknown attribute {a!r}; the "
                                  f"digits experiment has {', '.join(digits_data.ATTRIBUTES)}")
    options = parse_options(config)
    data = digits_data.load(options.models.data, cache_dir)
    models = load_or_train(options.models, data, cache_dir)
    with deterministic_torch():
        latents = models.generator.encode(torch.as_tensor(data.float_images())).numpy()
    obs_meta = models.meta["obs"]
    n = len(data)
    n_test = int(round(n * options.models.obs.test_fraction))
    info = {
        "dataset": {
            "images": n,
            "base_digits": int(data.source.max()) + 1,
            "draws": options.models.data.draws,
            "key": options.models.data.key(),
            "positive_rate": {a: float(v.mean()) for a, v in data.attributes.items()},
            "corr_sampled_measured_thickness": float(np.corrcoef(
                data.thickness, data.measured["thickness"])[0, 1]),
            "corr_thickness_intensity": float(np.corrcoef(data.thickness, data.intensity)[0, 1]),
        },
        "weights": {"origin": models.origin, "key": models.meta["key"],
                    "sha256": models.meta["sha256"]},
        "vae": {"latent_dim": options.models.vae.latent_dim,
                "final_loss": models.meta["vae"]["losses"][-1],
                "recon_mse": models.meta["vae"]["recon_mse"]},
        "observation_classifier": obs_meta,
    }
    return DigitsSetup(
        generator=models.generator,
        data_latents=latents,
        attributes={a: data.attributes[a] for a in digits_data.ATTRIBUTES},
        observation_classifier=models.psi,
        info=info,
        observation_accuracy=dict(obs_meta["accuracy_recon"]),
        observation_sizes={a: (2 * (n - n_test), n_test) for a in digits_data.ATTRIBUTES},
        dataset=data,
        models=models,
        options=options,
    )


def finish(setup: DigitsSetup, result: Any, run_dir: Path, config: ExperimentConfig) -> dict:
    """Make the counterfactual pairs of every DAG and write pairs.csv, images/ and sheets/."""
    assert setup.dataset is not None and setup.options is not None
    options = setup.options
    dags, skipped, records = select_dags(result, config, options.output)
    check_separable(dags, result, config.cage.min_accuracy)
    data = setup.dataset
    seed = int.from_bytes(hashlib.sha256(f"{config.seed}:pairs".encode()).digest()[:4], "little")
    pool = np.random.default_rng(seed).permutation(len(data))
    store = open_store(run_dir, options.output.png_scale)
    maker = PairMaker(setup.generator, setup.data_latents, data.images, setup.attributes,
                      np.arange(len(data)), setup.observation_classifier, store, options.pairs,
                      generator_name="the digits VAE")
    sets = make_pairs(maker, store, result, config, dags, options.pairs, pool, run_dir,
                      context=deterministic_torch())
    return {"pairs": write_pairs(run_dir, sets, dags, records, skipped, store, options.output,
                                 options.pairs, maker.decoded)}
