"""Review submitted assignments: approve them all, or reject failed attention checks fairly.

Only ``Submitted`` assignments are ever touched (MTurk refuses anything else with
``InvalidAssignmentState``). Rejections follow the frozen plan's fair-rejection rule
(:func:`analysis.quality.review_verdicts`): a failed attention check is rejected only when its
worker failed at least ``reject_min_failed_checks`` (default 2) of the run's checks, counted over
all of the worker's check assignments (submitted, approved or rejected); a worker with fewer
failures is approved, and the analysis plan alone decides whether their answers count.
Rejections need ``RequesterFeedback``; cage-eval makes it mandatory and
shows the decisions before acting (docs/platforms.md §2.9 and §3, item 8). Right after a
submit MTurk may still answer "status of: null": those calls are retried after a pause
(eventual consistency); what still fails is reported and left for a later rerun.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis import quality
from analysis.plan import AnalysisPlan, load_plan
from cage_eval import files, runs
from cage_eval.errors import ConfigError, RunDirError
from mturk import aws
from mturk.collect import list_assignments, parse_answer_xml
from mturk.ledger import CREATED, Ledger

APPROVE = "approve"
REJECT = "reject"
#: RequesterFeedback is at most 1024 characters.
MAX_FEEDBACK = 1024
#: Pauses before retrying an approve/reject that hit MTurk's eventual consistency (seconds).
RETRY_DELAYS = (5.0, 15.0, 30.0, 60.0)


@dataclass(frozen=True)
class Decision:
    """What to do with one submitted assignment, and why."""

    assignment_id: str
    hit_id: str
    worker_id: str
    item_id: str
    action: str            # approve | reject
    reason: str            # e.g. "attention check: chose 'bottom', expected 'top'"
    #: the fair-rejection verdict of the worker (quality.PASS/RETURN/REJECT), '' without checks
    verdict: str = ""


@dataclass
class ReviewReport:
    """What :func:`apply_review` did."""

    approved: int = 0
    rejected: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)   # (AssignmentId, error)


def plan_review(run_dir: Path, client: Any, *, reject_failed_attention: bool,
                concurrency: int = 8, plan: AnalysisPlan | None = None) -> list[Decision]:
    """Decide, for every ``Submitted`` assignment of the run, whether to approve or reject it.

    With ``reject_failed_attention`` an assignment on an attention-check HIT whose ``choice`` is
    not the item's ``expected`` answer (or is missing) is rejected when the fair-rejection rule
    allows it: its worker failed at least ``plan.reject_min_failed_checks`` attention checks of
    the run (all statuses counted). ``plan`` defaults to the run's frozen plan (else the
    defaults). Everything else is approved, with the reason saying what the rule decided.
    """
    from hitgen.items import read_hit_items

    run_dir = Path(run_dir)
    run_id = str(runs.read_manifest(run_dir).get("run_id") or "")
    plan = plan or load_plan(run_dir) or AnalysisPlan()
    items = {it.item_id: it for it in read_hit_items(run_dir)}
    with Ledger.open(run_dir, run_id=run_id) as ledger:
        rows = ledger.rows(state=CREATED)
    if not rows:
        raise RunDirError(f"{run_dir / runs.LEDGER}: no HIT has been created yet; nothing to review")
    for row in rows:
        if row.item_id not in items:
            raise RunDirError(f"{run_dir / runs.HIT_ITEMS}: lacks item {row.item_id} of HIT "
                              f"{row.hit_id}; restore the original hit_items.csv")

    def statuses(row: Any) -> tuple[str, ...]:
        # Checks count over every status, so that a rerun still sees earlier failures.
        return (("Submitted", "Approved", "Rejected") if items[row.item_id].kind == "attention"
                else ("Submitted",))

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="review") as pool:
        listed = list(pool.map(lambda r: list_assignments(client, str(r.hit_id), statuses(r)),
                               rows))
    checks: list[tuple[str, bool]] = []
    chosen: dict[str, str] = {}
    for row, assignments in zip(rows, listed, strict=True):
        item = items[row.item_id]
        if item.kind != "attention":
            continue
        for a in assignments:
            try:
                choice = parse_answer_xml(a.get("Answer") or "").get(runs.ANSWER_FIELD, "")
            except ValueError:
                choice = ""
            chosen[a["AssignmentId"]] = choice
            checks.append((a.get("WorkerId", ""), choice == item.expected))
    verdicts = quality.review_verdicts(checks, plan)
    decisions: list[Decision] = []
    for row, assignments in zip(rows, listed, strict=True):
        item = items[row.item_id]
        for a in assignments:
            if a.get("AssignmentStatus") != "Submitted":
                continue
            worker = a.get("WorkerId", "")
            verdict = verdicts.get(worker)
            action, reason = APPROVE, "approve all"
            if item.kind == "attention":
                choice = chosen.get(a["AssignmentId"], "")
                rule = verdict.explain(plan) if verdict is not None else ""
                if choice == item.expected:
                    reason = "attention check passed"
                elif not reject_failed_attention:
                    reason = (f"attention check failed (approved anyway): chose "
                              f"{choice or 'nothing'!r}; {rule}")
                elif verdict is not None and verdict.verdict == quality.REJECT:
                    action = REJECT
                    reason = (f"attention check failed: chose {choice or 'nothing'!r}, expected "
                              f"{item.expected!r}; {rule}")
                else:
                    reason = (f"attention check failed, approved by the fair-rejection rule: "
                              f"chose {choice or 'nothing'!r}; {rule}")
            decisions.append(Decision(assignment_id=a["AssignmentId"], hit_id=str(row.hit_id),
                                      worker_id=worker, item_id=row.item_id,
                                      action=action, reason=reason,
                                      verdict="" if verdict is None else verdict.verdict))
    return decisions


def check_feedback(decisions: Sequence[Decision], feedback: str | None) -> str | None:
    """Rejections need feedback (1..1024 characters); return it stripped."""
    text = (feedback or "").strip()
    if any(d.action == REJECT for d in decisions):
        if not text:
            raise ConfigError("rejecting assignments needs --feedback TEXT: MTurk requires a reason "
                              "that the worker will see")
        if len(text) > MAX_FEEDBACK:
            raise ConfigError(f"--feedback is {len(text)} characters; MTurk allows {MAX_FEEDBACK}")
    return text or None


def _not_ready(exc: BaseException) -> bool:
    """MTurk's eventual-consistency answer right after a submit."""
    message = aws.error_message(exc)
    return "status of: null" in message or (aws.error_code(exc) in {"ServiceFault", "ThrottlingException"})


