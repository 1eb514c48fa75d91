"""The exclusion rules of the analysis plan, applied in a fixed order and reported.

1. **Duplicate assignment ids** (the same assignment twice, e.g. two downloads concatenated):
   the first row is kept, the others are flagged and dropped.
2. **Rejected assignments** (``AssignmentStatus`` = ``Rejected``, or text in the ``Reject``
   column of a reviewed batch file) are dropped when ``plan.exclude_rejected``.
3. **Attention checks**: a worker whose accuracy on the attention items that remain is below
   ``plan.attention_min_accuracy`` loses every judgement. Workers with no attention item are kept.
4. **The same worker judging one pair twice** (in different assignments) is flagged; with
   ``plan.duplicates == "keep-first"`` only the earliest judgement (by ``SubmitTime``, then file
   order) counts.

Attention items never enter the counts; what remains are the pair judgements to analyse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.plan import AnalysisPlan


@dataclass
class Exclusions:
    """Counts and flagged rows of every rule (lines are 1-based lines of the input file)."""

    rows_in: int = 0
    pair_rows_in: int = 0
    attention_rows_in: int = 0
    duplicate_assignments: list[tuple[int, str]] = field(default_factory=list)
    duplicate_assignment_conflicts: int = 0
    rejected_rows: int = 0
    rejected_pair_rows: int = 0
    rejected_kept: int = 0
    attention_workers_checked: int = 0
    attention_workers_unchecked: int = 0
    attention_failed_workers: list[str] = field(default_factory=list)
    attention_dropped_rows: int = 0
    repeat_judgements: list[tuple[int, str, str]] = field(default_factory=list)  # line, worker, pair
    repeat_dropped_rows: int = 0
    pair_rows_out: int = 0

    def to_dict(self) -> dict:
        """Every number, with flagged rows as lists (JSON-ready)."""
        return {
            "rows_in": self.rows_in,
            "pair_rows_in": self.pair_rows_in,
            "attention_rows_in": self.attention_rows_in,
            "duplicate_assignment_ids": {
                "rows_dropped": len(self.duplicate_assignments),
                "conflicting_answers": self.duplicate_assignment_conflicts,
                "rows": [{"line": ln, "assignment_id": a} for ln, a in self.duplicate_assignments],
            },
            "rejected": {"rows": self.rejected_rows, "pair_rows": self.rejected_pair_rows,
                         "kept_because_plan_says_so": self.rejected_kept},
            "attention": {
                "workers_checked": self.attention_workers_checked,
                "workers_without_checks": self.attention_workers_unchecked,
                "workers_excluded": len(self.attention_failed_workers),
                "excluded_worker_ids": self.attention_failed_workers,
                "pair_rows_dropped": self.attention_dropped_rows,
            },
            "same_worker_same_pair": {
                "rows_flagged": len(self.repeat_judgements),
                "rows_dropped": self.repeat_dropped_rows,
                "rows": [{"line": ln, "worker_id": w, "pair_id": p}
                         for ln, w, p in self.repeat_judgements],
            },
            "pair_rows_out": self.pair_rows_out,
        }


_ZONES = {"UTC": 0, "GMT": 0, "Z": 0, "PST": -8, "PDT": -7, "MST": -7, "MDT": -6, "CST": -6,
          "CDT": -5, "EST": -5, "EDT": -4}
_ZONE_RE = re.compile(r"\s([A-Z]{1,5})\s(\d{4})$")


def submit_order(times: pd.Series) -> np.ndarray:
    """Seconds since the epoch for MTurk/Turkle time stamps (``Sat Nov 28 16:38:44 UTC 2026``).

    Unknown zones or unparseable values give ``inf`` (sorted last, then by file order).
    """
    out = np.full(len(times), np.inf)
    for i, raw in enumerate(times.tolist()):
        m = _ZONE_RE.search(raw or "")
        if not m or m.group(1) not in _ZONES:
            continue
        stamp = pd.to_datetime(raw[: m.start()] + " " + m.group(2),
                               format="%a %b %d %H:%M:%S %Y", errors="coerce")
        if stamp is not pd.NaT and not pd.isna(stamp):
            out[i] = stamp.timestamp() - 3600 * _ZONES[m.group(1)]
    return out


def apply_exclusions(judgements: pd.DataFrame, plan: AnalysisPlan
                     ) -> tuple[pd.DataFrame, pd.DataFrame, Exclusions]:
    """Apply the plan's exclusion rules.

    Parameters
    ----------
    judgements : DataFrame with ``analysis.join.JUDGEMENT_COLUMNS``.
    plan : the analysis plan in force.

    Returns
    -------
    (pair judgements kept, every row with an ``excluded`` reason column, :class:`Exclusions`)
    """
    ex = Exclusions()
    df = judgements
    n = len(df)
    ex.rows_in = n
    is_pair = (df["kind"] == "pair").to_numpy()
    ex.pair_rows_in = int(is_pair.sum())
    ex.attention_rows_in = n - ex.pair_rows_in
    reason = np.full(n, "", dtype=object)

    aid = df["assignment_id"].to_numpy()
    has_aid = aid != ""
    dup = np.zeros(n, dtype=bool)
    if has_aid.any():
        dup[has_aid] = pd.Series(aid[has_aid]).duplicated(keep="first").to_numpy()
    if dup.any():
        lines = df["line"].to_numpy()
        ex.duplicate_assignments = list(zip(lines[dup].tolist(), aid[dup].tolist(), strict=True))
        sub = df.loc[has_aid, ["assignment_id", "choice", "preferred"]]
        ex.duplicate_assignment_conflicts = int(
            (sub.groupby("assignment_id", sort=False).nunique() > 1).any(axis=1).sum())
        reason[dup] = "duplicate assignment id"

    rejected = ((df["status"] == "Rejected") | (df["marked_reject"] != "")).to_numpy() & ~dup
    ex.rejected_rows = int(rejected.sum())
    ex.rejected_pair_rows = int((rejected & is_pair).sum())
    if plan.exclude_rejected:
        reason[rejected] = "rejected assignment"
    else:
        ex.rejected_kept = ex.rejected_rows

    alive = reason == ""
    workers = df["worker_id"].to_numpy()
    att = alive & ~is_pair
    if att.any():
        acc = pd.Series(df["correct"].to_numpy()[att]).groupby(workers[att]).mean()
        failed = acc.index[(acc < plan.attention_min_accuracy - 1e-12).to_numpy()]
        ex.attention_workers_checked = len(acc)
        ex.attention_failed_workers = sorted(str(w) for w in failed)
        worker_set = set(pd.unique(workers[alive]))
        ex.attention_workers_unchecked = len(worker_set - set(acc.index))
        hit = alive & np.isin(workers, np.asarray(failed, dtype=object))
        ex.attention_dropped_rows = int((hit & is_pair).sum())
        reason[hit] = "attention checks failed"
    else:
        ex.attention_workers_unchecked = len(pd.unique(workers[alive]))

    reason[(reason == "") & ~is_pair] = "attention item"
    alive = reason == ""
    idx = np.flatnonzero(alive)
    key = pd.DataFrame({"w": workers[idx], "p": df["pair_id"].to_numpy()[idx]})
    rep_any = key.duplicated(keep=False).to_numpy()
    if rep_any.any():
        rows = idx[rep_any]
        order = submit_order(df["submit_time"].iloc[rows])
        sub = pd.DataFrame({"w": workers[rows], "p": df["pair_id"].to_numpy()[rows],
                            "t": order, "row": rows}).sort_values(["t", "row"], kind="stable")
        later = sub.duplicated(["w", "p"], keep="first").to_numpy()
        lines = df["line"].to_numpy()
        ex.repeat_judgements = sorted(
            (int(lines[r]), str(workers[r]), str(df["pair_id"].iloc[r])) for r in rows)
        if plan.duplicates == "keep-first":
            drop_rows = sub["row"].to_numpy()[later]
            reason[drop_rows] = "same worker, same pair again"
            ex.repeat_dropped_rows = len(drop_rows)
    kept_mask = reason == ""
    ex.pair_rows_out = int(kept_mask.sum())
    annotated = df.assign(excluded=reason)
    kept = df.loc[kept_mask].reset_index(drop=True)
    return kept, annotated, ex
