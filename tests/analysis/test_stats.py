"""Headline statistics against independent closed forms: exact binomial sums, corrections, CIs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import judgement_frame
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from analysis.power import two_sided_pvalues
from analysis.stats import adjust, binomial_test, families, headline


def minlike_pvalue(k: int, n: int, p0: float = 0.5) -> float:
    """Two-sided exact p-value summed by hand: all outcomes no more likely than k."""
    pmf = [math.comb(n, j) * p0**j * (1 - p0) ** (n - j) for j in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7)))


@pytest.mark.parametrize("n", [1, 2, 7, 10, 30, 100, 300])
def test_pvalues_equal_hand_summed_binomial_tails(n):
    for k in range(n + 1):
        expected = minlike_pvalue(k, n)
        assert binomial_test(k, n)[0] == pytest.approx(expected, rel=1e-9, abs=1e-300)
    vec = two_sided_pvalues(n)
    assert np.allclose(vec, [minlike_pvalue(k, n) for k in range(n + 1)], rtol=1e-9, atol=0)


def test_pvalues_with_a_non_half_null_and_ties():
    # n even, k = n/2 under p0 = 0.5: p = 1 exactly; under p0 = 0.3 the minlike sum by hand.
    assert binomial_test(150, 300)[0] == 1.0
    for k in (0, 5, 12, 20, 40):
        assert two_sided_pvalues(40, 0.3)[k] == pytest.approx(minlike_pvalue(k, 40, 0.3), rel=1e-9)


def test_headline_counts_pvalues_and_clopper_pearson():
    cells = {("thick->bright", "same_source"): (231, 300), ("slant->thick", "same_source"): (160, 300),
             ("thick->bright", "same_destination"): (120, 300),
             ("slant->thick", "same_destination"): (151, 300)}
    table = headline(judgement_frame(cells))
    assert len(table) == 4
    # Table order: settings as in runs.SETTINGS, DAGs by name.
    assert list(zip(table["setting"], table["dag"], strict=True)) == [
        ("same_source", "slant->thick"), ("same_source", "thick->bright"),
        ("same_destination", "slant->thick"), ("same_destination", "thick->bright")]
    for r in table.itertuples():
        k, n = cells[(r.dag, r.setting)]
        assert (r.k, r.n, r.pairs) == (k, n, 100)
        assert r.p_value == pytest.approx(minlike_pvalue(k, n), rel=1e-9)
        # Clopper-Pearson from the beta quantiles.
        assert r.ci_low == pytest.approx(special.betaincinv(k, n - k + 1, 0.025), rel=1e-9)
        assert r.ci_high == pytest.approx(special.betaincinv(k + 1, n - k, 0.975), rel=1e-9)
        # Bonferroni over each setting's 2 DAGs.
        assert r.p_adjusted == pytest.approx(min(1.0, 2 * r.p_value), rel=1e-12)
        assert r.family_size == 2
    stars = dict(zip(zip(table["dag"], table["setting"], strict=True), table["significant"],
                     strict=True))
    assert stars[("thick->bright", "same_source")] and stars[("thick->bright", "same_destination")]
    assert not stars[("slant->thick", "same_source")] and not stars[("slant->thick", "same_destination")]


@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_corrections_equal_statsmodels_with_explicit_method(method):
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0, 0.05, 3), rng.uniform(0, 1, 5), [np.nan]])
    groups = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7, 8])]
    adjusted, significant = adjust(p, groups, method, 0.05)
    for rows in groups:
        rows = rows[~np.isnan(p[rows])]
        reject, corrected, _, _ = multipletests(p[rows], alpha=0.05, method=method)
        assert np.array_equal(adjusted[rows], corrected)
        assert np.array_equal(significant[rows], reject)
    assert np.isnan(adjusted[8]) and not significant[8]


def test_holm_and_bonferroni_by_hand():
    p = np.array([0.001, 0.02, 0.03, 0.2])  # docs/method.md §8 example
    bonf, _ = adjust(p, [np.arange(4)], "bonferroni", 0.05)
    holm, _ = adjust(p, [np.arange(4)], "holm", 0.05)
    assert np.allclose(bonf, [0.004, 0.08, 0.12, 0.8])
    assert np.allclose(holm, [0.004, 0.06, 0.06, 0.2])
    none, sig = adjust(p, [np.arange(4)], "none", 0.05)
    assert np.array_equal(none, p) and sig.tolist() == [True, True, True, False]


def test_family_all_pools_every_cell():
    cells = {("a->b", "same_source"): (180, 300), ("c->d", "same_source"): (150, 300),
             ("a->b", "same_destination"): (170, 300), ("c->d", "same_destination"): (140, 300)}
    frame = judgement_frame(cells)
    per_setting = headline(frame, family="setting")
    pooled = headline(frame, family="all")
    assert set(per_setting["family_size"]) == {2} and set(pooled["family_size"]) == {4}
    assert np.allclose(pooled["p_adjusted"], np.minimum(1, 4 * pooled["p_value"]))
    assert [len(g) for g in families(per_setting, "setting")] == [2, 2]


def test_planted_preference_rate_is_recovered():
    rng = np.random.default_rng(11)
    planted = {("a->b", "same_source"): 0.70, ("a->b", "same_destination"): 0.35,
               ("c->d", "same_source"): 0.50, ("c->d", "same_destination"): 0.58}
    n = 3000
    cells = {c: (int(rng.binomial(n, p)), n) for c, p in planted.items()}
    table = headline(judgement_frame(cells, seed=2))
    for r in table.itertuples():
        p = planted[(r.dag, r.setting)]
        se = math.sqrt(p * (1 - p) / n)
        assert abs(r.rate - p) < 4 * se
        assert r.ci_low < p < r.ci_high  # seeded: holds for this draw
        assert bool(r.significant) == (p != 0.5)


def test_type_one_error_near_nominal_under_no_preference():
    """Under p = 0.5 the exact test at n = 300 rejects at its exact size (<= alpha).

    20,000 simulated cells; the observed rate must lie within 4 standard errors of the exact size,
    and the exact size in [0.035, 0.050] (the exact test is conservative, never liberal).
    """
    n, alpha, sims = 300, 0.05, 20_000
    table = np.array([binomial_test(k, n)[0] for k in range(n + 1)])
    size = stats.binom.pmf(np.arange(n + 1), n, 0.5)[table <= alpha].sum()
    assert 0.035 <= size <= alpha
    k = np.random.default_rng(5).binomial(n, 0.5, size=sims)
    rate = np.mean(table[k] <= alpha)
    assert abs(rate - size) < 4 * math.sqrt(size * (1 - size) / sims)
    # Family-wise: 4 DAGs with Bonferroni: P(any star) <= alpha.
    fam = np.random.default_rng(6).binomial(n, 0.5, size=(sims // 4, 4))
    any_star = np.mean((table[fam] <= alpha / 4).any(axis=1))
    assert any_star < alpha + 4 * math.sqrt(alpha * (1 - alpha) / (sims // 4))


# Unbalanced designs: a DAG judged in one setting only, a cell emptied by the exclusions. The
# correction family is the setting, and its size m counts the cells of that setting that exist.
UNBALANCED = {("a->b", "same_source"): (171, 300), ("c->d", "same_source"): (150, 300),
              ("e->f", "same_source"): (178, 300), ("a->b", "same_destination"): (169, 300)}


def _per_setting_reference(table: pd.DataFrame, method: str, alpha: float = 0.05) -> dict:
    """``multipletests`` run separately on each setting's tested cells, from hand p-values."""
    expected = {}
    tested = table[table["n"] > 0]
    for setting, rows in tested.groupby("setting", sort=False):
        p = np.array([minlike_pvalue(int(k), int(n)) for k, n in zip(rows["k"], rows["n"],
                                                                     strict=True)])
        reject, corrected, _, _ = multipletests(p, alpha=alpha, method=method)
        for dag, pa, rej in zip(rows["dag"], corrected, reject, strict=True):
            expected[(dag, setting)] = (pa, bool(rej), len(rows))
    return expected