def apply_review(run_dir: Path, client: Any, decisions: Sequence[Decision], *,
                 feedback: str | None, concurrency: int = 8,
                 retry_delays: Sequence[float] = RETRY_DELAYS,
                 sleep: Callable[[float], None] = time.sleep) -> ReviewReport:
    """Approve / reject as decided, retrying eventual-consistency failures; record each in the
    ledger. Holds the run lock."""
    feedback = check_feedback(decisions, feedback)
    run_dir = Path(run_dir)
    report = ReviewReport()
    with files.run_lock(run_dir, "reviewed"), Ledger.open(run_dir) as ledger:

        def act(d: Decision) -> tuple[Decision, str | None]:
            for attempt in range(len(retry_delays) + 1):
                try:
                    if d.action == REJECT:
                        client.reject_assignment(AssignmentId=d.assignment_id, RequesterFeedback=feedback)
                    else:
                        client.approve_assignment(AssignmentId=d.assignment_id)
                except Exception as exc:
                    if aws.is_credential_error(exc):
                        raise aws.backend_error(exc, "ApproveAssignment") from None
                    if _not_ready(exc) and attempt < len(retry_delays):
                        sleep(retry_delays[attempt])
                        continue
                    return d, f"{aws.error_code(exc) or type(exc).__name__}: {aws.error_message(exc)}"
                ledger.record_review(d.assignment_id, d.hit_id, d.worker_id,
                                     "rejected" if d.action == REJECT else "approved",
                                     feedback if d.action == REJECT else None)
                return d, None
            return d, "retries exhausted"  # pragma: no cover - the loop always returns

        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="review") as pool:
            for d, error in pool.map(act, decisions):
                if error is not None:
                    report.failed.append((d.assignment_id, error))
                elif d.action == REJECT:
                    report.rejected += 1
                else:
                    report.approved += 1
    return report
