"""From one annotation file to every number of the analysis: :func:`analyze_file`.

Steps: read the file (:mod:`analysis.ingest`), join it with the run's blinding map
(:mod:`analysis.join`), settle the analysis plan (the run's frozen plan, else the defaults, then
explicit overrides, each reported), apply the exclusion rules (:mod:`analysis.exclusions`),
compute the headline test (:mod:`analysis.stats`), the robustness checks
(:mod:`analysis.robustness`), the per-worker summary (:mod:`analysis.workers`) and how much of
the run the answers cover (:mod:`analysis.coverage`); simulated answers are counted so that every
output can say so (:attr:`AnalysisResult.banner`).
Nothing is written here; :mod:`analysis.tables` renders and writes the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import ingest, join
from analysis import plan as plan_mod
from analysis.coverage import (
    Coverage,
    measure_coverage,
    no_answers_message,
    planned_per_item_from_file,
)
from analysis.exclusions import Exclusions, apply_exclusions
from analysis.plan import AnalysisPlan
from analysis.quality import RULES
from analysis.robustness import overall, robustness
from analysis.stats import headline
from analysis.workers import worker_summary
from cage_eval import runs
from cage_eval.errors import CageEvalError, InputFileError

#: Per-cell exclusion counts added to Table 2 (beside ``k``/``n``).
EXCLUSION_COLUMNS = ("judgements_read", *(f"excluded_{r.key}" for r in RULES))

#: Reads the assignments per HIT that a run's publication planned (``None`` when unknown).
PlannedReader = Callable[[Path], int | None]


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of one analysis that are not part of the pre-registered plan.

    ``n_boot`` bootstrap draws per cell and cluster kind (0 skips the bootstraps), ``random_state``
    their seed; ``gee`` switches the GEE column; ``drop_unknown`` sets aside rows whose item or
    pair is not in the run instead of failing.
    """

    fmt: str = "auto"
    n_boot: int = 2000
    random_state: int = 0
    gee: bool = True
    drop_unknown: bool = False


@dataclass
class AnalysisResult:
    """Everything :func:`analyze_file` found."""

    source: Path
    fmt: str
    run_dir: Path | None
    run_id: str
    plan: AnalysisPlan
    plan_origin: str                     # "frozen" | "file" | "default"
    plan_frozen_at: str | None
    overrides: list[tuple[str, Any, Any]]
    options: AnalysisOptions
    table: pd.DataFrame                  # one row per (DAG, setting): headline + robustness
    overall: dict
    exclusions: Exclusions
    workers: pd.DataFrame
    join: join.JoinReport
    notes: list[str] = field(default_factory=list)
    coverage: Coverage | None = None
    #: Judgements (pair and attention) by simulated annotators (``cage-eval simulate``).
    simulated: int = 0
    judgements: int = 0

    @property
    def banner(self) -> str | None:
        """The line every output starts with when any answer is simulated, else ``None``."""
        if not self.simulated:
            return None
        share = ("all" if self.simulated == self.judgements
                 else f"{self.simulated} of {self.judgements}")
        return (f"SIMULATED DATA: {share} judgements come from simulated annotators "
                "(cage-eval simulate), not from people; these numbers say nothing about how "
                "real the images look.")


def resolve_plan(run_dir: Path | None, plan_file: Path | None, overrides: dict[str, Any]
                 ) -> tuple[AnalysisPlan, str, str | None, list[tuple[str, Any, Any]]]:
    """The plan in force: frozen (or from ``plan_file``) or defaults, then ``overrides``.

    Returns ``(plan, origin, frozen_at, departures)``; ``departures`` lists the fields where the
    options changed the frozen (or default) plan.
    """
    base, origin, frozen_at = None, "default", None
    if plan_file is not None:
        base, origin = plan_mod.read_plan_file(plan_file), "file"
    elif run_dir is not None:
        base = plan_mod.load_plan(run_dir)
        if base is not None:
            origin, frozen_at = "frozen", plan_mod.plan_frozen_at(run_dir)
    base = base if base is not None else AnalysisPlan()
    given = {k: v for k, v in overrides.items() if v is not None}
    used = base.replace(**given) if given else base
    return used, origin, frozen_at, plan_mod.plan_overrides(base, used)


