"""The frozen analysis plan and exact-binomial power against brute force."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from crowd_fixtures import make_run_dir
from scipy import stats

from analysis.plan import AnalysisPlan, freeze_plan, load_plan, plan_overrides
from analysis.power import (
    exact_power,
    judgements_needed,
    majority_rates,
    per_test_level,
    plan_power,
    power_summary,
    two_sided_pvalues,
)
from cage_eval import runs
from cage_eval.errors import ConfigError, RunDirError


def test_freeze_writes_once_and_never_overwrites(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1, size=8)
    assert load_plan(run) is None
    path = freeze_plan(run, AnalysisPlan(correction="holm"))
    assert path == run / runs.ANALYSIS_PLAN
    data = json.loads(path.read_text())
    assert data["plan_version"] == 2 and data["plan"]["correction"] == "holm"
    assert data["frozen_at"].endswith("Z")
    before = path.read_bytes()
    assert freeze_plan(run, AnalysisPlan(correction="none")) == path
    assert path.read_bytes() == before
    assert load_plan(run) == AnalysisPlan(correction="holm")
    assert freeze_plan(run) == path  # default plan: still the frozen one


def test_corrupt_or_foreign_plan_is_refused(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1, size=8)
    path = run / runs.ANALYSIS_PLAN
    path.write_text("{not json")
    with pytest.raises(RunDirError, match="analysis_plan.json: unreadable"):
        load_plan(run)
    with pytest.raises(RunDirError):
        freeze_plan(run)  # validated, not silently replaced
    path.write_text(json.dumps({"plan_version": 1, "plan": {"correction": "sidak"}}))
    with pytest.raises(RunDirError, match="correction='sidak'"):
        load_plan(run)
    path.write_text(json.dumps({"plan_version": 1, "plan": {"colour": "red"}}))
    with pytest.raises(RunDirError, match="unknown field"):
        load_plan(run)


@pytest.mark.parametrize("field,value", [("alpha", 0.0), ("alpha", 1.5), ("family", "dag"),
                                         ("attention_min_accuracy", 2), ("duplicates", "drop"),
                                         ("exclude_rejected", "yes")])
def test_plan_validates_its_fields(field, value):
    with pytest.raises(ConfigError, match=field):
        AnalysisPlan(**{field: value})


def test_plan_overrides_lists_departures():
    a = AnalysisPlan()
    assert plan_overrides(a, a) == []
    assert plan_overrides(a, a.replace(alpha=0.01, family="all")) == [
        ("family", "setting", "all"), ("alpha", 0.05, 0.01)]


def brute_power(n: int, p: float, level: float) -> float:
    pmf0 = [math.comb(n, j) * 0.5**n for j in range(n + 1)]
    reject = [k for k in range(n + 1)
              if sum(q for q in pmf0 if q <= pmf0[k] * (1 + 1e-7)) <= level]
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in reject)


@pytest.mark.parametrize("n,p,level", [(10, 0.8, 0.05), (30, 0.65, 0.0125), (57, 0.6, 0.05),
                                       (100, 0.3, 0.01)])
def test_exact_power_equals_brute_force(n, p, level):
    assert exact_power(n, p, level) == pytest.approx(brute_power(n, p, level), rel=1e-9)


def test_pvalues_match_scipy():
    for n in (5, 40, 301):
        assert np.allclose(two_sided_pvalues(n),
                           [stats.binomtest(k, n).pvalue for k in range(n + 1)], rtol=1e-10)


def test_judgements_needed_is_the_first_n_reaching_the_target():
    level = per_test_level(0.05, 4, "bonferroni")
    n = judgements_needed(0.7, level)
    assert exact_power(n, 0.7, level) >= 0.8
    assert all(exact_power(m, 0.7, level) < 0.8 for m in range(1, n))
    # A stronger effect needs fewer judgements; a stricter level more.
    assert judgements_needed(0.8, level) < n < judgements_needed(0.7, level / 10)


def test_plan_power_pairs_and_majority():
    r = plan_power(4, p_expected=0.65, annotators=3)
    assert r.level == 0.0125 and r.pooled_judgements == 3 * r.pooled_pairs
    assert exact_power(r.pooled_judgements, 0.65, r.level) >= 0.8
    assert exact_power(r.pooled_judgements - 3, 0.65, r.level) < 0.8
    q, tie = majority_rates(0.65, 3)
    assert tie == 0 and q == pytest.approx(0.65**3 + 3 * 0.65**2 * 0.35)
    assert exact_power(r.majority_pairs, q, r.level) >= 0.8
    # Holm is sized at its first step (conservative), none at alpha.
    assert plan_power(4, correction="holm").pooled_pairs == r.pooled_pairs
    assert plan_power(4, correction="none").pooled_pairs < r.pooled_pairs
    # Within-pair correlation inflates the pooled requirement.
    assert plan_power(4, icc=0.3).pooled_pairs > r.pooled_pairs
    q2, tie2 = majority_rates(0.65, 2)
    assert tie2 == pytest.approx(2 * 0.65 * 0.35) and q2 == pytest.approx(0.65**2 / (1 - tie2))


def test_power_by_simulation_agrees_with_exact_power():
    n, p, level = 120, 0.62, 0.0125
    table = two_sided_pvalues(n)
    k = np.random.default_rng(0).binomial(n, p, size=20_000)
    sim = np.mean(table[k] <= level)
    exact = exact_power(n, p, level)
    assert abs(sim - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000)


def test_power_summary_text_and_bad_values():
    text = power_summary(4, pairs_per_cell=100)
    assert "Bonferroni, family each setting's DAGs (4 tests)" in text
    assert "per-test level 0.0125" in text
    assert "pooled judgements: 41 pairs (123 judgements) per DAG and setting" in text
    assert "at 100 pairs x 3: power 0.996 pooled" in text
    with pytest.raises(ConfigError, match="equals the null"):
        power_summary(2, p_expected=0.5)
    with pytest.raises(ConfigError, match="family"):
        power_summary(2, family="dag")
    with pytest.raises(ConfigError, match="more than"):
        plan_power(4, p_expected=0.5005)
