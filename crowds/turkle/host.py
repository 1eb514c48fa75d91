"""The Turkle server as the place where a recruited crowd (Prolific) does the tasks.

A recruitment platform without hosted pages (Prolific) sends its participants to a URL the
researcher serves. :class:`TurkleTaskHost` is what ``cage-eval prolific`` hands to
:mod:`crowds.prolific.backend`: it publishes the run's batch on the Turkle server (the same
idempotent :func:`crowds.turkle.backend.publish`), registers the study with the server's gateway
(:mod:`crowds.turkle.gateway`), reads the gateway's sessions, frees the tasks of abandoned
submissions, and downloads the checked answers. The Prolific backend never imports this module;
the CLI wires the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cage_eval import files, runs
from cage_eval.errors import BackendError
from crowds.answers import InvalidAnswer, write_invalid_answers

if TYPE_CHECKING:
    from crowds.turkle.api import TurkleAPI
    from crowds.turkle.backend import TurklePublishOptions


@dataclass(frozen=True)
class HostedBatch:
    """The batch a run's tasks live in: ``n_tasks`` tasks x ``assignments`` distinct judges."""

    url: str
    batch_id: int
    n_tasks: int
    assignments: int
    created: bool


@dataclass(frozen=True)
class HostedResults:
    """A checked results download: ``data`` (Turkle's layout, invalid answers left out),
    the archived download ``raw`` and the invalid answers."""

    data: bytes
    raw: Path
    invalid: list[InvalidAnswer]


class TurkleTaskHost:
    """Publish, register, read sessions, release tasks and download answers on one Turkle
    server (a :class:`~crowds.turkle.api.TurkleAPI` with a staff token)."""

    def __init__(self, api: TurkleAPI, *, server_home: Path | None = None) -> None:
        self.api = api
        self.server_home = server_home

    @property
    def url(self) -> str:
        """The server's base URL as the token's holder reaches it."""
        return self.api.url

    def check(self) -> None:
        """One authenticated request: a dead server or a bad token fails before anything."""
        self.api.whoami_check()

    def publish(self, run_dir: Path, options: TurklePublishOptions, *,
                on_step: Any = None) -> HostedBatch:
        """Publish (or find) the run's batch; idempotent."""
        from crowds.turkle.backend import publish

        result = publish(run_dir, self.api, options, server_home=self.server_home,
                         on_step=on_step)
        return HostedBatch(result.url, result.batch_id, result.n_tasks, result.assignments,
                           result.created)

    def batch(self, run_dir: Path) -> HostedBatch:
        """The run's published batch (refused when it lives on another server)."""
        from crowds.turkle.backend import _check_server, published

        pub = published(run_dir)
        _check_server(self.api, pub)
        return HostedBatch(pub.server_url, int(pub.batch_id or 0), pub.n_tasks,
                           pub.assignments_per_task, created=False)

    def register(self, study_id: str, *, batch_id: int, tasks_per_participant: int,
                 completion_code: str, completion_url: str) -> None:
        """Tell the gateway about the study (idempotent)."""
        self.api.register_prolific_study(study_id, {
            "batch_id": batch_id, "tasks_per_participant": tasks_per_participant,
            "completion_code": completion_code, "completion_url": completion_url})

    def sessions(self, study_id: str) -> list[dict[str, Any]]:
        """The gateway's sessions of the study."""
        return self.api.prolific_sessions(study_id)

    def release(self, study_id: str, session_ids: list[str]) -> int:
        """Free the tasks of these sessions; the number of assignments deleted."""
        if not session_ids:
            return 0
        answer = self.api.release_prolific_sessions(study_id, session_ids)
        try:
            return int(answer["assignments_deleted"])
        except (KeyError, TypeError, ValueError):
            raise BackendError(f"Turkle at {self.url}: unexpected answer to a release: "
                               f"{str(answer)[:200]}") from None

    def results(self, run_dir: Path) -> HostedResults:
        """Download the batch's answers, archive them byte for byte, check them."""
        from crowds.turkle.backend import check_results_csv
        from hitgen.items import read_hit_items

        batch = self.batch(run_dir)
        data = self.api.results_csv(batch.batch_id)
        item_ids = {it.item_id for it in read_hit_items(run_dir)}
        checked = check_results_csv(data, item_ids, source=f"Turkle at {self.url}: batch "
                                                           f"{batch.batch_id} results")
        raw = Path(run_dir) / runs.RAW_ANSWERS_DIR / f"turkle_batch_{batch.batch_id}.csv"
        files.atomic_write_bytes(raw, data)
        write_invalid_answers(run_dir, checked.invalid)
        return HostedResults(checked.data, raw, checked.invalid)
