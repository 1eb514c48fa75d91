"""Robustness checks against statsmodels and brute force: GEE, bootstraps, kappa, majority, position."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from analysis_fixtures import judgement_frame
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from analysis.robustness import (
    bootstrap_ci,
    cluster_counts,
    gee_exchangeable,
    kappas,
    overall,
    robustness,
)
from analysis.stats import headline


def _clustered(n_pairs: int, p: float, rho_sizes=(3,), seed: int = 0):
    rng = np.random.default_rng(seed)
    ids, ys = [], []
    for i in range(n_pairs):
        size = int(rng.choice(rho_sizes))
        q = np.clip(p + rng.normal(0, 0.2), 0.02, 0.98)  # pair-level effect: real clustering
        ids += [i] * size
        ys += list((rng.random(size) < q).astype(int))
    return np.array(ids), np.array(ys)


@pytest.mark.parametrize("sizes,p,seed", [((3,), 0.62, 0), ((1, 2, 3, 4), 0.45, 1),
                                          ((2, 3), 0.7, 2)])
def test_gee_closed_form_equals_statsmodels(sizes, p, seed):
    ids, y = _clustered(60, p, sizes, seed)
    df = pd.DataFrame({"y": y, "pair_id": ids})
    model = smf.gee("y ~ 1", groups="pair_id", data=df, family=sm.families.Binomial(),
                    cov_struct=sm.cov_struct.Exchangeable())
    ref = model.fit(maxiter=200, ctol=1e-12)
    n, s = cluster_counts(ids, y)
    ours = gee_exchangeable(n, s)
    b = ref.params["Intercept"]
    assert ours.rate == pytest.approx(1 / (1 + math.exp(-b)), abs=1e-6)
    assert ours.correlation == pytest.approx(ref.model.cov_struct.dep_params, abs=1e-6)
    assert ours.p_value == pytest.approx(ref.pvalues["Intercept"], rel=1e-5)


def _expit(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("sizes,p,seed", [((3,), 0.62, 0), ((1, 2, 3, 4), 0.45, 1)])
def test_gee_interval_is_statsmodels_conf_int_through_the_inverse_link(sizes, p, seed):
    """The interval is statsmodels' Wald ``conf_int()`` on the logit scale mapped through expit:
    95% by default, and the level asked for otherwise (90% is strictly narrower)."""
    ids, y = _clustered(60, p, sizes, seed)
    df = pd.DataFrame({"y": y, "pair_id": ids})
    ref = smf.gee("y ~ 1", groups="pair_id", data=df, family=sm.families.Binomial(),
                  cov_struct=sm.cov_struct.Exchangeable()).fit(maxiter=200, ctol=1e-12)
    n, s = cluster_counts(ids, y)
    for level, ours in ((0.95, gee_exchangeable(n, s)),
                        (0.90, gee_exchangeable(n, s, level=0.90))):
        lo, hi = ref.conf_int(alpha=1 - level).loc["Intercept"]
        assert ours.ci_low == pytest.approx(_expit(lo), abs=1e-6)
        assert ours.ci_high == pytest.approx(_expit(hi), abs=1e-6)
        assert ours.ci_low < ours.rate < ours.ci_high
    wide, narrow = gee_exchangeable(n, s), gee_exchangeable(n, s, level=0.90)
    assert narrow.ci_high - narrow.ci_low < wide.ci_high - wide.ci_low - 1e-3
    # robustness() uses the plan's confidence level for the GEE interval too.
    frame = pd.DataFrame({"pair_id": ids.astype(str), "worker_id": "w", "dag": "a->b",
                          "setting": "same_source", "choice": "", "cause_position": "",
                          "preferred": np.where(y == 1, "cause", "effect")})
    for level in (0.95, 0.90):
        cells = headline(frame, confidence_level=level)
        rob = robustness(frame, cells, correction="bonferroni", family="setting", alpha=0.05,
                         confidence_level=level, n_boot=0).iloc[0]
        lo, hi = ref.conf_int(alpha=1 - level).loc["Intercept"]
        assert (rob.gee_ci_low, rob.gee_ci_high) == pytest.approx((_expit(lo), _expit(hi)),
                                                                  abs=1e-6)


def test_gee_degenerate_cells_are_not_estimable():
    n = np.array([3.0, 3.0])
    assert math.isnan(gee_exchangeable(n, n).rate)          # everyone prefers cause
    assert math.isnan(gee_exchangeable(n, 0 * n).p_value)   # nobody does


def test_multinomial_cluster_bootstrap_matches_naive_resampling():
    ids, y = _clustered(80, 0.6, (2, 3), 4)
    n, s = cluster_counts(ids, y)
    lo, hi = bootstrap_ci(n, s, n_boot=4000, random_state=1)
    rng = np.random.default_rng(2)
    draws = rng.integers(0, len(n), size=(4000, len(n)))
    naive = s[draws].sum(1) / n[draws].sum(1)
    nlo, nhi = np.quantile(naive, [0.025, 0.975])
    assert abs(lo - nlo) < 0.015 and abs(hi - nhi) < 0.015
    assert lo < s.sum() / n.sum() < hi
    assert bootstrap_ci(n, s, n_boot=500, random_state=7) == bootstrap_ci(n, s, n_boot=500,
                                                                          random_state=7)


def test_kappas_equal_statsmodels_on_rating_matrix_and_by_hand():
    rng = np.random.default_rng(0)
    ratings = (rng.random((50, 3)) < rng.uniform(0.1, 0.9, (50, 1))).astype(int)  # 1 = cause
    table, _ = aggregate_raters(ratings)
    n = np.full(50, 3.0)
    s = ratings.sum(1).astype(float)
    fk, rk, items, raters = kappas(n, s)
    assert (items, raters) == (50, 3)
    assert fk == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-12)
    assert rk == pytest.approx(fleiss_kappa(table, method="randolph"), abs=1e-12)
    # Randolph by hand: observed agreement vs 1/2 chance.
    agree = ((s * (s - 1) + (3 - s) * (2 - s)) / 6).mean()
    assert rk == pytest.approx((agree - 0.5) / 0.5, abs=1e-12)
    assert rk >= fk - 1e-12  # Warrens (2010)


def test_kappa_uses_pairs_with_the_modal_number_of_judgements():
    n = np.array([3, 3, 3, 2, 1], dtype=float)
    s = np.array([3, 0, 2, 1, 1], dtype=float)
    fk, rk, items, raters = kappas(n, s)
    assert (items, raters) == (3, 3)
    assert fk == pytest.approx(fleiss_kappa(np.array([[3, 0], [0, 3], [2, 1]]), method="fleiss"))


def test_majority_vote_counts_ties_and_tests_untied_pairs():
    frame = judgement_frame({("a->b", "same_source"): (0, 0)})
    rows = []
    # pairs: 3-0, 2-1, 1-2, 1-1 (tie), 2-0
    for pid, votes in enumerate([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0], [1, 1]]):
        for j, v in enumerate(votes):
            rows.append({**dict.fromkeys(frame.columns, ""), "line": len(rows) + 2,
                         "worker_id": f"w{j}", "kind": "pair", "pair_id": f"p{pid}",
                         "dag": "a->b", "setting": "same_source", "choice": "top",
                         "cause_position": "top" if v else "bottom",
                         "preferred": "cause" if v else "effect", "work_time_s": np.nan,
                         "correct": np.nan})
    pairs = pd.DataFrame(rows, columns=frame.columns)
    cells = headline(pairs)
    rob = robustness(pairs, cells, correction="bonferroni", family="setting", alpha=0.05,
                     n_boot=0)
    r = rob.iloc[0]
    assert (r.majority_cause, r.majority_pairs, r.majority_ties) == (3, 4, 1)
    assert r.majority_p_value == pytest.approx(0.625)  # P(|X-2| >= 1), X ~ Bin(4, .5) = 10/16
    assert math.isnan(r.pair_boot_ci_low)


def test_position_bias_detected_while_counterbalancing_protects_the_headline():
    # Every worker picks the top image; the cause is on top in half the pairs.
    frame = judgement_frame({("a->b", "same_source"): (150, 300)})
    frame["choice"] = "top"
    frame["preferred"] = np.where(frame["cause_position"] == "top", "cause", "effect")
    cells = headline(frame)
    rob = robustness(frame, cells, correction="bonferroni", family="setting", alpha=0.05,
                     n_boot=0)
    assert rob.iloc[0].top_chosen == 300 and rob.iloc[0].position_p_value < 1e-80
    assert cells.iloc[0].rate == pytest.approx(0.5, abs=0.02)
    assert overall(frame)["position_p_value"] < 1e-80


def test_robustness_is_invariant_to_row_order():
    frame = judgement_frame({("a->b", "same_source"): (190, 300),
                             ("a->b", "same_destination"): (140, 300)})
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = robustness(frame, headline(frame), correction="holm", family="setting", alpha=0.05)
    b = robustness(shuffled, headline(shuffled), correction="holm", family="setting", alpha=0.05)
    pd.testing.assert_frame_equal(a, b, rtol=1e-12)


def test_gee_and_majority_type_one_error_under_no_preference():
    """Clustered data with no preference (p = 0.5, within-pair correlation 0.3), 100 pairs x 3.

    Over 2,000 simulated cells the GEE Wald test (asymptotic) rejects at 0.05 within
    [0.03, 0.075]; the exact majority-vote test within [0.02, 0.06] (exact, so conservative).
    """
    from scipy import stats as st

    rng = np.random.default_rng(8)
    sims, pairs, icc = 2000, 100, 0.3
    s_ab = 1 / icc - 1
    q = rng.beta(0.5 * s_ab, 0.5 * s_ab, size=(sims, pairs))
    votes = rng.binomial(3, q)
    n = np.full(pairs, 3.0)
    gee_rej = np.mean([gee_exchangeable(n, v.astype(float)).p_value <= 0.05 for v in votes])
    maj = (2 * votes > 3).sum(1)
    maj_table = np.array([st.binomtest(k, pairs).pvalue for k in range(pairs + 1)])
    maj_rej = np.mean(maj_table[maj] <= 0.05)
    assert 0.03 <= gee_rej <= 0.075, gee_rej
    assert 0.02 <= maj_rej <= 0.06, maj_rej
    # The naive pooled binomial test ignores the clustering and is liberal here.
    pooled = np.array([st.binomtest(k, 3 * pairs).pvalue for k in range(3 * pairs + 1)])
    naive_rej = np.mean(pooled[votes.sum(1)] <= 0.05)
    assert naive_rej > 0.08, naive_rej


@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_majority_vote_corrected_per_setting_in_an_incomplete_design(method):
    """3 DAGs in same_source, 1 in same_destination, plus a cell emptied by the exclusions: the
    majority-vote p-values are adjusted by ``multipletests`` within each setting's tested cells;
    the emptied cell has no test and empty robustness columns."""
    from scipy import stats as st
    from statsmodels.stats.multitest import multipletests

    counts = {("a->b", "same_source"): (190, 300), ("c->d", "same_source"): (160, 300),
              ("e->f", "same_source"): (200, 300), ("a->b", "same_destination"): (185, 300)}
    frame = judgement_frame(counts, seed=4)
    design = [*counts, ("c->d", "same_destination")]
    cells = headline(frame, correction=method, design=design)
    rob = robustness(frame, cells, correction=method, family="setting", alpha=0.05, n_boot=50)
    table = pd.concat([cells, rob], axis=1)
    empty = table[table["n"] == 0].iloc[0]
    assert (empty.dag, empty.setting, empty.majority_pairs, empty.position_n) == (
        "c->d", "same_destination", 0, 0)
    for col in ("majority_p_value", "majority_p_adjusted", "gee_rate", "pair_boot_ci_low",
                "fleiss_kappa", "position_p_value"):
        assert math.isnan(empty[col]), col
    assert not empty.majority_significant
    for _, rows in table[table["n"] > 0].groupby("setting"):
        p = [st.binomtest(int(c), int(m)).pvalue for c, m in zip(rows["majority_cause"],
                                                                  rows["majority_pairs"],
                                                                  strict=True)]
        reject, corrected, _, _ = multipletests(p, alpha=0.05, method=method)
        np.testing.assert_allclose(rows["majority_p_adjusted"], corrected, rtol=1e-9)
        assert rows["majority_significant"].tolist() == reject.tolist()
        assert set(rows["family_size"]) == {len(rows)}


def test_degenerate_gee_is_all_nan_after_no_iteration():
    n, empty = np.array([3.0, 2.0]), np.array([])
    for counts, cause in ((n, n), (n, 0 * n), (empty, empty)):   # all cause, none, no pair
        g = gee_exchangeable(counts, cause)
        assert all(math.isnan(v) for v in (g.rate, g.ci_low, g.ci_high, g.p_value,
                                           g.correlation)), g
        assert g.iterations == 0


def test_overall_agreement_and_position_from_tidy_rows():
    """Tidy rows carry no ``choice``: the top image was chosen when the cause was on top and
    preferred, or on the bottom and not preferred. Checked against counts made by hand and
    statsmodels' Fleiss kappa on the rating table."""
    from scipy import stats as st

    frame = judgement_frame({("a->b", "same_source"): (70, 90),
                             ("c->d", "same_destination"): (40, 90)}, seed=9)
    frame["choice"] = ""
    o = overall(frame)
    cause = frame["preferred"].eq("cause")
    top = (frame["cause_position"].eq("top") == cause)
    assert (o["judgements"], o["pairs"], o["workers"]) == (180, 60, frame["worker_id"].nunique())
    assert (o["top_chosen"], o["position_n"]) == (int(top.sum()), 180)
    assert o["position_p_value"] == pytest.approx(st.binomtest(int(top.sum()), 180).pvalue,
                                                  rel=1e-12)
    votes = cause.groupby(frame["pair_id"]).sum().to_numpy()
    table = np.column_stack([votes, 3 - votes]).astype(float)
    assert o["fleiss_kappa"] == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-12)
    assert o["randolph_kappa"] == pytest.approx(fleiss_kappa(table, method="randolph"), abs=1e-12)
    assert (o["kappa_pairs"], o["kappa_raters"]) == (60, 3)
    # Per cell, robustness() counts the same way.
    rob = robustness(frame, headline(frame), correction="none", family="setting", alpha=0.05,
                     n_boot=0)
    assert rob["top_chosen"].sum() == o["top_chosen"] and rob["position_n"].sum() == 180


