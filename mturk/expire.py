"""Expire a run's HITs now: ``UpdateExpirationForHIT`` with a time in the past (docs/platforms.md §2.9).

Workers can no longer accept them; assignments already accepted can still be submitted and must be
reviewed as usual. Idempotent: HITs the ledger marks expired are skipped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cage_eval import files, runs
from mturk import aws
from mturk.ledger import CREATED, Ledger

#: "If you update it to a time in the past, the HIT will be immediately expired."
PAST = datetime(2015, 1, 1, tzinfo=timezone.utc)


def expire(run_dir: Path, client: Any, *, concurrency: int = 8) -> tuple[int, int]:
    """Expire every created, not yet expired HIT; return ``(expired_now, already_expired)``.

    Holds the run lock."""
    run_dir = Path(run_dir)
    run_id = str(runs.read_manifest(run_dir).get("run_id") or "")
    with files.run_lock(run_dir, "expired"), Ledger.open(run_dir, run_id=run_id) as ledger:
        rows = ledger.rows(state=CREATED)
        todo = [r for r in rows if r.expired_at is None]

        def one(hit_id: str) -> None:
            try:
                client.update_expiration_for_hit(HITId=hit_id, ExpireAt=PAST)
            except Exception as exc:
                raise aws.backend_error(exc, f"UpdateExpirationForHIT {hit_id}") from None
            ledger.mark_expired(hit_id)

        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="expire") as pool:
            list(pool.map(one, [str(r.hit_id) for r in todo]))
    return len(todo), len(rows) - len(todo)
