"""The human answers in a run's report: ``RUN/results.csv`` and its analysis.

``cage-eval analyze RUN/results.csv`` writes ``RUN/analysis/analysis.json`` (every number of
Table 2, the workers, exclusions, coverage and the SIMULATED DATA banner); :func:`read_answers`
reads it back as an :class:`Answers` record for :mod:`report.html`, checking that it belongs
to the run and is not older than the answers. Standard library only: the analysis's own modules
(pandas, statsmodels) are not needed to show its results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cage_eval import runs
from cage_eval.errors import InputFileError
from cage_eval.textfiles import read_csv_table

#: The file the report reads, written by ``cage-eval analyze`` into the run by default.
ANALYSIS_JSON = f"{runs.ANALYSIS_DIR}/analysis.json"

#: Table 2 cell fields (analysis.json ``cells``, ``table2.csv`` columns) the report shows.
CELL_KEYS = (
    "dag", "setting", "k", "n", "rate", "p_value", "p_adjusted", "significant", "ci_low",
    "ci_high", "pairs", "workers", "majority_cause", "majority_pairs", "majority_ties",
    "majority_p_adjusted", "majority_significant", "gee_rate", "gee_ci_low", "gee_ci_high",
    "gee_p_value", "gee_correlation", "pair_boot_ci_low", "pair_boot_ci_high",
    "worker_boot_ci_low", "worker_boot_ci_high", "fleiss_kappa", "randolph_kappa", "top_chosen",
    "position_n", "position_p_value",
)
WORKER_KEYS = ("worker_id", "assignments", "pair_judgements", "pair_judgements_kept",
               "attention_answered", "attention_correct", "attention_accuracy",
               "median_work_time_s", "rejected", "excluded", "simulated")
OVERALL_KEYS = ("judgements", "pairs", "workers", "fleiss_kappa", "randolph_kappa",
                "kappa_pairs", "kappa_raters", "top_chosen", "position_n", "position_p_value")
COVERAGE_KEYS = ("dag", "setting", "pairs_answered", "pairs_in_run", "assignments_answered",
                 "assignments_planned")
PLAN_KEYS = ("test", "correction", "family", "alpha", "null_p", "confidence_level",
             "attention_min_accuracy", "exclude_rejected", "duplicates", "min_response_time_s",
             "duplicate_participants", "blocked_participants", "reject_min_failed_checks",
             "catch_trials", "below_rejection")


@dataclass(frozen=True)
class Coverage:
    """How much of the run the analysed answers cover (analysis.json ``coverage``)."""

    cells: tuple[dict[str, Any], ...]
    per_item: int | None
    per_item_source: str
    complete: bool

    def total(self, key: str) -> int | None:
        values = [c[key] for c in self.cells]
        return None if any(v is None for v in values) else int(sum(values))


@dataclass(frozen=True)
class Answers:
    """The human answers, as far as they got.

    Attributes
    ----------
    status : ``"none"`` (no results file), ``"collected"`` (results, no analysis yet),
        ``"analysed"`` (the fields below come from ``analysis/analysis.json``) or ``"stale"``
        (an unreadable analysis, or one of another run; ``message`` says which).
    message : what the section says instead of, or next to, the tables.
    results_rows, simulated_rows : rows of ``results.csv`` (``None`` without it) and how many of
        them are simulated (``SIM-`` workers).
    cells, workers, overall, coverage, exclusions, plan : analysis.json's, every field the
        report shows present (``None`` when the file lacks it); ``exclusions`` as sentences.
    plan_origin, plan_frozen_at, overrides : where the plan came from, and each option that
        overrode it as ``(field, plan value, value used)``.
    simulated_banner : analysis.json's SIMULATED DATA line (``None`` for real answers).
    """

    status: str
    message: str
    results_rows: int | None = None
    simulated_rows: int = 0
    cells: tuple[dict[str, Any], ...] = ()
    workers: tuple[dict[str, Any], ...] = ()
    overall: dict[str, Any] | None = None
    coverage: Coverage | None = None
    exclusions: tuple[str, ...] = ()
    plan: dict[str, Any] | None = None
    plan_origin: str = ""
    plan_frozen_at: str | None = None
    overrides: tuple[tuple[str, Any, Any], ...] = ()
    simulated_banner: str | None = None

    @property
    def banner(self) -> str | None:
        """The SIMULATED DATA line, when any answer (analysed or not) is simulated."""
        if self.simulated_banner:
            return self.simulated_banner
        if self.simulated_rows:
            share = ("all" if self.simulated_rows == self.results_rows
                     else f"{self.simulated_rows} of {self.results_rows}")
            return (f"SIMULATED DATA: {share} rows of {runs.RESULTS} come from simulated "
                    "annotators (cage-eval simulate), not from people.")
        return None

    @property
    def settings(self) -> list[str]:
        """Settings in table order."""
        return list(dict.fromkeys(str(c["setting"]) for c in self.cells))

    @property
    def grid(self) -> list[tuple[str, list[dict[str, Any] | None]]]:
        """Table 2 as in the paper: one row per DAG, one cell (or ``None``) per setting."""
        by = {(str(c["dag"]), str(c["setting"])): c for c in self.cells}
        dags = list(dict.fromkeys(str(c["dag"]) for c in self.cells))
        return [(d, [by.get((d, s)) for s in self.settings]) for d in dags]

    @property
    def caption(self) -> str:
        """What Table 2's numbers are (the wording of ``analysis.tables.caption``)."""
        p = self.plan or {}
        fam = ("within each setting's DAGs" if p.get("family") == "setting"
               else "over all DAG x setting cells")
        corr = {"bonferroni": "Bonferroni", "holm": "Holm"}.get(str(p.get("correction")))
        where = "" if corr is None else f" after {corr} correction {fam}"
        level = p.get("confidence_level")
        ci = "" if level is None else f"; {level:.0%} Clopper-Pearson intervals"
        null_p = 0.5 if p.get("null_p") is None else p["null_p"]
        alpha = 0.05 if p.get("alpha") is None else p["alpha"]
        return (f"Judgements preferring the cause-manipulated image / all judgements; exact "
                f"two-sided binomial test against {null_p:g}; * = significant at {alpha:g}"
                f"{where}{ci}.")

    @property
    def excluded_workers(self) -> int:
        return sum(1 for w in self.workers if w["excluded"])


