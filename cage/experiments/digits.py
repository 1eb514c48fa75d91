"""The built-in image experiment: thickness -> intensity digits, CAGE, counterfactual pairs.

``setup`` builds (or loads from the cache) the Morpho-MNIST-style digits of :mod:`cage.digits.data`,
loads the shipped VAE and observation classifier (or trains and caches them when the configuration
differs from the shipped one), and encodes every image with the posterior mean. ``finish`` makes the
same-source and same-destination pairs for every DAG CAGE called (``->``/``<-``) and every DAG
declared in ``[pairs] dags``, writes
``pairs.csv``, ``images/`` and ``sheets/`` and returns the ``pairs`` entry of ``manifest.json``.

Kind-specific sections of the experiment TOML (all keys optional; defaults in the dataclasses)::

    [data]            draws, n_digits, seed, scale                   (cage.digits.data.DigitsConfig)
    [vae]             latent_dim, channels, epochs, batch_size, lr, beta, seed, max_steps
    [obs_classifier]  epochs, batch_size, lr, test_fraction, seed, max_steps
    [pairs]           n_same_source, n_same_destination, target_probability, alpha_min,
                      alpha_growth, alpha_steps, check_threshold, outcome, dags,
                      png_scale, sheet_pairs

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

from cage.config import OUTCOME_CHOICES, ExperimentConfig
from cage.digits import data as digits_data
from cage.digits.models import DigitsModels, ModelConfigs, load_or_train
from cage.digits.obs_classifier import ObsClassifierConfig
from cage.experiments.base import ExperimentSetup
from cage.generators.vae import VAEConfig
from cage.images import ImageStore, contact_sheet
from cage.pairs import LinearAttribute, PairConfig, PairMaker, PairSet, number_pairs
from cage.runtime import deterministic_torch
from cage_eval import files, runs
from cage_eval.errors import ConfigError, RunDirError


@dataclass(frozen=True)
class OutputOptions:
    """Section ``[pairs]`` keys that are not about making a pair."""

    outcome: str = "observation"
    dags: tuple[tuple[str, str], ...] = ()
    png_scale: int = 1
    sheet_pairs: int = 20


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


def _section_to(cls: type, config: ExperimentConfig, section: str, *, exclude: tuple[str, ...] = (),
                only: tuple[str, ...] | None = None, overrides: dict[str, Any] | None = None) -> Any:
    raw = dict(config.kind_options.get(section, {}))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = set(only) if only is not None else set(fields) - set(exclude)
    values: dict[str, Any] = dict(overrides or {})
    for key, value in raw.items():
        if key not in allowed:
            continue
        default = getattr(cls(), key)
        if key in ("n_digits", "max_steps") or (isinstance(default, int)
                                                 and not isinstance(default, bool)):
            expected = "an integer"
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, bool):
            expected, ok = "true or false", isinstance(value, bool)
        elif isinstance(default, float):
            expected = "a number"
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, tuple):
            expected = "a list of integers"
            ok = isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
            value = tuple(value) if ok else value
        else:
            expected, ok = "a string", isinstance(value, str)
        if not ok:
            raise ConfigError(f"{config.where(section, key)} = {value!r}: expected {expected}")
        values[key] = value
    return cls(**values)


_PAIR_OUTPUT_KEYS = tuple(f.name for f in dataclasses.fields(OutputOptions))
_KNOWN = {
    "data": {f.name for f in dataclasses.fields(digits_data.DigitsConfig)},
    "vae": {f.name for f in dataclasses.fields(VAEConfig)},
    "obs_classifier": {f.name for f in dataclasses.fields(ObsClassifierConfig)},
    "pairs": {f.name for f in dataclasses.fields(PairConfig)} - {"seed"} | set(_PAIR_OUTPUT_KEYS),
}


def parse_options(config: ExperimentConfig) -> DigitsOptions:
    """Validate the kind-specific sections of a digits experiment.

    Raises
    ------
    ConfigError
        Unknown section or key, wrong type, or a value out of range.
    """
    for section, body in config.kind_options.items():
        if section not in _KNOWN:
            raise ConfigError(f"{config.source}: [{section}]: unknown section for kind 'digits'; "
                              f"known sections are {', '.join(sorted(_KNOWN))}")
        for key in body:
            if key not in _KNOWN[section]:
                raise ConfigError(f"{config.where(section, key)}: unknown field; known fields are "
                                  f"{', '.join(sorted(_KNOWN[section]))}")
    data = _section_to(digits_data.DigitsConfig, config, "data")
    vae = _section_to(VAEConfig, config, "vae")
    obs = _section_to(ObsClassifierConfig, config, "obs_classifier")
    pairs = _section_to(PairConfig, config, "pairs", exclude=("seed",) + _PAIR_OUTPUT_KEYS,
                        overrides={"seed": config.seed})
    output = _section_to(OutputOptions, config, "pairs",
                         only=tuple(k for k in _PAIR_OUTPUT_KEYS if k != "dags"),
                         overrides={"dags": _parse_dags(config)})
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
        (pairs.n_same_source >= 0, "pairs", "n_same_source", pairs.n_same_source, ">= 0"),
        (pairs.n_same_destination >= 0, "pairs", "n_same_destination",
         pairs.n_same_destination, ">= 0"),
        (0.5 < pairs.target_probability < 1, "pairs", "target_probability",
         pairs.target_probability, "in (0.5, 1)"),
        (pairs.alpha_min > 0, "pairs", "alpha_min", pairs.alpha_min, "positive"),
        (pairs.alpha_growth >= 1, "pairs", "alpha_growth", pairs.alpha_growth, ">= 1"),
        (pairs.alpha_steps >= 1, "pairs", "alpha_steps", pairs.alpha_steps, "at least 1"),
        (0 < pairs.check_threshold < 1, "pairs", "check_threshold", pairs.check_threshold,
         "in (0, 1)"),
        (output.outcome in OUTCOME_CHOICES, "pairs", "outcome", output.outcome,
         "one of " + ", ".join(repr(o) for o in OUTCOME_CHOICES)),
        (1 <= output.png_scale <= 8, "pairs", "png_scale", output.png_scale, "in 1..8"),
        (output.sheet_pairs >= 1, "pairs", "sheet_pairs", output.sheet_pairs, "at least 1"),
    ]
    for ok, section, key, value, need in checks:
        if not ok:
            raise ConfigError(f"{config.where(section, key)} = {value!r}: must be {need}")
    return DigitsOptions(models=ModelConfigs(data=data, vae=vae, obs=obs), pairs=pairs,
                         output=output)


def _parse_dags(config: ExperimentConfig) -> tuple[tuple[str, str], ...]:
    """``[pairs] dags``: ``"cause->effect"`` strings, each an ordering of a ``[cage] pairs`` pair."""
    raw = config.kind_options.get("pairs", {}).get("dags", [])
    where = config.where("pairs", "dags")
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(f"{where} = {raw!r}: expected a list of strings like [\"thick->bright\"]")
    dags: list[tuple[str, str]] = []
    for value in raw:
        parts = [p.strip() for p in value.split("->")]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise ConfigError(f"{where}: {value!r} is not a DAG; write \"cause->effect\", e.g. "
                              "\"thick->bright\"")
        if not any(set(p) == set(parts) for p in config.cage.pairs):
            raise ConfigError(f"{where}: {value!r}: {parts[0]} and {parts[1]} are not a pair of "
                              "[cage] pairs; add the pair there (CAGE's call and the intervention "
                              "directions come from it) or drop the DAG (--set 'pairs.dags=[]')")
        if (parts[1], parts[0]) in dags:
            raise ConfigError(f"{where}: {value!r} and its reverse are both declared; declare one")
        if (parts[0], parts[1]) not in dags:
            dags.append((parts[0], parts[1]))
    return tuple(dags)


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


def _dags(result: Any, config: ExperimentConfig, output: OutputOptions) -> tuple[
        list[tuple[str, str]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The DAGs to make pairs for, each with where it comes from.

    A DAG is ``inferred`` when CAGE called that arrow (``->``/``<-``) in the ``[pairs] outcome``
    variant, ``declared`` when it is listed in ``[pairs] dags`` (the known mechanism of the data,
    not something CAGE found) and CAGE did not call it. A ``?`` (undetermined) or ``⊥`` call never
    makes pairs by itself. Returns ``(dags, skipped, records)``; ``records`` holds one dict per DAG
    (source, CAGE's call and p(delta tau) in every outcome variant) for the manifest; its
    ``direction`` and ``delta_tau`` are in the orientation of ``pair`` (``[cage] pairs``' order).
    """
    dags: list[tuple[str, str]] = []
    skipped: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []

    def record(cause: str, effect: str, source: str, d: Any) -> dict[str, Any]:
        rows = [r for r in result.directions if {r.m1, r.m2} == {cause, effect}]
        return {
            "dag": runs.dag_name(cause, effect), "source": source, "outcome": d.outcome,
            "cage_call": _call_text(d), "pair": [d.m1, d.m2], "direction": d.direction,
            "delta_tau": d.delta_tau, "p_delta_tau": d.p_delta_tau,
            "p_gate_cause_to_effect": d.p_gate_12 if d.m1 == cause else d.p_gate_21,
            "p_gate_effect_to_cause": d.p_gate_21 if d.m1 == cause else d.p_gate_12,
            "sign_stable": d.sign_stable, "cos_normals": d.cos_normals,
            "calls_by_outcome": {r.outcome: {"call": _call_text(r), "delta_tau": r.delta_tau,
                                             "p_delta_tau": r.p_delta_tau} for r in rows},
        }

    for m1, m2 in config.cage.pairs:
        d = _direction(result, m1, m2, output.outcome)
        if d.direction in ("->", "<-"):
            dags.append((d.cause, d.effect))
            records.append(record(d.cause, d.effect, "inferred", d))
        else:
            skipped.append({"m1": m1, "m2": m2, "outcome": d.outcome, "direction": d.direction,
                            "cage_call": _call_text(d), "delta_tau": d.delta_tau,
                            "p_delta_tau": d.p_delta_tau,
                            "reason": "CAGE called no direction and none is declared; no pairs"})
    for cause, effect in output.dags:
        if (cause, effect) in dags:
            records[dags.index((cause, effect))]["declared"] = True
            continue
        pair = next(p for p in config.cage.pairs if set(p) == {cause, effect})
        dags.append((cause, effect))
        records.append(record(cause, effect, "declared", _direction(result, *pair, output.outcome)))
    for r in records:
        r.setdefault("declared", r["source"] == "declared")
    covered = [set(dag) for dag in dags]
    skipped = [s for s in skipped if {s["m1"], s["m2"]} not in covered]
    return dags, skipped, records


