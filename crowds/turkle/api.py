"""A small client for Turkle's REST API (docs/platforms.md §1.3), with timeouts and clear errors.

It speaks the same API as ``turkle_client`` (``Authorization: Token <key>``, DRF pagination) but
bounds every request with a timeout and turns every failure into a
:class:`cage_eval.errors.BackendError` that names the URL and says what to do. The token is held
only in memory and never appears in messages or ``repr``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

from cage_eval.errors import BackendError, ConfigError

DEFAULT_TIMEOUT_S = 30.0


def normalise_url(url: str) -> str:
    """``http://host:port`` without a trailing slash; :class:`ConfigError` for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r}: not an http(s) URL; e.g. http://127.0.0.1:8000")
    if parts.query or parts.fragment:
        raise ConfigError(f"--url {url!r}: give the server's base URL, without a query")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class TurkleAPI:
    """Token-authenticated access to one Turkle server.

    Parameters
    ----------
    url : str
        Base URL of the server, e.g. ``http://127.0.0.1:8000``.
    token : str
        An API token of a staff user (``HOME/credentials.json`` for servers started by cage-eval).
    timeout : float
        Seconds per request.
    """

    def __init__(self, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        import requests

        self.url = normalise_url(url)
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {token}"
        self._session.headers["Accept"] = "application/json"

    def __repr__(self) -> str:
        return f"TurkleAPI(url={self.url!r})"

    def close(self) -> None:
        self._session.close()

    # ----------------------------------------------------------------------- transport

    def _request(self, method: str, path: str, *, json: Any = None):
        import requests

        url = urljoin(self.url + "/", path.lstrip("/"))
        if not url.startswith(self.url + "/"):  # e.g. a pagination link to another host
            raise BackendError(f"Turkle at {self.url}: refusing to send the API token to "
                               f"{url[:80]!r}, which is not under {self.url}")
        try:
            resp = self._session.request(method, url, json=json, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.Timeout:
            raise BackendError(f"Turkle at {self.url}: no answer to {method} {path} within "
                               f"{self.timeout:.0f} s; is the server overloaded?") from None
        except requests.ConnectionError:
            raise BackendError(f"Turkle at {self.url}: cannot connect; start it with "
                               "`cage-eval turkle serve` or check --url") from None
        if resp.status_code in (401, 403):
            raise BackendError(f"Turkle at {self.url}: {method} {path} refused "
                               f"(HTTP {resp.status_code}); the API token is missing, wrong, or "
                               "not a staff user's")
        if resp.status_code >= 400:
            raise BackendError(f"Turkle at {self.url}: {method} {path} failed "
                               f"(HTTP {resp.status_code}): {_detail(resp)}")
        if resp.status_code >= 300:
            raise BackendError(f"Turkle at {self.url}: {method} {path} redirected to "
                               f"{resp.headers.get('Location', '?')}; is --url a Turkle server?")
        return resp

    def _json(self, method: str, path: str, *, json: Any = None) -> Any:
        resp = self._request(method, path, json=json)
        try:
            return resp.json()
        except ValueError:
            raise BackendError(f"Turkle at {self.url}: {method} {path} did not return JSON; "
                               "is --url a Turkle server?") from None

    def _walk(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page: Any = self._json("GET", path)
        while True:
            if not isinstance(page, dict) or "results" not in page:
                raise BackendError(f"Turkle at {self.url}: GET {path} is not paginated; the "
                                   "server's REST_FRAMEWORK settings differ from Turkle's")
            out.extend(page["results"])
            nxt = page.get("next")
            if not nxt:
                return out
            page = self._json("GET", nxt)

    # ----------------------------------------------------------------------- endpoints

    def whoami_check(self) -> None:
        """Check the URL and token with one cheap authenticated request."""
        self._json("GET", "/api/projects/")

    def users(self) -> list[dict[str, Any]]:
        return self._walk("/api/users/")

    def create_user(self, username: str, password: str) -> dict[str, Any]:
        return self._json("POST", "/api/users/", json={"username": username, "password": password})

    def projects(self) -> list[dict[str, Any]]:
        return self._walk("/api/projects/")

    def project(self, project_id: int) -> dict[str, Any]:
        return self._json("GET", f"/api/projects/{int(project_id)}/")

    def create_project(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/api/projects/", json=data)

    def batches(self) -> list[dict[str, Any]]:
        # Not /api/projects/{id}/batches/: Turkle answers 404 there when a project has no batch.
        return self._walk("/api/batches/")

    def batch(self, batch_id: int) -> dict[str, Any]:
        return self._json("GET", f"/api/batches/{int(batch_id)}/")

    def create_batch(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/api/batches/", json=data)

    def progress(self, batch_id: int) -> dict[str, int]:
        data = self._json("GET", f"/api/batches/{int(batch_id)}/progress/")
        try:
            return {k: int(data[k]) for k in ("total_tasks", "total_task_assignments",
                                              "total_finished_tasks",
                                              "total_finished_task_assignments")}
        except (KeyError, TypeError, ValueError):
            raise BackendError(f"Turkle at {self.url}: unexpected progress answer for batch "
                               f"{batch_id}: {str(data)[:200]}") from None

    def results_csv(self, batch_id: int) -> bytes:
        """The batch results CSV, byte for byte as Turkle serves it."""
        path = f"/api/batches/{int(batch_id)}/results/"
        resp = self._request("GET", path)
        data = resp.content
        # Stock Turkle 3.1.0 sets Content-Length to the number of *characters*, so a body with
        # non-ASCII text arrives cut short by as many bytes as it has extra UTF-8 bytes. Its CSV
        # writer ends every row with a newline, so a complete download ends with one.
        if not data.endswith(b"\n"):
            raise BackendError(f"Turkle at {self.url}: GET {path} arrived incomplete (stock "
                               "Turkle 3.1.0 miscounts Content-Length when results hold "
                               "non-ASCII text); serve it with `cage-eval turkle serve`, which "
                               "corrects this, or download the CSV from the admin UI")
        return data


    # ----------------------------------------------------------------- the Prolific gateway

    def register_prolific_study(self, study_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Tell the server's Prolific gateway which batch, quota and completion URL a study has."""
        return self._json("PUT", f"/api/cage-eval/prolific/studies/{_path_id(study_id)}/",
                          json=data)

    def prolific_sessions(self, study_id: str) -> list[dict[str, Any]]:
        """The sessions the gateway recorded for a study (PID, SESSION_ID, tasks answered)."""
        data = self._json("GET", f"/api/cage-eval/prolific/studies/{_path_id(study_id)}/sessions/")
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise BackendError(f"Turkle at {self.url}: unexpected gateway answer for study "
                               f"{study_id}: {str(data)[:200]}")
        return data["results"]

    def release_prolific_sessions(self, study_id: str, session_ids: list[str]) -> dict[str, Any]:
        """Free the tasks of these sessions for other participants (idempotent)."""
        return self._json("POST", f"/api/cage-eval/prolific/studies/{_path_id(study_id)}/release/",
                          json={"session_ids": list(session_ids)})


def _path_id(value: str) -> str:
    if not value.isalnum():
        raise BackendError(f"study id {value[:40]!r}: not alphanumeric")
    return value


def _detail(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or "").strip().splitlines()[0][:200] if resp.text else "(no body)"
    if isinstance(data, dict):
        if "detail" in data:
            return str(data["detail"])
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in data.items())[:400]
    return str(data)[:400]