def analyze_file(
    path: str | Path, *, run_dir: str | Path | None = None, plan_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None, options: AnalysisOptions | None = None,
    planned: PlannedReader | None = None,
) -> AnalysisResult:
    """Analyse one annotation file.

    Parameters
    ----------
    path : the results CSV (MTurk, requester-website batch, Turkle) or a tidy CSV.
    run_dir : the run directory; found from the file when omitted (not needed for tidy files).
    plan_file : a plan JSON to follow instead of the run's frozen plan.
    overrides : plan fields set on the command line (``None`` values are ignored).
    options : settings outside the plan.
    planned : reads the assignments per HIT that the run's publication planned (the CLI passes
        :func:`cage_eval.cli.published.assignments_per_item`); without it, or when it returns ``None``,
        the file's ``MaxAssignments`` column is used for the coverage.

    Raises
    ------
    InputFileError
        Among others: the file has a header and no answers yet ("0 of N assignments answered
        yet", N from the run's HIT items and ``planned``).
    """
    options = options or AnalysisOptions()
    path = Path(path)
    raw, fmt = ingest.read_annotations(path, options.fmt)
    set_aside = raw.attrs.get(ingest.SET_ASIDE_NOTE, "")
    if raw.empty:
        raise InputFileError(_no_answers(path, fmt, run_dir, planned))
    judgements, jrep = join.join_judgements(raw, fmt, path, run_dir,
                                            drop_unknown=options.drop_unknown)
    per_item, per_item_source = None, ""
    if jrep.run_dir is not None and planned is not None:
        per_item, per_item_source = planned(jrep.run_dir), "ledger"
    if per_item is None:
        per_item, per_item_source = planned_per_item_from_file(raw), "MaxAssignments"
    coverage = measure_coverage(judgements, jrep.pairs_in_run, per_item, per_item_source)
    del raw
    plan, origin, frozen_at, departures = resolve_plan(
        jrep.run_dir, None if plan_file is None else Path(plan_file), overrides or {})
    kept, annotated, ex = apply_exclusions(judgements, plan)
    if ex.pair_rows_out == 0:
        raise InputFileError(
            f"{path}: no pair judgement is left to analyse ({ex.pair_rows_in} in the file; "
            + ", ".join(f"{c['pair_judgements']} {k.replace('_', ' ')}"
                        for k, c in ex.by_rule.items() if c["pair_judgements"])
            + "); check the file and the exclusion rules")
    # Cells judged in the file but emptied by the exclusions stay in Table 2 with n = 0.
    answered = judgements.loc[judgements["kind"] == "pair", ["dag", "setting"]]
    design = list(answered.drop_duplicates().itertuples(index=False, name=None))
    cells = headline(kept, correction=plan.correction, family=plan.family, alpha=plan.alpha,
                     null_p=plan.null_p, confidence_level=plan.confidence_level, design=design)
    robust = robustness(kept, cells, correction=plan.correction, family=plan.family,
                        alpha=plan.alpha, null_p=plan.null_p,
                        confidence_level=plan.confidence_level, n_boot=options.n_boot,
                        random_state=options.random_state, gee=options.gee)
    table = pd.concat([cells, robust], axis=1)
    table = _with_exclusion_counts(table, ex)
    simulated = judgements["worker_id"].str.startswith(runs.SIMULATED_WORKER_PREFIX)
    table["simulated"] = bool(simulated.any())
    workers = worker_summary(annotated)
    workers["simulated"] = workers["worker_id"].str.startswith(runs.SIMULATED_WORKER_PREFIX)
    notes = [set_aside.replace(f"{path}: ", "", 1)] if set_aside else []
    if ex.rejected_kept:
        notes.append(f"{ex.rejected_kept} rejected assignment(s) kept (plan: exclude_rejected "
                     "is false)")
    if ex.attention_rows_in == 0 and fmt != "tidy":
        notes.append("no attention-check items in this file; the exclusion rule had nothing "
                     "to act on")
    if plan.catch_trials is not None and jrep.run_dir is not None:
        in_run = join.items_design(join.read_hit_items_table(jrep.run_dir))[1]
        if in_run != plan.catch_trials:
            notes.append(f"WARNING: the frozen plan declares {plan.catch_trials} catch trial(s) "
                         f"but {runs.HIT_ITEMS} holds {in_run}; the HIT items changed after the "
                         "plan was frozen")
    if plan.min_response_time_s > 0 and ex.response_time_unknown_rows:
        notes.append(f"{ex.response_time_unknown_rows} row(s) have no response time (no "
                     "AcceptTime/SubmitTime or WorkTimeInSeconds); the minimum-time rule kept "
                     "them")
    if ex.duplicate_participants_kept:
        notes.append(f"{ex.duplicate_participants_kept} row(s) of duplicate participants kept "
                     "(plan: duplicate_participants is keep)")
    return AnalysisResult(
        source=path, fmt=fmt, run_dir=jrep.run_dir, run_id=jrep.run_id, plan=plan,
        plan_origin=origin, plan_frozen_at=frozen_at, overrides=departures, options=options,
        table=table, overall=overall(kept), exclusions=ex, workers=workers,
        join=jrep, notes=notes, coverage=coverage, judgements=len(judgements),
        simulated=int(simulated.sum()),
    )


def _with_exclusion_counts(table: pd.DataFrame, ex: Exclusions) -> pd.DataFrame:
    """Table 2 with, per DAG and setting, the pair judgements read and those each rule
    excluded (columns ``judgements_read`` and ``excluded_<rule>``, :data:`EXCLUSION_COLUMNS`)."""
    keys = list(zip(table["dag"], table["setting"], strict=True))
    table = table.copy()
    table["judgements_read"] = [ex.read_by_cell.get(k, 0) for k in keys]
    for rule in RULES:
        table[f"excluded_{rule.key}"] = [ex.by_cell.get(k, {}).get(rule.key, 0) for k in keys]
    return table


def _no_answers(path: Path, fmt: str, run_dir: str | Path | None,
                planned: PlannedReader | None) -> str:
    """Why a header-only file cannot be analysed, with the run's planned assignments if known."""
    if fmt == "tidy":
        return f"{path}: no judgements yet (the file has a header and no rows)"
    try:
        found = Path(run_dir) if run_dir is not None else join.find_run_dir(path, "", "")
        pairs, attention = join.items_design(join.read_hit_items_table(found))
    except CageEvalError:
        return no_answers_message(path, None, None)
    per_item = planned(found) if planned is not None else None
    return no_answers_message(path, sum(pairs.values()) + attention, per_item)
