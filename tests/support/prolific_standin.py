"""A local stand-in for Prolific's API v1 on 127.0.0.1, with schema-checked request bodies and
injectable faults.

Schemas: one per endpoint the client uses, written from the ``pyrolific`` 1.5.1 generated models
(``CreateStudy`` + ``BaseStudyCompletionCodesItem`` and its enums, ``StudyTransition``,
``SubmissionTransition`` + ``SubmissionTransitionAction`` / ``...RejectionCategory``,
``RequestSubmissionReturnBody`` (answered like ``ReturnRequestedResponse``),
``CreateBonusPaymentsBody``, ``StudyCostRequest``), with the required fields and the rejection
rule (message of at least 100 characters, a category) from Prolific's API reference. A body with
an unknown field, a wrong type, a value outside an enum or a missing required field is answered
400 and recorded in :attr:`ProlificStandIn.schema_errors` (every test asserts it stays empty).

Behaviour follows Prolific's: studies are created ``UNPUBLISHED`` and listed by the researcher's
``GET /studies/``; only ``AWAITING REVIEW`` submissions can be approved or rejected; a bonus is
priced in sub-units when created and can be paid once. Faults (:meth:`ProlificStandIn.fault`):
``429`` with ``Retry-After``, ``500`` before acting, ``500-after`` and ``timeout-after`` (the
server acts, then the answer is an error or never comes).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from crowds.prolific.study import StudySettings

TOKEN = "standin-token-7f3a9c"
#: The stand-in's completion page (``--completion-page URL/submissions/complete``).
COMPLETION_PATH = "/submissions/complete"
STR, NUM, INT, NULL, ARR, OBJ, BOOL = "string", "number", "integer", "null", "array", "object", "bool"

_ACTION = {"type": OBJ, "required": ["action"], "properties": {
    "action": {"type": STR, "enum": ["AUTOMATICALLY_APPROVE", "MANUALLY_REVIEW",
                                     "ADD_TO_PARTICIPANT_GROUP", "REMOVE_FROM_PARTICIPANT_GROUP",
                                     "REQUEST_RETURN"]},
    "participant_group": {"type": STR}, "return_reason": {"type": STR}}}
_COMPLETION_CODE = {"type": OBJ, "required": ["code", "code_type", "actions"], "properties": {
    "code": {"type": [STR, NULL]},
    "code_type": {"type": STR},  # predefined names or free text
    "actions": {"type": ARR, "items": _ACTION},
    "actor": {"type": STR, "enum": ["participant", "researcher"]}}}
_STUDY_PROPERTIES: dict[str, Any] = {
    "name": {"type": STR}, "internal_name": {"type": [STR, NULL]}, "description": {"type": STR},
    "external_study_url": {"type": STR},
    "prolific_id_option": {"type": STR, "enum": ["question", "url_parameters", "not_required"]},
    "completion_codes": {"type": ARR, "items": _COMPLETION_CODE},
    "total_available_places": {"type": NUM}, "estimated_completion_time": {"type": NUM},
    "maximum_allowed_time": {"type": NUM}, "reward": {"type": NUM},
    "device_compatibility": {"type": ARR, "items": {"type": STR,
                                                    "enum": ["desktop", "mobile", "tablet"]}},
    "peripheral_requirements": {"type": ARR, "items": {
        "type": STR, "enum": ["audio", "camera", "download", "microphone"]}},
    "filters": {"type": [ARR, NULL]}, "filter_set_id": {"type": [STR, NULL]},
    "filter_set_version": {"type": [INT, NULL]}, "naivety_distribution_rate": {"type": [NUM, NULL]},
    "project": {"type": STR}, "submissions_config": {"type": OBJ},
    "study_labels": {"type": ARR, "items": {"type": STR, "enum": [
        "annotation", "interview", "other", "survey", "writing_task"]}},
    "content_warnings": {"type": ARR, "items": {"type": STR, "enum": ["explicit", "sensitive"]}},
    "content_warning_details": {"type": STR}, "metadata": {"type": [STR, NULL]},
    "access_details": {"type": [ARR, NULL]},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "create_study": {"type": OBJ, "properties": _STUDY_PROPERTIES, "required": [
        "name", "description", "external_study_url", "prolific_id_option", "completion_codes",
        "total_available_places", "estimated_completion_time", "reward"]},
    "update_study": {"type": OBJ, "properties": _STUDY_PROPERTIES, "required": []},
    "study_transition": {"type": OBJ, "required": ["action"], "properties": {
        "action": {"type": STR, "enum": ["PUBLISH", "PAUSE", "START", "STOP"]}}},
    "submission_transition": {"type": OBJ, "required": ["action"], "properties": {
        "action": {"type": STR, "enum": ["APPROVE", "REJECT", "COMPLETE"]},
        "message": {"type": STR},
        "rejection_category": {"type": STR, "enum": [
            "TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL",
            "FAILED_CHECK", "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA",
            "UNSUPP_DEVICE", "OTHER"]},
        "completion_code": {"type": STR}}},
    "request_return": {"type": OBJ, "required": ["request_return_reasons"], "properties": {
        "request_return_reasons": {"type": ARR, "items": {"type": STR}}}},
    "create_bonus": {"type": OBJ, "required": ["study_id", "csv_bonuses"], "properties": {
        "study_id": {"type": STR}, "csv_bonuses": {"type": STR}}},
    "study_cost": {"type": OBJ, "required": ["reward", "total_available_places"], "properties": {
        "reward": {"type": NUM}, "total_available_places": {"type": NUM}}},
}
_TYPES = {STR: str, NUM: (int, float), INT: int, NULL: type(None), ARR: list, OBJ: dict,
          BOOL: bool}


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """The problems of ``value`` against a schema of the small subset used above."""
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else (kinds or [])
    if kinds and not any(isinstance(value, _TYPES[k]) and not (k in (NUM, INT) and
                                                                isinstance(value, bool))
                         for k in kinds):
        return [f"{where}: {type(value).__name__} is not {'/'.join(kinds)}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict) and "properties" in schema:
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}.{key}: required")
        for key, item in value.items():
            if key not in schema["properties"]:
                errors.append(f"{where}.{key}: unknown field")
            else:
                errors.extend(validate(item, schema["properties"][key], f"{where}.{key}"))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors.extend(validate(item, schema["items"], f"{where}[{i}]"))
    return errors


class ProlificStandIn:
    """The server's state and faults; start it with :func:`running`."""

    def __init__(self, *, currency: str = "GBP", balance: int = 100_000,
                 page_size: int = 2) -> None:
        self.currency = currency
        self.balance = balance
        self.page_size = page_size
        self.studies: dict[str, dict[str, Any]] = {}
        self.submissions: dict[str, dict[str, Any]] = {}
        self.bonuses: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.schema_errors: list[str] = []
        self.faults: list[tuple[str, str, str, float]] = []
        self.lock = threading.RLock()
        self.url = ""
        self.completions: list[str] = []
        self._n = 0

    # ------------------------------------------------------------------ test helpers

    def fault(self, method: str, pattern: str, kind: str, value: float = 0.0) -> None:
        """Answer the next ``method`` request whose path matches ``pattern`` with a fault:
        ``429`` (Retry-After ``value``), ``500``, ``500-after``, ``timeout-after`` (sleep
        ``value`` s after acting)."""
        self.faults.append((method, pattern, kind, value))

    def new_id(self) -> str:
        with self.lock:
            self._n += 1
            return f"{self._n:024x}"

    def add_submission(self, study_id: str, pid: str, session_id: str | None = None,
                       status: str = "ACTIVE") -> str:
        sid = session_id or self.new_id()
        self.submissions[sid] = {"id": sid, "participant_id": pid, "study_id": study_id,
                                 "status": status, "started_at": "2026-12-07T10:00:00Z",
                                 "completed_at": None, "study_code": None, "has_siblings": False}
        return sid

    def set_status(self, session_id: str, status: str, code: str | None = None) -> None:
        sub = self.submissions[session_id]
        sub["status"] = status
        if status == "AWAITING REVIEW":
            sub["completed_at"], sub["study_code"] = "2026-12-07T10:20:00Z", code

    @property
    def completion_page(self) -> str:
        return f"{self.url}{COMPLETION_PATH}"

    def calls(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and re.search(pattern, p))

    # ------------------------------------------------------------------ endpoints

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               body: Any) -> tuple[int, Any]:
        p = path
        if method == "GET" and p == "/api/v1/users/me/":
            return 200, {"id": "5f0000000000000000000001", "email": "researcher@example.org"}
        if method == "GET" and p == "/api/v1/workspaces/":
            return 200, {"results": [{"id": "ws0000000000000000000001", "title": "Lab"}]}
        m = re.fullmatch(r"/api/v1/workspaces/(\w+)/balance/", p)
        if method == "GET" and m:
            return 200, {"currency_code": self.currency, "total_balance": self.balance,
                         "available_balance": self.balance,
                         "balance_breakdown": {"rewards": 0, "fees": 0, "vat": 0}}
        if method == "POST" and p == "/api/v1/study-cost-calculator/":
            if self._invalid("study_cost", body):
                return 400, {"error": {"detail": "invalid body"}}
            rewards = Decimal(body["reward"]) * Decimal(body["total_available_places"])
            return 200, {"total_cost": float((rewards * Decimal("4") / 3).to_integral_value(
                rounding=ROUND_HALF_UP))}
        if p == "/api/v1/studies/":
            if method == "GET":
                return 200, {"results": [self._short(s) for s in self.studies.values()]}
            if self._invalid("create_study", body):
                return 400, {"error": {"detail": "invalid body"}}
            sid = self.new_id()
            self.studies[sid] = {**body, "id": sid, "status": "UNPUBLISHED"}
            return 201, self.studies[sid]
        m = re.fullmatch(r"/api/v1/studies/(\w+)/", p)
        if m and m.group(1) in self.studies:
            study = self.studies[m.group(1)]
            if method == "GET":
                return 200, study
            if method == "PATCH":
                if self._invalid("update_study", body):
                    return 400, {"error": {"detail": "invalid body"}}
                study.update(body)
                return 200, study
        m = re.fullmatch(r"/api/v1/studies/(\w+)/transition/", p)
        if method == "POST" and m and m.group(1) in self.studies:
            if self._invalid("study_transition", body):
                return 400, {"error": {"detail": "invalid body"}}
            study = self.studies[m.group(1)]
            if body["action"] == "PUBLISH":
                if study["status"] != "UNPUBLISHED":
                    return 400, {"error": {"detail": "Study is already published"}}
                study["status"] = "ACTIVE"
            return 200, study
        m = re.fullmatch(r"/api/v1/studies/(\w+)/submissions/", p)
        if method == "GET" and m:
            subs = [s for s in self.submissions.values() if s["study_id"] == m.group(1)]
            page = int(query.get("page", ["1"])[0])
            chunk = subs[(page - 1) * self.page_size: page * self.page_size]
            links = {"next": {"href": f"{self.url}{p}?page={page + 1}"
                              if page * self.page_size < len(subs) else None}}
            return 200, {"results": [{k: v for k, v in s.items() if k != "study_id"}
                                     for s in chunk], "_links": links}
        m = re.fullmatch(r"/api/v1/submissions/(\w+)/", p)
        if method == "GET" and m and m.group(1) in self.submissions:
            return 200, self.submissions[m.group(1)]
        m = re.fullmatch(r"/api/v1/submissions/(\w+)/transition/", p)
        if method == "POST" and m and m.group(1) in self.submissions:
            return self._transition(self.submissions[m.group(1)], body)
        m = re.fullmatch(r"/api/v1/submissions/(\w+)/request-return/", p)
        if method == "POST" and m and m.group(1) in self.submissions:
            if self._invalid("request_return", body):
                return 400, {"error": {"detail": "invalid body"}}
            sub = self.submissions[m.group(1)]
            if sub["status"] != "AWAITING REVIEW":
                return 400, {"error": {"detail": f"Cannot request a return of a submission in "
                                                 f"status {sub['status']}"}}
            sub["return_requested"] = "2026-12-07T11:00:00Z"
            sub["return_reasons"] = list(body["request_return_reasons"])
            return 200, {"id": sub["id"], "status": sub["status"],
                         "participant": sub["participant_id"],
                         "return_requested": sub["return_requested"]}
        if method == "POST" and p == "/api/v1/submissions/bonus-payments/":
            return self._create_bonus(body)
        m = re.fullmatch(r"/api/v1/bulk-bonus-payments/(\w+)/pay/", p)
        if method == "POST" and m and m.group(1) in self.bonuses:
            bonus = self.bonuses[m.group(1)]
            if bonus["paid"]:
                return 400, {"error": {"detail": "This bonus has already been paid."}}
            bonus["paid"] = True
            self.balance -= int(Decimal(str(bonus["total_amount"])))
            return 202, {}
        return 404, {"error": {"detail": f"no route {method} {p}"}}

    def _short(self, study: dict[str, Any]) -> dict[str, Any]:
        return {k: study.get(k) for k in ("id", "name", "internal_name", "status",
                                          "total_available_places", "reward")}

    def _invalid(self, schema: str, body: Any) -> bool:
        errors = validate(body, SCHEMAS[schema])
        self.schema_errors.extend(f"{schema}: {e}" for e in errors)
        return bool(errors)

    def _transition(self, sub: dict[str, Any], body: Any) -> tuple[int, Any]:
        if self._invalid("submission_transition", body):
            return 400, {"error": {"detail": "invalid body"}}
        if body["action"] == "REJECT" and (len(body.get("message", "")) < 100
                                           or "rejection_category" not in body):
            self.schema_errors.append("submission_transition: REJECT without a 100-character "
                                      "message and a category")
            return 400, {"error": {"detail": "message and rejection_category required"}}
        if sub["status"] != "AWAITING REVIEW":
            return 400, {"error": {"detail": f"Cannot transition a submission in status "
                                             f"{sub['status']}"}}
        sub["status"] = "APPROVED" if body["action"] == "APPROVE" else "REJECTED"
        return 200, sub

    def _create_bonus(self, body: Any) -> tuple[int, Any]:
        if self._invalid("create_bonus", body):
            return 400, {"error": {"detail": "invalid body"}}
        amount = Decimal(0)
        for line in body["csv_bonuses"].strip().splitlines():
            pid, value = line.split(",")
            if not any(s["participant_id"] == pid and s["study_id"] == body["study_id"]
                       for s in self.submissions.values()):
                return 400, {"error": {"detail": f"{pid} is not a participant of the study"}}
            amount += Decimal(value) * 100
        fees = (amount / 3).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        bid = self.new_id()
        self.bonuses[bid] = {"id": bid, "study": body["study_id"], "amount": float(amount),
                             "fees": float(fees), "vat": 0, "total_amount": float(amount + fees),
                             "paid": False}
        return 201, {k: v for k, v in self.bonuses[bid].items() if k != "paid"}


