"""Helpers for the Turkle tests: a worker that uses Turkle's real web pages over HTTP.

``Worker`` logs in at ``/login/`` with the CSRF token, accepts the next task of a batch, reads the
task form from the assignment's iframe page and posts the answer fields with the form's CSRF token,
exactly what a browser does (minus the JavaScript that fills ``elapsed_ms``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import requests

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ASSIGNMENT = re.compile(r"/task/(\d+)/assignment/(\d+)/$")
ITEM_ID = re.compile(r'name="item_id" id="item_id" value="([^"]*)"')
TIMEOUT = 20


def _csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@dataclass
class Worker:
    """One worker account driving Turkle's worker pages with a ``requests.Session``."""

    url: str
    username: str
    password: str
    session: requests.Session = field(default_factory=requests.Session)

    def login(self) -> None:
        page = self.session.get(f"{self.url}/login/", timeout=TIMEOUT)
        assert page.status_code == 200
        resp = self.session.post(
            f"{self.url}/login/",
            data={"username": self.username, "password": self.password,
                  "csrfmiddlewaretoken": _csrf(page.text)},
            headers={"Referer": f"{self.url}/login/"},
            timeout=TIMEOUT,
        )
        assert resp.status_code == 200 and resp.url.rstrip("/") == self.url, (
            f"login of {self.username} failed: landed on {resp.url}")

    def next_task(self, batch_id: int) -> tuple[int, int, str] | None:
        """Accept the next task: (task id, assignment id, item_id shown), or None when done."""
        resp = self.session.get(f"{self.url}/batch/{batch_id}/accept_next_task/", timeout=TIMEOUT)
        return self._open(resp.url)

    def _open(self, page_url: str) -> tuple[int, int, str] | None:
        """Read the task form of the assignment page at ``page_url`` (None if not one)."""
        match = ASSIGNMENT.search(page_url)
        if not match:
            return None
        task_id, assignment_id = int(match.group(1)), int(match.group(2))
        frame = self.session.get(
            f"{self.url}/task/{task_id}/assignment/iframe/{assignment_id}/", timeout=TIMEOUT)
        assert frame.status_code == 200
        item = ITEM_ID.search(frame.text)
        assert item, "the task form has no item_id field"
        self._form_csrf = _csrf(frame.text)
        return task_id, assignment_id, item.group(1)

    def submit(self, task_id: int, assignment_id: int, item_id: str, choice: str,
               elapsed_ms: int | str = 1500) -> requests.Response:
        """Post the answer; Turkle then redirects to the next task (auto-accept) or the index."""
        return self.session.post(
            f"{self.url}/task/{task_id}/assignment/{assignment_id}/",
            data={"csrfmiddlewaretoken": self._form_csrf, "choice": choice, "item_id": item_id,
                  "elapsed_ms": str(elapsed_ms)},
            headers={"Referer": f"{self.url}/task/{task_id}/assignment/{assignment_id}/"},
            timeout=TIMEOUT,
        )

    def work_all(self, batch_id: int, choose) -> dict[str, str]:
        """Answer every task this worker gets, following Turkle's auto-accept redirects;
        ``choose(item_id) -> 'top'|'bottom'``."""
        answers: dict[str, str] = {}
        task = self.next_task(batch_id)
        for _ in range(1000):
            if task is None:
                return answers
            task_id, assignment_id, item_id = task
            assert item_id not in answers, f"{self.username} got item {item_id} twice"
            answers[item_id] = choose(item_id)
            resp = self.submit(task_id, assignment_id, item_id, answers[item_id])
            assert resp.status_code == 200
            task = self._open(resp.url)
        raise AssertionError("worker loop did not end")
