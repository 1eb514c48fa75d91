"""Exact-binomial power: how many pairs and annotators a preference study needs.

The headline test of the human evaluation (docs/method.md §7, the paper's Table 2) is the
exact two-sided binomial test of the share of judgements preferring the cause-manipulated image
against 0.5, at the per-test level the multiple-testing correction implies. Its power at ``n``
judgements and true preference rate ``p`` is exact: the rejection region is the set of counts
``k`` whose two-sided ("minlike") p-value is at most the per-test level, and the power is the
``Binomial(n, p)`` probability of that region. No normal approximation is used.

Two analyses are sized:

* **pooled**: all ``pairs x annotators`` judgements in one binomial test (the paper's test). With a
  within-pair correlation ``icc`` > 0 the judgements are not independent; the effective number of
  judgements is ``n / (1 + (annotators - 1) * icc)`` (the usual design effect), rounded down.
* **majority**: one vote per pair (the majority of its annotators), tested with the same exact
  binomial test over pairs. The chance a pair's majority prefers the cause image is computed
  exactly, from a binomial (``icc`` = 0) or beta-binomial (``icc`` > 0) number of votes. With an
  even number of annotators, tied pairs carry no vote and are dropped.

Bonferroni and Holm are both sized at ``alpha / m`` per test (``m`` = tests in the family): for
Bonferroni this is exact; for Holm it is the level of its first step, so the figure is
conservative (Holm never rejects less than Bonferroni).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from cage_eval.errors import ConfigError

#: scipy.stats.binomtest compares probabilities with this relative tolerance (``rerr``).
MINLIKE_RTOL = 1e-7
MAX_JUDGEMENTS = 1_000_000


def two_sided_pvalues(n: int, p0: float = 0.5) -> np.ndarray:
    """Two-sided exact binomial p-values for every count ``k = 0..n``, shape ``(n + 1,)``.

    ``p(k) = sum of P(j) over all j with P(j) <= P(k) * (1 + 1e-7)``, ``P = Binomial(n, p0)``
    pmf: the "minlike" convention of ``scipy.stats.binomtest``, vectorised.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pmf = stats.binom.pmf(np.arange(n + 1), n, p0)
    order = np.sort(pmf)
    csum = np.cumsum(order)
    idx = np.searchsorted(order, pmf * (1.0 + MINLIKE_RTOL), side="right")
    return np.minimum(1.0, csum[idx - 1])


def per_test_level(alpha: float, n_tests: int, correction: str) -> float:
    """The per-test significance level used for sizing (see the module docstring)."""
    if correction in ("bonferroni", "holm"):
        return alpha / max(1, n_tests)
    if correction == "none":
        return alpha
    raise ConfigError(f"correction={correction!r}: must be one of bonferroni, holm, none")


def exact_power(n: int, p_true: float, level: float, p0: float = 0.5) -> float:
    """Power of the exact two-sided binomial test with ``n`` trials at per-test ``level``."""
    if n <= 0:
        return 0.0
    reject = two_sided_pvalues(n, p0) <= level
    pmf = stats.binom.pmf(np.arange(n + 1), n, p_true)
    return float(min(1.0, pmf[reject].sum()))


def _normal_n(p_true: float, level: float, target_power: float, p0: float) -> float:
    za = stats.norm.isf(level / 2)
    zb = stats.norm.ppf(target_power)
    num = za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p_true * (1 - p_true))
    return (num / (p_true - p0)) ** 2


def judgements_needed(
    p_true: float, level: float, *, target_power: float = 0.8, p0: float = 0.5,
    step: int = 1, deff: float = 1.0,
) -> int:
    """Smallest ``n`` (a multiple of ``step``) whose exact power reaches ``target_power``.

    ``deff`` divides ``n`` before the power is computed (design effect of clustered judgements).
    Exact power is a saw-tooth in ``n``; this is the first ``n`` that reaches the target, scanning
    upward from well below the normal-approximation answer.
    """
    _check_rates(p_true, target_power, p0)
    start = max(1, int(0.6 * _normal_n(p_true, level, target_power, p0) * deff / step))
    start = 1 if start < 40 else start
    units = start
    while units * step <= MAX_JUDGEMENTS:
        n_eff = int(math.floor(units * step / deff + 1e-9))
        if exact_power(n_eff, p_true, level, p0) >= target_power:
            return units * step
        units += 1
    raise ConfigError(
        f"p_expected={p_true}: more than {MAX_JUDGEMENTS:,} judgements would be needed for "
        f"{target_power:.0%} power; the expected preference is too close to {p0}"
    )


