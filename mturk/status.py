"""Progress and money of a published run: the ledger's view, and MTurk's when a client is given."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cage_eval import runs
from mturk import aws
from mturk.collect import list_assignments
from mturk.costs import estimate_cost
from mturk.environments import environment_named
from mturk.ledger import CREATED, Ledger


@dataclass
class RunStatus:
    """The state of one run's HITs."""

    environment: str
    hit_type_id: str | None
    preview_url: str | None
    ledger_counts: dict[str, int]
    expired: int
    estimate_total: Decimal          # every assignment of every item approved
    per_assignment: Decimal          # reward + fee
    remote: bool = False             # the numbers below come from MTurk
    assignments: Counter[str] = field(default_factory=Counter)   # Submitted/Approved/Rejected
    available: int = 0               # assignments still open to workers
    pending: int = 0                 # accepted, not yet submitted

    @property
    def spent(self) -> Decimal:
        """Paid so far: approved assignments x (reward + fee)."""
        return self.per_assignment * self.assignments["Approved"]

    @property
    def committed(self) -> Decimal:
        """Approved plus submitted (auto-approval will pay those unless rejected)."""
        return self.per_assignment * (self.assignments["Approved"] + self.assignments["Submitted"])


def run_status(run_dir: Path, client: Any | None = None, *, concurrency: int = 8) -> RunStatus:
    """Read the ledger (and, with ``client``, count assignments on MTurk)."""
    run_dir = Path(run_dir)
    run_id = str(runs.read_manifest(run_dir).get("run_id") or "")
    with Ledger.open(run_dir, run_id=run_id) as ledger:
        counts = ledger.counts()
        rows = ledger.rows(state=CREATED)
        settings = ledger.settings
        env = environment_named(ledger.environment)
        hit_type_id = ledger.hit_type_id
    total_items = sum(counts.values())
    est = estimate_cost(settings["reward"], int(settings["assignments"]), total_items,
                        masters=bool(settings.get("masters")))
    status = RunStatus(
        environment=env.name, hit_type_id=hit_type_id,
        preview_url=env.preview_url(hit_type_id) if hit_type_id else None,
        ledger_counts=counts, expired=sum(1 for r in rows if r.expired_at),
        estimate_total=est.total, per_assignment=est.per_assignment,
    )
    if client is None or not rows:
        return status

    def one(hit_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            hit = client.get_hit(HITId=hit_id)["HIT"]
        except Exception as exc:
            raise aws.backend_error(exc, f"GetHIT {hit_id}") from None
        return hit, list_assignments(client, hit_id)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="status") as pool:
        fetched = list(pool.map(one, [str(r.hit_id) for r in rows]))
    status.remote = True
    for hit, assignments in fetched:
        status.available += int(hit.get("NumberOfAssignmentsAvailable", 0))
        status.pending += int(hit.get("NumberOfAssignmentsPending", 0))
        for a in assignments:
            status.assignments[a.get("AssignmentStatus", "")] += 1
    return status
