"""Review (approve / reject / ask for a return) the study's submissions and pay bonuses, each
exactly once.

Only ``AWAITING REVIEW`` submissions are ever acted on: Prolific refuses every other status, and
approving a RETURNED or TIMED-OUT submission is the classic mistake, so such a request never
leaves this module. Decisions follow the frozen analysis plan's fair-rejection rule on the catch
trials in the collected answers (:func:`analysis.quality.review_verdicts`): a rejection for
attention needs at least ``reject_min_failed_checks`` (2) failed checks; with fewer the work is
approved or, when the plan says ``below_rejection: ask-return``, the participant is asked to
return it (``POST /submissions/{id}/request-return/``, once). A rejection needs one of Prolific's
categories and a message of at least 100 characters (Prolific's rule). Every call is in the
ledger before and after; a lost answer is resolved by reading the submission back.

Bonuses take two calls: ``POST /submissions/bonus-payments/`` (the CSV ``PID,amount`` in major
units) makes an unpaid bonus whose answer is in sub-units, and ``POST
/bulk-bonus-payments/{id}/pay/`` pays it. The answer's ``amount`` must equal the CSV's total
exactly (else nothing is paid: a unit confusion), and the ledger keys each bonus by the digest of
its CSV so the same bonus is never paid twice.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from analysis import quality
from analysis.plan import AnalysisPlan, load_plan
from cage_eval import files, runs
from cage_eval.errors import BackendError, ConfigError, InputFileError
from crowds.prolific.api import ApiRefused, MaybeActed, ProlificAPI
from crowds.prolific.backend import REVIEWABLE, published_study
from crowds.prolific.ledger import ProlificLedger
from crowds.prolific.study import format_minor, parse_major

#: Prolific's rejection categories (``SubmissionTransition.rejection_category``).
REJECTION_CATEGORIES = ("TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL",
                        "FAILED_CHECK", "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE",
                        "NO_DATA", "UNSUPP_DEVICE", "OTHER")
MIN_REJECTION_MESSAGE = 100


APPROVE, REJECT, REQUEST_RETURN = "APPROVE", "REJECT", "REQUEST_RETURN"
#: The rejection category of a failed attention check.
ATTENTION_CATEGORY = "FAILED_CHECK"


@dataclass(frozen=True)
class Decision:
    """One review decision for one submission (``session_id`` = submission id), and why."""

    session_id: str
    pid: str
    action: str  # APPROVE, REJECT or REQUEST_RETURN
    category: str | None = None
    message: str | None = None
    reason: str = ""
    #: A rejection below the fair-rejection rule, made because the researcher overrode it.
    override: bool = False


@dataclass(frozen=True)
class ReviewPlan:
    """Decisions to make, and the AWAITING REVIEW submissions left to the researcher."""

    decisions: list[Decision]
    left: list[tuple[str, str]]  # (session_id, why)


def attention_message(failed: int, checks: int) -> str:
    """The rejection message for failed attention checks (Prolific needs 100 characters)."""
    return (f"Rejected for failed attention checks: you answered {failed} of the {checks} "
            "attention checks in this study wrongly. In each check one of the two images was "
            "plainly damaged (a coarse mosaic, solid blocks and heavy noise), so the undamaged "
            "image was the right answer.")


def _check_message(message: str) -> None:
    if len(message.strip()) < MIN_REJECTION_MESSAGE:
        raise ConfigError(f"--message: {len(message.strip())} characters; Prolific needs at "
                          f"least {MIN_REJECTION_MESSAGE} to explain a rejection")


def attention_checks(run_dir: Path) -> tuple[list[tuple[str, bool]], Counter[str]]:
    """``(PID, passed)`` for every catch trial (attention check) in ``RUN/results.csv``, and the
    collected answers per SESSION_ID. Nothing collected yet: both empty."""
    from hitgen.items import read_hit_items

    path = Path(run_dir) / runs.RESULTS
    if not path.is_file():
        return [], Counter()
    expected = {it.item_id: it.expected for it in read_hit_items(run_dir)
                if it.kind == "attention"}
    checks: list[tuple[str, bool]] = []
    per_session: Counter[str] = Counter()
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                pid = row.get("Prolific.PID") or ""
                if not pid:
                    raise InputFileError(f"{path}: row {n}: no Prolific.PID; this is not a "
                                         "Prolific results file: run cage-eval prolific collect")
                per_session[row.get("Prolific.SessionId") or ""] += 1
                item = row.get("Input.item_id") or ""
                if item in expected:
                    checks.append((pid, (row.get("Answer.choice") or "") == expected[item]))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(f"{path}: unreadable ({exc}); run cage-eval prolific collect "
                             "again") from None
    return checks, per_session


def plan_review(run_dir: Path, api: ProlificAPI,
                rejections: dict[str, tuple[str, str]] | None = None, *,
                reject_failed_attention: bool = False, message: str | None = None,
                override_fair_rejection: bool = False,
                plan: AnalysisPlan | None = None) -> ReviewPlan:
    """Decide every AWAITING REVIEW submission by the frozen plan's fair-rejection rule.

    The attention checks are the catch trials in the collected answers (``RUN/results.csv``),
    counted per participant (:func:`analysis.quality.review_verdicts`). A participant with at
    least ``plan.reject_min_failed_checks`` failed checks is rejected (category
    ``FAILED_CHECK``, ``message`` or :func:`attention_message`) when
    ``reject_failed_attention`` asks for it; every other participant with failed checks is
    never rejected: approved, or asked to return the submission when the plan's
    ``below_rejection`` is ``ask-return``. Participants without a failed check are approved.

    ``rejections`` (``session_id -> (category, message)``) are the researcher's own; each is
    refused unless its participant failed enough checks, or ``override_fair_rejection``.
    Submissions without a collected answer are left to the researcher; a rejection of a
    submission that is not AWAITING REVIEW is refused with its status."""
    rejections = dict(rejections or {})
    for category, text in rejections.values():
        if category not in REJECTION_CATEGORIES:
            raise ConfigError(f"--category {category!r}: one of {', '.join(REJECTION_CATEGORIES)}")
        _check_message(text)
    if message is not None:
        _check_message(message)
    plan = plan or load_plan(run_dir) or AnalysisPlan()
    study_id, _ = published_study(run_dir)
    subs = {str(s["id"]): s for s in api.submissions(study_id)}
    checks, collected = attention_checks(run_dir)
    verdicts = quality.review_verdicts(checks, plan)
    need = plan.reject_min_failed_checks
    for sid in rejections:
        status = str(subs.get(sid, {}).get("status", "not a submission of this study"))
        if status != REVIEWABLE:
            raise ConfigError(f"--reject {sid}: status {status}; only {REVIEWABLE} submissions "
                              "can be rejected")
        pid = str(subs[sid].get("participant_id", ""))
        failed = verdicts[pid].failed if pid in verdicts else 0
        if failed < need and not override_fair_rejection:
            raise ConfigError(
                f"--reject {sid}: participant {pid} failed {failed} attention check(s) in the "
                f"collected answers; the frozen plan's fair-rejection rule needs {need} before a "
                "rejection. Leave them approved (or ask them to return on Prolific), or pass "
                "--override-fair-rejection to reject anyway (recorded in the ledger)")
    with ProlificLedger.open(run_dir) as ledger:
        answered = {s["session_id"]: int(s["answered"]) for s in ledger.sessions()}
        done = {sid for sid in subs if (ledger.review(sid) or {}).get("state") == "done"}
        asked = {sid: r for sid in subs if (r := ledger.return_request(sid)) is not None}
    decisions, left = [], []
    for sid, sub in subs.items():
        if sub.get("status") != REVIEWABLE or sid in done:
            continue
        pid = str(sub.get("participant_id", ""))
        v = verdicts.get(pid)
        rule = v.explain(plan) if v is not None else "no attention check answered"
        if sid in rejections:
            below = v is None or v.failed < need
            decisions.append(Decision(
                sid, pid, REJECT, *rejections[sid], override=below,
                reason=f"--reject: {rule}" + (
                    f"; below the fair-rejection rule ({need}), rejected by "
                    "--override-fair-rejection" if below else "")))
        elif sid in asked:
            left.append((sid, f"a return was requested at {asked[sid]['updated_at']}; waiting "
                              "for the participant to return it (never rejected; approve it on "
                              "Prolific if they do not)"))
        elif collected.get(sid, 0) == 0:
            left.append((sid, "no answer collected (run cage-eval prolific collect first)"
                         if answered.get(sid, 0) else
                         "no answer recorded by the gateway; check it on Prolific"))
        elif v is None or v.verdict == quality.PASS:
            decisions.append(Decision(sid, pid, APPROVE, reason=rule))
        elif v.verdict == quality.REJECT and reject_failed_attention:
            decisions.append(Decision(sid, pid, REJECT, ATTENTION_CATEGORY,
                                      message or attention_message(v.failed, v.checks),
                                      reason=rule))
        else:
            why = rule if v.verdict == quality.RETURN else (
                f"{v.failed} of {v.checks} attention check(s) failed; rejection allowed but not "
                "asked for (--reject-failed-attention)")
            if plan.below_rejection == "ask-return":
                decisions.append(Decision(sid, pid, REQUEST_RETURN,
                                          message=return_reason(v.failed, v.checks), reason=(
                    f"{why}; the plan asks for a return (below_rejection: ask-return)")))
            else:
                decisions.append(Decision(sid, pid, APPROVE, reason=(
                    f"{why}; approved by the fair-rejection rule")))
    return ReviewPlan(decisions, left)


def return_reason(failed: int, checks: int) -> str:
    """Why a return is requested (Prolific builds the message around it)."""
    return (f"Failed {failed} of {checks} attention checks (one image of the pair was plainly "
            "damaged).")


def apply_review(run_dir: Path, api: ProlificAPI, plan: ReviewPlan) -> int:
    """Carry out the decisions; returns how many were made (a repeat makes none twice)."""
    made = 0
    with files.run_lock(run_dir, "reviewed"), ProlificLedger.open(run_dir) as ledger:
        for d in plan.decisions:
            if d.action == REQUEST_RETURN:
                made += _request_return(api, ledger, d)
                continue
            if (ledger.review(d.session_id) or {}).get("state") == "done":
                continue
            ledger.review_calling(d.session_id, d.action, d.category, d.message)
            if d.override:
                ledger.log("fair-rejection-overridden", f"{d.session_id} {d.pid}")
            body: dict[str, str] = {"action": d.action}
            if d.action == REJECT:
                body.update(message=str(d.message), rejection_category=str(d.category))
            target = "APPROVED" if d.action == APPROVE else "REJECTED"
            try:
                api.transition_submission(d.session_id, body)
            except (MaybeActed, ApiRefused) as exc:
                status = str(api.submission(d.session_id).get("status", ""))
                if status != target:
                    raise BackendError(f"{exc} (submission {d.session_id} is {status}); rerun "
                                       "cage-eval prolific review") from None
            ledger.review_done(d.session_id)
            ledger.session_status(d.session_id, target)
            made += 1
    return made


def _request_return(api: ProlificAPI, ledger: ProlificLedger, d: Decision) -> int:
    """Ask once: a request whose answer was lost is never repeated (the participant would get
    the message twice); the ledger marks it ``unknown``."""
    if ledger.return_request(d.session_id) is not None:
        return 0
    reason = str(d.message)
    ledger.return_request_state(d.session_id, "calling", reason)
    try:
        api.request_return(d.session_id, [reason])
    except MaybeActed:
        ledger.return_request_state(d.session_id, "unknown")
        return 1
    ledger.return_request_state(d.session_id, "done")
    return 1


# --------------------------------------------------------------------------- bonuses


@dataclass(frozen=True)
class BonusPlan:
    """A bonus CSV checked against the study: ``(PID, sub-units)`` rows and their total."""

    study_id: str
    rows: list[tuple[str, int]]
    currency: str

    @property
    def total(self) -> int:
        return sum(m for _, m in self.rows)

    @property
    def csv_text(self) -> str:
        """Prolific's ``csv_bonuses``: ``PID,amount`` in major units, one per line."""
        return "\n".join(f"{pid},{Decimal(m) / 100:.2f}" for pid, m in self.rows)

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.study_id}|{self.csv_text}".encode()).hexdigest()