#: analysis.json keys the report reads.
ANALYSIS_KEYS = ("cells", "plan", "overall", "exclusions", "workers", "simulated", "source")


def _pick(record: Any, keys: Iterable[str]) -> dict[str, Any]:
    record = record if isinstance(record, Mapping) else {}
    return {k: record.get(k) for k in keys}


def exclusion_lines(ex: Mapping[str, Any], flags: Mapping[str, Any] | None = None,
                    notes: Iterable[str] = ()) -> tuple[str, ...]:
    """analysis.json's ``exclusions`` (and ``flags``, ``notes``) as sentences (the wording of
    ``analysis.tables.exclusion_lines``)."""
    def sub(name: str) -> Mapping[str, Any]:
        value = ex.get(name)
        return value if isinstance(value, Mapping) else {}

    out = [f"Judgements: {ex.get('pair_rows_in', 0)} pair judgements and "
           f"{ex.get('attention_rows_in', 0)} attention items read; "
           f"{ex.get('pair_rows_out', 0)} pair judgements analysed."]
    dup = sub("duplicate_assignment_ids")
    if dup.get("rows_dropped"):
        out.append(f"{dup['rows_dropped']} row(s) repeat an assignment id "
                   f"({dup.get('conflicting_answers', 0)} with conflicting answers); the first "
                   "was kept.")
    rej = sub("rejected")
    if rej.get("rows"):
        verb = "kept (plan)" if rej.get("kept_because_plan_says_so") else "excluded"
        out.append(f"Rejected assignments: {rej['rows']} {verb} ({rej.get('pair_rows', 0)} pair "
                   "judgements).")
    att = sub("attention")
    if att.get("workers_checked"):
        ids = ", ".join(str(i) for i in att.get("excluded_worker_ids") or [])
        out.append(f"Attention checks: {att['workers_checked']} worker(s) checked, "
                   f"{att.get('workers_excluded', 0)} excluded" + (f" ({ids})" if ids else "")
                   + f", {att.get('pair_rows_dropped', 0)} pair judgement(s) dropped; "
                   f"{att.get('workers_without_checks', 0)} worker(s) without checks kept.")
    rep = sub("same_worker_same_pair")
    if rep.get("rows_flagged"):
        out.append(f"{rep['rows_flagged']} judgement(s) by a worker who judged the same pair "
                   f"more than once; {rep.get('rows_dropped', 0)} later one(s) dropped.")
    for key, what in (("unknown_items", "name an item not in the run; set aside"),
                      ("item_echo_mismatch", "have an Answer.item_id that differs from "
                                             "Input.item_id; set aside")):
        rows = (flags or {}).get(key) or []
        if rows:
            out.append(f"{len(rows)} row(s) {what}.")
    out.extend(f"Note: {n}" for n in notes)
    return tuple(out)


