"""What a run's publication planned, read back from its ledgers (no network, nothing written).

``cage-eval analyze`` uses :func:`assignments_per_item` to say how many assignments a partly
answered run is still waiting for.
"""

from __future__ import annotations

from pathlib import Path

from cage_eval import runs
from cage_eval.errors import RunDirError


def assignments_per_item(run_dir: str | Path) -> int | None:
    """Assignments per HIT item planned by the run's MTurk or Turkle publication.

    ``None`` when the run was never published, or when its ledger cannot be read (the analysis
    then falls back on the results file's ``MaxAssignments`` column).
    """
    from mturk.ledger import Ledger
    from mturk.turkle_ledger import TurkleLedger

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
