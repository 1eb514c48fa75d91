"""The headline statistics of Table 2: counts, exact binomial tests, corrections, intervals.

Per (DAG, setting) cell: ``k`` judgements preferring the cause-manipulated image out of ``n``,
the exact two-sided binomial test of ``k/n`` against ``null_p`` (``scipy.stats.binomtest``,
"minlike" p-value), the Clopper-Pearson interval (``proportion_ci(method="exact")``), and the
p-value adjusted within its family by ``statsmodels.stats.multitest.multipletests`` with the
method passed explicitly (its default is Holm-Sidak, which the paper did not use). A cell is
starred when its adjusted p-value is at most ``alpha`` (for ``correction="none"``, the raw one).

Designs need not be complete: a DAG may be judged in one setting only, and exclusions may leave a
cell without judgements. Only the cells that exist get a row (a cell of ``design`` left empty by
the exclusions gets ``n = 0`` and no test), and a family's size ``m`` counts the cells of that
family that were tested, so Bonferroni gives ``min(1, m p)`` with that ``m``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cage_eval import runs

CELL_KEYS = ("dag", "setting")


def table_order(cells: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The distinct ``(dag, setting)`` cells given, in table order (settings as in
    ``runs.SETTINGS``, others after them by name; DAGs by name within a setting)."""
    rank = {s: i for i, s in enumerate(runs.SETTINGS)}
    return sorted(set(cells), key=lambda c: (rank.get(c[1], len(rank)), c[1], c[0]))


def count_cells(pairs: pd.DataFrame, design: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """Per cell: ``k`` (preferred cause), ``n`` (judgements), ``pairs``, ``workers``.

    ``pairs`` is the kept pair-judgement table (``analysis.join.JUDGEMENT_COLUMNS``). One row per
    cell with judgements, plus one with ``k = n = 0`` for each ``design`` cell without any (e.g.
    emptied by the exclusions); cells in neither get no row.
    """
    cause = (pairs["preferred"] == "cause").to_numpy()
    g = pd.DataFrame({"dag": pairs["dag"].to_numpy(), "setting": pairs["setting"].to_numpy(),
                      "k": cause.astype(np.int64), "pair_id": pairs["pair_id"].to_numpy(),
                      "worker_id": pairs["worker_id"].to_numpy()})
    grouped = g.groupby(list(CELL_KEYS), sort=False)
    out = grouped.agg(k=("k", "sum"), n=("k", "size"), pairs=("pair_id", "nunique"),
                      workers=("worker_id", "nunique")).reset_index()
    seen = list(zip(out["dag"].tolist(), out["setting"].tolist(), strict=True))
    order = table_order(seen + [tuple(c) for c in design])
    out = out.set_index(list(CELL_KEYS)).reindex(pd.MultiIndex.from_tuples(order, names=CELL_KEYS))
    return out.fillna(0).reset_index().astype(
        {"k": np.int64, "n": np.int64, "pairs": np.int64, "workers": np.int64})


def binomial_test(k: int, n: int, null_p: float = 0.5, confidence_level: float = 0.95
                  ) -> tuple[float, float, float]:
    """``(p-value, ci_low, ci_high)``: exact two-sided test and Clopper-Pearson interval."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    res = stats.binomtest(int(k), int(n), null_p, alternative="two-sided")
    ci = res.proportion_ci(confidence_level=confidence_level, method="exact")
    return float(res.pvalue), float(ci.low), float(ci.high)


def families(cells: pd.DataFrame, family: str) -> list[np.ndarray]:
    """Row positions of each correction family: per setting, or all cells together."""
    if family == "all":
        return [np.arange(len(cells))]
    if family == "setting":
        settings = cells["setting"].to_numpy()
        return [np.flatnonzero(settings == s) for s in pd.unique(settings)]
    raise ValueError(f"family must be 'setting' or 'all', got {family!r}")


def adjust(pvalues: np.ndarray, groups: list[np.ndarray], correction: str, alpha: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(adjusted p, significant)`` with ``multipletests`` per family; NaN p-values are skipped."""
    adjusted = np.full(len(pvalues), np.nan)
    significant = np.zeros(len(pvalues), dtype=bool)
    for rows in groups:
        rows = rows[~np.isnan(pvalues[rows])]
        if len(rows) == 0:
            continue
        if correction == "none":
            adjusted[rows] = pvalues[rows]
            significant[rows] = pvalues[rows] <= alpha
            continue
        reject, corrected, _, _ = multipletests(pvalues[rows], alpha=alpha, method=correction)
        adjusted[rows] = corrected
        significant[rows] = reject
    return adjusted, significant


def headline(pairs: pd.DataFrame, *, correction: str = "bonferroni", family: str = "setting",
             alpha: float = 0.05, null_p: float = 0.5, confidence_level: float = 0.95,
             design: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """Table 2's headline columns, one row per cell (see :func:`count_cells` for ``design``).

    Columns: ``dag, setting, k, n, pairs, workers, rate, p_value, p_adjusted, significant,
    ci_low, ci_high, family_size``. ``family_size`` is the number of tests in the cell's
    correction family (0 for a cell with ``n = 0``, which has no test).
    """
    cells = count_cells(pairs, design)
    res = [binomial_test(k, n, null_p, confidence_level)
           for k, n in zip(cells["k"].tolist(), cells["n"].tolist(), strict=True)]
    cells["rate"] = cells["k"] / cells["n"].where(cells["n"] > 0)
    cells["p_value"] = [r[0] for r in res]
    cells["ci_low"] = [r[1] for r in res]
    cells["ci_high"] = [r[2] for r in res]
    groups = families(cells, family)
    adjusted, significant = adjust(cells["p_value"].to_numpy(), groups, correction, alpha)
    cells["p_adjusted"] = adjusted
    cells["significant"] = significant
    tested = cells["n"].to_numpy() > 0
    size = np.zeros(len(cells), dtype=np.int64)
    for rows in groups:
        size[rows] = np.count_nonzero(tested[rows])
    cells["family_size"] = np.where(tested, size, 0)
    return cells
