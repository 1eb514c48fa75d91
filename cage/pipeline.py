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

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.config import ExperimentConfig, default_cache_dir
from cage.engine.classifiers import LatentClassifier, fit_attribute_classifier
from cage.engine.effects import (
    decide,
    delta_tau,
    empirical_p_value,
    gate_from_logits,
    gate_materialised,
)
from cage.engine.interventions import make_intervention
from cage.engine.mmd import mmd_test
from cage.engine.nulls import permutation_normals, random_directions
from cage.experiments.base import ExperimentSetup
from cage.experiments.registry import load_kind
from cage.generators.base import LatentGenerator
from cage.report import jsonable, versions, write_engine_files
from cage.result import CageResult, PairDirection
from cage_eval import files, runs
from cage_eval.errors import ConfigError

#: Rows decoded at once for observation-space outcomes.
DECODE_BATCH = 8192

#: Prior latents drawn per seed: latent ``i`` is row ``i % PRIOR_BLOCK`` of block ``i // PRIOR_BLOCK``.
PRIOR_BLOCK = 4096


def stage_seed(seed: int, *parts: str) -> int:
    """A 31-bit seed for one named stage, derived from the master seed (order independent)."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


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


def run_cage(setup: ExperimentSetup, config: ExperimentConfig) -> CageResult:
    """Algorithm 1 plus significance, sweeps and diagnostics for every configured pair.

    Pure computation (no files). See docs/engine.md for the definitions of every output.
    """
    cc = config.cage
    names = _check_setup(setup, config)
    seeds = {"master": config.seed, "prior_block_0": stage_seed(config.seed, "prior", "0")}

    # Step 2: latent classifiers with held-out accuracy (the separability check).
    z_data = np.asarray(setup.data_latents, dtype=np.float64)
    classifiers: dict[str, LatentClassifier] = {}
    masks: dict[str, np.ndarray] = {}
    for a in names:
        seeds[f"split:{a}"] = stage_seed(config.seed, "split", a)
        clf, mask = fit_attribute_classifier(a, z_data, np.asarray(setup.attributes[a]),
                                             kind=cc.classifier, C=cc.C,
                                             test_fraction=cc.test_fraction,
                                             seed=seeds[f"split:{a}"])
        classifiers[a], masks[a] = clf, mask

    # Step 3: prior latents, block by block (a latent's value depends on its index only).
    z_prior = prior_latents(setup.generator, cc.k, config.seed)
    if z_prior.shape != (cc.k, z_data.shape[1]):
        raise ConfigError(f"experiment {config.name!r}: the generator's latents have "
                          f"{z_prior.shape[1]} dimensions but the encoded data {z_data.shape[1]}; "
                          "encode with the same generator")
    logits = {a: classifiers[a].decision_function(z_prior) for a in names}

    def outcome_obs(zb: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.no_grad():
            probs = setup.observation_classifier(setup.generator.decode(zb))  # type: ignore[misc]
        if cc.outcome_scale == "label":
            return {k: (np.asarray(v) > 0.5).astype(np.float64) for k, v in probs.items()}
        return probs

    result_dirs: list[PairDirection] = []
    sweep_rows: list[dict[str, Any]] = []
    null_rows: list[dict[str, Any]] = []
    interventions: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    null_dirs: dict[tuple[str, str, str, str], np.ndarray] = {}
    mmd_cache: dict[tuple[str, bytes, float], tuple[float, float]] = {}
    alphas = np.asarray(cc.alphas)

    for m1, m2 in cc.pairs:
        others = [classifiers[a].normal_ for a in names if a not in (m1, m2)]
        inter = make_intervention(cc.intervention, conditions=np.asarray(others).reshape(-1, z_data.shape[1]))
        u = {a: inter.direction(classifiers[a]) for a in (m1, m2)}
        interventions[(m1, m2)] = u
        # Null directions for each treated attribute, mapped through the same intervention.
        for a in (m1, m2):
            for kind in cc.nulls:
                seed = stage_seed(config.seed, "null", kind, a)
                seeds[f"null:{kind}:{a}"] = seed
                if kind == "random":
                    raw = random_directions(cc.n_null, z_data.shape[1], seed)
                else:
                    train = ~masks[a]
                    raw = permutation_normals(z_data[train], np.asarray(setup.attributes[a])[train],
                                              cc.n_null, C=cc.C, seed=seed)
                null_dirs[(m1, m2, a, kind)] = np.stack(
                    [inter.direction(_Normal(r)) for r in raw]) if cc.intervention != "linear" else raw

        mmd_rows = {a: [_mmd_for(a, u[a], al, z_prior, classifiers[a], cc, config.seed, mmd_cache)
                        for al in alphas] for a in (m1, m2)}
        mmd_head = {a: _mmd_for(a, u[a], cc.alpha, z_prior, classifiers[a], cc, config.seed,
                                mmd_cache) for a in (m1, m2)}

        for outcome in cc.outcomes:
            if outcome == "latent":
                v = _latent_variant(m1, m2, classifiers, logits, u, null_dirs, cc)
            elif outcome == "observation":
                v = _observation_variant(m1, m2, z_prior, u, null_dirs, outcome_obs, cc)
            else:  # observation_conditional: hold the other attribute of the pair fixed
                uc, nc = _pair_conditional(m1, m2, classifiers, u, null_dirs, cc.nulls)
                v = _observation_variant(m1, m2, z_prior, uc, nc, outcome_obs, cc)
            g12, g21, obs12, obs21, nulls, k_used = v.g12, v.g21, v.obs12, v.obs21, v.nulls, v.k_used
            sweep12, sweep21, bands = v.sweep12, v.sweep21, v.bands
            dt_obs = float(delta_tau(g12, g21))
            p_values = {}
            for kind, (n12, n21) in nulls.items():
                ndt = delta_tau(n12, n21)
                p_values[kind] = (empirical_p_value(n12, obs12), empirical_p_value(n21, obs21),
                                  empirical_p_value(ndt, delta_tau(obs12, obs21)))
                for b in range(n12.size):
                    null_rows.append({"m1": m1, "m2": m2, "outcome": outcome, "null": kind,
                                      "draw": b, "alpha": cc.alpha, "k": k_used,
                                      "gate_12": n12[b], "gate_21": n21[b], "delta_tau": ndt[b]})
            p12, p21, pdt = p_values[cc.null]
            sweep_dt = delta_tau(sweep12, sweep21)
            call = decide(dt_obs, p12, p21, pdt, cc.level)
            cause, effect = {"->": (m1, m2), "<-": (m2, m1)}.get(call, ("", ""))
            stable = bool(np.all(np.sign(sweep_dt) == np.sign(dt_obs))) and dt_obs != 0
            c1, c2 = classifiers[m1], classifiers[m2]
            result_dirs.append(PairDirection(
                m1=m1, m2=m2, outcome=outcome, alpha=cc.alpha, k=cc.k, gate_12=g12, gate_21=g21,
                delta_tau=dt_obs, null=cc.null, p_gate_12=p12, p_gate_21=p21, p_delta_tau=pdt,
                p_values=p_values, direction=call, cause=cause, effect=effect,
                delta_tau_significant=pdt <= cc.level, sign_stable=stable,
                cos_normals=float(c1.normal_ @ c2.normal_), norm_w1=c1.weight_norm_,
                norm_w2=c2.weight_norm_, acc_1=c1.accuracy_, acc_2=c2.accuracy_,
                offset_1=-c1.intercept_ / c1.weight_norm_, offset_2=-c2.intercept_ / c2.weight_norm_,
                separable=min(c1.accuracy_, c2.accuracy_) >= cc.min_accuracy,
                mmd=mmd_head[m1][0], p_mmd=mmd_head[m1][1], mmd_2=mmd_head[m2][0],
                p_mmd_2=mmd_head[m2][1], n_null_k=k_used))
            for i, al in enumerate(alphas):
                sweep_rows.append({
                    "m1": m1, "m2": m2, "outcome": outcome, "alpha": float(al),
                    "gate_12": sweep12[i], "gate_21": sweep21[i], "delta_tau": sweep_dt[i],
                    "null_lo": bands["lo"][i] if bands else "",
                    "null_hi": bands["hi"][i] if bands else "",
                    "mmd_1": mmd_rows[m1][i][0], "p_mmd_1": mmd_rows[m1][i][1],
                    "mmd_2": mmd_rows[m2][i][0], "p_mmd_2": mmd_rows[m2][i][1]})

    classifier_rows = [{
        "attribute": a, "space": "latent", "kind": cc.classifier, "accuracy": classifiers[a].accuracy_,
        "n_train": classifiers[a].n_train_, "n_test": classifiers[a].n_test_,
        "positive_rate": float(np.mean(setup.attributes[a])), "weight_norm": classifiers[a].weight_norm_,
        "intercept": classifiers[a].intercept_,
        "separable": "yes" if classifiers[a].accuracy_ >= cc.min_accuracy else "no",
    } for a in names]
    for a, acc in sorted(setup.observation_accuracy.items()):
        if a in names:
            classifier_rows.append({
                "attribute": a, "space": "observation", "kind": "experiment", "accuracy": acc,
                "n_train": setup.observation_sizes.get(a, ("", ""))[0],
                "n_test": setup.observation_sizes.get(a, ("", ""))[1],
                "positive_rate": float(np.mean(setup.attributes[a])), "weight_norm": "",
                "intercept": "", "separable": "yes" if acc >= cc.min_accuracy else "no"})
    return CageResult(config=config, classifiers=classifiers, directions=result_dirs,
                      prior_latents=z_prior.numpy(), interventions=interventions,
                      null_directions=null_dirs, sweep_rows=sweep_rows, null_rows=null_rows,
                      classifier_rows=classifier_rows, seeds=seeds, test_masks=masks)


@dataclass
class _Variant:
    """One outcome variant of one pair: sweep, headline GATEs, the statistics the nulls are
    compared with (``obs12``, ``obs21``), null GATEs per kind, Δτ null band over alpha."""

    sweep12: np.ndarray
    sweep21: np.ndarray
    g12: float
    g21: float
    obs12: float
    obs21: float
    nulls: dict[str, tuple[np.ndarray, np.ndarray]]
    bands: dict[str, np.ndarray]
    k_used: int


def _latent_variant(m1: str, m2: str, classifiers: dict[str, LatentClassifier],
                    logits: dict[str, np.ndarray], u: dict[str, np.ndarray],
                    null_dirs: dict, cc: Any) -> _Variant:
    """Eq. 8 in closed form: every alpha and null direction from the prior logits."""
    w1, w2 = classifiers[m1].coef_, classifiers[m2].coef_
    alphas = np.asarray(cc.alphas)
    scale = cc.outcome_scale
    s12, s21 = float(w2 @ u[m1]), float(w1 @ u[m2])
    g12 = float(gate_from_logits(logits[m2], s12, cc.alpha, scale=scale))
    g21 = float(gate_from_logits(logits[m1], s21, cc.alpha, scale=scale))
    nulls: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bands: dict[str, np.ndarray] = {}
    for kind in cc.nulls:
        n12 = null_dirs[(m1, m2, m1, kind)] @ w2
        n21 = null_dirs[(m1, m2, m2, kind)] @ w1
        nulls[kind] = (np.atleast_1d(gate_from_logits(logits[m2], n12, cc.alpha, scale=scale)),
                       np.atleast_1d(gate_from_logits(logits[m1], n21, cc.alpha, scale=scale)))
        if kind == cc.null:
            a12 = np.atleast_2d(gate_from_logits(logits[m2], n12, alphas, scale=scale))
            a21 = np.atleast_2d(gate_from_logits(logits[m1], n21, alphas, scale=scale))
            dt = delta_tau(a12, a21)
            bands = {"lo": np.quantile(dt, 0.025, axis=1), "hi": np.quantile(dt, 0.975, axis=1)}
    return _Variant(
        sweep12=np.atleast_1d(gate_from_logits(logits[m2], s12, alphas, scale=scale)),
        sweep21=np.atleast_1d(gate_from_logits(logits[m1], s21, alphas, scale=scale)),
        g12=g12, g21=g21, obs12=g12, obs21=g21, nulls=nulls, bands=bands, k_used=cc.k)


def _observation_variant(m1: str, m2: str, z_prior: torch.Tensor, u: dict[str, np.ndarray],
                         null_dirs: dict,
                         outcome: Callable[[torch.Tensor], dict[str, np.ndarray]],
                         cc: Any) -> _Variant:
    """Eq. 9: decode the counterfactual latents and apply the observation classifier."""
    alphas = np.asarray(cc.alphas)
    sweep12 = np.array([_obs_gate(z_prior, u[m1], al, outcome)[m2] for al in alphas])
    sweep21 = np.array([_obs_gate(z_prior, u[m2], al, outcome)[m1] for al in alphas])
    at = np.flatnonzero(alphas == cc.alpha)
    if at.size:
        g12, g21 = float(sweep12[at[0]]), float(sweep21[at[0]])
    else:
        g12 = _obs_gate(z_prior, u[m1], cc.alpha, outcome)[m2]
        g21 = _obs_gate(z_prior, u[m2], cc.alpha, outcome)[m1]
    # Nulls on the first k_null_observation latents; the observed statistic for the p-values is
    # recomputed on the same latents so that both sides are comparable.
    n_sub = min(cc.k, cc.k_null_observation)
    z_sub = z_prior[:n_sub]
    obs12 = _obs_gate(z_sub, u[m1], cc.alpha, outcome)[m2]
    obs21 = _obs_gate(z_sub, u[m2], cc.alpha, outcome)[m1]
    nulls = {}
    for kind in cc.nulls:
        n12 = np.array([_obs_gate(z_sub, d, cc.alpha, outcome)[m2]
                        for d in null_dirs[(m1, m2, m1, kind)]])
        n21 = np.array([_obs_gate(z_sub, d, cc.alpha, outcome)[m1]
                        for d in null_dirs[(m1, m2, m2, kind)]])
        nulls[kind] = (n12, n21)
    return _Variant(sweep12=sweep12, sweep21=sweep21, g12=g12, g21=g21, obs12=obs12, obs21=obs21,
                    nulls=nulls, bands={}, k_used=n_sub)


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


def _pair_conditional(m1: str, m2: str, classifiers: dict[str, LatentClassifier],
                      u: dict[str, np.ndarray], null_dirs: dict, kinds: tuple[str, ...]
                      ) -> tuple[dict[str, np.ndarray], dict]:
    """Directions of the ``observation_conditional`` variant: treating ``m1`` moves along ``u[m1]``
    with ``h2`` projected out (``m2``'s latent logit does not move), and vice versa; the null
    directions of each treated attribute are projected the same way."""
    other = {m1: classifiers[m2].normal_, m2: classifiers[m1].normal_}
    uc = {a: _project_out(u[a], other[a])[0] for a in (m1, m2)}
    nc = {(m1, m2, a, kind): _project_out(null_dirs[(m1, m2, a, kind)], other[a])
          for a in (m1, m2) for kind in kinds}
    return uc, nc


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


def _obs_gate(z: torch.Tensor, u: np.ndarray, alpha: float,
              outcome: Callable[[torch.Tensor], dict[str, np.ndarray]]) -> dict[str, float]:
    ut = torch.as_tensor(np.asarray(u), dtype=z.dtype)
    return gate_materialised(z, lambda zb, s: zb + (s * alpha) * ut, outcome, batch_size=DECODE_BATCH)


def _mmd_for(attr: str, u: np.ndarray, alpha: float, z: torch.Tensor, clf: LatentClassifier,
             cc: Any, seed: int, cache: dict) -> tuple[float, float]:
    """MMD^2 between p(z | m=1) (prior latents the classifier calls 1) and p(z | do(m=1))
    (other prior latents shifted by alpha u), with its permutation p-value."""
    key = (attr, np.asarray(u).tobytes(), float(alpha))
    if key in cache:
        return cache[key]
    rng = np.random.default_rng(stage_seed(seed, "mmd", attr))
    zn = z.numpy().astype(np.float64)
    order = rng.permutation(zn.shape[0])
    positive = clf.predict(zn[order]) == 1
    cond_idx = order[positive][: cc.mmd_n]
    rest = order[~np.isin(order, cond_idx)][: cc.mmd_n]
    if cond_idx.size < 2 or rest.size < 2:
        cache[key] = (float("nan"), float("nan"))
        return cache[key]
    res = mmd_test(zn[cond_idx], zn[rest] + alpha * np.asarray(u), n_perm=cc.mmd_permutations,
                   seed=stage_seed(seed, "mmd-perm", attr, repr(float(alpha))))
    cache[key] = (res.mmd2, res.p_value)
    return cache[key]


def run_experiment(config: ExperimentConfig, out: str | Path, *, force: bool = False,
                   cache_dir: str | Path | None = None) -> CageResult:
    """Set up the experiment, run CAGE and write the run directory ``out`` (see module docstring).

    Nothing is left at ``out`` unless the whole run succeeds (the directory is staged).
    """
    module = load_kind(config.kind)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with files.staged_run_dir(out, force=force) as stage:
        setup = module.setup(config, cache_dir=cache)
        result = run_cage(setup, config)
        written = write_engine_files(result, setup, stage)
        extra: dict[str, Any] = {}
        finish = getattr(module, "finish", None)
        if finish is not None:
            extra = dict(finish(setup, result, stage, config) or {})
        manifest = {
            "schema_version": runs.SCHEMA_VERSION,
            "run_id": uuid.uuid4().hex[:12],
            "complete": True,
            "created_by": "cage-eval generate",
            "experiment": config.name,
            "config": config.to_dict(),
            "seeds": result.seeds,
            "versions": versions(),
            "setup": jsonable(setup.info),
            "files": written,
            "directions": [{"m1": d.m1, "m2": d.m2, "outcome": d.outcome, "direction": d.direction,
                            "delta_tau": d.delta_tau, "p_delta_tau": d.p_delta_tau}
                           for d in result.directions],
        }
        for key, value in extra.items():
            if key in manifest:
                raise ValueError(f"finish() returned manifest key {key!r}, which the engine owns")
            manifest[key] = jsonable(value)
        files.atomic_write_json(stage / runs.MANIFEST, manifest)
    return result
