"""What CAGE computes for one run: per-pair verdicts (:class:`PairDirection`) and the whole result
(:class:`CageResult`). Plain records, so that the pipeline writes them and the report and plots
read them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cage.config import ExperimentConfig
from cage.engine.classifiers import LatentClassifier


@dataclass(frozen=True)
class PairDirection:
    """CAGE's verdict on one attribute pair for one outcome variant (a row of directions.csv).

    ``gate_12 = GATE(m1 -> m2)``, ``gate_21 = GATE(m2 -> m1)``, ``delta_tau = |gate_12| - |gate_21|``
    at the headline ``alpha``; ``offset_1``/``offset_2`` are the signed distances ``-b/|w|`` of the
    two decision hyperplanes from the prior mean (latent units); ``p_*`` from the decision null (``null``), ``p_values[kind]`` holds
    ``(p_gate_12, p_gate_21, p_delta_tau)`` for every null kind computed. ``direction`` follows
    :func:`cage.engine.effects.decide`; ``cause``/``effect`` are empty for ``⊥`` and ``?``.
    """

    m1: str
    m2: str
    outcome: str
    alpha: float
    k: int
    gate_12: float
    gate_21: float
    delta_tau: float
    null: str
    p_gate_12: float
    p_gate_21: float
    p_delta_tau: float
    p_values: dict[str, tuple[float, float, float]]
    direction: str
    cause: str
    effect: str
    delta_tau_significant: bool
    sign_stable: bool
    cos_normals: float
    norm_w1: float
    norm_w2: float
    acc_1: float
    acc_2: float
    offset_1: float
    offset_2: float
    separable: bool
    mmd: float
    p_mmd: float
    mmd_2: float
    p_mmd_2: float
    n_null_k: int


@dataclass
class CageResult:
    """Everything CAGE computed; see the module docstring for the contract."""

    config: ExperimentConfig
    classifiers: dict[str, LatentClassifier]
    directions: list[PairDirection]
    prior_latents: np.ndarray
    interventions: dict[tuple[str, str], dict[str, np.ndarray]]
    null_directions: dict[tuple[str, str, str, str], np.ndarray]
    sweep_rows: list[dict[str, Any]]
    null_rows: list[dict[str, Any]]
    classifier_rows: list[dict[str, Any]]
    seeds: dict[str, int]
    test_masks: dict[str, np.ndarray] = field(default_factory=dict)

    def direction_for(self, m1: str, m2: str, outcome: str | None = None) -> PairDirection:
        """The record of pair ``(m1, m2)`` (either order given) for ``outcome`` (default: the
        observation variant when computed, else latent)."""
        rows = [d for d in self.directions if {d.m1, d.m2} == {m1, m2}]
        if not rows:
            raise KeyError(f"no pair ({m1}, {m2}) in this result")
        if outcome is None:
            outcome = "observation" if any(r.outcome == "observation" for r in rows) else "latent"
        for r in rows:
            if r.outcome == outcome:
                return r
        raise KeyError(f"pair ({m1}, {m2}) has no {outcome!r} outcome in this result")