def _check_rates(p_true: float, target_power: float, p0: float) -> None:
    if not 0.0 < p_true < 1.0:
        raise ConfigError(f"p_expected={p_true!r}: must be strictly between 0 and 1")
    if abs(p_true - p0) < 1e-9:
        raise ConfigError(f"p_expected={p_true!r}: equals the null rate {p0}; no sample size "
                          "gives power against no effect")
    if not 0.0 < target_power < 1.0:
        raise ConfigError(f"target_power={target_power!r}: must be strictly between 0 and 1")


def majority_rates(p_true: float, annotators: int, icc: float = 0.0) -> tuple[float, float]:
    """``(q, tie)``: P(a pair's majority prefers cause | no tie) and P(tie).

    Votes per pair are ``Binomial(annotators, p_true)`` when ``icc`` is 0, else beta-binomial with
    mean ``p_true`` and intra-class correlation ``icc`` (``a + b = 1/icc - 1``).
    """
    if annotators < 1:
        raise ConfigError(f"annotators={annotators!r}: must be at least 1")
    k = np.arange(annotators + 1)
    if icc <= 0.0:
        pmf = stats.binom.pmf(k, annotators, p_true)
    else:
        s = 1.0 / icc - 1.0
        pmf = stats.betabinom.pmf(k, annotators, p_true * s, (1 - p_true) * s)
    win = float(pmf[2 * k > annotators].sum())
    tie = float(pmf[2 * k == annotators].sum())
    return win / (1.0 - tie), tie


@dataclass(frozen=True)
class PowerResult:
    """Sample sizes for one (DAG, setting) cell.

    Attributes
    ----------
    level : float
        Per-test significance level used.
    pooled_pairs, pooled_judgements : int
        Pairs (and ``pairs x annotators`` judgements) for the pooled test to reach the target.
    majority_pairs : int
        Pairs for the majority-vote test to reach the target.
    majority_rate : float
        P(majority prefers cause | no tie).
    pooled_power_at, majority_power_at : float or None
        Power at ``pairs_per_cell`` pairs, when given.
    """

    p_expected: float
    annotators: int
    n_tests: int
    correction: str
    alpha: float
    level: float
    target_power: float
    icc: float
    pooled_pairs: int
    pooled_judgements: int
    majority_pairs: int
    majority_rate: float
    pairs_per_cell: int | None = None
    pooled_power_at: float | None = None
    majority_power_at: float | None = None


def pooled_power(pairs: int, p_true: float, annotators: int, level: float, *, icc: float = 0.0,
                 p0: float = 0.5) -> float:
    """Exact power of the pooled test with ``pairs x annotators`` judgements (design-effect adjusted)."""
    deff = 1.0 + (annotators - 1) * icc
    return exact_power(int(math.floor(pairs * annotators / deff + 1e-9)), p_true, level, p0)


def majority_power(pairs: int, p_true: float, annotators: int, level: float, *, icc: float = 0.0,
                   p0: float = 0.5) -> float:
    """Exact power of the majority-vote test over ``pairs`` pairs (ties dropped, expected count)."""
    q, tie = majority_rates(p_true, annotators, icc)
    return exact_power(int(math.floor(pairs * (1.0 - tie) + 1e-9)), q, level, p0)


