"""What CAGE computes for one run: per-pair verdicts (:class:`PairDirection`) and the whole result
(:class:`CageResult`). Plain records, so that the pipeline writes them and the report and plots
read them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cage.config.experiment import ExperimentConfig
from cage.engine.classifiers import LatentClassifier


@dataclass(frozen=True)
class PairDirection:
    """CAGE's verdict on one attribute pair for one outcome variant (a row of directions.csv).

    ``gate_12 = GATE(m1 -> m2)``, ``gate_21 = GATE(m2 -> m1)``, ``delta_tau = |gate_12| - |gate_21|``
    at the headline ``alpha``; ``offset_1``/``offset_2`` are the signed distances ``-b/|w|`` of the
    two decision hyperplanes from the prior mean (latent units); ``p_*`` from the decision null
    (``null``), ``p_values[kind]`` holds ``(p_gate_12, p_gate_21, p_delta_tau)`` for every null kind
    computed, the rotation null included. ``direction`` is the call of ``rule``
    (:mod:`cage.engine.rules`) and ``reason`` why it is not an arrow; ``direction_paper`` and
    ``direction_controlled`` (with ``reason_controlled``) are both rules' calls;
    ``cause``/``effect`` are empty for ``⊥`` and ``?``.

    The controls: ``*_geometric``, eq. 8 under ``N(0, I)`` predicted from the two hyperplanes
    alone (:func:`cage.engine.geometry.predicted_delta_tau`); ``p_delta_tau_centred``, delta tau
    against the decision null around the null's median; ``p_delta_tau_rotation``, against the
    rotation null; ``delta_tau_balanced`` / ``delta_tau_m1_rare`` / ``delta_tau_m2_rare``,
    delta tau with the outcome thresholds moved so that 50/50, 25/50, 50/25 % of the prior samples
    read 1 for (m1, m2); ``balance_sign_stable``, all three have the observed sign;
    ``delta_tau_calibration_min`` / ``_max``, the extremes of delta tau over the calibration control's
    recalibrations of the two outcomes (:func:`cage.engine.variants.calibration_delta_taus`), reached at
    ``calibration_min_at`` / ``calibration_max_at`` (e.g. ``thick T=1 / bright T=4``);
    ``delta_tau_labels``, delta tau with both outcomes as hard labels; ``calibration_sign_stable``,
    every recalibration keeps the observed sign. ``level`` is the significance level each test of
    the call used (``[cage] level`` corrected for the study's pairs x variants). ``n_null`` is
    the number of draws per null kind; ``gate_12_null_k`` / ``gate_21_null_k`` are the GATEs on the
    ``n_null_k`` latents behind the nulls, the statistics every p-value compares (equal to the
    GATEs for eq. 8).

    ``baselines`` holds the causal-discovery baselines' verdicts
    (:class:`cage.run.baselines.BaselineVerdict`, in the m1/m2 orientation) on the probabilities of
    the prior samples in this variant's space (latent classifiers for eq. 8, the observation
    classifier on decoded samples for eq. 9); empty when ``[cage] baselines = false``.
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
    rule: str = "controlled"
    reason: str = ""
    direction_paper: str = ""
    direction_controlled: str = ""
    reason_controlled: str = ""
    gate_12_geometric: float = float("nan")
    gate_21_geometric: float = float("nan")
    delta_tau_geometric: float = float("nan")
    p_delta_tau_centred: float = float("nan")
    p_delta_tau_rotation: float = float("nan")
    delta_tau_balanced: float = float("nan")
    delta_tau_m1_rare: float = float("nan")
    delta_tau_m2_rare: float = float("nan")
    balance_sign_stable: bool = False
    n_null: int = 0
    gate_12_null_k: float = float("nan")
    gate_21_null_k: float = float("nan")
    baselines: tuple = ()
    delta_tau_calibration_min: float = float("nan")
    delta_tau_calibration_max: float = float("nan")
    calibration_min_at: str = ""
    calibration_max_at: str = ""
    delta_tau_labels: float = float("nan")
    calibration_sign_stable: bool = False
    level: float = float("nan")


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
    decoded: int = 0

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
