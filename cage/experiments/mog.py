"""The mixture-of-Gaussians experiment (paper section 4, Q1; docs/engine.md).

Data (2-D, ``[data] n`` points, seeded):

- ``m_c = 0``: an 8-component ring, centre ``ring_center``, radius ``ring_radius``, component
  standard deviation ``ring_std`` (all below the cut: ``m_e = 1`` there);
- ``m_c = 1``: 3 clusters in a row at ``clusters`` (std ``cluster_std``) on the other side; each
  point comes from the 3-cluster mixture with probability ``p_clusters`` (default 0.5);
- ``m_e = 1[mean(x, y) < 2.5]``: the cut crosses the clusters, so ``P(m_e = 1 | m_c = 0) = 1`` and
  ``P(m_e = 1 | m_c = 1)`` is about 0.43: ``m_e`` depends on ``m_c`` without being a function of it.

Default layout (chosen after trying several, docs/engine.md): ring centre (2, -5), radius 2.5,
std 0.4; clusters at (-1, 4), (1.5, 4), (4, 4), std 0.8. Both attributes are linearly separable in
the trained flow's latent space (held-out accuracy about 0.9 or more) while ``x + y < 5`` crosses
the middle cluster.

Generator: a zuko MAF trained by maximum likelihood (``[flow]``), optionally on the reversed
variable order (``[flow] reverse = true``, the paper's second variant). Trained flows are cached
under ``cache_dir/mog/`` keyed by a hash of everything that determines them.

Observation-space classifiers (eq. 9): logistic regressions on ``x`` (both attributes are linear in
``x``: ``m_e`` exactly, ``m_c`` because the two mixtures sit on either side of a line).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.config.experiment import ExperimentConfig
from cage.config.sections import Section
from cage.experiments.base import ExperimentSetup
from cage.generators.flow import FlowGenerator, MAFSpec, build_maf, train_maf
from cage_eval import progress
from cage_eval.cache import check_cache_path
from cage_eval.errors import CacheWarning, ConfigError
from cage_eval.files import content_key

DATA_DEFAULTS: dict[str, Any] = {
    "n": 5000,
    "ring_center": [2.0, -5.0],
    "ring_radius": 2.5,
    "ring_std": 0.4,
    "clusters": [[-1.0, 4.0], [1.5, 4.0], [4.0, 4.0]],
    "cluster_std": 0.8,
    "cut": 2.5,
    "p_clusters": 0.5,
    "test_fraction": 0.25,
}
FLOW_DEFAULTS: dict[str, Any] = {
    "transforms": 5,
    "hidden": [64, 64],
    "steps": 1000,
    "lr": 3e-3,
    "reverse": False,
}
ATTRIBUTES = ("m_c", "m_e")


def _section(config: ExperimentConfig, name: str) -> Section:
    return Section(config.kind_options.get(name), source=config.source, name=name)


def data_options(config: ExperimentConfig) -> dict[str, Any]:
    """Validated ``[data]`` section."""
    s, d = _section(config, "data"), DATA_DEFAULTS
    positive = {"minimum": 0.0, "exclusive_minimum": True}
    o = {
        "n": s.integer("n", d["n"], minimum=100),
        "ring_center": [float(v) for v in s.numbers("ring_center", d["ring_center"], length=2)],
        "ring_radius": s.number("ring_radius", d["ring_radius"], **positive),
        "ring_std": s.number("ring_std", d["ring_std"], **positive),
        "clusters": s.points("clusters", d["clusters"], count=3),
        "cluster_std": s.number("cluster_std", d["cluster_std"], **positive),
        "cut": s.number("cut", d["cut"]),
        "p_clusters": s.number("p_clusters", d["p_clusters"], **positive, maximum=1.0),
        "test_fraction": s.number("test_fraction", d["test_fraction"], **positive, maximum=1.0),
    }
    for key in ("p_clusters", "test_fraction"):
        if not o[key] < 1:
            raise ConfigError(f"{s.where(key)} = {o[key]}: must be in (0, 1)")
    s.finish()
    return o


def flow_options(config: ExperimentConfig) -> dict[str, Any]:
    """Validated ``[flow]`` section."""
    s, d = _section(config, "flow"), FLOW_DEFAULTS
    o = {
        "transforms": s.integer("transforms", d["transforms"], minimum=1),
        "hidden": list(s.numbers("hidden", d["hidden"], integers=True)),
        "steps": s.integer("steps", d["steps"], minimum=1),
        "lr": s.number("lr", d["lr"], minimum=0.0, exclusive_minimum=True),
        "reverse": s.flag("reverse", d["reverse"]),
    }
    if any(h < 1 for h in o["hidden"]):
        raise ConfigError(f"{s.where('hidden')} = {o['hidden']!r}: must be a list of positive "
                          "layer widths, e.g. [64, 64]")
    s.finish()
    return o


def sample_mog(opts: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the data set.

    Returns
    -------
    x : np.ndarray, shape (n, 2), float32
    m_c : np.ndarray, shape (n,), int64 (1 = the 3-cluster mixture)
    m_e : np.ndarray, shape (n,), int64 (``1[mean(x) < cut]``)
    """
    rng = np.random.default_rng(seed)
    n = opts["n"]
    angles = np.arange(8) * 2 * np.pi / 8
    cx, cy = opts["ring_center"]
    ring = np.stack([cx + opts["ring_radius"] * np.cos(angles),
                     cy + opts["ring_radius"] * np.sin(angles)], axis=1)
    clusters = np.asarray(opts["clusters"], dtype=np.float64)
    m_c = (rng.random(n) < opts["p_clusters"]).astype(np.int64)
    x = np.empty((n, 2))
    i0, i1 = np.flatnonzero(m_c == 0), np.flatnonzero(m_c == 1)
    x[i0] = ring[rng.integers(0, 8, i0.size)] + opts["ring_std"] * rng.standard_normal((i0.size, 2))
    x[i1] = (clusters[rng.integers(0, 3, i1.size)]
             + opts["cluster_std"] * rng.standard_normal((i1.size, 2)))
    m_e = (x.mean(axis=1) < opts["cut"]).astype(np.int64)
    return x.astype(np.float32), m_c.astype(np.int64), m_e


