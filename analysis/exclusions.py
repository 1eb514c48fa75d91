"""The exclusion rules of the analysis plan, applied in a fixed order and reported.

1. **Duplicate assignment ids** (the same assignment twice, e.g. two downloads concatenated):
   the first row is kept, the others are flagged and dropped.
2. **Rejected assignments** (``AssignmentStatus`` = ``Rejected``, or text in the ``Reject``
   column of a reviewed batch file) are dropped when ``plan.exclude_rejected``.
3. **Duplicate participants** (:func:`analysis.quality.duplicate_participants`): ids on the
   plan's block list; with ``plan.duplicate_participants == "exclude-later"`` also a participant's
   answers in a study after the first they took part in, and a participant sharing a hashed IP
   address with an earlier participant of the same study.
4. **Attention checks**: a worker whose accuracy on the attention items that remain is below
   ``plan.attention_min_accuracy`` loses every judgement. Workers with no attention item are kept.
5. **Too fast**: an assignment answered in less than ``plan.min_response_time_s`` seconds
   (``SubmitTime - AcceptTime``, else ``WorkTimeInSeconds``) is dropped.
6. **The same worker judging one pair twice** (in different assignments) is flagged; with
   ``plan.duplicates == "keep-first"`` only the earliest judgement (by ``SubmitTime``, then file
   order) counts.

Each row is excluded by the first rule that catches it (:data:`analysis.quality.RULES`), and the
counts per rule (rows, pair judgements, participants, and per DAG and setting) are kept.
Attention items never enter the counts; what remains are the pair judgements to analyse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import quality
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
    blocked_participants: list[str] = field(default_factory=list)
    #: (participant, later study, first study)
    earlier_study: list[tuple[str, str, str]] = field(default_factory=list)
    #: (study, participant, first participant with that IP hash)
    shared_ip: list[tuple[str, str, str]] = field(default_factory=list)
    duplicate_participants_kept: int = 0
    too_fast_rows: int = 0
    too_fast_workers: list[str] = field(default_factory=list)
    response_time_unknown_rows: int = 0
    #: rule key -> {"rows": ..., "pair_judgements": ...} (every rule of quality.RULES)
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    #: rule key -> participants who lost at least one row to the rule
    participants_by_rule: dict[str, int] = field(default_factory=dict)
    #: (dag, setting) -> rule key -> pair judgements excluded
    by_cell: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    #: (dag, setting) -> pair judgements read
    read_by_cell: dict[tuple[str, str], int] = field(default_factory=dict)

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
            "duplicate_participants": {
                "blocked_participant_ids": self.blocked_participants,
                "earlier_study": [{"participant": p, "study": s, "first_study": f}
                                  for p, s, f in self.earlier_study],
                "shared_ip": [{"study": s, "participant": p, "first_participant": f}
                              for s, p, f in self.shared_ip],
                "rows_kept_because_plan_says_so": self.duplicate_participants_kept,
            },
            "too_fast": {"rows": self.too_fast_rows, "workers": self.too_fast_workers,
                         "rows_without_time": self.response_time_unknown_rows},
            "by_rule": self.by_rule,
            "participants_by_rule": self.participants_by_rule,
            "pair_rows_out": self.pair_rows_out,
        }


def submit_order(times: pd.Series) -> np.ndarray:
    """Seconds since the epoch for MTurk/Turkle time stamps (``Sat Nov 28 16:38:44 UTC 2026``).

    Unknown zones or unparseable values give ``inf`` (sorted last, then by file order).
    """
    return quality.parse_times(times)


def _text(df: pd.DataFrame, column: str) -> np.ndarray:
    """A text column as an object array ('' for missing columns and values)."""
    if column not in df.columns:
        return np.full(len(df), "", dtype=object)
    values = df[column].astype(object)
    return values.where(values.notna(), "").astype(str).to_numpy(dtype=object)


def apply_exclusions(judgements: pd.DataFrame, plan: AnalysisPlan
                     ) -> tuple[pd.DataFrame, pd.DataFrame, Exclusions]:
    """Apply the plan's exclusion rules.

    Parameters
    ----------
    judgements : DataFrame with ``analysis.join.JUDGEMENT_COLUMNS`` (``accept_time``,
        ``study_id`` and ``ip_hash`` may be missing: those rules then find nothing).
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
    lines = df["line"].to_numpy()
    workers = df["worker_id"].to_numpy()
    reasons = {r.key: r.reason for r in quality.RULES}
    submit_times = df["submit_time"].to_numpy()

    # 1. repeated assignment ids
    aid = df["assignment_id"].to_numpy()
    has_aid = aid != ""
    dup = np.zeros(n, dtype=bool)
    if has_aid.any():
        dup[has_aid] = pd.Series(aid[has_aid]).duplicated(keep="first").to_numpy()
    if dup.any():
        ex.duplicate_assignments = list(zip(lines[dup].tolist(), aid[dup].tolist(), strict=True))
        sub = df.loc[has_aid, ["assignment_id", "choice", "preferred"]]
        ex.duplicate_assignment_conflicts = int(
            (sub.groupby("assignment_id", sort=False).nunique() > 1).any(axis=1).sum())
        reason[dup] = reasons["duplicate_assignment"]

    # 2. rejected assignments
    rejected = ((df["status"] == "Rejected") | (df["marked_reject"] != "")).to_numpy() & ~dup
    ex.rejected_rows = int(rejected.sum())
    ex.rejected_pair_rows = int((rejected & is_pair).sum())
    if plan.exclude_rejected:
        reason[rejected] = reasons["rejected"]
    else:
        ex.rejected_kept = ex.rejected_rows

    # 3. duplicate participants (block list, earlier study, shared IP within a study)
    alive = reason == ""
    study, ip_hash = _text(df, "study_id")[alive], _text(df, "ip_hash")[alive]
    needs_order = bool((study != "").any() or (ip_hash != "").any())
    found = quality.duplicate_participants(
        workers[alive], study, ip_hash,
        submit_order(pd.Series(submit_times[alive])) if needs_order else np.zeros(alive.sum()),
        plan)
    idx = np.flatnonzero(alive)
    blocked = idx[found.blocked]
    reason[blocked] = reasons["blocked_participant"]
    ex.blocked_participants = sorted({str(w) for w in workers[blocked]})
    ex.earlier_study, ex.shared_ip = found.repeats, found.ip_matches
    later = idx[found.earlier_study & ~found.blocked]
    shared = idx[found.shared_ip & ~found.blocked & ~found.earlier_study]
    if plan.duplicate_participants == "exclude-later":
        reason[later] = reasons["earlier_study"]
        reason[shared] = reasons["shared_ip"]
    else:
        ex.duplicate_participants_kept = len(later) + len(shared)

    # 4. attention checks
    alive = reason == ""
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
        reason[hit] = reasons["attention"]
    else:
        ex.attention_workers_unchecked = len(pd.unique(workers[alive]))

    # 5. minimum response time
    alive = reason == ""
    if plan.min_response_time_s > 0 and alive.any():
        seconds = np.full(n, np.nan)
        seconds[alive] = quality.response_seconds(
            _text(df, "accept_time")[alive], df["submit_time"].to_numpy()[alive],
            df["work_time_s"].to_numpy(dtype=float)[alive])
        fast = alive & quality.too_fast(seconds, plan)
        ex.response_time_unknown_rows = int((alive & ~np.isfinite(seconds)).sum())
        ex.too_fast_rows = int(fast.sum())
        ex.too_fast_workers = sorted({str(w) for w in workers[fast]})
        reason[fast] = reasons["too_fast"]

    # 6. the same worker judging one pair twice
    reason[(reason == "") & ~is_pair] = "attention item"
    alive = reason == ""
    idx = np.flatnonzero(alive)
    key = pd.DataFrame({"w": workers[idx], "p": df["pair_id"].to_numpy()[idx]})
    rep_any = key.duplicated(keep=False).to_numpy()
    if rep_any.any():
        rows = idx[rep_any]
        sub = pd.DataFrame({"w": workers[rows], "p": df["pair_id"].to_numpy()[rows],
                            "t": submit_order(pd.Series(submit_times[rows])), "row": rows}).sort_values(["t", "row"],
                                                                             kind="stable")
        later_rows = sub.duplicated(["w", "p"], keep="first").to_numpy()
        ex.repeat_judgements = sorted(
            (int(lines[r]), str(workers[r]), str(df["pair_id"].iloc[r])) for r in rows)
        if plan.duplicates == "keep-first":
            drop_rows = sub["row"].to_numpy()[later_rows]
            reason[drop_rows] = reasons["repeat_judgement"]
            ex.repeat_dropped_rows = len(drop_rows)

    _count(ex, df, reason, is_pair, workers)
    kept_mask = reason == ""
    ex.pair_rows_out = int(kept_mask.sum())
    annotated = df.assign(excluded=reason)
    kept = df.loc[kept_mask].reset_index(drop=True)
    return kept, annotated, ex


def _count(ex: Exclusions, df: pd.DataFrame, reason: np.ndarray, is_pair: np.ndarray,
           workers: np.ndarray) -> None:
    """Counts per rule: rows, pair judgements, participants, and per (DAG, setting)."""
    ex.by_rule = quality.count_by_rule(reason, is_pair)
    ex.participants_by_rule = {
        r.key: len(set(workers[reason == r.reason].tolist())) for r in quality.RULES}
    dag, setting = df["dag"].to_numpy()[is_pair], df["setting"].to_numpy()[is_pair]
    cell_reason = reason[is_pair]
    frame = pd.DataFrame({"dag": dag, "setting": setting, "reason": cell_reason})
    for (d, s), n in frame.groupby(["dag", "setting"], sort=True).size().items():
        ex.read_by_cell[(str(d), str(s))] = int(n)
        ex.by_cell[(str(d), str(s))] = {r.key: 0 for r in quality.RULES}
    dropped = frame[frame["reason"] != ""]
    for (d, s, why), n in dropped.groupby(["dag", "setting", "reason"]).size().items():
        rule = quality.RULE_BY_REASON.get(str(why))
        if rule is not None:
            ex.by_cell[(str(d), str(s))][rule.key] = int(n)