def by_rule_line(rows: Any) -> tuple[str, ...]:
    """analysis.json's ``exclusions_by_rule`` as one sentence: pair judgements excluded by each
    pre-registered rule (with its threshold), in the order applied."""
    if not isinstance(rows, list) or not rows:
        return ()
    parts = [f"{r.get('label')} ({r.get('threshold')}): {r.get('pair_judgements', 0)}"
             for r in rows if isinstance(r, Mapping)]
    return ("Pair judgements excluded by rule, in the order applied: " + "; ".join(parts) + ".",)


def _coverage(data: Any) -> Coverage | None:
    if not isinstance(data, Mapping):
        return None
    per_item = data.get("per_item")
    return Coverage(cells=tuple(_pick(c, COVERAGE_KEYS) for c in data.get("cells") or []),
                    per_item=per_item if isinstance(per_item, int) else None,
                    per_item_source=str(data.get("per_item_source") or ""),
                    complete=bool(data.get("complete")))


def analysed_answers(data: Mapping[str, Any], message: str = "", results_rows: int | None = None,
                     simulated_rows: int = 0) -> Answers:
    """:class:`Answers` from the content of an ``analysis.json``."""
    overrides = tuple((str(o.get("field")), o.get("plan"), o.get("used"))
                      for o in data.get("overrides") or [] if isinstance(o, Mapping))
    return Answers(
        status="analysed", message=message, results_rows=results_rows,
        simulated_rows=simulated_rows,
        cells=tuple(_pick(c, CELL_KEYS) for c in data.get("cells") or []),
        workers=tuple(_pick(w, WORKER_KEYS) for w in data.get("workers") or []),
        overall=_pick(data.get("overall"), OVERALL_KEYS), coverage=_coverage(data.get("coverage")),
        exclusions=exclusion_lines(data.get("exclusions") or {}, data.get("flags"),
                                   data.get("notes") or ()) + by_rule_line(
                                       data.get("exclusions_by_rule")),
        plan=_pick(data.get("plan"), PLAN_KEYS), plan_origin=str(data.get("plan_origin") or ""),
        plan_frozen_at=data.get("plan_frozen_at"), overrides=overrides,
        simulated_banner=(data.get("simulated") or {}).get("banner") or None)


def _results_rows(path: Path) -> tuple[int, int]:
    """Rows of a results file and how many of them are simulated (``SIM-`` workers)."""
    table = read_csv_table(path, warn=False)  # the reader and limits analyze uses
    workers = table.column("WorkerId")
    return len(table.rows), sum(w.startswith(runs.SIMULATED_WORKER_PREFIX) for w in workers)


def read_answers(run: Path, run_id: str) -> Answers:
    """The human answers: ``RUN/results.csv`` and its analysis in ``RUN/analysis/``."""
    results, analysis = run / runs.RESULTS, run / ANALYSIS_JSON
    n_rows, n_sim = None, 0
    if results.is_file():
        try:
            n_rows, n_sim = _results_rows(results)
        except InputFileError as exc:
            return Answers("stale", f"{runs.RESULTS} is unreadable ({exc}).")
    if not analysis.is_file():
        if n_rows is None:
            return Answers("none", "No answers yet: nothing was collected or simulated for this "
                                   "run.")
        return Answers("collected", f"{runs.RESULTS} holds {n_rows} assignment row(s), not "
                                    "analysed yet: run cage-eval analyze "
                                    f"{run / runs.RESULTS}.", n_rows, n_sim)
    try:
        data = json.loads(analysis.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or any(k not in data for k in ANALYSIS_KEYS):
            raise ValueError("not an analysis.json of this cage-eval version")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return Answers("stale", f"{ANALYSIS_JSON} is unreadable ({exc}); run cage-eval analyze "
                                "again.", n_rows, n_sim)
    other = str((data.get("source") or {}).get("run_id") or "")
    if other and other != run_id:
        return Answers("stale", f"{ANALYSIS_JSON} analyses run {other}, not this run "
                                f"({run_id}); run cage-eval analyze again.", n_rows, n_sim)
    message = ""
    if n_rows is not None and results.stat().st_mtime > analysis.stat().st_mtime:
        message = (f"{runs.RESULTS} changed after this analysis was written; run cage-eval "
                   "analyze again to include every answer.")
    return analysed_answers(data, message, n_rows, n_sim)