def _handler(state: ProlificStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            if parts.path == COMPLETION_PATH:  # Prolific's page participants finish on
                code = parse_qs(parts.query).get("cc", [""])[0]
                with state.lock:
                    state.completions.append(code)
                return self._page(f"Prolific (stand-in): study completed with code {code}")
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                return self._send(401, {"error": {"detail": "Invalid token."}})
            with state.lock:
                state.requests.append((self.command, parts.path, body))
                fault = next((f for f in state.faults if f[0] == self.command
                              and re.search(f[1], parts.path)), None)
                if fault is not None:
                    state.faults.remove(fault)
            kind = fault[2] if fault else ""
            if kind == "429":
                return self._send(429, {"error": {"detail": "Throttled"}},
                                  {"Retry-After": f"{fault[3]:g}"})
            if kind == "500":
                return self._send(500, {"error": {"detail": "Internal error"}})
            with state.lock:
                status, answer = state.handle(self.command, parts.path, parse_qs(parts.query),
                                              body)
            if kind == "500-after":
                return self._send(502, {"error": {"detail": "Bad gateway"}})
            if kind == "timeout-after":
                time.sleep(fault[3])
            return self._send(status, answer)

        def _page(self, text: str) -> None:
            payload = (f"<!doctype html><title>Prolific</title><h1 id='done'>{text}</h1>"
                       ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(data).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PATCH = do_PUT = _serve

    return Handler


@contextmanager
def running(state: ProlificStandIn | None = None) -> Iterator[ProlificStandIn]:
    """Serve ``state`` on a free 127.0.0.1 port for the duration of the block."""
    state = state or ProlificStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


#: The workspace the stand-in lists.
WS = "ws0000000000000000000001"


class RecordingHost:
    """Records the gateway registrations and releases; serves the sessions it is given."""

    url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.registered: list[tuple] = []
        self.released: list[str] = []
        self.gateway_sessions: list[dict] = []

    def register(self, study_id, **kw):
        self.registered.append((study_id, kw))

    def sessions(self, study_id):
        return [dict(s, released_at="x" if s["session_id"] in self.released else None)
                for s in self.gateway_sessions]

    def release(self, study_id, session_ids):
        self.released.extend(session_ids)
        return len(session_ids)

    def results(self, run_dir):  # pragma: no cover - not used here
        raise AssertionError


def settings(**kw: Any) -> StudySettings:
    """Study settings for the tests (``kw`` overrides)."""
    base = dict(name="Which image looks more real?", description="Pick the more real image.",
                reward=150, currency="GBP", minutes=10, places=5, tasks_per_participant=4,
                gateway_url="https://study.example.org")
    return StudySettings(**{**base, **kw})