def _cache_key(data: dict[str, Any], flow: dict[str, Any], seed: int) -> str:
    import zuko

    return content_key({"data": data, "flow": flow, "seed": seed, "zuko": zuko.__version__,
                        "torch": torch.__version__.split("+")[0], "format": 1}, digits=16)


def _load_cached(path: Path, spec: MAFSpec) -> tuple[torch.nn.Module, list[float]]:
    """The cached flow, checked: weights only (no code runs), the exact architecture, finite
    values. Raises any exception when the file cannot be trusted."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or set(saved) != {"state", "losses"}:
        raise ValueError("not a cached flow")
    losses = [float(v) for v in saved["losses"]]
    flow = build_maf(spec)
    flow.load_state_dict(saved["state"])
    if not all(np.isfinite(losses)) or not all(
            bool(torch.isfinite(t).all()) for t in flow.state_dict().values()):
        raise ValueError("non-finite values")
    return flow.eval(), losses


def _load_or_train(x: np.ndarray, spec: MAFSpec, seed: int, path: Path
                   ) -> tuple[torch.nn.Module, list[float], bool, float]:
    check_cache_path(path)
    if path.is_file():
        try:
            flow, losses = _load_cached(path, spec)
            return flow, losses, True, 0.0
        except Exception as exc:  # truncated, tampered or stale: untrusted, retrain instead
            reason = type(exc).__name__
            warnings.warn(CacheWarning(f"{path}: unusable cached flow ({reason}); training it "
                                       "again"), stacklevel=2)
    start = time.perf_counter()
    with progress.stage(f"training the MAF ({spec.steps} steps; cached afterwards)"):
        flow, losses = train_maf(x, spec, seed=seed)
    seconds = time.perf_counter() - start
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"state": flow.state_dict(), "losses": losses}, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs a retraining next time
    return flow, losses, False, seconds


class _ObservationClassifier:
    """Logistic regressions on ``x`` for every attribute: ``x (n, 2) -> {attr: P(attr = 1)}``."""

    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        xn = np.asarray(x.detach().cpu().numpy(), dtype=np.float64)
        return {a: m.predict_proba(xn)[:, 1] for a, m in self.models.items()}


def setup(config: ExperimentConfig, *, cache_dir: Path) -> ExperimentSetup:
    """Sample the data, train (or load) the MAF, encode, fit the observation classifiers."""
    from sklearn.linear_model import LogisticRegression

    from cage.engine.classifiers import train_test_mask

    unknown = sorted(set(config.kind_options) - {"data", "flow"})
    if unknown:
        raise ConfigError(f"{config.source}: [{unknown[0]}]: unknown section for a mog experiment; "
                          "its sections are [experiment], [cage], [data] and [flow]")
    data = data_options(config)
    flow_opts = flow_options(config)
    x, m_c, m_e = sample_mog(data, config.seed)
    attributes = {"m_c": m_c, "m_e": m_e}
    for a, y in attributes.items():
        counts = np.bincount(y, minlength=2)
        if counts.min() < 2:
            raise ConfigError(f"attribute {a!r} has a single class ({int(counts[0])} zeros, "
                              f"{int(counts[1])} ones) in the data of {config.source}; change "
                              "[data] (cut, clusters, ring_center) so that it varies")
    spec = MAFSpec(features=2, transforms=flow_opts["transforms"],
                   hidden=tuple(flow_opts["hidden"]), steps=flow_opts["steps"], lr=flow_opts["lr"])
    order = [1, 0] if flow_opts["reverse"] else [0, 1]
    key = _cache_key(data, flow_opts, config.seed)
    path = Path(cache_dir) / "mog" / f"maf-{key}.pt"
    flow, losses, cached, seconds = _load_or_train(x[:, order], spec, config.seed, path)
    if cached:
        progress.note(f"MAF: loaded from the cache {path}")
    generator = FlowGenerator(flow, order=order)
    z = generator.encode(torch.as_tensor(x)).numpy()

    models, accuracy, sizes = {}, {}, {}
    for a, y in attributes.items():
        mask = train_test_mask(y, data["test_fraction"], config.seed + 17)
        model = LogisticRegression(C=100.0, max_iter=2000).fit(x[~mask], y[~mask])
        models[a] = model
        accuracy[a] = float(model.score(x[mask], y[mask]))
        sizes[a] = (int((~mask).sum()), int(mask.sum()))
    with torch.no_grad():
        nll = float(-generator.log_prob(torch.as_tensor(x)).mean())
    info = {
        "mog": {
            "n": data["n"],
            "p_m_e_given_m_c": {"0": float(m_e[m_c == 0].mean()), "1": float(m_e[m_c == 1].mean())},
            "p_m_c": float(m_c.mean()),
            "p_m_e": float(m_e.mean()),
        },
        "flow": {
            "cache_file": path.name,
            "cached": cached,
            "train_seconds": round(seconds, 2),
            "losses_every_100_steps": [round(v, 5) for v in losses],
            "data_nll": round(nll, 5),
            "variable_order": order,
        },
    }
    return ExperimentSetup(generator=generator, data_latents=z, attributes=attributes,
                           observation_classifier=_ObservationClassifier(models), info=info,
                           observation_accuracy=accuracy, observation_sizes=sizes)