def read_bonus_csv(path: Path, run_dir: Path) -> BonusPlan:
    """``PID,amount`` rows (amount in pounds/dollars, e.g. ``0.50``; a header line is allowed).
    Every PID must be a participant of the run's study, once."""
    study_id, _ = published_study(run_dir)
    with ProlificLedger.open(run_dir) as ledger:
        known = {s["pid"] for s in ledger.sessions()}
        currency = str((ledger.settings or {}).get("currency", "GBP"))
    try:
        lines = list(csv.reader(Path(path).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: unreadable ({exc})") from None
    rows: list[tuple[str, int]] = []
    for n, line in enumerate(lines, start=1):
        if not line or not "".join(line).strip():
            continue
        if n == 1 and len(line) == 2 and not line[1].strip().replace(".", "").isdigit():
            continue  # a header
        if len(line) != 2:
            raise InputFileError(f"{path}: line {n}: write PID,amount")
        pid, amount = line[0].strip(), line[1].strip()
        if pid not in known:
            raise InputFileError(f"{path}: line {n}: PID {pid[:30]!r} took no part in study "
                                 f"{study_id}; run cage-eval prolific status first")
        if any(p == pid for p, _ in rows):
            raise InputFileError(f"{path}: line {n}: PID {pid} appears twice; give one total")
        minor = parse_major(amount, what=f"{path}: line {n}: amount")
        if minor <= 0:
            raise InputFileError(f"{path}: line {n}: amount must be more than 0")
        rows.append((pid, minor))
    if not rows:
        raise InputFileError(f"{path}: no PID,amount rows")
    return BonusPlan(study_id, rows, currency)


@dataclass(frozen=True)
class BonusResult:
    """The bonus as Prolific priced it (sub-units), and whether it is paid."""

    bonus_id: str
    amount: int
    fees: Decimal
    total: Decimal
    paid: bool


def bonus(run_dir: Path, api: ProlificAPI, plan: BonusPlan,
          confirm: Callable[[str], bool]) -> BonusResult:
    """Create the bonus (step 1), check its amount against the CSV exactly, and pay it (step 2)
    once ``confirm`` agrees. The same CSV is never paid twice."""
    with files.run_lock(run_dir, "paying bonuses"), ProlificLedger.open(run_dir) as ledger:
        row = ledger.bonus(plan.digest)
        if row is not None and row["state"] == "paid":
            raise ConfigError(f"this bonus ({len(plan.rows)} participants, "
                              f"{format_minor(plan.total, plan.currency)}) was already paid as "
                              f"{row['bonus_id']} on {row['updated_at']}; nothing was paid again")
        if row is None or row["state"] == "creating":
            # An unpaid bonus costs nothing, so a lost answer to a create is simply made again.
            ledger.bonus_state(plan.digest, "creating", csv=plan.csv_text, amount=plan.total)
            made = api.create_bonus(plan.study_id, plan.csv_text)
            amount = Decimal(str(made.get("amount", "nan")))
            if amount != plan.total:
                raise BackendError(
                    f"Prolific priced bonus {made.get('id')} at {amount} sub-units, but the CSV "
                    f"adds up to {plan.total} ({format_minor(plan.total, plan.currency)}); "
                    "nothing was paid (a unit mismatch)")
            ledger.bonus_state(plan.digest, "created", bonus_id=str(made["id"]),
                               fees=str(made.get("fees", 0)),
                               total=str(made.get("total_amount", 0)))
            row = ledger.bonus(plan.digest)
        assert row is not None
        fees, total = Decimal(row["fees"] or 0), Decimal(row["total"] or 0)
        result = BonusResult(str(row["bonus_id"]), int(row["amount"]), fees, total, False)
        if not confirm(f"Pay bonus {result.bonus_id}: {format_minor(result.amount, plan.currency)}"
                       f" to {len(plan.rows)} participant(s) + fees "
                       f"{format_minor(fees, plan.currency)} = "
                       f"{format_minor(total, plan.currency)}?"):
            return result
        ledger.bonus_state(plan.digest, "paying")
        try:
            api.pay_bonus(result.bonus_id)
        except ApiRefused as exc:
            if "already" not in exc.detail.lower():
                raise
        except MaybeActed as exc:
            raise BackendError(f"{exc}; rerun the same bonus command: the ledger knows this "
                               "bonus and pays it at most once") from None
        ledger.bonus_state(plan.digest, "paid")
        return BonusResult(result.bonus_id, result.amount, fees, total, True)
