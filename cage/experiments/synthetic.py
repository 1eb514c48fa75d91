"""The synthetic experiment: a ground truth for CAGE's calls (``kind = "synthetic"``).

A Gaussian latent ``z ~ N(0, I_d)`` and ``K >= 2`` binary attributes, each the thresholded score
of a function of the latent plus label noise, with a planted mechanism between them or none.

Model (section ``[synthetic]``, defaults in :data:`DEFAULTS`)
-------------------------------------------------------------
- Directions: an orthonormal set drawn with the seed, ``e_0`` shared and ``e_i``, ``f_i`` private
  to attribute ``i``; attribute ``i``'s score direction is ``a_i = sqrt(cos) e_0 + sqrt(1 - cos)
  e_i``, so any two have cosine ``cos`` (``0``: independent; ``> 0``: associated and exchangeable).
- Base score: ``u_i(z) = a_i . z`` (``score = "linear"``) or, with ``score = "nonlinear"``,
  ``(a_i . z + curvature ((f_i . z)^2 - 1) / sqrt(2)) / sqrt(1 + curvature^2)`` (unit variance).
- Mechanism (``mechanism = "m1->m2"``; ``"none"`` for none): the effect's score gains
  ``strength * sigmoid(sharpness (s_c - t_c))``, a smooth switch on the cause's score crossing its
  label threshold: ``s_e = u_e + strength * sigmoid(...)``; other scores are their base score.
- Labels: ``m_i = 1[s_i(z) + noise * eps_i > t_i]``, ``eps_i ~ N(0, 1)``, with the threshold
  ``t_i`` set so that ``P(m_i = 1) = positive_rate[i]`` (from 200,000 seeded draws).

The generator is the model itself: ``decode(z)`` returns the scores ``(n, K)``, the annotated data
are ``n`` prior draws with their noisy labels (encoded exactly: the latents are known), and the
observation classifier is the exact posterior ``P(m_i = 1 | x) = Phi((s_i - t_i) / noise)``. So
eq. 9 sees the planted mechanism through the decoder, and every CAGE quantity has a known truth.
``judge_temperature`` (one per attribute, default 1) passes each posterior through a temperature,
``sigmoid(logit(P) / T)``: a miscalibrated judge with the exact posterior's decisions (and so its
accuracy), the calibration control's ground truth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit, log_ndtr, ndtr

from cage.config.experiment import ExperimentConfig
from cage.config.sections import Section, check_sections
from cage.experiments.base import ExperimentSetup
from cage.generators.base import gaussian_sample
from cage_eval.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "dim": 64,
    "n": 4000,
    "attributes": ["m1", "m2"],
    "cos": 0.5,
    "score": "linear",
    "curvature": 0.5,
    "noise": 0.5,
    "positive_rate": [0.5, 0.5],
    "mechanism": "none",
    "strength": 1.5,
    "sharpness": 4.0,
    "judge_temperature": None,
}
SCORES = ("linear", "nonlinear")
#: Draws behind the label thresholds.
THRESHOLD_DRAWS = 200_000


@dataclass(frozen=True)
class SyntheticModel:
    """The planted model (see the module docstring).

    Attributes
    ----------
    names : tuple of str
        Attribute names, in the order of ``decode``'s columns.
    basis : np.ndarray, shape (2K + 1, d)
        Orthonormal rows ``e_0, e_1..e_K, f_1..f_K``.
    cos : float
        The planted cosine between any two score directions.
    thresholds : np.ndarray, shape (K,)
    edges : tuple of (int, int)
        Planted mechanism ``(cause index, effect index)``.
    """

    names: tuple[str, ...]
    basis: np.ndarray
    cos: float
    thresholds: np.ndarray
    edges: tuple[tuple[int, int], ...]
    score: str
    curvature: float
    noise: float
    strength: float
    sharpness: float

    @property
    def directions(self) -> np.ndarray:
        """Unit score directions ``a_i``, shape (K, d)."""
        k = len(self.names)
        return math.sqrt(self.cos) * self.basis[0][None, :] + math.sqrt(1 - self.cos) * self.basis[1:k + 1]

    def scores_from_coords(self, coords: np.ndarray, thresholds: np.ndarray | None = None
                           ) -> np.ndarray:
        """``s_i`` from the latent's coordinates in ``basis`` (shape (n, 2K + 1)): (n, K)."""
        k = len(self.names)
        t = self.thresholds if thresholds is None else thresholds
        s = math.sqrt(self.cos) * coords[:, :1] + math.sqrt(1 - self.cos) * coords[:, 1:k + 1]
        if self.score == "nonlinear":
            quad = (coords[:, k + 1:] ** 2 - 1.0) / math.sqrt(2.0)
            s = (s + self.curvature * quad) / math.sqrt(1.0 + self.curvature**2)
        for c, e in self.edges:
            s[:, e] = s[:, e] + self.strength * expit(self.sharpness * (s[:, c] - t[c]))
        return s

    def scores(self, z: np.ndarray) -> np.ndarray:
        """``s_i(z)`` with the mechanism applied in edge order, shape (n, K)."""
        return self.scores_from_coords(np.asarray(z, dtype=np.float64) @ self.basis.T)

    def posterior(self, s: np.ndarray) -> np.ndarray:
        """``P(m_i = 1 | s)``, shape (n, K)."""
        return ndtr((s - self.thresholds) / self.noise)