def _direction(result: Any, m1: str, m2: str, outcome: str) -> Any:
    try:
        return result.direction_for(m1, m2, outcome)
    except KeyError:
        return result.direction_for(m1, m2)


def _call_text(d: Any) -> str:
    """CAGE's call in words: ``thick -> bright``, ``undetermined (?)``, ``independent (⊥)``."""
    if d.direction in ("->", "<-"):
        return f"{d.cause} -> {d.effect}"
    return "undetermined (?)" if d.direction == "?" else "independent (⊥)"


def _linear(result: Any, pair: tuple[str, str], attr: str) -> LinearAttribute:
    clf = result.classifiers[attr]
    key = pair if pair in result.interventions else (pair[1], pair[0])
    direction = result.interventions.get(key, {}).get(attr, clf.normal_)
    return LinearAttribute(name=attr, coef=np.asarray(clf.coef_, dtype=np.float64),
                           intercept=float(clf.intercept_),
                           direction=np.asarray(direction, dtype=np.float64))


def sheet_name(cause: str, effect: str, setting: str) -> str:
    """File name of a contact sheet inside ``sheets/``."""
    return f"{cause}_to_{effect}__{setting}.png"


def finish(setup: DigitsSetup, result: Any, run_dir: Path, config: ExperimentConfig) -> dict:
    """Make the counterfactual pairs of every DAG and write pairs.csv, images/ and sheets/."""
    assert setup.dataset is not None and setup.options is not None
    options = setup.options
    min_acc = config.cage.min_accuracy
    dags, skipped, records = _dags(result, config, options.output)
    for cause, effect in dags:
        for a in (cause, effect):
            acc = float(result.classifiers[a].accuracy_)
            if acc < min_acc:
                raise ConfigError(
                    f"DAG {runs.dag_name(cause, effect)}: attribute {a!r} is not separable enough "
                    f"to manipulate: its latent classifier's held-out accuracy is {acc:.3f} < "
                    f"[cage] min_accuracy = {min_acc}; remove the pair from [cage] pairs")
    data = setup.dataset
    seed = int.from_bytes(hashlib.sha256(f"{config.seed}:pairs".encode()).digest()[:4], "little")
    pool = np.random.default_rng(seed).permutation(len(data))
    try:
        store = ImageStore(Path(run_dir) / runs.IMAGES_DIR, scale=options.output.png_scale)
    except OSError as exc:
        raise RunDirError(f"{run_dir}: cannot write images ({exc.strerror}); choose a writable "
                          "--out") from None
    sets: list[PairSet] = []
    try:
        maker = PairMaker(setup.generator, setup.data_latents, data.images, setup.attributes,
                          np.arange(len(data)), setup.observation_classifier, store, options.pairs)
        with store, deterministic_torch():
            for cause, effect in dags:
                pair = next(p for p in config.cage.pairs if set(p) == {cause, effect})
                c, e = _linear(result, pair, cause), _linear(result, pair, effect)
                if options.pairs.n_same_source:
                    sets.append(maker.same_source(c, e, options.pairs.n_same_source, pool))
                if options.pairs.n_same_destination:
                    sets.append(maker.same_destination(c, e, options.pairs.n_same_destination,
                                                       pool))
    except OSError as exc:
        raise RunDirError(f"{run_dir}: writing the pair images failed ({exc}); free space or "
                          "choose another --out") from None
    rows = number_pairs(sets)
    files.atomic_write_csv(Path(run_dir) / runs.PAIRS, rows, runs.PAIRS_COLUMNS)
    sheets = write_sheets(sets, Path(run_dir) / runs.SHEETS_DIR, options.output.sheet_pairs)
    for rec in records:
        mine = [s for s in sets if s.dag == rec["dag"]]
        rec["rows"] = sum(len(s.rows) for s in mine)
        rec["settings"] = {s.setting: len(s.rows) for s in mine}
        rec["sheets"] = [f"{runs.SHEETS_DIR}/" + sheet_name(*rec["dag"].split("->"), s.setting) for s in mine]
    return {"pairs": {
        "dags": [runs.dag_name(c, e) for c, e in dags],
        "dag_sources": records,
        "skipped": skipped,
        "rows": len(rows),
        "images": len(store.written),
        "png_scale": options.output.png_scale,
        "decoded": maker.decoded,
        "outcome": options.output.outcome,
        "sheets": sheets,
        "config": dataclasses.asdict(options.pairs),
        "stats": {f"{s.dag} {s.setting}": s.stats for s in sets},
    }}


def write_sheets(sets: list[PairSet], directory: Path, limit: int) -> list[str]:
    """One contact sheet per DAG and setting; returns the paths relative to the run directory."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for s in sets:
        cause, effect = s.dag.split("->")
        if s.setting == "same_source":
            titles = ["source", f"{cause} changed", f"{effect} changed"]
        else:
            titles = ["source A", f"A: {cause} changed", "source B", f"B: {effect} changed"]
        labels = [f"{row['pair_id']} {lab}" for row, lab in zip(s.rows, s.sheet_labels, strict=True)]
        png = contact_sheet(s.sheet_rows[:limit], column_titles=titles, row_labels=labels[:limit],
                            title=f"{s.dag}  {s.setting.replace('_', '-')}  "
                                  f"({len(s.rows)} pairs, first {min(limit, len(s.rows))} shown)")
        name = sheet_name(cause, effect, s.setting)
        files.atomic_write_bytes(directory / name, png)
        names.append(f"{runs.SHEETS_DIR}/{name}")
    return names

