"""The call rules: every branch of the controlled rule, the paper's rule, the centred p-value."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cage.engine.rules import (
    REASONS,
    Evidence,
    centred_p_value,
    decide_all,
    decide_controlled,
    decide_paper,
    reason_text,
)

LEVEL = 0.05
#: Evidence that passes every control: an eq. 9 arrow m1 -> m2.
PASS = Evidence(delta_tau=0.2, p_gate_12=0.01, p_gate_21=0.01, p_delta_tau=0.01,
                p_delta_tau_centred=0.02, p_geometry=0.02, balance_delta_tau=(0.1, 0.05, 0.3),
                sign_stable=True, latent_outcome=False)


def test_an_arrow_when_every_control_passes():
    assert decide_controlled(PASS, LEVEL) == ("->", ())
    flipped = dataclasses.replace(PASS, delta_tau=-0.2, balance_delta_tau=(-0.1, -0.05, -0.3))
    assert decide_controlled(flipped, LEVEL) == ("<-", ())


@pytest.mark.parametrize("change, reason", [
    ({"latent_outcome": True}, "geometry-only"),
    ({"p_geometry": 0.2}, "rotation-null"),
    ({"p_geometry": float("nan")}, "rotation-null"),
    ({"p_delta_tau_centred": 0.06}, "not-significant"),
    ({"balance_delta_tau": (0.1, -0.01, 0.3)}, "balance-driven"),
    ({"balance_delta_tau": (-0.1, 0.05, 0.3)}, "balance-driven"),
    ({"sign_stable": False}, "alpha-unstable"),
])
def test_each_failed_control_gives_a_question_mark_and_its_reason(change, reason):
    call, reasons = decide_controlled(dataclasses.replace(PASS, **change), LEVEL)
    assert call == "?" and reasons == (reason,)


def test_every_failed_control_is_listed_in_order():
    ev = dataclasses.replace(PASS, latent_outcome=True, p_delta_tau_centred=0.5,
                             balance_delta_tau=(0.1, -0.2, 0.1), sign_stable=False,
                             calibration_delta_tau=(0.1, -0.1), falsified=True)
    call, reasons = decide_controlled(ev, LEVEL)
    assert call == "?" and reasons == tuple(r for r in REASONS[1:] if r != "rotation-null")
    assert reason_text(reasons) == ("geometry-only+not-significant+balance-driven+"
                                    "calibration-driven+alpha-unstable+falsified")


def test_eq9_names_the_rotation_null_not_the_geometry():
    """eq. 8's reason is its geometry; eq. 9's is the rotation null, each with its own name."""
    ev = dataclasses.replace(PASS, p_geometry=0.5, p_delta_tau_centred=0.5)
    assert decide_controlled(ev, LEVEL) == ("?", ("rotation-null", "not-significant"))
    latent = dataclasses.replace(ev, latent_outcome=True)
    assert decide_controlled(latent, LEVEL) == ("?", ("geometry-only", "not-significant"))


def test_no_effect_wins_over_everything():
    ev = dataclasses.replace(PASS, p_gate_12=0.06, p_gate_21=0.5, latent_outcome=True)
    assert decide_controlled(ev, LEVEL) == ("⊥", ("no-effect",))
    # One significant GATE is enough to look further.
    assert decide_controlled(dataclasses.replace(PASS, p_gate_12=0.06), LEVEL)[0] == "->"


def test_the_level_is_inclusive():
    ev = dataclasses.replace(PASS, p_delta_tau_centred=LEVEL, p_geometry=LEVEL)
    assert decide_controlled(ev, LEVEL)[0] == "->"


def test_the_paper_rule_ignores_the_controls():
    ev = dataclasses.replace(PASS, latent_outcome=True, balance_delta_tau=(-1.0, -1.0, -1.0),
                             p_delta_tau_centred=0.9, p_geometry=0.9, sign_stable=False)
    assert decide_paper(ev, LEVEL) == ("->", ())
    assert decide_paper(dataclasses.replace(ev, p_delta_tau=0.2), LEVEL) == ("?", ("not-significant",))
    assert decide_paper(dataclasses.replace(ev, p_gate_12=0.5, p_gate_21=0.5), LEVEL) == \
        ("⊥", ("no-effect",))
    both = decide_all(ev, LEVEL)
    assert both["paper"][0] == "->" and both["controlled"][0] == "?"


def test_centred_p_value_by_hand():
    null = np.array([0.10, 0.12, 0.14, 0.16, 0.18])  # median 0.14
    # |obs - 0.14| = 0.05: no draw is that far (the farthest is 0.04): (1 + 0) / 6.
    assert centred_p_value(null, 0.19) == pytest.approx(1 / 6)
    # 0.0 is 0.14 from the centre, but the uncentred two-sided test would call it unremarkable.
    assert centred_p_value(null, 0.0) == pytest.approx(1 / 6)
    # |0.16 - 0.14| = 0.02: draws 0.12, 0.16 (0.02) and 0.10, 0.18 (0.04) are as far: (1 + 4) / 6.
    assert centred_p_value(null, 0.16) == pytest.approx(5 / 6)
    assert centred_p_value(np.array([np.nan]), 0.3) == 1.0


def test_centred_p_value_is_uniform_under_the_null():
    rng = np.random.default_rng(0)
    ps = np.array([centred_p_value(rng.normal(0.3, 1, 99), rng.normal(0.3, 1)) for _ in range(4000)])
    assert abs(np.mean(ps <= 0.05) - 0.05) < 0.012
    assert abs(np.mean(ps <= 0.2) - 0.2) < 0.02


def test_a_calibration_sign_change_gives_its_reason():
    ev = dataclasses.replace(PASS, calibration_delta_tau=(0.1, 0.02, -0.01))
    assert decide_controlled(ev, LEVEL) == ("?", ("calibration-driven",))
    kept = dataclasses.replace(PASS, calibration_delta_tau=(0.1, 0.02, 0.3))
    assert decide_controlled(kept, LEVEL) == ("->", ())
    # Not computed (an empty tuple): the check passes, as before the control existed.
    assert decide_controlled(dataclasses.replace(PASS, calibration_delta_tau=()), LEVEL)[0] == "->"
    # The paper's rule does not read it.
    assert decide_paper(ev, LEVEL) == ("->", ())


def test_a_falsified_experiment_reports_its_arrows_as_question_marks():
    ev = dataclasses.replace(PASS, falsified=True)
    assert decide_controlled(ev, LEVEL) == ("?", ("falsified",))
    # No effect stays no effect, and the paper's reading is still reported beside it.
    assert decide_controlled(dataclasses.replace(ev, p_gate_12=0.5, p_gate_21=0.5), LEVEL)[0] == "⊥"
    assert decide_paper(ev, LEVEL) == ("->", ())
