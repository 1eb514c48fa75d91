"""A local MTurk requester endpoint speaking the real wire protocol, for tests and benchmarks.

``FakeMTurk`` is an HTTP server on 127.0.0.1 that answers botocore's AWS JSON 1.1 requests
(``POST /``, ``X-Amz-Target: MTurkRequesterServiceV20170117.<Operation>``) for the operations
cage-eval uses: CreateHITType, CreateHITWithHITType, GetHIT, ListHITs, ListAssignmentsForHIT,
ApproveAssignment, RejectAssignment, UpdateExpirationForHIT and GetAccountBalance. It keeps state
in memory and follows MTurk's documented semantics (docs/platforms.md §2): CreateHITType is
idempotent by value; a repeated ``UniqueRequestToken`` answers ``RequestError`` with
``TurkErrorCode`` ``AWS.MechanicalTurk.HitAlreadyExists`` and the HITId in the message (or, with
``duplicate_style="processed"``, the "idempotency token ... has already been processed" form);
tokens expire after ``token_ttl_s``; only ``Submitted`` assignments can be approved or rejected;
``MaxResults`` is 1..100 with ``NextToken`` pagination.

Faults can be injected: ``latency_s`` per request; a share of requests answered with
``ThrottlingException`` (HTTP 400) or ``ServiceFault`` (HTTP 500); ``fault_after_create_rate``
creates the HIT and *then* answers 500 (the client never learns the HITId); ``hang_after_creates``
creates the HIT and never answers (to kill a client between the create and its ledger write);
``credential_error`` answers every request with e.g. ``ExpiredTokenException``;
``not_ready_reviews`` fails the first approve/reject of each assignment the way MTurk does right
after a submit. Every request must carry a SigV4 ``Authorization`` header.

The server is bounded: it serves only loopback, reads at most 2 MB per request, and shuts itself
down after ``max_lifetime_s`` seconds. Use it as a context manager::

    with FakeMTurk(latency_s=0.05, throttle_rate=0.1) as fake:
        client = make_client(endpoint_url=fake.url)
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

TARGET_PREFIX = "MTurkRequesterServiceV20170117."
ANSWER_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
MAX_BODY = 2 * 1024 * 1024
STATUSES = ("Submitted", "Approved", "Rejected")


class FakeError(Exception):
    """An error answer: HTTP status, ``__type`` and message."""

    def __init__(self, status: int, code: str, message: str, turk_code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.turk_code = status, code, message, turk_code


def answer_xml(answers: dict[str, str]) -> str:
    """A ``QuestionFormAnswers`` document, one ``<Answer>`` per posted form field."""
    parts = [f'<?xml version="1.0" encoding="UTF-8" standalone="no"?><QuestionFormAnswers xmlns="{ANSWER_NS}">']
    for name, value in answers.items():
        parts.append(f"<Answer><QuestionIdentifier>{escape(name)}</QuestionIdentifier>"
                     f"<FreeText>{escape(str(value))}</FreeText></Answer>")
    parts.append("</QuestionFormAnswers>")
    return "".join(parts)


def _now() -> float:
    return time.time()


class FakeMTurk:
    """The server and its state. All public counters are read under :attr:`lock`."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        throttle_rate: float = 0.0,
        fault_rate: float = 0.0,
        fault_after_create_rate: float = 0.0,
        hang_after_creates: int | None = None,
        credential_error: str | None = None,
        duplicate_style: str = "hit-id",
        token_ttl_s: float = 24 * 3600,
        not_ready_reviews: int = 0,
        balance: str = "10000.00",
        seed: int = 0,
        max_lifetime_s: float = 600.0,
    ) -> None:
        if duplicate_style not in ("hit-id", "processed"):
            raise ValueError("duplicate_style must be 'hit-id' or 'processed'")
        self.latency_s = latency_s
        self.throttle_rate = throttle_rate
        self.fault_rate = fault_rate
        self.fault_after_create_rate = fault_after_create_rate
        self.hang_after_creates = hang_after_creates
        self.credential_error = credential_error
        self.duplicate_style = duplicate_style
        self.token_ttl_s = token_ttl_s
        self.not_ready_reviews = not_ready_reviews
        self.balance = balance
        self.max_lifetime_s = max_lifetime_s
        self.lock = threading.Lock()
        self._rng = random.Random(seed)
        self._serial = 0
        self.hit_types: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, dict[str, Any]] = {}
        self.assignments: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, tuple[str, float]] = {}
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.access_keys: set[str] = set()
        self._review_failures: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeMTurk:
        """Serve on an ephemeral loopback port in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                fake._handle(self)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.request_queue_size = 128
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-mturk", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); hanging requests are released."""
        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeMTurk:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------------ helpers for tests

    @property
    def create_calls(self) -> int:
        """CreateHITWithHITType requests received (including faulted ones)."""
        with self.lock:
            return self.calls["CreateHITWithHITType"]

    def hits_by_annotation(self, annotation: str) -> list[dict[str, Any]]:
        """All HITs carrying ``RequesterAnnotation``."""
        with self.lock:
            return [dict(h) for h in self.hits.values() if h.get("RequesterAnnotation") == annotation]

    def add_assignment(self, hit_id: str, worker_id: str, answers: dict[str, str], *,
                       status: str = "Submitted", accept_time: float | None = None,
                       work_s: float = 12.0) -> str:
        """Simulate a worker's submitted assignment; return its AssignmentId."""
        if status not in STATUSES:
            raise ValueError(status)
        with self.lock:
            hit = self.hits[hit_id]
            aid = self._new_id("3A")
            accept = accept_time if accept_time is not None else hit["CreationTime"] + 60
            submit = accept + work_s
            record = {
                "AssignmentId": aid, "WorkerId": worker_id, "HITId": hit_id,
                "AssignmentStatus": status, "AcceptTime": accept, "SubmitTime": submit,
                "AutoApprovalTime": submit + hit["AutoApprovalDelayInSeconds"],
                "Deadline": accept + hit["AssignmentDurationInSeconds"],
                "Answer": answer_xml(answers),
            }
            if status == "Approved":
                record["ApprovalTime"] = submit + 60
            if status == "Rejected":
                record["RejectionTime"] = submit + 60
                record["RequesterFeedback"] = "rejected in the fake"
            self.assignments[aid] = record
            hit["NumberOfAssignmentsAvailable"] = max(0, hit["NumberOfAssignmentsAvailable"] - 1)
            if status != "Submitted":
                hit["NumberOfAssignmentsCompleted"] += 1
            return aid

    # ------------------------------------------------------------------ protocol

    def _new_id(self, prefix: str) -> str:
        self._serial += 1
        digest = hashlib.sha256(f"{prefix}{self._serial}{id(self)}".encode()).hexdigest().upper()
        return (prefix + digest)[:30]

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(req, 413, {"__type": "RequestError", "Message": "request too large"})
            return
        body = req.rfile.read(length) if length else b"{}"
        target = req.headers.get("X-Amz-Target", "")
        op = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        auth = req.headers.get("Authorization", "")
        with self.lock:
            self.calls[op or "<none>"] += 1
            if "Credential=" in auth:
                self.access_keys.add(auth.split("Credential=", 1)[1].split("/", 1)[0])
            roll = self._rng.random()
            roll2 = self._rng.random()
        if self.latency_s:
            time.sleep(self.latency_s)
        try:
            if not auth.startswith("AWS4-HMAC-SHA256 "):
                raise FakeError(400, "MissingAuthenticationTokenException", "Missing Authentication Token")
            if self.credential_error:
                raise FakeError(400, self.credential_error,
                                "The security token included in the request is expired")
            if not op or not hasattr(self, f"_op_{op}"):
                raise FakeError(400, "UnknownOperationException", f"unknown operation {target!r}")
            if roll < self.throttle_rate:
                with self.lock:
                    self.faults["throttle"] += 1
                raise FakeError(400, "ThrottlingException", "Rate exceeded")
            if roll < self.throttle_rate + self.fault_rate:
                with self.lock:
                    self.faults["5xx"] += 1
                raise FakeError(500, "ServiceFault", "We are temporarily unable to process your "
                                "request. Try your call again.", "AWS.ServiceUnavailable")
            params = json.loads(body or b"{}")
            result = getattr(self, f"_op_{op}")(params, roll2)
        except FakeError as err:
            payload = {"__type": err.code, "Message": err.message}
            if err.turk_code:
                payload["TurkErrorCode"] = err.turk_code
            self._send(req, err.status, payload)
            return
        except _Hang:
            self._stopping.wait(120)
            req.close_connection = True
            return
        self._send(req, 200, result)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/x-amz-json-1.1")
            req.send_header("Content-Length", str(len(data)))
            req.send_header("x-amzn-RequestId", hashlib.md5(data).hexdigest())
            req.end_headers()
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _require(params: dict[str, Any], *names: str) -> None:
        for name in names:
            if name not in params:
                raise FakeError(400, "RequestError", f"Value null at '{name}' failed to satisfy "
                                "constraint: Member must not be null")

    # ------------------------------------------------------------------ operations

    def _op_GetAccountBalance(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        return {"AvailableBalance": self.balance}

    def _op_CreateHITType(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        self._require(params, "AssignmentDurationInSeconds", "Reward", "Title", "Description")
        key = json.dumps(params, sort_keys=True)
        with self.lock:
            for type_id, record in self.hit_types.items():
                if record["key"] == key:
                    return {"HITTypeId": type_id}
            type_id = self._new_id("3T")
            self.hit_types[type_id] = {"key": key, **params}
            return {"HITTypeId": type_id}

    def _op_CreateHITWithHITType(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        self._require(params, "HITTypeId", "LifetimeInSeconds")
        token = params.get("UniqueRequestToken")
        if token is not None and not 1 <= len(token) <= 64:
            raise FakeError(400, "RequestError", "UniqueRequestToken must be 1..64 characters")
        with self.lock:
            hit_type = self.hit_types.get(params["HITTypeId"])
            if hit_type is None:
                raise FakeError(400, "RequestError", f"HITType {params['HITTypeId']} does not exist.",
                                "AWS.MechanicalTurk.HITTypeDoesNotExist")
            now = _now()
            if token is not None and token in self.tokens:
                hit_id, at = self.tokens[token]
                if now - at < self.token_ttl_s:
                    if self.duplicate_style == "hit-id":
                        raise FakeError(400, "RequestError", "There is already a HIT which exists with "
                                        f"the same UniqueRequestToken. HITId: {hit_id}",
                                        "AWS.MechanicalTurk.HitAlreadyExists")
                    raise FakeError(400, "RequestError",
                                    f'The idempotency token "{token}" has already been processed.')
            hit_id = self._new_id("3H")
            hit = {
                "HITId": hit_id, "HITTypeId": params["HITTypeId"], "HITGroupId": params["HITTypeId"],
                "CreationTime": now, "Title": hit_type["Title"], "Description": hit_type["Description"],
                "Question": params.get("Question", ""), "Keywords": hit_type.get("Keywords", ""),
                "HITStatus": "Assignable", "MaxAssignments": params.get("MaxAssignments", 1),
                "Reward": hit_type["Reward"],
                "AutoApprovalDelayInSeconds": hit_type.get("AutoApprovalDelayInSeconds", 2592000),
                "Expiration": now + params["LifetimeInSeconds"],
                "AssignmentDurationInSeconds": hit_type["AssignmentDurationInSeconds"],
                "RequesterAnnotation": params.get("RequesterAnnotation", ""),
                "QualificationRequirements": hit_type.get("QualificationRequirements", []),
                "HITReviewStatus": "NotReviewed", "NumberOfAssignmentsPending": 0,
                "NumberOfAssignmentsAvailable": params.get("MaxAssignments", 1),
                "NumberOfAssignmentsCompleted": 0,
            }
            self.hits[hit_id] = hit
            if token is not None:
                self.tokens[token] = (hit_id, now)
            creates = len(self.hits)
        if self.hang_after_creates is not None and creates > self.hang_after_creates:
            raise _Hang()
        if roll < self.fault_after_create_rate:
            with self.lock:
                self.faults["5xx-after-create"] += 1
            raise FakeError(500, "ServiceFault", "We are temporarily unable to process your request. "
                            "Try your call again.", "AWS.ServiceUnavailable")
        return {"HIT": dict(hit)}

    def _hit(self, hit_id: str) -> dict[str, Any]:
        hit = self.hits.get(hit_id)
        if hit is None:
            raise FakeError(400, "RequestError", f"Hit {hit_id} does not exist.",
                            "AWS.MechanicalTurk.HITDoesNotExist")
        return hit

    def _op_GetHIT(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        self._require(params, "HITId")
        with self.lock:
            return {"HIT": dict(self._hit(params["HITId"]))}

    @staticmethod
    def _page(items: list[Any], params: dict[str, Any]) -> tuple[list[Any], str | None]:
        size = int(params.get("MaxResults", 10))
        if not 1 <= size <= 100:
            raise FakeError(400, "ValidationException", "MaxResults must be 1..100")
        start = int(params.get("NextToken") or 0)
        chunk = items[start:start + size]
        nxt = str(start + size) if start + size < len(items) else None
        return chunk, nxt

    def _op_ListHITs(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        with self.lock:
            hits = [dict(h) for h in sorted(self.hits.values(), key=lambda h: h["HITId"])]
        chunk, nxt = self._page(hits, params)
        out: dict[str, Any] = {"NumResults": len(chunk), "HITs": chunk}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _op_ListAssignmentsForHIT(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        self._require(params, "HITId")
        statuses = params.get("AssignmentStatuses") or list(STATUSES)
        with self.lock:
            self._hit(params["HITId"])
            found = [dict(a) for a in sorted(self.assignments.values(), key=lambda a: a["AssignmentId"])
                     if a["HITId"] == params["HITId"] and a["AssignmentStatus"] in statuses]
        chunk, nxt = self._page(found, params)
        out: dict[str, Any] = {"NumResults": len(chunk), "Assignments": chunk}
        if nxt:
            out["NextToken"] = nxt
        return out

    def _review(self, params: dict[str, Any], new_status: str) -> dict[str, Any]:
        aid = params["AssignmentId"]
        with self.lock:
            record = self.assignments.get(aid)
            if record is None:
                raise FakeError(400, "RequestError", f"Assignment {aid} does not exist.",
                                "AWS.MechanicalTurk.AssignmentDoesNotExist")
            if self._review_failures[aid] < self.not_ready_reviews:
                self._review_failures[aid] += 1
                raise FakeError(400, "RequestError", f"This operation can be called with a status "
                                f"of: Submitted (assignment {aid} has a status of: null)",
                                "AWS.MechanicalTurk.InvalidAssignmentState")
            override = new_status == "Approved" and params.get("OverrideRejection")
            allowed = ("Submitted", "Rejected") if override else ("Submitted",)
            if record["AssignmentStatus"] not in allowed:
                raise FakeError(400, "RequestError", "This operation can be called with a status of: "
                                "Submitted", "AWS.MechanicalTurk.InvalidAssignmentState")
            record["AssignmentStatus"] = new_status
            record["ApprovalTime" if new_status == "Approved" else "RejectionTime"] = _now()
            if params.get("RequesterFeedback"):
                record["RequesterFeedback"] = params["RequesterFeedback"]
            self.hits[record["HITId"]]["NumberOfAssignmentsCompleted"] += 1
        return {}

    def _op_ApproveAssignment(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        self._require(params, "AssignmentId")
        return self._review(params, "Approved")

    def _op_RejectAssignment(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        self._require(params, "AssignmentId", "RequesterFeedback")
        return self._review(params, "Rejected")

    def _op_UpdateExpirationForHIT(self, params: dict[str, Any], roll: float) -> dict[str, Any]:
        self._require(params, "HITId", "ExpireAt")
        with self.lock:
            hit = self._hit(params["HITId"])
            hit["Expiration"] = float(params["ExpireAt"])
            if hit["Expiration"] <= _now():
                hit["HITStatus"] = "Reviewable"
                hit["NumberOfAssignmentsAvailable"] = 0
        return {}


class _Hang(Exception):
    """Internal: leave the request unanswered until the server stops."""


def utc(ts: float) -> datetime:
    """Epoch seconds as an aware UTC datetime (as botocore parses them)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc)
