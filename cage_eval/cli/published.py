"""What a run's publication planned and cost, read back from its ledgers (no network, nothing
written).

``cage-eval analyze`` uses :func:`assignments_per_item` to say how many assignments a partly
answered run is still waiting for; ``cage-eval report`` uses :func:`spending` for the money.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from cage_eval import runs
from cage_eval.errors import InputFileError, RunDirError
from cage_eval.textfiles import read_csv_table


def assignments_per_item(run_dir: str | Path) -> int | None:
    """Assignments per HIT item planned by the run's MTurk or Turkle publication.

    ``None`` when the run was never published, or when its ledger cannot be read (the analysis
    then falls back on the results file's ``MaxAssignments`` column).
    """
    from crowds.turkle.ledger import TurkleLedger
    from mturk.ledger import Ledger

    run_dir = Path(run_dir)
    try:
        if (run_dir / runs.LEDGER).is_file():
            with Ledger.open(run_dir) as ledger:
                value = ledger.settings.get("assignments")
            return int(value) if isinstance(value, int) and value >= 1 else None
        if (run_dir / runs.TURKLE_LEDGER).is_file():
            with TurkleLedger.open(run_dir) as turkle:
                pub = turkle.publication()
            return int(pub.assignments_per_task) if pub is not None else None
    except RunDirError:
        return None
    return None


@dataclass(frozen=True)
class Spending:
    """The money side of a run's publication, from its ledger and ``RUN/results.csv``.

    Attributes
    ----------
    backend : ``"mturk"``, ``"turkle"`` or ``"prolific"``.
    environment : ``"sandbox"`` or ``"production"`` (MTurk), ``"local"`` (Turkle),
        ``"production"`` (Prolific has no sandbox).
    hits_published, hits_planned : HITs created so far; HIT items the publication planned.
    assignments_per_hit : assignments per HIT.
    reward, fee_per_assignment : dollars per assignment (``None`` for Turkle: nobody is paid).
    planned_total : dollars if every planned assignment is approved (``None`` for Turkle).
    approved, submitted, rejected : assignments by ``AssignmentStatus`` in ``RUN/results.csv``,
        as of the last ``collect`` (all 0 before any); on Prolific, submissions APPROVED,
        AWAITING REVIEW and REJECTED as the ledger last saw them (``status``, ``collect``,
        ``review``).
    currency : ``"USD"``, or the Prolific workspace's currency.
    places, returned : Prolific: the study's places; submissions RETURNED, TIMED-OUT or
        SCREENED OUT (unpaid).
    bonuses_paid, bonus_fees : bonuses the ledger records as paid, and their fees.
    On Prolific ``reward`` is per place and ``fee_per_assignment`` the fee per place implied by
    Prolific's own price of the study at publish time (``None`` when the ledger has none).
    """

    backend: str
    environment: str
    hits_published: int
    hits_planned: int
    assignments_per_hit: int
    reward: Decimal | None = None
    fee_per_assignment: Decimal | None = None
    planned_total: Decimal | None = None
    approved: int = 0
    submitted: int = 0
    rejected: int = 0
    currency: str = "USD"
    places: int = 0
    returned: int = 0
    bonuses_paid: Decimal = Decimal(0)
    bonus_fees: Decimal = Decimal(0)

    @property
    def real_money(self) -> bool:
        """True for the MTurk production environment and for Prolific."""
        return self.backend == "prolific" or (self.backend == "mturk"
                                              and self.environment == "production")

    @property
    def fees_known(self) -> bool:
        return self.fee_per_assignment is not None

    @property
    def rewards_paid(self) -> Decimal:
        """Rewards of the approved assignments / submissions, without fees."""
        return (self.reward or Decimal(0)) * self.approved

    @property
    def per_assignment(self) -> Decimal:
        """Reward plus fee for one approved assignment (0 for Turkle)."""
        return (self.reward or Decimal(0)) + (self.fee_per_assignment or Decimal(0))

    @property
    def paid(self) -> Decimal:
        """Approved assignments x (reward + fee), plus bonuses paid and their fees: what the
        environment charged (play money in the sandbox)."""
        return self.per_assignment * self.approved + self.bonuses_paid + self.bonus_fees

    @property
    def committed(self) -> Decimal:
        """Approved plus submitted (auto-approval pays those unless rejected)."""
        return self.paid + self.per_assignment * self.submitted

    @property
    def real_paid(self) -> Decimal:
        """Real money paid: :attr:`paid` in production, 0 in the sandbox and on Turkle."""
        return self.paid if self.real_money else Decimal(0)


def spending(run_dir: str | Path) -> Spending | None:
    """What the run's publication costs, read offline; ``None`` when nothing was published.

    Raises
    ------
    RunDirError
        A ledger that cannot be read.
    """
    from crowds.turkle.ledger import PUBLISHED, TurkleLedger
    from mturk.costs import estimate_cost
    from mturk.ledger import CREATED, Ledger

    run_dir = Path(run_dir)
    from crowds.prolific.ledger import ProlificLedger

    if ProlificLedger.exists(run_dir):  # before Turkle's: a Prolific study's tasks live there
        return _prolific_spending(run_dir)
    if (run_dir / runs.LEDGER).is_file():
        with Ledger.open(run_dir) as ledger:
            counts, settings, environment = ledger.counts(), ledger.settings, ledger.environment
        planned = sum(counts.values())
        est = estimate_cost(str(settings["reward"]), int(settings["assignments"]), planned,
                            masters=bool(settings.get("masters")))
        status = _statuses(run_dir / runs.RESULTS)
        return Spending(
            backend="mturk", environment=environment, hits_published=counts[CREATED],
            hits_planned=planned, assignments_per_hit=est.assignments, reward=est.reward,
            fee_per_assignment=est.fee_per_assignment, planned_total=est.total,
            approved=status["Approved"], submitted=status["Submitted"],
            rejected=status["Rejected"])
    if (run_dir / runs.TURKLE_LEDGER).is_file():
        with TurkleLedger.open(run_dir) as turkle:
            pub = turkle.publication()
        if pub is None:
            return None
        return Spending(backend="turkle", environment="local",
                        hits_published=pub.n_tasks if pub.state == PUBLISHED else 0,
                        hits_planned=pub.n_tasks, assignments_per_hit=pub.assignments_per_task)
    return None


def _prolific_spending(run_dir: Path) -> Spending | None:
    """A Prolific study's money as its ledger records it (amounts in major units)."""
    import json

    from crowds.prolific.backend import FREED
    from crowds.prolific.ledger import ProlificLedger
    from crowds.turkle.ledger import PUBLISHED, TurkleLedger

    with ProlificLedger.open(run_dir) as ledger:
        study, settings = ledger.study(), ledger.settings or {}
        sessions = ledger.sessions()
        cost = json.loads(ledger.meta("study_cost") or "null")
        bonuses = [b for b in ledger.all_bonuses() if b["state"] == "paid"]
    if study is None or not settings:
        return None
    cent = Decimal(100)
    reward = Decimal(int(settings["reward"])) / cent
    fee = None
    planned = reward * study.places
    if isinstance(cost, dict) and int(cost.get("places") or 0) > 0:
        total = Decimal(str(cost["total_cost"])) / cent
        fee = total / int(cost["places"]) - reward
        planned = (reward + fee) * study.places
    status = Counter(str(s.get("status") or "") for s in sessions)
    hits, planned_hits, per_hit = 0, 0, 0
    if (run_dir / runs.TURKLE_LEDGER).is_file():
        with TurkleLedger.open(run_dir) as turkle:
            pub = turkle.publication()
        if pub is not None:
            hits = pub.n_tasks if pub.state == PUBLISHED else 0
            planned_hits, per_hit = pub.n_tasks, pub.assignments_per_task
    return Spending(
        backend="prolific", environment="production" if study.state == "published" else "draft",
        hits_published=hits, hits_planned=planned_hits, assignments_per_hit=per_hit,
        reward=reward, fee_per_assignment=fee, planned_total=planned,
        approved=status["APPROVED"], submitted=status["AWAITING REVIEW"],
        rejected=status["REJECTED"], currency=str(settings.get("currency", "GBP")),
        places=study.places, returned=sum(n for s, n in status.items() if s in FREED),
        bonuses_paid=sum((Decimal(int(b["amount"])) / cent for b in bonuses), Decimal(0)),
        bonus_fees=sum((Decimal(str(b["fees"] or 0)) / cent for b in bonuses), Decimal(0)))


def _statuses(results: Path) -> Counter[str]:
    """Assignments per ``AssignmentStatus`` in a collected results file (empty when absent)."""
    counts: Counter[str] = Counter()
    if not results.is_file():
        return counts
    try:
        table = read_csv_table(results, warn=False)  # the reader and limits analyze uses
    except InputFileError as exc:
        raise RunDirError(f"{results}: unreadable ({exc}); collect the answers again") from None
    counts.update(table.column("AssignmentStatus"))
    return counts