def plan_power(
    n_tests: int, *, p_expected: float = 0.65, annotators: int = 3, alpha: float = 0.05,
    correction: str = "bonferroni", target_power: float = 0.8, icc: float = 0.0,
    pairs_per_cell: int | None = None, p0: float = 0.5,
) -> PowerResult:
    """Pairs needed per (DAG, setting) cell for ``target_power``, pooled and by majority vote.

    Parameters
    ----------
    n_tests : int
        Tests in the correction family (DAGs per setting for the paper's family).
    p_expected : float
        Expected share of judgements preferring the cause-manipulated image.
    annotators : int
        Distinct annotators per pair.
    icc : float
        Within-pair correlation of judgements, in [0, 1).
    pairs_per_cell : int, optional
        Also report the power at this many pairs (e.g. the run's actual size).
    """
    if n_tests < 1:
        raise ConfigError(f"n_tests={n_tests!r}: at least one DAG is needed")
    if annotators < 1:
        raise ConfigError(f"annotators={annotators!r}: must be at least 1")
    if not 0.0 <= icc < 1.0:
        raise ConfigError(f"icc={icc!r}: must be in [0, 1)")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha!r}: must be strictly between 0 and 1")
    _check_rates(p_expected, target_power, p0)
    level = per_test_level(alpha, n_tests, correction)
    deff = 1.0 + (annotators - 1) * icc
    pooled_j = judgements_needed(p_expected, level, target_power=target_power, p0=p0,
                                 step=annotators, deff=deff)
    q, tie = majority_rates(p_expected, annotators, icc)
    if abs(q - p0) < 1e-12:
        raise ConfigError(f"p_expected={p_expected}: the majority vote has no power here")
    maj_untied = judgements_needed(q, level, target_power=target_power, p0=p0)
    maj_pairs = math.ceil(maj_untied / (1.0 - tie) - 1e-9)
    while majority_power(maj_pairs, p_expected, annotators, level, icc=icc, p0=p0) < target_power:
        maj_pairs += 1
    at_pooled = at_major = None
    if pairs_per_cell is not None:
        if pairs_per_cell < 1:
            raise ConfigError(f"pairs_per_cell={pairs_per_cell!r}: must be at least 1")
        at_pooled = pooled_power(pairs_per_cell, p_expected, annotators, level, icc=icc, p0=p0)
        at_major = majority_power(pairs_per_cell, p_expected, annotators, level, icc=icc, p0=p0)
    return PowerResult(
        p_expected=p_expected, annotators=annotators, n_tests=n_tests, correction=correction,
        alpha=alpha, level=level, target_power=target_power, icc=icc,
        pooled_pairs=pooled_j // annotators, pooled_judgements=pooled_j,
        majority_pairs=maj_pairs, majority_rate=q, pairs_per_cell=pairs_per_cell,
        pooled_power_at=at_pooled, majority_power_at=at_major,
    )


def family_size(n_dags: int, family: str = "setting", n_settings: int = 2) -> int:
    """Number of tests in one correction family."""
    if family == "setting":
        return n_dags
    if family == "all":
        return n_dags * n_settings
    raise ConfigError(f"family={family!r}: must be one of setting, all")


def power_summary(
    n_dags: int, *, p_expected: float = 0.65, annotators: int = 3, alpha: float = 0.05,
    correction: str = "bonferroni", target_power: float = 0.8, family: str = "setting",
    n_settings: int = 2, icc: float = 0.0, pairs_per_cell: int | None = None,
) -> str:
    """Human-readable sizing lines, as ``cage-eval power`` and ``publish --dry-run`` show them."""
    m = family_size(n_dags, family, n_settings)
    r = plan_power(m, p_expected=p_expected, annotators=annotators, alpha=alpha,
                   correction=correction, target_power=target_power, icc=icc,
                   pairs_per_cell=pairs_per_cell)
    fam = "each setting's DAGs" if family == "setting" else "all DAG x setting cells"
    corr = {"bonferroni": "Bonferroni", "holm": "Holm (sized at its first step)",
            "none": "no correction"}[correction]
    lines = [
        f"Power (exact two-sided binomial test vs 0.5): {corr}, family {fam} "
        f"({m} test{'s' if m != 1 else ''}), alpha {alpha:g} -> per-test level {r.level:.4g}",
        f"expected preference for the cause image {p_expected:g}, {annotators} annotator"
        f"{'s' if annotators != 1 else ''} per pair"
        + (f", within-pair correlation {icc:g}" if icc > 0 else "")
        + f", target power {target_power:.0%}:",
        f"  pooled judgements: {r.pooled_pairs} pairs ({r.pooled_judgements} judgements) "
        "per DAG and setting",
        f"  majority vote per pair (P(majority prefers cause) = {r.majority_rate:.3f}): "
        f"{r.majority_pairs} pairs per DAG and setting",
    ]
    if pairs_per_cell is not None:
        lines.append(
            f"  at {pairs_per_cell} pairs x {annotators}: power {r.pooled_power_at:.3f} pooled, "
            f"{r.majority_power_at:.3f} by majority vote"
        )
    return "\n".join(lines)
