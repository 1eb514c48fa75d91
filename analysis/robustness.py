"""Robustness checks beside the headline test: the judgements of one pair are not independent.

Per (DAG, setting) cell:

* **Majority vote per pair**, then the exact binomial test over pairs (ties, possible when a pair
  has an even number of kept judgements, are dropped and counted). Corrected like the headline.
* **GEE** for the intercept-only logistic model with an exchangeable within-pair working
  correlation and robust (sandwich) standard errors, exactly the model of
  ``smf.gee("y ~ 1", groups="pair_id", family=Binomial(), cov_struct=Exchangeable())``
  (docs/method.md §8). For one intercept the estimating equation has a closed form in the
  per-pair counts, iterated with the moment estimator of the correlation that statsmodels uses;
  the tests check it against statsmodels to 1e-6. This makes it O(pairs), so it runs on a
  million judgements in milliseconds.
* **Cluster bootstraps** of the share preferring cause, resampling pairs and, separately,
  workers (percentile intervals). The statistic depends on each cluster only through its
  (judgements, cause votes) counts, so resampling clusters is a multinomial draw over the distinct
  count combinations: exact, and cheap at any size.
* **Fleiss' and Randolph's kappa** (statsmodels ``fleiss_kappa``) over the pairs with the most
  common number of kept judgements (Fleiss' kappa needs a fixed number per item).
* **Position bias**: the exact binomial test of the share of judgements choosing the top image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.inter_rater import fleiss_kappa

from analysis.stats import adjust, binomial_test, families


@dataclass(frozen=True)
class GeeResult:
    """Intercept-only exchangeable GEE: estimate, Wald interval (``level``, 95% by default)
    mapped through the inverse logit, p-value, correlation."""

    rate: float
    ci_low: float
    ci_high: float
    p_value: float
    correlation: float
    iterations: int


def _nan_gee() -> GeeResult:
    nan = float("nan")
    return GeeResult(nan, nan, nan, nan, nan, 0)


def cluster_counts(keys: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster ``(n_i, s_i)``: judgements and successes, for cluster labels ``keys``."""
    codes, uniques = pd.factorize(keys)
    n = np.bincount(codes, minlength=len(uniques)).astype(float)
    s = np.bincount(codes, weights=y.astype(float), minlength=len(uniques))
    return n, s


def gee_exchangeable(n: np.ndarray, s: np.ndarray, *, null_p: float = 0.5, level: float = 0.95,
                     max_iter: int = 200, tol: float = 1e-12) -> GeeResult:
    """Intercept-only logistic GEE with exchangeable correlation, from cluster counts.

    With ``mu = expit(b)``, ``v = mu (1 - mu)`` and working correlation ``R_i = (1 - r) I + r J``,
    ``1' R_i^{-1} = 1' / (1 + (n_i - 1) r)``, so the estimating equation
    ``sum_i D_i' V_i^{-1} (y_i - mu) = 0`` gives ``mu = sum w_i s_i / sum w_i n_i`` with
    ``w_i = 1 / (1 + (n_i - 1) r)``. ``r`` is statsmodels' moment estimator
    (``Exchangeable.update``, ``ddof_scale = 1``). Robust variance of ``b``:
    ``sum w_i^2 (s_i - n_i mu)^2 / (v sum w_i n_i)^2``; Wald test of ``b = logit(null_p)``; the
    interval is ``expit(b -+ z se)`` with ``z`` the ``(1 + level) / 2`` normal quantile (what
    statsmodels' ``conf_int(alpha=1 - level)`` gives on the logit scale).

    Parameters
    ----------
    n, s : arrays of shape (clusters,): judgements and cause votes per pair.
    """
    n = np.asarray(n, dtype=float)
    s = np.asarray(s, dtype=float)
    nobs = n.sum()
    if nobs == 0 or s.sum() in (0.0, nobs):
        return _nan_gee()
    n_pairs = float((0.5 * n * (n - 1)).sum())
    ddof = 1.0
    mu = s.sum() / nobs
    r = 0.0
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported below
        v = mu * (1 - mu)
        sd = math.sqrt(v)
        sum_r = (s - n * mu) / sd
        ssr = (s * (1 - mu) ** 2 + (n - s) * mu**2) / v
        scale = ssr.sum() / (nobs - ddof)
        if n_pairs - ddof > 0:
            r = float(((sum_r**2 - ssr) / 2).sum() / scale / (n_pairs - ddof))
        w = 1.0 / (1.0 + (n - 1) * r)
        new = float((w * s).sum() / (w * n).sum())
        if not 0.0 < new < 1.0:
            return _nan_gee()
        done = abs(new - mu) < tol
        mu = new
        if done:
            break
    v = mu * (1 - mu)
    w = 1.0 / (1.0 + (n - 1) * r)
    var_b = float((w**2 * (s - n * mu) ** 2).sum() / (v * (w * n).sum()) ** 2)
    b = math.log(mu / (1 - mu))
    se = math.sqrt(var_b)
    z = (b - math.log(null_p / (1 - null_p))) / se if se > 0 else float("inf")
    p = float(2 * stats.norm.sf(abs(z)))
    zc = stats.norm.isf((1 - level) / 2)
    lo, hi = (1 / (1 + math.exp(-(b - zc * se))), 1 / (1 + math.exp(-(b + zc * se))))
    return GeeResult(mu, lo, hi, p, r, it)


