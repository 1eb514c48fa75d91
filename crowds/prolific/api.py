"""A small client for Prolific's public API v1 (``Authorization: Token <key>``).

Field names and paths follow Prolific's API reference as generated into the ``pyrolific``
models (``CreateStudy``, ``StudyTransition``, ``SubmissionTransition``,
``RequestSubmissionReturnBody``, ``CreateBonusPaymentsBody``, ``StudyCostRequest``, ``WorkspaceBalance``, ``SubmissionShort``).

Retries: a 429 is retried after its ``Retry-After`` (capped), a 5xx or a lost connection of a
read is retried with backoff. A write whose answer was lost (timeout, connection reset, 5xx) may
have been carried out by the server, so it is *not* blindly repeated: :class:`MaybeActed` is
raised and the caller looks the object up first (``crowds.prolific.backend``). The token lives only
in the session headers; it never appears in messages or ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from cage_eval.errors import BackendError, ConfigError

DEFAULT_URL = "https://api.prolific.com"
TOKEN_ENV = "PROLIFIC_TOKEN"
DEFAULT_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 6
MAX_RETRY_AFTER_S = 120.0


class MaybeActed(BackendError):
    """A write whose answer was lost: the server may or may not have carried it out."""


class ApiRefused(BackendError):
    """Prolific answered a 4xx (other than 429): ``status`` and ``detail`` say why."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def normalise_url(url: str) -> str:
    """``https://host[:port]`` without a trailing slash; :class:`ConfigError` for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"--api-url {url!r}: not a base URL such as {DEFAULT_URL}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _retry_after(value: str | None) -> float:
    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class ProlificAPI:
    """Token-authenticated access to Prolific's API v1.

    Parameters
    ----------
    token : an API token (Prolific > Settings > API tokens); kept in memory only.
    base_url : ``https://api.prolific.com`` (a stand-in server in the tests).
    timeout : seconds per request.
    sleep : how to wait between retries (the tests count the waits).
    """

    def __init__(self, token: str, *, base_url: str = DEFAULT_URL,
                 timeout: float = DEFAULT_TIMEOUT_S,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import requests

        if not token:
            raise ConfigError(f"no Prolific API token; set {TOKEN_ENV} (Prolific > Settings > "
                              "API tokens)")
        self.url = normalise_url(base_url)
        self.timeout = timeout
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {token}"
        self._session.headers["Accept"] = "application/json"
        #: Waits taken after 429 answers, in seconds (for the report and the tests).
        self.waits: list[float] = []

    def __repr__(self) -> str:
        return f"ProlificAPI(url={self.url!r})"

    def close(self) -> None:
        self._session.close()

    # ----------------------------------------------------------------------- transport

    def _request(self, method: str, path: str, *, json: Any = None,
                 params: dict[str, str] | None = None) -> Any:
        import requests

        url = urljoin(self.url + "/", path.lstrip("/"))
        if not url.startswith(self.url + "/"):
            raise BackendError(f"Prolific at {self.url}: refusing to send the API token to "
                               f"{url[:80]!r}")
        write = method != "GET"
        what = f"Prolific {method} {urlsplit(url).path}"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                resp = self._session.request(method, url, json=json, params=params,
                                             timeout=self.timeout, allow_redirects=False)
            except (requests.Timeout, requests.ConnectionError) as exc:
                kind = "no answer" if isinstance(exc, requests.Timeout) else "connection lost"
                if write:
                    raise MaybeActed(f"{what}: {kind}; the server may have acted") from None
                if attempt == MAX_ATTEMPTS:
                    raise BackendError(f"{what}: {kind} after {attempt} attempts; check the "
                                       "network and https://status.prolific.com") from None
                self._sleep(min(2.0 ** attempt, 30.0))
                continue
            if resp.status_code == 429 and attempt < MAX_ATTEMPTS:
                wait = _retry_after(resp.headers.get("Retry-After"))
                self.waits.append(wait)
                self._sleep(wait)
                continue
            if resp.status_code >= 500:
                if write:
                    raise MaybeActed(f"{what}: HTTP {resp.status_code}; the server may have acted")
                if attempt < MAX_ATTEMPTS:
                    self._sleep(min(2.0 ** attempt, 30.0))
                    continue
            return self._answer(resp, what)
        raise BackendError(f"{what}: still throttled after {MAX_ATTEMPTS} attempts; try later")

    def _answer(self, resp: Any, what: str) -> Any:
        if resp.status_code in (401, 403):
            raise BackendError(f"{what}: refused (HTTP {resp.status_code}); the API token is "
                               "missing, revoked or lacks access to this workspace")
        if resp.status_code >= 400:
            detail = _detail(resp)
            raise ApiRefused(f"{what}: HTTP {resp.status_code}: {detail}", resp.status_code,
                             detail)
        if resp.status_code >= 300:
            raise BackendError(f"{what}: redirected to {resp.headers.get('Location', '?')[:80]}; "
                               "is --api-url Prolific's API?")
        if resp.status_code == 204 or not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            raise BackendError(f"{what}: did not return JSON; is --api-url Prolific's API?") from None

    def _results(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a list endpoint (``results``), following ``_links.next.href``."""
        out: list[dict[str, Any]] = []
        page = self._request("GET", path, params=params)
        for _ in range(10_000):
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise BackendError(f"Prolific GET {path}: unexpected answer {str(page)[:120]}")
            out.extend(page["results"])
            nxt = ((page.get("_links") or {}).get("next") or {}).get("href")
            if not nxt:
                return out
            page = self._request("GET", nxt)
        raise BackendError(f"Prolific GET {path}: too many pages")

    # ----------------------------------------------------------------------- endpoints

    def me(self) -> dict[str, Any]:
        return self._request("GET", "/api/v1/users/me/")

    def workspaces(self) -> list[dict[str, Any]]:
        return self._results("/api/v1/workspaces/")

    def balance(self, workspace_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/workspaces/{_id(workspace_id)}/balance/")

    def study_cost(self, reward: int, places: int) -> dict[str, Any]:
        return self._request("POST", "/api/v1/study-cost-calculator/",
                             json={"reward": reward, "total_available_places": places})

    def studies(self) -> list[dict[str, Any]]:
        return self._results("/api/v1/studies/")

    def study(self, study_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/studies/{_id(study_id)}/")

    def create_study(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/v1/studies/", json=body)

    def update_study(self, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("PATCH", f"/api/v1/studies/{_id(study_id)}/", json=body)

    def transition_study(self, study_id: str, action: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/studies/{_id(study_id)}/transition/",
                             json={"action": action})

    def submissions(self, study_id: str) -> list[dict[str, Any]]:
        return self._results(f"/api/v1/studies/{_id(study_id)}/submissions/")

    def submission(self, submission_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/submissions/{_id(submission_id)}/")

    def transition_submission(self, submission_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/submissions/{_id(submission_id)}/transition/",
                             json=body)

    def request_return(self, submission_id: str, reasons: list[str]) -> dict[str, Any]:
        """Ask the participant to return the submission (``RequestSubmissionReturnBody``)."""
        return self._request("POST", f"/api/v1/submissions/{_id(submission_id)}/request-return/",
                             json={"request_return_reasons": reasons})

    def create_bonus(self, study_id: str, csv_bonuses: str) -> dict[str, Any]:
        return self._request("POST", "/api/v1/submissions/bonus-payments/",
                             json={"study_id": study_id, "csv_bonuses": csv_bonuses})

    def pay_bonus(self, bonus_id: str) -> dict[str, Any]:
        return self._request("POST", f"/api/v1/bulk-bonus-payments/{_id(bonus_id)}/pay/")


def _id(value: str) -> str:
    if not isinstance(value, str) or not value.isalnum():
        raise BackendError(f"Prolific id {str(value)[:40]!r}: not alphanumeric")
    return value


def _detail(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        text = (resp.text or "").strip()
        return text.splitlines()[0][:200] if text else "(no body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and "detail" in err:
            detail = err["detail"]
            return (" ".join(map(str, detail)) if isinstance(detail, list) else str(detail))[:300]
        return str(err)[:300]
    return str(data)[:300]
