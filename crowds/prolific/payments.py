"""Review (approve / reject) the study's submissions and pay bonuses, each exactly once.

Only ``AWAITING REVIEW`` submissions are ever approved or rejected: Prolific refuses every other
status, and approving a RETURNED or TIMED-OUT submission is the classic mistake, so such a
request never leaves this module. A rejection needs one of Prolific's categories and a message of
at least 100 characters (Prolific's rule). Every call is in the ledger before and after; a lost
answer is resolved by reading the submission back.

Bonuses take two calls: ``POST /submissions/bonus-payments/`` (the CSV ``PID,amount`` in major
units) makes an unpaid bonus whose answer is in sub-units, and ``POST
/bulk-bonus-payments/{id}/pay/`` pays it. The answer's ``amount`` must equal the CSV's total
exactly (else nothing is paid: a unit confusion), and the ledger keys each bonus by the digest of
its CSV so the same bonus is never paid twice.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from cage_eval import files
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


@dataclass(frozen=True)
class Decision:
    """One review decision for one submission (``session_id`` = submission id)."""

    session_id: str
    pid: str
    action: str  # APPROVE or REJECT
    category: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class ReviewPlan:
    """Decisions to make, and the AWAITING REVIEW submissions left to the researcher."""

    decisions: list[Decision]
    left: list[tuple[str, str]]  # (session_id, why)


def plan_review(run_dir: Path, api: ProlificAPI,
                rejections: dict[str, tuple[str, str]] | None = None) -> ReviewPlan:
    """Approve every AWAITING REVIEW submission whose participant answered through the gateway,
    reject the ones in ``rejections`` (``session_id -> (category, message)``), and leave those
    with no recorded answer to the researcher. A rejection of a submission that is not AWAITING
    REVIEW is refused with its status."""
    rejections = dict(rejections or {})
    for category, message in rejections.values():
        if category not in REJECTION_CATEGORIES:
            raise ConfigError(f"--category {category!r}: one of {', '.join(REJECTION_CATEGORIES)}")
        if len(message.strip()) < MIN_REJECTION_MESSAGE:
            raise ConfigError(f"--message: {len(message.strip())} characters; Prolific needs at "
                              f"least {MIN_REJECTION_MESSAGE} to explain a rejection")
    study_id, _ = published_study(run_dir)
    subs = {str(s["id"]): s for s in api.submissions(study_id)}
    for sid in rejections:
        status = str(subs.get(sid, {}).get("status", "not a submission of this study"))
        if status != REVIEWABLE:
            raise ConfigError(f"--reject {sid}: status {status}; only {REVIEWABLE} submissions "
                              "can be rejected")
    with ProlificLedger.open(run_dir) as ledger:
        answered = {s["session_id"]: int(s["answered"]) for s in ledger.sessions()}
        done = {sid for sid in subs if (ledger.review(sid) or {}).get("state") == "done"}
    decisions, left = [], []
    for sid, sub in subs.items():
        if sub.get("status") != REVIEWABLE or sid in done:
            continue
        pid = str(sub.get("participant_id", ""))
        if sid in rejections:
            decisions.append(Decision(sid, pid, "REJECT", *rejections[sid]))
        elif answered.get(sid, 0) > 0:
            decisions.append(Decision(sid, pid, "APPROVE"))
        else:
            left.append((sid, "no answer recorded by the gateway; check it on Prolific"))
    return ReviewPlan(decisions, left)


def apply_review(run_dir: Path, api: ProlificAPI, plan: ReviewPlan) -> int:
    """Carry out the decisions; returns how many were made (a repeat makes none twice)."""
    made = 0
    with files.run_lock(run_dir, "reviewed"), ProlificLedger.open(run_dir) as ledger:
        for d in plan.decisions:
            if (ledger.review(d.session_id) or {}).get("state") == "done":
                continue
            ledger.review_calling(d.session_id, d.action, d.category, d.message)
            body: dict[str, str] = {"action": d.action}
            if d.action == "REJECT":
                body.update(message=str(d.message), rejection_category=str(d.category))
            try:
                api.transition_submission(d.session_id, body)
            except (MaybeActed, ApiRefused) as exc:
                status = str(api.submission(d.session_id).get("status", ""))
                target = "APPROVED" if d.action == "APPROVE" else "REJECTED"
                if status != target:
                    raise BackendError(f"{exc} (submission {d.session_id} is {status}); rerun "
                                       "cage-eval prolific review") from None
            ledger.review_done(d.session_id)
            made += 1
    return made


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