class SyntheticGenerator:
    """The model as a generator: ``z -> scores (n, K)`` (see the module docstring)."""

    def __init__(self, model: SyntheticModel) -> None:
        self.model = model
        self.latent_dim = int(model.basis.shape[1])
        self.batch_size = 65536

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` seeded draws of ``N(0, I_d)``."""
        return gaussian_sample(n, self.latent_dim, seed)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The attributes' scores ``s(z)``, shape (n, K), float32."""
        zn = np.asarray(torch.as_tensor(z).detach().cpu().numpy(), dtype=np.float64)
        return torch.as_tensor(self.model.scores(zn), dtype=torch.float32)


class _Posterior:
    """The exact observation classifier ``x -> {name: P(m = 1 | x)}``, each attribute's through
    its temperature ``sigmoid(logit(P) / T)`` (``T = 1``: the posterior itself)."""

    def __init__(self, model: SyntheticModel, temperatures: list[float] | None = None) -> None:
        self.model = model
        self.temperatures = temperatures or [1.0] * len(model.names)

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        s = np.asarray(torch.as_tensor(x).detach().cpu().numpy(), dtype=np.float64)
        p = self.model.posterior(s)
        out = {}
        for i, name in enumerate(self.model.names):
            t = self.temperatures[i]
            if t == 1.0:
                out[name] = p[:, i]
            else:  # logit of Phi(u) without overflow: log Phi(u) - log Phi(-u)
                u = (s[:, i] - self.model.thresholds[i]) / self.model.noise
                out[name] = expit((log_ndtr(u) - log_ndtr(-u)) / t)
        return out


# --------------------------------------------------------------------------- options


def options(config: ExperimentConfig) -> dict[str, Any]:
    """The validated ``[synthetic]`` section."""
    check_sections(config, {"synthetic": DEFAULTS}, "synthetic")
    s, d = Section(config.kind_options.get("synthetic"), source=config.source,
                   name="synthetic"), DEFAULTS
    names = list(s.texts("attributes", tuple(d["attributes"])))
    if len(names) < 2 or not all(a.isidentifier() for a in names) or len(set(names)) != len(names):
        raise ConfigError(f"{s.where('attributes')} = {names!r}: give at least two distinct "
                          'names, e.g. ["m1", "m2"]')
    o: dict[str, Any] = {"dim": s.integer("dim", d["dim"], minimum=1, maximum=100_000),
                         "n": s.integer("n", d["n"], minimum=100, maximum=10**7),
                         "attributes": names}
    if o["dim"] < 2 * len(names) + 1:
        raise ConfigError(f"{s.where('dim')} = {o['dim']}: need at least 2 x attributes + 1 = "
                          f"{2 * len(names) + 1} dimensions")
    o["cos"] = s.number("cos", d["cos"], minimum=0.0, maximum=0.99)
    o["score"] = s.text("score", d["score"], choices=SCORES)
    o["curvature"] = s.number("curvature", d["curvature"], minimum=0.0, maximum=10.0)
    o["noise"] = s.number("noise", d["noise"], minimum=1e-3, maximum=10.0)
    rates = s.numbers("positive_rate", d["positive_rate"])
    if len(rates) != len(names) or not all(0.01 <= r <= 0.99 for r in rates):
        raise ConfigError(f"{s.where('positive_rate')} = {list(rates)!r}: give one share in "
                          f"[0.01, 0.99] per attribute ({len(names)})")
    o["positive_rate"] = [float(r) for r in rates]
    o["mechanism"] = s.raw("mechanism", d["mechanism"])  # a string or a list: _edges checks it
    o["strength"] = s.number("strength", d["strength"], minimum=-20.0, maximum=20.0)
    o["sharpness"] = s.number("sharpness", d["sharpness"], minimum=0.01, maximum=100.0)
    temps = s.raw("judge_temperature", None)
    if temps is None:
        temps = [1.0] * len(names)
    if (not isinstance(temps, list) or len(temps) != len(names)
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0.01 <= t <= 100
                       for t in temps)):
        raise ConfigError(f"{s.where('judge_temperature')} = {temps!r}: give one temperature in "
                          f"[0.01, 100] per attribute ({len(names)}), 1 for the exact posterior")
    o["judge_temperature"] = [float(t) for t in temps]
    s.finish()
    o["edges"] = _edges(o["mechanism"], names, s.where("mechanism"))
    return {key: o[key] for key in (*DEFAULTS, "edges")}


def _edges(mechanism: Any, names: list[str], where: str) -> tuple[tuple[int, int], ...]:
    items = [mechanism] if isinstance(mechanism, str) else mechanism
    if not isinstance(items, list) or not all(isinstance(m, str) for m in items):
        raise ConfigError(f"{where} = {mechanism!r}: write \"none\" or DAG edges like \"m1->m2\"")
    edges: list[tuple[int, int]] = []
    for item in items:
        if item.strip() == "none":
            continue
        parts = [p.strip() for p in item.split("->")]
        if len(parts) != 2 or parts[0] not in names or parts[1] not in names or parts[0] == parts[1]:
            raise ConfigError(f"{where}: {item!r} is not an edge between two of the attributes "
                              f"{', '.join(names)}; write e.g. \"{names[0]}->{names[1]}\"")
        edges.append((names.index(parts[0]), names.index(parts[1])))
    if len({e for _, e in edges}) != len(edges) or any(c == e2 for c, _ in edges for _, e2 in edges):
        raise ConfigError(f"{where} = {mechanism!r}: each attribute may be the effect of one edge, "
                          "and an effect may not also be a cause (chains are not supported)")
    return tuple(edges)


# --------------------------------------------------------------------------- model


def build_model(o: dict[str, Any], seed: int) -> SyntheticModel:
    """The planted directions and the label thresholds for the options ``o``."""
    k, d = len(o["attributes"]), o["dim"]
    rng = np.random.default_rng([seed, 1])
    basis, _ = np.linalg.qr(rng.standard_normal((d, 2 * k + 1)))
    model = SyntheticModel(names=tuple(o["attributes"]), basis=basis.T, cos=o["cos"],
                           thresholds=np.zeros(k), edges=o["edges"], score=o["score"],
                           curvature=o["curvature"], noise=o["noise"], strength=o["strength"],
                           sharpness=o["sharpness"])
    # Thresholds: scores depend on z only through its coordinates in the orthonormal basis, which
    # are N(0, I) too, so draw those. A cause's threshold is needed before its effect's score:
    # the first pass fixes the roots, the second the effects (no chains).
    coords = np.random.default_rng([seed, 2]).standard_normal((THRESHOLD_DRAWS, 2 * k + 1))
    eps = np.random.default_rng([seed, 3]).standard_normal((THRESHOLD_DRAWS, k))
    t = np.zeros(k)
    for _ in range(2):
        noisy = model.scores_from_coords(coords, t) + o["noise"] * eps
        t = np.array([np.quantile(noisy[:, i], 1.0 - rate)
                      for i, rate in enumerate(o["positive_rate"])])
    return dataclasses.replace(model, thresholds=t)


def sample_data(model: SyntheticModel, n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` annotated latents and their noisy labels."""
    d, k = model.basis.shape[1], len(model.names)
    z = np.random.default_rng([seed, 4]).standard_normal((n, d))
    eps = np.random.default_rng([seed, 5]).standard_normal((n, k))
    labels = (model.scores(z) + model.noise * eps > model.thresholds).astype(np.int64)
    return z, {name: labels[:, i] for i, name in enumerate(model.names)}


def setup(config: ExperimentConfig, *, cache_dir: Path) -> ExperimentSetup:  # noqa: ARG001
    """Build the planted model, draw the annotated data, hand both to the engine."""
    o = options(config)
    for m1, m2 in config.cage.pairs:
        for a in (m1, m2):
            if a not in o["attributes"]:
                raise ConfigError(f"{config.where('cage', 'pairs')}: unknown attribute {a!r}; "
                                  f"[synthetic] attributes are {', '.join(o['attributes'])}")
    model = build_model(o, config.seed)
    z, labels = sample_data(model, o["n"], config.seed)
    info = {"synthetic": {
        "thresholds": model.thresholds.tolist(),
        "directions_cos": float(model.directions[0] @ model.directions[1]),
        "mechanism": [f"{model.names[c]}->{model.names[e]}" for c, e in model.edges] or ["none"],
        "positive_rate_data": {a: float(v.mean()) for a, v in labels.items()},
        "judge_temperature": o["judge_temperature"],
    }}
    return ExperimentSetup(generator=SyntheticGenerator(model), data_latents=z, attributes=labels,
                           observation_classifier=_Posterior(model, o["judge_temperature"]),
                           info=info,
                           observation_accuracy={}, observation_sizes={})