@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_unequal_families_are_corrected_per_setting(method):
    table = headline(judgement_frame(UNBALANCED), correction=method)
    # Only the cells that exist, in table order; no row for c->d or e->f in same_destination.
    assert list(zip(table["setting"], table["dag"], strict=True)) == [
        ("same_source", "a->b"), ("same_source", "c->d"), ("same_source", "e->f"),
        ("same_destination", "a->b")]
    assert table["k"].dtype == np.int64 and table["n"].dtype == np.int64
    expected = _per_setting_reference(table, method)
    for r in table.itertuples():
        pa, rej, m = expected[(r.dag, r.setting)]
        assert r.p_adjusted == pytest.approx(pa, rel=1e-9)
        assert bool(r.significant) == rej and r.family_size == m
        if method == "bonferroni":
            assert r.p_adjusted == pytest.approx(min(1.0, m * r.p_value), rel=1e-12)
    fam = dict(zip(zip(table["dag"], table["setting"], strict=True), table["family_size"],
                   strict=True))
    assert fam == {("a->b", "same_source"): 3, ("c->d", "same_source"): 3,
                   ("e->f", "same_source"): 3, ("a->b", "same_destination"): 1}
    # Bonferroni: a->b at p = 0.018 is not significant among same_source's 3 tests (0.053), and
    # a->b at p = 0.032 is significant alone in same_destination; grouping by DAG (2 tests for
    # a->b) would invert both stars. Holm: a->b is second of 3 in same_source (2 p = 0.036).
    star = dict(zip(zip(table["dag"], table["setting"], strict=True), table["significant"],
                    strict=True))
    assert star[("a->b", "same_source")] == (method == "holm")
    assert star[("a->b", "same_destination")] and star[("e->f", "same_source")]


