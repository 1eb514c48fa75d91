"""The calibration control: delta tau with each judge recalibrated (monotone, accuracy kept).

The ground truth is an exact posterior passed through a temperature: a judge with the posterior's
decisions (and so its accuracy) whose probabilities are too sharp or too flat. A sign of delta tau
made by that temperature must be flagged ``calibration-driven``; a sign that no recalibration can
change (the reverse GATE is exactly zero) must be left alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import expit, log_ndtr
from scipy.stats import norm

from cage.config.experiment import config_from_dict
from cage.engine.rules import CALIBRATION_TEMPERATURES, Evidence, decide_controlled
from cage.engine.variants import calibration_delta_taus, calibration_label, recalibrate
from cage.experiments import synthetic

K = 200_000
NOISE = 1.0
LEVEL = 0.05


def _judge_logit(score: np.ndarray, temperature: float) -> np.ndarray:
    """Logit of the exact posterior ``Phi(score / noise)`` through ``temperature``."""
    u = score / NOISE
    return (log_ndtr(u) - log_ndtr(-u)) / temperature


def _outcomes(d12: float, d21: float, t1: float, t2: float, seed: int = 0):
    """Per-latent judge logits: m2's under do(m1 +/-) (score shifted by +/- d12) and m1's under
    do(m2 +/-), each attribute's score N(0, 1) over the prior latents."""
    rng = np.random.default_rng(seed)
    s1, s2 = rng.standard_normal(K), rng.standard_normal(K)
    return (_judge_logit(s2 + d12, t2), _judge_logit(s2 - d12, t2),
            _judge_logit(s1 + d21, t1), _judge_logit(s1 - d21, t1))


def _delta_tau(outcomes) -> float:
    p12, n12, p21, n21 = (expit(x) for x in outcomes)
    return abs(np.mean(p12 - n12)) - abs(np.mean(p21 - n21))


def _evidence(dt: float, calibration) -> Evidence:
    """Evidence that passes every other control, so only the calibration control can object."""
    s = float(np.sign(dt))
    return Evidence(delta_tau=dt, p_gate_12=0.001, p_gate_21=0.001, p_delta_tau=0.001,
                    p_delta_tau_centred=0.001, p_geometry=0.001,
                    balance_delta_tau=(s, s, s), sign_stable=True, latent_outcome=False,
                    calibration_delta_tau=tuple(v for _, v in calibration))


def test_closed_forms_of_the_recalibrated_gates():
    # Exact posterior: GATE = P(|s - noise e| < d) = 2 Phi(d / sqrt(1 + noise^2)) - 1;
    # hard labels 1[s > 0]: GATE = P(|s| < d) = 2 Phi(d) - 1.
    d = 0.4
    out = _outcomes(d, d, 1.0, 1.0)
    cal = dict(calibration_delta_taus(*out))
    g = float(np.mean(expit(out[0]) - expit(out[1])))
    assert g == pytest.approx(2 * norm.cdf(d / np.sqrt(1 + NOISE ** 2)) - 1, abs=3e-3)
    hard12 = float(np.mean(recalibrate(out[0], 0.0) - recalibrate(out[1], 0.0)))
    assert hard12 == pytest.approx(2 * norm.cdf(d) - 1, abs=3e-3)
    # (T1, T2) = (1, labels): m2's outcome hard, m1's as given.
    g21 = float(np.mean(expit(out[2]) - expit(out[3])))
    assert cal[(1.0, 0.0)] == pytest.approx(hard12 - g21, abs=1e-12)
    assert (1.0, 1.0) not in cal and len(cal) == len(CALIBRATION_TEMPERATURES) ** 2 - 1
    # A temperature keeps every decision: the accuracy of the judge cannot change.
    for t in CALIBRATION_TEMPERATURES:
        np.testing.assert_array_equal(recalibrate(out[0], t) > 0.5, out[0] > 0)
    assert calibration_label("thick", "bright", (1.0, 0.0)) == "thick T=1 / bright labels"


@pytest.mark.parametrize("d12, d21, t2", [
    (0.30, 0.35, 0.25),   # truth: delta tau < 0; m2's judge too sharp reads it > 0
    (0.50, 0.30, 4.0),    # truth: delta tau > 0; m2's judge too flat reads it < 0
])
def test_a_planted_calibration_driven_sign_is_flagged(d12, d21, t2):
    exact = _delta_tau(_outcomes(d12, d21, 1.0, 1.0))
    seen = _outcomes(d12, d21, 1.0, t2)
    dt = _delta_tau(seen)
    assert np.sign(dt) == -np.sign(exact) and abs(dt) > 0.01  # the temperature made the sign
    calibration = calibration_delta_taus(*seen)
    # Undoing the temperature (1 / t2 is on the grid) recovers the exact posterior's sign.
    undo = dict(calibration)[(1.0, 1.0 / t2)]
    assert undo == pytest.approx(exact, abs=1e-9)
    call, reasons = decide_controlled(_evidence(dt, calibration), LEVEL)
    assert call == "?" and reasons == ("calibration-driven",)


@pytest.mark.parametrize("t1, t2", [(1.0, 1.0), (1.0, 4.0), (0.25, 1.0), (4.0, 0.25)])
def test_a_calibration_invariant_sign_is_left_alone(t1, t2):
    # m1 -> m2 only: do(m2) does not move m1's score, so GATE(m2 -> m1) is 0 under any judge.
    seen = _outcomes(0.3, 0.0, t1, t2)
    dt = _delta_tau(seen)
    calibration = calibration_delta_taus(*seen)
    assert dt > 0.01 and all(v > 0 for _, v in calibration)
    assert decide_controlled(_evidence(dt, calibration), LEVEL) == ("->", ())


def test_label_outcomes_are_unchanged_by_any_temperature():
    out = _outcomes(0.3, 0.2, 1.0, 1.0)
    values = {round(v, 12) for _, v in calibration_delta_taus(*out, scale="label")}
    assert len(values) == 1


def test_the_synthetic_judge_is_the_posterior_through_its_temperature():
    raw = {"experiment": {"name": "syn", "kind": "synthetic", "seed": 0},
           "cage": {"pairs": [["m1", "m2"]], "k": 100, "n_null": 5},
           "synthetic": {"dim": 8, "n": 200, "judge_temperature": [1.0, 4.0]}}
    setup = synthetic.setup(config_from_dict(raw), cache_dir=None)
    x = setup.generator.decode(setup.generator.sample(5000, 1))
    exact = setup.generator.model.posterior(x.numpy().astype(np.float64))
    got = setup.observation_classifier(x)
    np.testing.assert_allclose(got["m1"], exact[:, 0])
    logit = np.log(exact[:, 1]) - np.log1p(-exact[:, 1])
    np.testing.assert_allclose(got["m2"], expit(logit / 4.0), atol=1e-9)
    np.testing.assert_array_equal(got["m2"] > 0.5, exact[:, 1] > 0.5)


def test_an_invalid_judge_temperature_is_one_line():
    from cage_eval.errors import ConfigError

    raw = {"experiment": {"name": "syn", "kind": "synthetic", "seed": 0},
           "cage": {"pairs": [["m1", "m2"]]}, "synthetic": {"judge_temperature": [1.0]}}
    with pytest.raises(ConfigError, match=r"\[synthetic\] judge_temperature = \[1.0\]"):
        synthetic.setup(config_from_dict(raw), cache_dir=None)


def test_evidence_defaults_keep_old_callers_working():
    ev = dataclasses.replace(_evidence(0.1, ()), calibration_delta_tau=())
    assert decide_controlled(ev, LEVEL) == ("->", ())