def bootstrap_ci(n: np.ndarray, s: np.ndarray, *, n_boot: int = 2000, random_state: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``sum s / sum n`` when clusters are resampled with replacement.

    Equivalent to drawing ``len(n)`` clusters with replacement ``n_boot`` times, computed as a
    multinomial over the distinct ``(n_i, s_i)`` combinations.
    """
    if len(n) == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    combos, counts = np.unique(np.column_stack([n, s]), axis=0, return_counts=True)
    rng = np.random.default_rng(random_state)
    draws = rng.multinomial(len(n), counts / counts.sum(), size=n_boot)
    tot_n = draws @ combos[:, 0]
    tot_s = draws @ combos[:, 1]
    rate = tot_s / np.where(tot_n > 0, tot_n, np.nan)
    a = (1 - level) / 2
    lo, hi = np.nanquantile(rate, [a, 1 - a])
    return float(lo), float(hi)


def kappas(n: np.ndarray, s: np.ndarray) -> tuple[float, float, int, int]:
    """``(fleiss, randolph, items used, raters per item)`` over pairs with the modal count."""
    n = n.astype(np.int64)
    multi = n >= 2
    if not multi.any():
        return float("nan"), float("nan"), 0, 0
    values, counts = np.unique(n[multi], return_counts=True)
    m = int(values[np.argmax(counts)])
    use = n == m
    table = np.column_stack([s[use], m - s[use]]).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        fk = float(fleiss_kappa(table, method="fleiss"))
        rk = float(fleiss_kappa(table, method="randolph"))
    return fk, rk, int(use.sum()), m


def chose_top(pairs: pd.DataFrame, cause: np.ndarray) -> np.ndarray:
    """Whether each judgement chose the top image (tidy rows: from ``cause_position``)."""
    choice = pairs["choice"].to_numpy()
    cpos = pairs["cause_position"].to_numpy()
    return np.where(choice != "", choice == "top", (cpos == "top") == cause)


def robustness(pairs: pd.DataFrame, cells: pd.DataFrame, *, correction: str, family: str,
               alpha: float, null_p: float = 0.5, confidence_level: float = 0.95,
               n_boot: int = 2000, random_state: int = 0, gee: bool = True) -> pd.DataFrame:
    """Robustness columns for the cells of ``cells`` (the headline table), same row order."""
    keys = pairs["dag"].to_numpy().astype(object) + "\x1f" + pairs["setting"].to_numpy().astype(object)
    y = (pairs["preferred"] == "cause").to_numpy()
    top = chose_top(pairs, y)
    known_pos = (pairs["cause_position"] != "").to_numpy()
    pair_ids = pairs["pair_id"].to_numpy()
    workers = pairs["worker_id"].to_numpy()
    codes, uniques = pd.factorize(keys)
    index_of = {u: i for i, u in enumerate(uniques)}
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    rows = []
    for dag, setting in zip(cells["dag"].tolist(), cells["setting"].tolist(), strict=True):
        c = index_of.get(dag + "\x1f" + setting)
        sel = order[bounds[c]:bounds[c + 1]] if c is not None else np.array([], dtype=np.int64)
        yc = y[sel]
        n_p, s_p = cluster_counts(pair_ids[sel], yc)
        maj_cause = int((2 * s_p > n_p).sum())
        maj_effect = int((2 * s_p < n_p).sum())
        ties = len(n_p) - maj_cause - maj_effect
        maj_p, maj_lo, maj_hi = binomial_test(maj_cause, maj_cause + maj_effect, null_p,
                                              confidence_level)
        g = (gee_exchangeable(n_p, s_p, null_p=null_p, level=confidence_level) if gee
             else _nan_gee())
        pb = bootstrap_ci(n_p, s_p, n_boot=n_boot, random_state=random_state,
                          level=confidence_level)
        n_w, s_w = cluster_counts(workers[sel], yc)
        wb = bootstrap_ci(n_w, s_w, n_boot=n_boot, random_state=random_state + 1,
                          level=confidence_level)
        fk, rk, k_items, k_raters = kappas(n_p, s_p)
        kp = known_pos[sel]
        n_top = int(top[sel][kp].sum())
        n_pos = int(kp.sum())
        pos_p = binomial_test(n_top, n_pos, 0.5)[0]
        rows.append({
            "majority_cause": maj_cause, "majority_pairs": maj_cause + maj_effect,
            "majority_ties": ties, "majority_p_value": maj_p,
            "majority_ci_low": maj_lo, "majority_ci_high": maj_hi,
            "gee_rate": g.rate, "gee_ci_low": g.ci_low, "gee_ci_high": g.ci_high,
            "gee_p_value": g.p_value, "gee_correlation": g.correlation,
            "pair_boot_ci_low": pb[0], "pair_boot_ci_high": pb[1],
            "worker_boot_ci_low": wb[0], "worker_boot_ci_high": wb[1],
            "fleiss_kappa": fk, "randolph_kappa": rk, "kappa_pairs": k_items,
            "kappa_raters": k_raters,
            "top_chosen": n_top, "position_n": n_pos, "position_p_value": pos_p,
        })
    out = pd.DataFrame(rows, index=cells.index)
    adj, sig = adjust(out["majority_p_value"].to_numpy(dtype=float), families(cells, family),
                      correction, alpha)
    out["majority_p_adjusted"] = adj
    out["majority_significant"] = sig
    return out


def overall(pairs: pd.DataFrame) -> dict:
    """Whole-study agreement and position bias (all cells pooled)."""
    y = (pairs["preferred"] == "cause").to_numpy()
    n_p, s_p = cluster_counts(pairs["pair_id"].to_numpy(), y)
    fk, rk, items, raters = kappas(n_p, s_p)
    known = (pairs["cause_position"] != "").to_numpy()
    top = chose_top(pairs, y)
    n_top, n_pos = int(top[known].sum()), int(known.sum())
    return {
        "judgements": int(len(pairs)), "pairs": int(len(n_p)),
        "workers": int(pd.unique(pairs["worker_id"]).size),
        "fleiss_kappa": fk, "randolph_kappa": rk, "kappa_pairs": items, "kappa_raters": raters,
        "top_chosen": n_top, "position_n": n_pos,
        "position_p_value": binomial_test(n_top, n_pos, 0.5)[0],
    }