def test_bootstrap_interval_level_is_the_percentile_pair_asked_for():
    """At level 0.5 the interval is the 25th and 75th percentile of resampled shares: checked
    against a naive pair bootstrap (20,000 draws each; tolerance 0.1 bootstrap SD, while the 1/6
    and 5/6 percentiles lie 0.29 SD further out)."""
    ids, y = _clustered(150, 0.6, (2, 3), 5)
    n, s = cluster_counts(ids, y)
    draws = np.random.default_rng(3).integers(0, len(n), size=(20_000, len(n)))
    naive = s[draws].sum(1) / n[draws].sum(1)
    sd = naive.std()
    for level in (0.5, 0.9):
        lo, hi = bootstrap_ci(n, s, n_boot=20_000, random_state=4, level=level)
        qlo, qhi = np.quantile(naive, [(1 - level) / 2, (1 + level) / 2])
        assert abs(lo - qlo) < 0.1 * sd and abs(hi - qhi) < 0.1 * sd, (level, lo, qlo, hi, qhi)


def test_gee_with_zero_robust_variance_rejects_any_other_null():
    """Every pair split 1-1: the estimate is 0.5 with zero robust variance, so the interval is the
    point and a null of 0.3 is rejected outright (p = 0), not a division by zero."""
    g = gee_exchangeable(np.full(4, 2.0), np.ones(4), null_p=0.3)
    assert (g.rate, g.ci_low, g.ci_high, g.p_value) == (0.5, 0.5, 0.5, 0.0)


def test_gee_iterations_are_bounded_by_max_iter():
    ids, y = _clustered(60, 0.6, (1, 2, 3, 4), 6)  # unequal pairs: the weights move mu
    n, s = cluster_counts(ids, y)
    full = gee_exchangeable(n, s)
    assert 1 < full.iterations < 200
    for cap in (1, 2):
        assert gee_exchangeable(n, s, max_iter=cap).iterations == cap


def test_robustness_bootstrap_seed_defaults_to_zero():
    """The documented default seed (0, as ``cage-eval analyze --seed``) is robustness()'s too."""
    frame = judgement_frame({("a->b", "same_source"): (170, 300)}, seed=2)
    cells = headline(frame)
    kwargs = {"correction": "bonferroni", "family": "setting", "alpha": 0.05, "n_boot": 300}
    pd.testing.assert_frame_equal(robustness(frame, cells, **kwargs),
                                  robustness(frame, cells, random_state=0, **kwargs))
    assert not robustness(frame, cells, random_state=1, **kwargs).equals(
        robustness(frame, cells, **kwargs))
