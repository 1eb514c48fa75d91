"""A published Prolific study for the tests: a real Turkle server on 127.0.0.1 (with its
gateway), the Prolific stand-in, a synthetic run, and participants who use the gateway over HTTP.

    with prolific_study(tmp_path, tasks_per_participant=2) as s:
        p = Participant(s, "P1"); p.arrive(); p.answer_all(choose)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from crowd_fixtures import make_run_dir
from prolific_standin import TOKEN, ProlificStandIn, running
from turkle_helpers import ASSIGNMENT, ITEM_ID, _csrf

from crowds.prolific import backend
from crowds.prolific.api import ProlificAPI
from crowds.prolific.study import StudySettings
from crowds.turkle import server as turkle_server
from crowds.turkle.api import TurkleAPI
from crowds.turkle.backend import TurklePublishOptions
from crowds.turkle.host import TurkleTaskHost

TIMEOUT = 20


@dataclass
class Study:
    """Everything a test needs about one published study."""

    run: Path
    turkle_url: str
    standin: ProlificStandIn
    api: ProlificAPI
    host: TurkleTaskHost
    study_id: str
    code: str
    batch_id: int

    def start_url(self, pid: str, session_id: str) -> str:
        return (f"{self.turkle_url}/prolific/start/?PROLIFIC_PID={pid}&STUDY_ID={self.study_id}"
                f"&SESSION_ID={session_id}")


@contextlib.contextmanager
def prolific_study(tmp_path: Path, *, tasks_per_participant: int = 2,
                   places: int | None = None,
                   pairs_per_cell: int = 1, run_id: str = "9a1c0e5d7b3f2a61",
                   public_host: str | None = None, assignments: int = 3,
                   attention_rate: float = 0.0, analysis_plan: Any = None) -> Iterator[Study]:
    """``analysis_plan`` (an ``AnalysisPlan``) is frozen when the batch is published."""
    run = make_run_dir(tmp_path / "run", run_id=run_id, pairs_per_cell=pairs_per_cell)
    with running(ProlificStandIn()) as standin, \
            turkle_server.start_server(
                tmp_path / "home", port=0, timeout=60, behind_proxy=public_host is not None,
                allowed_hosts=(public_host,) if public_host else ()) as server:
        turkle = TurkleAPI(server.url, turkle_server.read_credentials(server.home).token)
        host = TurkleTaskHost(turkle)
        batch = host.publish(run, TurklePublishOptions(
            assignments=assignments, hours=1, attention_rate=attention_rate,
            analysis_plan=analysis_plan))
        api = ProlificAPI(TOKEN, base_url=standin.url, sleep=lambda s: None)
        settings = StudySettings(
            name="Which image looks more real?", description="Pick the more real image.",
            reward=100, currency="GBP", minutes=10,
            places=places or -(-batch.n_tasks * assignments // tasks_per_participant),
            tasks_per_participant=tasks_per_participant,
            gateway_url="https://study.example.org", completion_page=standin.completion_page)
        plan = backend.prepare(run, settings, n_tasks=batch.n_tasks, assignments=assignments,
                               fee_rate=Decimal("0.333"), max_cost=None, allow_low_pay=False)
        report = backend.publish(plan, api, host, batch_id=batch.batch_id,
                                 workspace_id="ws0000000000000000000001", max_cost=None,
                                 confirm=lambda q: True)
        yield Study(run, server.url, standin, api, host, report.study_id,
                    plan.settings.completion_code, batch.batch_id)
    assert standin.schema_errors == []


@dataclass
class Participant:
    """A Prolific participant who arrives through the gateway and answers over HTTP."""

    study: Study
    pid: str
    session_id: str = ""
    session: requests.Session = field(default_factory=requests.Session)
    answers: dict[str, str] = field(default_factory=dict)
    landed: str = ""

    def __post_init__(self) -> None:
        if not self.session_id:
            self.session_id = self.study.standin.add_submission(self.study.study_id, self.pid)

    def arrive(self) -> str:
        """Open the study link; the URL Prolific's participant lands on."""
        resp = self.session.get(self.study.start_url(self.pid, self.session_id), timeout=TIMEOUT)
        self.landed = resp.url
        return resp.url

    def _task(self, url: str) -> tuple[int, int, str, str] | None:
        match = ASSIGNMENT.search(url)
        if not match:
            return None
        task_id, assignment_id = int(match.group(1)), int(match.group(2))
        frame = self.session.get(f"{self.study.turkle_url}/task/{task_id}/assignment/iframe/"
                                 f"{assignment_id}/", timeout=TIMEOUT)
        return task_id, assignment_id, ITEM_ID.search(frame.text).group(1), _csrf(frame.text)

    def answer(self, choose: Callable[[str], str], n: int | None = None) -> int:
        """Answer tasks from the current page on (at most ``n``); returns how many."""
        done = 0
        url = self.landed
        while (n is None or done < n) and (task := self._task(url)) is not None:
            task_id, assignment_id, item_id, csrf = task
            assert item_id not in self.answers, f"{self.pid} got {item_id} twice"
            self.answers[item_id] = choose(item_id)
            page = f"{self.study.turkle_url}/task/{task_id}/assignment/{assignment_id}/"
            resp = self.session.post(page, data={
                "csrfmiddlewaretoken": csrf, "choice": self.answers[item_id],
                "item_id": item_id, "elapsed_ms": "2100"}, headers={"Referer": page},
                timeout=TIMEOUT)
            url = self.landed = resp.url
            done += 1
        return done

    def finish(self, status: str = "AWAITING REVIEW") -> None:
        """What Prolific does once the participant arrived at the completion page."""
        code = re.search(r"cc=([A-Za-z0-9]+)", self.landed)
        self.study.standin.set_status(self.session_id, status, code.group(1) if code else None)
