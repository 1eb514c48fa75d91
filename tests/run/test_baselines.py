"""Causal-discovery baselines (paper Appendix D): planted directions are recovered."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest

from cage.run.baselines import INSTALL_HINT, METHODS, run_baselines

MISSING = [name for name, module in (("causal-learn", "causallearn"), ("gcastle", "castle"))
           if importlib.util.find_spec(module) is None]
needs_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"the 'baselines' extra is not installed ({', '.join(MISSING)} "
                          f"missing): {INSTALL_HINT}")


def linear_non_gaussian(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """cause ~ U(-1, 1); effect = cause + uniform noise (linear, non-Gaussian)."""
    rng = np.random.default_rng(seed)
    cause = rng.uniform(-1, 1, n)
    return cause, cause + rng.uniform(-0.5, 0.5, n)


def additive_noise(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """cause ~ U(-1, 1); effect = cause + 0.8 cause^3 + uniform noise (nonlinear ANM)."""
    rng = np.random.default_rng(seed)
    cause = rng.uniform(-1, 1, n)
    return cause, cause + 0.8 * cause**3 + rng.uniform(-0.4, 0.4, n)


@needs_extra
@pytest.mark.parametrize("plant", [linear_non_gaussian, additive_noise])
@pytest.mark.parametrize("swap", [False, True])
def test_each_method_recovers_a_planted_direction_in_both_orders(plant, swap):
    cause, effect = plant(seed=3)
    names = ("effect", "cause") if swap else ("cause", "effect")
    p1, p2 = (effect, cause) if swap else (cause, effect)
    records = run_baselines(p1, p2, names, seed=0, anm_samples=300)
    want = "<-" if swap else "->"
    assert [r.method for r in records] == list(METHODS)
    for r in records:
        assert r.available and r.package and (r.m1, r.m2) == names
        assert r.verdict == want, r
        assert (r.score < 0) == swap, r
    anm = records[1]
    forward, backward = (anm.p_backward, anm.p_forward) if swap else (anm.p_forward, anm.p_backward)
    assert forward > 0.05 >= backward
    assert math.isnan(records[0].p_forward) and math.isnan(records[2].p_forward)


@needs_extra
def test_independent_attributes_get_no_direction_from_anm_and_notears():
    """ANM (a test at a level) and NOTEARS (a weight threshold) find nothing; LiNGAM always
    orders the pair and its adaptive lasso may keep a weak spurious edge (as with this seed)."""
    rng = np.random.default_rng(5)
    lingam, anm, notears = run_baselines(rng.uniform(size=800), rng.uniform(size=800),
                                         ("a", "b"), anm_samples=200)
    assert anm.verdict == notears.verdict == "?" and anm.note and notears.note
    assert anm.p_forward > 0.05 and anm.p_backward > 0.05
    assert abs(lingam.score) < 0.15


@needs_extra
def test_notears_follows_the_variance_order_lingam_does_not():
    """The caveat of docs/baselines.md: shrink the effect's variance below the cause's and
    linear NOTEARS (a least-squares score) reverses its arrow; LiNGAM is scale-free."""
    rng = np.random.default_rng(1)
    cause = rng.uniform(-1, 1, 1500)
    effect = 0.3 * cause + rng.uniform(-0.15, 0.15, 1500)
    lingam, notears = run_baselines(cause, effect, ("c", "e"), methods=("LiNGAM", "NOTEARS"))
    assert lingam.verdict == "->" and notears.verdict == "<-"


@needs_extra
def test_same_seed_same_records_and_anm_subsamples_by_seed():
    cause, effect = additive_noise(seed=4, n=600)
    a = run_baselines(cause, effect, seed=2, methods=("ANM",), anm_samples=150)
    b = run_baselines(cause, effect, seed=2, methods=("ANM",), anm_samples=150)
    c = run_baselines(cause, effect, seed=3, methods=("ANM",), anm_samples=150)
    assert repr(a) == repr(b) and a[0].n == 150
    assert (a[0].p_forward, a[0].p_backward) != (c[0].p_forward, c[0].p_backward)


@needs_extra
def test_running_the_baselines_leaves_the_process_as_it_was():
    """gcastle sets torch's default dtype to float64 and configures the root logger when
    imported; run_baselines must leave neither behind, and print nothing."""
    code = (
        "import logging, warnings, numpy as np, torch\n"
        "from cage.run.baselines import run_baselines\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.uniform(-1, 1, 300)\n"
        "rs = run_baselines(x, x + rng.uniform(-0.5, 0.5, 300), anm_samples=100)\n"
        "assert [r.available for r in rs] == [True] * 3, rs\n"
        "assert torch.get_default_dtype() == torch.float32, torch.get_default_dtype()\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert logging.getLogger().level == logging.WARNING\n"
        "logging.getLogger('after').info('must not print')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_missing_extra_gives_unavailable_records(monkeypatch):
    for module in ("causallearn", "causallearn.search.FCMBased.lingam",
                   "causallearn.search.FCMBased.ANM.ANM", "castle", "castle.algorithms"):
        monkeypatch.setitem(__import__("sys").modules, module, None)
    cause, effect = linear_non_gaussian(seed=0, n=100)
    records = run_baselines(cause, effect, ("thick", "bright"))
    assert [r.method for r in records] == list(METHODS)
    for r in records:
        assert not r.available and r.verdict == "?" and math.isnan(r.score)
        assert r.note.endswith(INSTALL_HINT) and (r.m1, r.m2) == ("thick", "bright")


def test_constant_attribute_and_bad_input():
    records = run_baselines(np.zeros(50), np.linspace(0, 1, 50))
    assert {r.verdict for r in records} == {"?"}
    assert all("constant" in r.note for r in records)
    with pytest.raises(ValueError, match="equal length"):
        run_baselines(np.zeros(30), np.zeros(31))
    with pytest.raises(ValueError, match="at least 20"):
        run_baselines(np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="finite"):
        run_baselines(np.r_[np.nan, np.arange(29.0)], np.arange(30.0))
    with pytest.raises(ValueError, match="unknown method"):
        run_baselines(np.arange(30.0), np.arange(30.0), methods=("PC",))
