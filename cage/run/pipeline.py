"""Run CAGE on an experiment and write the run directory.

Contract (also in docs/engine.md)
---------------------------------
``run_experiment(config, out, *, force=False, cache_dir=None) -> CageResult``
    loads the kind module (:func:`cage.experiments.registry.load_kind`), calls its ``setup(config, cache_dir=...)`` (an
    :class:`cage.experiments.base.ExperimentSetup`), runs :func:`run_cage`, writes the engine files into a
    staged run directory (``cage_eval.files.staged_run_dir``), then calls the kind's optional
    ``finish(setup, result, stage_dir, config) -> dict`` and merges its dict into ``manifest.json``,
    which is written last (``complete: true``, ``run_id``, ``schema_version``).

``CageResult``
    ``classifiers[attr]``: a fitted :class:`cage.engine.classifiers.LatentClassifier` with ``coef_`` (d,),
    ``intercept_``, ``normal_`` (unit, (d,)), ``accuracy_`` (held out), ``predict_proba(z) -> (n,)``;
    ``directions``: one :class:`PairDirection` per attribute pair and outcome variant
    (``latent`` = eq. 8, ``observation`` = eq. 9, ``observation_conditional`` = eq. 9 with the other
    attribute of the pair projected out of each treatment direction) with GATEs, delta tau,
    p-values, the call ``direction`` in ``{"->", "<-", "⊥", "?"}`` (:func:`cage.engine.effects.decide`)
    and ``cause``/``effect`` names when a direction is called;
    ``direction_for(m1, m2, outcome)`` picks one; ``prior_latents`` (k, d) float32;
    ``interventions[(m1, m2)][attr]``: the unit direction used to intervene on ``attr`` in that pair.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.compute import checkpoints, distributed
from cage.compute.distributed import Workers
from cage.config.experiment import ExperimentConfig, default_cache_dir
from cage.engine.classifiers import LatentClassifier, fit_attribute_classifier, sigmoid
from cage.engine.effects import delta_tau, empirical_p_value
from cage.engine.interventions import make_intervention
from cage.engine.mmd import mmd_test
from cage.engine.nulls import permutation_normals, random_directions
from cage.engine.rules import Evidence, centred_p_value, decide_all, reason_text
from cage.engine.seeds import stage_seed
from cage.engine.variants import (
    ObservationScorer,
    PairGeometry,
    Variant,
    calibration_label,
    latent_variant,
    observation_variant,
    rotation_frames,
)
from cage.experiments.base import ExperimentSetup, Kind
from cage.experiments.registry import load_kind
from cage.generators.base import LatentGenerator, batch_size_of
from cage.run.result import CageResult, PairDirection
from cage.run.tables import jsonable, versions, write_engine_files
from cage_eval import files, progress, runs
from cage_eval.cache import check_cache_path
from cage_eval.errors import ConfigError

#: What each outcome variant's stage line says it does.
_VARIANT_STAGE = {
    "latent": "eq. 8, closed form",
    "observation": "eq. 9, decoding every counterfactual",
    "observation_conditional": "eq. 9, conditional, decoding every counterfactual",
}

#: Prior latents drawn per seed: latent ``i`` is row ``i % PRIOR_BLOCK`` of block ``i // PRIOR_BLOCK``.
PRIOR_BLOCK = 4096


def prior_block(generator: LatentGenerator, block: int, seed: int) -> torch.Tensor:
    """Prior block ``block``: latents ``block * PRIOR_BLOCK ...`` (``PRIOR_BLOCK`` rows), float32.

    Each block has its own seed, derived from the master seed and the block index, so any subset
    of blocks can be drawn anywhere (another process, a resumed run) with the same values.
    """
    with torch.no_grad():
        z = generator.sample(PRIOR_BLOCK, stage_seed(seed, "prior", str(block)))
    z = torch.as_tensor(z).to("cpu", torch.float32)
    if z.shape != (PRIOR_BLOCK, generator.latent_dim):
        raise ConfigError(f"the generator's sample({PRIOR_BLOCK}, seed) returned shape "
                          f"{tuple(z.shape)}; expected ({PRIOR_BLOCK}, {generator.latent_dim})")
    if not torch.isfinite(z).all():
        raise ConfigError("the generator's sample(n, seed) returned NaN or infinite latents")
    return z


def prior_latents(generator: LatentGenerator, k: int, seed: int) -> torch.Tensor:
    """The first ``k`` prior latents (Algorithm 1 step 3), shape ``(k, latent_dim)``, float32."""
    blocks = -(-k // PRIOR_BLOCK)
    return torch.cat([prior_block(generator, b, seed) for b in range(blocks)])[:k]


class PriorBlocks:
    """Prior block ``b`` as ``blocks(b)``, drawn on first use and kept.

    Rank 0 hands over the first ``k`` latents it drew (``drawn``); another rank draws only the
    blocks that the units it computes decode (the same values: a block's seed is its own).
    """

    def __init__(self, generator: LatentGenerator, seed: int,
                 drawn: torch.Tensor | None = None) -> None:
        self.generator = generator
        self.seed = seed
        self.drawn = drawn
        self._blocks: dict[int, torch.Tensor] = {}

    def __call__(self, block: int) -> torch.Tensor:
        start = block * PRIOR_BLOCK
        if self.drawn is not None and start < self.drawn.shape[0]:
            return self.drawn[start:start + PRIOR_BLOCK]
        if block not in self._blocks:
            self._blocks[block] = prior_block(self.generator, block, self.seed)
        return self._blocks[block]


# --------------------------------------------------------------------------- computation


def _check_setup(setup: ExperimentSetup, config: ExperimentConfig) -> list[str]:
    z = np.asarray(setup.data_latents)
    if z.ndim != 2 or z.shape[0] < 4:
        raise ConfigError(f"experiment {config.name!r}: data latents have shape {z.shape}; "
                          "expected (n, d) with n >= 4")
    if not np.all(np.isfinite(z)):
        bad = int((~np.isfinite(z)).any(axis=1).sum())
        raise ConfigError(f"experiment {config.name!r}: {bad} encoded data latents are NaN or "
                          "infinite; retrain the generator (cached weights may be corrupt: delete "
                          "the cache directory)")
    names = sorted({a for pair in config.cage.pairs for a in pair})
    for a in names:
        if a not in setup.attributes:
            raise ConfigError(f"{config.where('cage', 'pairs')}: unknown attribute {a!r}; this "
                              f"experiment has {', '.join(sorted(setup.attributes))}")
        if np.asarray(setup.attributes[a]).shape != (z.shape[0],):
            raise ValueError(f"attribute {a!r} labels do not align with data_latents")
    if any(o.startswith("observation") for o in config.cage.outcomes) \
            and setup.observation_classifier is None:
        raise ConfigError(f"{config.where('cage', 'outcomes')}: experiment kind {config.kind!r} has "
                          "no observation-space classifier; use outcomes = [\"latent\"]")
    return names


def run_cage(setup: ExperimentSetup, config: ExperimentConfig, *,
             workers: Workers | None = None) -> CageResult:
    """Algorithm 1 plus significance, sweeps, controls and diagnostics for every configured pair.

    Pure computation (no files). See docs/engine.md for the definitions of every output.
    ``workers``: the ranks that share eq. 9's decoding (docs/distributed.md); default: this
    process alone.
    """
    cc = config.cage
    names = _check_setup(setup, config)
    seeds = SeedLog(config.seed)
    seeds.drawn["prior_block_0"] = stage_seed(config.seed, "prior", "0")
    z_data = np.asarray(setup.data_latents, dtype=np.float64)
    with progress.stage(f"latent classifiers ({len(names)} attributes, {z_data.shape[0]} "
                        "encoded samples)"):
        classifiers, masks = _fit_classifiers(setup, config, names, z_data, seeds)

    # Step 3: prior latents, block by block (a latent's value depends on its index only).
    with progress.stage(f"prior latents (k = {cc.k})"):
        z_prior = prior_latents(setup.generator, cc.k, config.seed)
    if z_prior.shape != (cc.k, z_data.shape[1]):
        raise ConfigError(f"experiment {config.name!r}: the generator's latents have "
                          f"{z_prior.shape[1]} dimensions but the encoded data {z_data.shape[1]}; "
                          "encode with the same generator")
    logits = {a: classifiers[a].decision_function(z_prior) for a in names}
    scorer = None
    if any(o.startswith("observation") for o in cc.outcomes):
        scorer = ObservationScorer(setup.generator, _scaled_outcome(setup),
                                   batch_size_of(setup.generator),
                                   PriorBlocks(setup.generator, config.seed, drawn=z_prior),
                                   PRIOR_BLOCK, workers)

    study = Study(config=config, setup=setup, names=names, z_data=z_data,
                  classifiers=classifiers, masks=masks, z_prior=z_prior, logits=logits,
                  scorer=scorer, seeds=seeds)
    out = _Collector()
    for m1, m2 in cc.pairs:
        with progress.stage(f"{m1} / {m2}"):
            _one_pair(study, m1, m2, out)
    return CageResult(config=config, classifiers=classifiers, directions=out.directions,
                      prior_latents=z_prior.numpy(), interventions=out.interventions,
                      null_directions=out.null_dirs, sweep_rows=out.sweep_rows,
                      null_rows=out.null_rows,
                      classifier_rows=_classifier_rows(setup, classifiers, names, cc),
                      seeds=seeds.drawn, test_masks=masks,
                      decoded=_decoded(scorer))


def _decoded(scorer: ObservationScorer | None) -> int:
    """Latents decoded for eq. 9 by every rank (units read back from checkpoints not counted)."""
    if scorer is None:
        return 0
    stats = scorer.workers.stats.get("score")
    return stats.decoded if stats is not None else 0


@dataclass
class SeedLog:
    """The stage seeds a run draws from its master seed (:func:`cage.engine.seeds.stage_seed`),
    recorded under ``"a:b:c"`` for the manifest."""

    master: int
    drawn: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.drawn.setdefault("master", self.master)

    def draw(self, *parts: str) -> int:
        seed = stage_seed(self.master, *parts)
        self.drawn[":".join(parts)] = seed
        return seed


@dataclass
class Study:
    """What every pair of one run shares, travelling as one object into each step (as
    StyleGAN3's ``MetricOptions`` travels into every metric).

    Attributes
    ----------
    config, setup : the run's experiment and what its kind set up
    names : list of str
        The attributes, in the experiment's order.
    z_data : np.ndarray, shape (n, d)
        Encoded annotated data the latent classifiers were fitted on.
    classifiers, masks : dict
        The latent classifier per attribute and its held-out mask.
    z_prior : torch.Tensor, shape (k, d)
        The prior latents.
    logits : dict of np.ndarray, shape (k,)
        Each latent classifier's logits of the prior latents.
    scorer : ObservationScorer or None
        Eq. 9's decoder-and-judge (None without an observation classifier).
    seeds : SeedLog
    mmd_cache, baseline_cache : dict
        Results shared between the pairs that have an attribute in common.
    """

    config: ExperimentConfig
    setup: ExperimentSetup
    names: list[str]
    z_data: np.ndarray
    classifiers: dict[str, LatentClassifier]
    masks: dict[str, np.ndarray]
    z_prior: torch.Tensor
    logits: dict[str, np.ndarray]
    scorer: ObservationScorer | None
    seeds: SeedLog
    mmd_cache: dict[tuple, tuple] = field(default_factory=dict)
    baseline_cache: dict[tuple[str, str, str], tuple] = field(default_factory=dict)

    @property
    def cc(self) -> Any:
        return self.config.cage


def _one_pair(study: Study, m1: str, m2: str, out: _Collector) -> None:
    """Every outcome variant of one pair: directions, nulls, MMD, baselines, controls."""
    cc, classifiers, logits = study.cc, study.classifiers, study.logits
    z_prior, scorer = study.z_prior, study.scorer
    with progress.stage(f"null directions ({cc.n_null} per kind: "
                        f"{', '.join(cc.nulls)}, rotation)"):
        geo = _pair_geometry(study, m1, m2)
    out.interventions[(m1, m2)] = geo.u
    for (attr, kind), dirs in geo.nulls.items():
        out.null_dirs[(m1, m2, attr, kind)] = dirs
    with progress.stage(f"MMD, conditioning vs intervening ({len(cc.alphas)} alphas)"):
        mmd_rows = {a: [_mmd_for(study, a, geo.u[a], al) for al in cc.alphas] for a in (m1, m2)}
        mmd_head = {a: _mmd_for(study, a, geo.u[a], cc.alpha) for a in (m1, m2)}
    for outcome in cc.outcomes:
        with progress.stage(f"{outcome} outcome ({_VARIANT_STAGE[outcome]})"):
            if outcome == "latent":
                v = latent_variant(geo, classifiers, logits, z_prior, cc, cc.null)
            elif outcome == "observation":
                v = observation_variant(geo, classifiers, z_prior, scorer, cc)
            else:  # observation_conditional: hold the other attribute of the pair fixed
                v = observation_variant(_pair_conditional(geo, classifiers, cc.nulls),
                                        classifiers, z_prior, scorer, cc)
        baselines = _baselines(study, m1, m2, outcome)
        out.add(m1, m2, outcome, v, classifiers, mmd_head, mmd_rows, cc, baselines)


def _fit_classifiers(setup: ExperimentSetup, config: ExperimentConfig, names: list[str],
                     z_data: np.ndarray, seeds: SeedLog
                     ) -> tuple[dict[str, LatentClassifier], dict[str, np.ndarray]]:
    """Step 2: one latent classifier per attribute with held-out accuracy (separability check)."""
    cc = config.cage
    classifiers: dict[str, LatentClassifier] = {}
    masks: dict[str, np.ndarray] = {}
    for a in names:
        classifiers[a], masks[a] = fit_attribute_classifier(
            a, z_data, np.asarray(setup.attributes[a]), kind=cc.classifier, C=cc.C,
            test_fraction=cc.test_fraction, seed=seeds.draw("split", a))
    return classifiers, masks


def _scaled_outcome(setup: ExperimentSetup) -> Callable[[torch.Tensor], dict[str, np.ndarray]]:
    """The experiment's observation classifier (probabilities; the scorer applies the scale)."""
    psi = setup.observation_classifier
    assert psi is not None

    def outcome(x: torch.Tensor) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in psi(x).items()}

    return outcome


def _pair_geometry(study: Study, m1: str, m2: str) -> PairGeometry:
    """Intervention directions, null directions and rotated frames of one pair."""
    cc, classifiers, z_data = study.cc, study.classifiers, study.z_data
    names, masks, setup = study.names, study.masks, study.setup
    d = z_data.shape[1]
    others = [classifiers[a].normal_ for a in names if a not in (m1, m2)]
    inter = make_intervention(cc.intervention, conditions=np.asarray(others).reshape(-1, d))
    u = {a: inter.direction(classifiers[a]) for a in (m1, m2)}
    nulls: dict[tuple[str, str], np.ndarray] = {}
    for a in (m1, m2):
        for kind in cc.nulls:
            seed = study.seeds.draw("null", kind, a)
            if kind == "random":
                raw = random_directions(cc.n_null, d, seed)
            else:
                train = ~masks[a]
                raw = permutation_normals(z_data[train], np.asarray(setup.attributes[a])[train],
                                          cc.n_null, C=cc.C, seed=seed)
            nulls[(a, kind)] = raw if cc.intervention == "linear" else np.stack(
                [inter.direction(_Normal(r)) for r in raw])
    seed = study.seeds.draw("null", "rotation", m1, m2)
    frames = rotation_frames(classifiers[m1], classifiers[m2], u[m1], u[m2], cc.n_null, seed)
    return PairGeometry(m1=m1, m2=m2, u=u, nulls=nulls, frames=frames)


class _Collector:
    """Accumulates the rows of one run: directions, sweep and null draws."""

    def __init__(self) -> None:
        self.directions: list[PairDirection] = []
        self.sweep_rows: list[dict[str, Any]] = []
        self.null_rows: list[dict[str, Any]] = []
        self.interventions: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.null_dirs: dict[tuple[str, str, str, str], np.ndarray] = {}

    def add(self, m1: str, m2: str, outcome: str, v: Variant,
            classifiers: dict[str, LatentClassifier], mmd_head: dict, mmd_rows: dict,
            cc: Any, baselines: tuple) -> None:
        dt_obs = float(delta_tau(v.g12, v.g21))
        dt_stat = float(delta_tau(v.obs12, v.obs21))
        p_values: dict[str, tuple[float, float, float]] = {}
        null_dt: dict[str, np.ndarray] = {}
        for kind, (n12, n21) in {**v.nulls, "rotation": v.rotation}.items():
            null_dt[kind] = delta_tau(n12, n21)
            p_values[kind] = (empirical_p_value(n12, v.obs12), empirical_p_value(n21, v.obs21),
                              empirical_p_value(null_dt[kind], dt_stat))
            for b in range(n12.size):
                self.null_rows.append({"m1": m1, "m2": m2, "outcome": outcome, "null": kind,
                                       "draw": b, "alpha": cc.alpha, "k": v.k_used,
                                       "gate_12": n12[b], "gate_21": n21[b],
                                       "delta_tau": null_dt[kind][b]})
        p12, p21, pdt = p_values[cc.null]
        sweep_dt = delta_tau(v.sweep12, v.sweep21)
        stable = bool(np.all(np.sign(sweep_dt) == np.sign(dt_obs))) and dt_obs != 0
        p_centred = centred_p_value(null_dt[cc.null], dt_stat)
        p_rotation = centred_p_value(null_dt["rotation"], dt_stat)
        calib = dict(v.calibration)
        calib_values = tuple(calib.values())
        evidence = Evidence(delta_tau=dt_obs, p_gate_12=p12, p_gate_21=p21, p_delta_tau=pdt,
                            p_delta_tau_centred=p_centred, p_geometry=p_rotation,
                            balance_delta_tau=v.balance, sign_stable=stable,
                            latent_outcome=outcome == "latent",
                            calibration_delta_tau=calib_values,
                            falsified=bool(cc.falsified))
        level = cc.call_level()
        calls = decide_all(evidence, level)
        call, reasons = calls[cc.rule]
        cause, effect = {"->": (m1, m2), "<-": (m2, m1)}.get(call, ("", ""))
        c1, c2 = classifiers[m1], classifiers[m2]
        self.directions.append(PairDirection(
            m1=m1, m2=m2, outcome=outcome, alpha=cc.alpha, k=cc.k, gate_12=v.g12, gate_21=v.g21,
            delta_tau=dt_obs, null=cc.null, p_gate_12=p12, p_gate_21=p21, p_delta_tau=pdt,
            p_values=p_values, direction=call, cause=cause, effect=effect,
            delta_tau_significant=pdt <= level, sign_stable=stable,
            cos_normals=float(c1.normal_ @ c2.normal_), norm_w1=c1.weight_norm_,
            norm_w2=c2.weight_norm_, acc_1=c1.accuracy_, acc_2=c2.accuracy_,
            offset_1=-c1.intercept_ / c1.weight_norm_, offset_2=-c2.intercept_ / c2.weight_norm_,
            separable=min(c1.accuracy_, c2.accuracy_) >= cc.min_accuracy,
            mmd=mmd_head[m1][0], p_mmd=mmd_head[m1][1], mmd_2=mmd_head[m2][0],
            p_mmd_2=mmd_head[m2][1], n_null_k=v.k_used,
            rule=cc.rule, reason=reason_text(reasons),
            direction_paper=calls["paper"][0], direction_controlled=calls["controlled"][0],
            reason_controlled=reason_text(calls["controlled"][1]),
            gate_12_geometric=v.geometric[0], gate_21_geometric=v.geometric[1],
            delta_tau_geometric=v.geometric[2], p_delta_tau_centred=p_centred,
            p_delta_tau_rotation=p_rotation, delta_tau_balanced=v.balance[0],
            delta_tau_m1_rare=v.balance[1], delta_tau_m2_rare=v.balance[2],
            balance_sign_stable=all(np.sign(b) == np.sign(dt_obs) for b in v.balance)
            and dt_obs != 0,
            n_null=int(v.nulls[cc.null][0].size), gate_12_null_k=v.obs12,
            gate_21_null_k=v.obs21, baselines=baselines, level=level,
            **_calibration_fields(m1, m2, dt_obs, calib)))
        for i, al in enumerate(cc.alphas):
            self.sweep_rows.append({
                "m1": m1, "m2": m2, "outcome": outcome, "alpha": float(al),
                "gate_12": v.sweep12[i], "gate_21": v.sweep21[i], "delta_tau": sweep_dt[i],
                "delta_tau_geometric": v.geometric_sweep[i],
                "null_lo": v.bands["lo"][i] if v.bands else "",
                "null_hi": v.bands["hi"][i] if v.bands else "",
                "mmd_1": mmd_rows[m1][i][0], "p_mmd_1": mmd_rows[m1][i][1],
                "mmd_2": mmd_rows[m2][i][0], "p_mmd_2": mmd_rows[m2][i][1]})


def _calibration_fields(m1: str, m2: str, dt_obs: float,
                        calib: dict[tuple[float, float], float]) -> dict[str, Any]:
    """The calibration control's columns of directions.csv (empty when not computed)."""
    if not calib:
        return {}
    lo = min(calib, key=calib.__getitem__)
    hi = max(calib, key=calib.__getitem__)
    return {"delta_tau_calibration_min": calib[lo], "delta_tau_calibration_max": calib[hi],
            "calibration_min_at": calibration_label(m1, m2, lo),
            "calibration_max_at": calibration_label(m1, m2, hi),
            "delta_tau_labels": calib.get((0.0, 0.0), float("nan")),
            "calibration_sign_stable": dt_obs != 0 and all(
                np.sign(c) == np.sign(dt_obs) for c in calib.values())}


#: Prior samples the baselines see (ANM subsamples further; LiNGAM and NOTEARS use them all).
BASELINE_SAMPLES = 5000


def _baselines(study: Study, m1: str, m2: str, outcome: str) -> tuple:
    """LiNGAM, ANM and NOTEARS on the two attributes' probabilities of the first
    :data:`BASELINE_SAMPLES` prior samples: the latent classifiers' for eq. 8, the observation
    classifier's on the decoded samples for eq. 9 (paper Appendix D)."""
    cc, logits, scorer, z_prior = study.cc, study.logits, study.scorer, study.z_prior
    seed, cache = study.config.seed, study.baseline_cache
    if not cc.baselines:
        return ()
    space = "latent" if outcome == "latent" else "observation"
    key = (m1, m2, space)
    if key in cache:
        return cache[key]
    from cage.run.baselines import run_baselines

    k = int(z_prior.shape[0])
    if space == "observation" and cc.k_observation:  # eq. 9 decodes only the first ones
        k = min(k, cc.k_observation)
    n = min(BASELINE_SAMPLES, k)
    with progress.stage(f"causal-discovery baselines ({space} probabilities, {n} samples)"):
        if space == "latent":
            p1, p2 = sigmoid(logits[m1][:n]), sigmoid(logits[m2][:n])
        else:
            fact = scorer.factual(k)  # type: ignore[union-attr]
            p1, p2 = fact[m1][:n], fact[m2][:n]
        try:
            cache[key] = tuple(run_baselines(p1, p2, (m1, m2), seed=stage_seed(seed, "baselines")))
        except ValueError:  # fewer than 20 samples or non-finite probabilities: nothing to say
            cache[key] = ()
    return cache[key]


def _classifier_rows(setup: ExperimentSetup, classifiers: dict[str, LatentClassifier],
                     names: list[str], cc: Any) -> list[dict[str, Any]]:
    """classifiers.csv rows: latent classifiers, then the experiment's observation ones."""
    rows = [{
        "attribute": a, "space": "latent", "kind": cc.classifier, "accuracy": classifiers[a].accuracy_,
        "n_train": classifiers[a].n_train_, "n_test": classifiers[a].n_test_,
        "positive_rate": float(np.mean(setup.attributes[a])), "weight_norm": classifiers[a].weight_norm_,
        "intercept": classifiers[a].intercept_,
        "separable": "yes" if classifiers[a].accuracy_ >= cc.min_accuracy else "no",
    } for a in names]
    for a, acc in sorted(setup.observation_accuracy.items()):
        if a in names:
            rows.append({
                "attribute": a, "space": "observation", "kind": "experiment", "accuracy": acc,
                "n_train": setup.observation_sizes.get(a, ("", ""))[0],
                "n_test": setup.observation_sizes.get(a, ("", ""))[1],
                "positive_rate": float(np.mean(setup.attributes[a])), "weight_norm": "",
                "intercept": "", "separable": "yes" if acc >= cc.min_accuracy else "no"})
    return rows


def _project_out(directions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Unit rows of ``directions`` with their component along the unit ``normal`` removed."""
    d = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    n = np.asarray(normal, dtype=np.float64)
    r = d - np.outer(d @ n, n)
    norms = np.linalg.norm(r, axis=1, keepdims=True)
    if np.any(norms < 1e-8):
        raise ConfigError("observation_conditional: a treatment direction is parallel to the other "
                          "attribute's normal, so nothing is left after projecting it out; drop "
                          "observation_conditional from [cage] outcomes for this pair")
    return r / norms


def _pair_conditional(geo: PairGeometry, classifiers: dict[str, LatentClassifier],
                      kinds: tuple[str, ...]) -> PairGeometry:
    """Directions of the ``observation_conditional`` variant: treating ``m1`` moves along ``u[m1]``
    with ``h2`` projected out (``m2``'s latent logit does not move), and vice versa; the null
    directions and rotated directions of each treated attribute are projected the same way."""
    m1, m2 = geo.m1, geo.m2
    other = {m1: classifiers[m2].normal_, m2: classifiers[m1].normal_}
    uc = {a: _project_out(geo.u[a], other[a])[0] for a in (m1, m2)}
    nc = {(a, kind): _project_out(geo.nulls[(a, kind)], other[a]) for a in (m1, m2) for kind in kinds}
    frames = geo.frames.copy()
    for i, (w1r, w2r, _, _) in enumerate(geo.frames):
        frames[i, 2] = _project_out(frames[i, 2], w2r / np.linalg.norm(w2r))[0]
        frames[i, 3] = _project_out(frames[i, 3], w1r / np.linalg.norm(w1r))[0]
    return PairGeometry(m1=m1, m2=m2, u=uc, nulls=nc, frames=frames)


@dataclass(frozen=True)
class _Normal:
    """A bare direction seen as a classifier by the interventions (null directions)."""

    normal_: np.ndarray

    @property
    def coef_(self) -> np.ndarray:
        return self.normal_

    @property
    def intercept_(self) -> float:
        return 0.0


def _mmd_for(study: Study, attr: str, u: np.ndarray, alpha: float) -> tuple[float, float]:
    """MMD^2 between p(z | m=1) (prior latents the classifier calls 1) and p(z | do(m=1))
    (other prior latents shifted by alpha u), with its permutation p-value."""
    z, clf, cc = study.z_prior, study.classifiers[attr], study.cc
    seed, cache = study.config.seed, study.mmd_cache
    key = (attr, np.asarray(u).tobytes(), float(alpha))
    if key in cache:
        return cache[key]
    # The two samples depend on the attribute only: draw them once (mmd_n rows each; the prior
    # latents are never copied whole).
    samples = cache.get(("samples", attr))
    if samples is None:
        rng = np.random.default_rng(stage_seed(seed, "mmd", attr))
        order = rng.permutation(z.shape[0])
        positive = clf.predict(z)[order] == 1
        cond_idx = order[positive][: cc.mmd_n]
        rest = order[~np.isin(order, cond_idx)][: cc.mmd_n]
        samples = cache[("samples", attr)] = (z[cond_idx].numpy().astype(np.float64),
                                              z[rest].numpy().astype(np.float64))
    cond, rest_z = samples
    if cond.shape[0] < 2 or rest_z.shape[0] < 2:
        cache[key] = (float("nan"), float("nan"))
        return cache[key]
    res = mmd_test(cond, rest_z + alpha * np.asarray(u), n_perm=cc.mmd_permutations,
                   seed=stage_seed(seed, "mmd-perm", attr, repr(float(alpha))))
    cache[key] = (res.mmd2, res.p_value)
    return cache[key]


def run_experiment(config: ExperimentConfig, out: str | Path, *, force: bool = False,
                   cache_dir: str | Path | None = None) -> CageResult | None:
    """Set up the experiment, run CAGE and write the run directory ``out`` (see module docstring).

    Nothing is left at ``out`` unless the whole run succeeds (the directory is staged). Eq. 9's
    decoded outcomes are checkpointed next to ``out`` (:func:`cage.compute.checkpoints.checkpoint_dir`)
    until the run is published, so rerunning a run that failed or was killed resumes. Under
    torchrun every process calls this: rank 0 runs the study, writes ``out`` and returns the
    result; the others decode for it and return None (docs/distributed.md).
    """
    module = load_kind(config.kind)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    check_cache_path(cache)
    with distributed.session(str(config.option("generator", "device", "cpu"))) as group:
        workers = Workers(group)
        if not group.leader:
            _serve(module, config, cache, workers)
            return None
        with files.target_lock(out, "generated"), \
                workers.leading(checkpoints.checkpoint_dir(out)), distributed.active(workers):
            return _write_run(module, config, out, force, cache, workers)


def _write_run(module: Kind, config: ExperimentConfig, out: str | Path, force: bool, cache: Path,
               workers: Workers) -> CageResult:
    """Rank 0's run: set up, compute (with ``workers``), write the staged run directory."""
    run_id = uuid.uuid4().hex[:12]
    with files.staged_run_dir(out, force=force, run_id=run_id) as stage:
        workers.on_ready = lambda gen, psi: _start(gen, psi, config, workers, out)
        setup, result = _compute(module, config, cache, workers)
        with progress.stage("writing tables and plots"):
            written = write_engine_files(result, setup, stage)
        extra: dict[str, Any] = {}
        if module.makes_outputs:
            with progress.stage("counterfactual pairs and contact sheets"):
                extra = module.finish(setup, result, stage, config)
        manifest = {
            "schema_version": runs.SCHEMA_VERSION,
            "run_id": run_id,
            "complete": True,
            "created_by": "cage-eval generate",
            "experiment": config.name,
            "config": config.to_dict(),
            "seeds": result.seeds,
            "versions": versions(),
            "setup": jsonable(setup.info),
            "files": written,
            "distributed": _work_record(workers),
            "checkpoints": workers.checkpoint_record(),
            "directions": [{"m1": d.m1, "m2": d.m2, "outcome": d.outcome, "direction": d.direction,
                            "rule": d.rule, "reason": d.reason,
                            "direction_paper": d.direction_paper,
                            "direction_controlled": d.direction_controlled,
                            "delta_tau": d.delta_tau, "p_delta_tau": d.p_delta_tau,
                            "baselines": jsonable([dataclasses.asdict(b) for b in d.baselines])}
                           for d in result.directions],
        }
        for key, value in extra.items():
            if key in manifest:
                raise ValueError(f"finish() returned manifest key {key!r}, which the engine owns")
            manifest[key] = jsonable(value)
        files.atomic_write_json(stage / runs.MANIFEST, manifest)
    return result


def _compute(module: Any, config: ExperimentConfig, cache: Path, workers: Workers
             ) -> tuple[ExperimentSetup, CageResult]:
    """Set up and run CAGE. When a checkpoint read back turns out not to hold what its unit
    computes (:class:`cage.compute.checkpoints.Mismatch`), every checkpoint of the run has been discarded
    (:meth:`cage.compute.distributed.Workers.map`) and everything is computed again, from the setup on."""
    for attempt in (1, 2):
        try:
            with progress.stage(f"setting up {config.name!r} (kind {config.kind}: data, "
                                "generator, encoding)"):
                setup = module.setup(config, cache_dir=cache)  # may call distributed.ready
                distributed.ready(setup.generator, setup.observation_classifier)
            with progress.stage("CAGE"):
                return setup, run_cage(setup, config, workers=workers)
        except checkpoints.Mismatch:
            if attempt == 2:  # nothing is read back after a discard: cannot happen twice
                raise
            workers.stats.clear()
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- ranks (torchrun)

#: Config sections that change neither decoding nor labelling (left out of the checkpoint key).
CHECKPOINT_NEUTRAL = ("experiment", "cage", "pairs", "hits")


def _start(generator: LatentGenerator, psi: Any, config: ExperimentConfig,
           workers: Workers, out: str | Path) -> None:
    """Rank 0, its generator and classifier loaded (:func:`cage.compute.distributed.ready`): the other
    ranks set up (from the cache rank 0 filled) and show that they decode and classify as rank 0
    does; then every rank gets the run's checkpoint key and binding."""
    setup = ExperimentSetup(generator=generator, data_latents=np.zeros((0, 0)), attributes={},
                            observation_classifier=psi)
    workers.announce_setup(True)
    facts = workers.handshake(_fingerprint(setup))
    _register_handlers(workers, setup)
    run_key = _run_key(config, facts)
    workers.start(run_key, run_binding(config, out, run_key))


def _serve(module: Kind, config: ExperimentConfig, cache: Path, workers: Workers) -> None:
    """Ranks > 0: set up once rank 0 has (with the kind's ``setup_worker`` when it has one: the
    generator and the classifier, nothing else), then decode for rank 0 until it stops."""

    def prepare() -> dict[str, np.ndarray]:
        setup = module.setup_worker(config, cache_dir=cache)
        gen = setup.generator
        if setup.observation_classifier is not None:  # registers "score"
            ObservationScorer(gen, _scaled_outcome(setup), batch_size_of(gen),
                              PriorBlocks(gen, config.seed), PRIOR_BLOCK, workers)
        _register_handlers(workers, setup)
        return _fingerprint(setup)

    workers.follow(prepare)


def _register_handlers(workers: Workers, setup: ExperimentSetup) -> None:
    """Labelling decoded samples and making counterfactual pairs through the setup's generator
    and classifier (:func:`cage.labels.sampled.label_prior_samples` and
    :class:`cage.pairs.make.PairMaker` deal their work over the ranks when they use these two)."""
    if setup.observation_classifier is not None:
        from cage.labels.sampled import BlockLabeller
        from cage.pairs.make import Manipulator

        gen, psi = setup.generator, setup.observation_classifier
        workers.register("label", BlockLabeller(gen, psi))
        workers.register("manipulate", Manipulator(gen, psi))


def _fingerprint(setup: ExperimentSetup) -> dict[str, np.ndarray]:
    """What the generator and the observation classifier make of two seeded prior draws."""
    gen = setup.generator
    with torch.no_grad():
        z = torch.as_tensor(gen.sample(2, 0)).to("cpu", torch.float32)
        x = gen.decode(z).detach().to("cpu", torch.float32)
        facts = {"z": z.numpy(), "x": x.numpy()}
        if setup.observation_classifier is not None:
            facts.update({f"psi:{a}": p for a, p in _scaled_outcome(setup)(x).items()})
    return facts


def _run_key(config: ExperimentConfig, facts: dict[str, np.ndarray]) -> str:
    """The checkpoint key of a run: everything that determines a decoded outcome besides the unit
    itself (the config's sections, seed, package versions, the fingerprint's exact bytes)."""
    sections = {k: v for k, v in config.to_dict().items() if k not in CHECKPOINT_NEUTRAL}
    h = hashlib.sha256(json.dumps({"kind": config.kind, "seed": config.seed, "block": PRIOR_BLOCK,
                                   "sections": sections, "versions": versions()},
                                  sort_keys=True, default=str).encode())
    for name in sorted(facts):
        h.update(name.encode() + np.ascontiguousarray(facts[name]).tobytes())
    return h.hexdigest()[:32]


def run_binding(config: ExperimentConfig, out: str | Path, run_key: str) -> str:
    """What binds a checkpoint file to this run (:mod:`cage.compute.checkpoints`): a digest of the
    resolved config (every section that can change a checkpointed result: all but
    :data:`CHECKPOINT_NEUTRAL`, so that fixing ``[pairs]`` after a failure still resumes), the
    kind and seed, the code (:func:`code_digest`), the package versions, the run's checkpoint key
    (which covers the fingerprint of the generator and classifier) and the absolute output
    directory. Checkpoints of another run, or planted next to a fresh ``--out`` from elsewhere,
    are bound to something else and never read."""
    sections = {k: v for k, v in config.to_dict().items() if k not in CHECKPOINT_NEUTRAL}
    blob = json.dumps({"config": sections, "kind": config.kind, "seed": config.seed,
                       "code": code_digest(), "versions": versions(), "run_key": run_key,
                       "out": str(Path(out).absolute())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def code_digest() -> str:
    """A digest of the Python source of the ``cage`` and ``cage_eval`` packages as installed."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        import cage
        import cage_eval

        h = hashlib.sha256()
        for package in (Path(cage.__file__).resolve().parent,
                        Path(cage_eval.__file__).resolve().parent):
            for path in sorted(package.rglob("*.py")):
                h.update(str(path.relative_to(package.parent)).encode() + b"\0")
                h.update(path.read_bytes())
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


_CODE_DIGEST: str | None = None


def _work_record(workers: Workers) -> dict[str, Any]:
    """manifest.json's ``distributed``: processes, backend and the units of each kind of work."""
    return {"world_size": workers.world_size, "backend": workers.group.backend,
            "work": {name: dataclasses.asdict(s) for name, s in sorted(workers.stats.items())}}