@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_cell_emptied_by_exclusions_is_shown_with_n_zero_outside_its_family(method):
    cells = {("a->b", "same_source"): (175, 300), ("c->d", "same_source"): (171, 300),
             ("c->d", "same_destination"): (169, 300)}
    design = [*cells, ("a->b", "same_destination")]  # judged, then every judgement excluded
    table = headline(judgement_frame(cells), correction=method, design=design)
    assert len(table) == 4
    empty = table.set_index(["dag", "setting"]).loc[("a->b", "same_destination")]
    assert (empty.k, empty.n, empty.pairs, empty.workers, empty.family_size) == (0, 0, 0, 0, 0)
    assert math.isnan(empty.p_value) and math.isnan(empty.p_adjusted) and not empty.significant
    assert math.isnan(empty.rate) and math.isnan(empty.ci_low)
    expected = _per_setting_reference(table, method)
    assert len(expected) == 3
    for r in table[table["n"] > 0].itertuples():
        pa, rej, m = expected[(r.dag, r.setting)]
        assert r.p_adjusted == pytest.approx(pa, rel=1e-9)
        assert bool(r.significant) == rej and r.family_size == m
    alone = table.set_index(["dag", "setting"]).loc[("c->d", "same_destination")]
    assert alone.family_size == 1 and alone.p_adjusted == alone.p_value and alone.significant


@settings(max_examples=40, deadline=None)
@given(data=st.data(), method=st.sampled_from(["bonferroni", "holm"]))
def test_any_incomplete_design_is_corrected_per_setting_like_multipletests(data, method):
    """Property: for any subset of a 4 DAG x 2 setting grid (some cells emptied), each setting's
    adjusted p-values equal ``multipletests`` on that setting's tested cells alone."""
    grid = [(d, s) for d in ("a->b", "c->d", "e->f", "g->h") for s in ("same_source",
                                                                        "same_destination")]
    present = data.draw(st.lists(st.sampled_from(grid), min_size=1, max_size=8, unique=True))
    emptied = data.draw(st.lists(st.sampled_from(present), max_size=len(present) - 1,
                                 unique=True))
    counts = {c: (data.draw(st.integers(0, 30)), 30) for c in present if c not in emptied}
    table = headline(judgement_frame(counts), correction=method, design=present)
    assert sorted(zip(table["dag"], table["setting"], strict=True)) == sorted(present)
    assert table.loc[table["n"] == 0, "family_size"].eq(0).all()
    expected = _per_setting_reference(table, method)
    for r in table[table["n"] > 0].itertuples():
        pa, rej, m = expected[(r.dag, r.setting)]
        assert r.p_adjusted == pytest.approx(pa, rel=1e-9, abs=1e-300)
        assert bool(r.significant) == rej and r.family_size == m


def test_a_cell_with_one_judgement_has_its_rate_and_an_exact_test():
    """n = 1: the rate is k, the two-sided p-value is 1 (both outcomes have probability 1/2),
    and the Clopper-Pearson interval is [0.025, 1] or [0, 0.975]."""
    table = headline(judgement_frame({("a->b", "same_source"): (1, 1),
                                      ("c->d", "same_source"): (0, 1)}))
    rows = table.set_index("dag")
    assert rows.loc["a->b", "rate"] == 1.0 and rows.loc["c->d", "rate"] == 0.0
    assert rows["p_value"].tolist() == [1.0, 1.0] and rows["p_adjusted"].tolist() == [1.0, 1.0]
    assert (rows.loc["a->b", "ci_low"], rows.loc["a->b", "ci_high"]) == pytest.approx((0.025, 1.0))
    assert (rows.loc["c->d", "ci_low"], rows.loc["c->d", "ci_high"]) == pytest.approx((0.0, 0.975))
