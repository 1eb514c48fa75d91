"""The Prolific gateway of the embedded Turkle server: where a Prolific participant enters and
leaves a study.

Prolific sends each participant to the study's external URL with three parameters,
``/prolific/start/?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...`` (``SESSION_ID`` is the
submission id). The gateway

1. refuses a visit without valid parameters, or for a study this server was not told about, with a
   page that says what happened and that nothing was recorded;
2. creates (or reuses) the Turkle user ``prolific_<PID>`` (no usable password: the gateway is the
   only way in), records ``(PID, STUDY_ID, SESSION_ID)`` with a keyed hash of the client address
   in ``HOME/prolific_gateway.sqlite3``, signs the user in and sends them on;
3. hands out tasks of the study's batch through Turkle's own pages: an assignment left open is
   resumed, never duplicated (Turkle itself never gives a user the same task twice);
4. after ``tasks_per_participant`` answers, or when the batch has nothing left for them, sends
   them to the study's completion URL with its code (host and code registered by the researcher's
   ``cage-eval prolific publish``, never hard-coded here).

Staff-only JSON endpoints (the REST API's token authentication and ``IsAdminUser``) let
``cage-eval prolific`` register a study, read the sessions, and release the tasks of submissions
that Prolific reports RETURNED, TIMED-OUT or SCREENED OUT, so that other participants get them.

Django is configured only inside the server process; this module is imported from
:mod:`crowds.turkle.site`'s URLconf and middleware list.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

DATABASE_FILE = "prolific_gateway.sqlite3"
SESSION_KEY = "cage_eval_prolific"
USERNAME_PREFIX = "prolific_"
START_PATH = "/prolific/start/"
NEXT_PATH = "/prolific/next/"
#: Prolific ids are 24 hexadecimal digits; accept any short alphanumeric id, refuse the rest.
_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ACCEPT_NEXT = re.compile(r"^/batch/(\d+)/accept_next_task/$")
_BATCH_PATH = re.compile(r"^/batch/(\d+)/")
_TASK_PATH = re.compile(r"^/task/(\d+)/")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_id              TEXT PRIMARY KEY,
    batch_id              INTEGER NOT NULL,
    tasks_per_participant INTEGER NOT NULL,
    completion_code       TEXT NOT NULL,
    completion_url        TEXT NOT NULL,
    registered_at         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id    TEXT PRIMARY KEY,
    study_id      TEXT NOT NULL,
    pid           TEXT NOT NULL,
    username      TEXT NOT NULL,
    ip_hash       TEXT NOT NULL,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    visits        INTEGER NOT NULL DEFAULT 1,
    completed_at  TEXT,
    answered      INTEGER NOT NULL DEFAULT 0,
    released_at   TEXT
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- storage


@contextlib.contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    from django.conf import settings

    conn = sqlite3.connect(Path(settings.HOME) / DATABASE_FILE, timeout=20, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.executescript(_SCHEMA)
        yield conn
    finally:
        conn.close()


def _study(study_id: str) -> sqlite3.Row | None:
    with _db() as conn:
        return conn.execute("SELECT * FROM studies WHERE study_id = ?", (study_id,)).fetchone()


def _ip_hash(request) -> str:
    """A keyed hash of the client address (never the address itself). Behind a reverse proxy
    (``CAGE_EVAL_TURKLE_PROXY``) the address the proxy appended to X-Forwarded-For counts."""
    from django.conf import settings

    addr = request.META.get("REMOTE_ADDR", "")
    if getattr(settings, "CAGE_EVAL_BEHIND_PROXY", False):
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        addr = next((a for a in reversed(forwarded) if a), addr)
    # HMAC-SHA256 keyed with the server's secret, 16 hex digits: the analysis's hash_ip rule
    # (``Crowd.IpHash``); equal within a server, meaningless anywhere else.
    key = settings.SECRET_KEY.encode("utf-8")
    return hmac.new(key, addr.strip().encode("utf-8"), hashlib.sha256).hexdigest()[:16]


# --------------------------------------------------------------------------- participant pages

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;
line-height:1.5}} h1{{font-size:1.4em}}</style></head>
<body><h1 id="title">{title}</h1>{body}</body></html>
"""


def _page(title: str, paragraphs: list[str], status: int):
    from django.http import HttpResponse
    from django.utils.html import escape

    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return HttpResponse(_PAGE.format(title=escape(title), body=body), status=status,
                        content_type="text/html; charset=utf-8")


def _refused(reason: str):
    return _page("This page can only be opened from Prolific", [
        reason,
        "Please go back to the study on Prolific (app.prolific.com) and open it with the "
        "study's own link: that link tells this server who you are and which study you are "
        "taking part in.",
        "Nothing was recorded.",
    ], status=400)


def start(request):
    """``/prolific/start/``: the study's external URL."""
    from django.contrib.auth import get_user_model, login, logout
    from django.shortcuts import redirect

    values = {k: request.GET.get(k, "") for k in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")}
    missing = [k for k, v in values.items() if not v]
    if missing:
        return _refused(f"The link is missing {', '.join(missing)}.")
    bad = [k for k, v in values.items() if not _ID.match(v)]
    if bad:
        return _refused(f"The link has an invalid {', '.join(bad)}.")
    pid, study_id, session_id = values["PROLIFIC_PID"], values["STUDY_ID"], values["SESSION_ID"]
    study = _study(study_id)
    if study is None:
        return _page("This study is not open here", [
            "This server does not run the study your link names. If you opened it from "
            "Prolific, please return the study there and contact the researcher.",
            "Nothing was recorded."], status=404)

    username = f"{USERNAME_PREFIX}{pid}"
    with _db() as conn:
        known = conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if known is not None and (known["pid"] != pid or known["study_id"] != study_id):
            return _refused("This session belongs to another participant or study.")
        if known is not None and known["released_at"]:
            return _page("This submission is closed", [
                "Prolific reports this submission as returned or timed out, so it cannot be "
                "continued. Thank you for your time."], status=410)
        now = _now()
        if known is None:
            conn.execute("INSERT INTO sessions (session_id, study_id, pid, username, ip_hash, "
                         "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (session_id, study_id, pid, username, _ip_hash(request), now, now))
        else:
            conn.execute("UPDATE sessions SET visits = visits + 1, last_seen = ? "
                         "WHERE session_id = ?", (now, session_id))

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save()
    if user.is_staff or user.is_superuser:  # never sign anyone in as an administrator
        return _refused("This participant id cannot be used here.")
    if request.user.is_authenticated and request.user.pk != user.pk:
        logout(request)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SESSION_KEY] = {"study_id": study_id, "session_id": session_id,
                                    "batch_id": int(study["batch_id"])}
    return redirect(NEXT_PATH)


def _answered(user, batch_id: int) -> int:
    from turkle.models import TaskAssignment

    return TaskAssignment.objects.filter(assigned_to=user, task__batch_id=batch_id,
                                         completed=True).count()


def next_task(request):
    """``/prolific/next/``: resume an open task, hand out the next, or finish."""
    from django.shortcuts import redirect
    from django.utils import timezone as dj_timezone
    from turkle.models import Batch, TaskAssignment

    info = request.session.get(SESSION_KEY)
    if not info or not request.user.is_authenticated:
        return _refused("Your session on this server has ended or never started.")
    study = _study(info["study_id"])
    if study is None:
        return _refused("The study of this session is no longer open here.")
    with _db() as conn:
        row = conn.execute("SELECT released_at FROM sessions WHERE session_id = ?",
                           (info["session_id"],)).fetchone()
    if row is None or row["released_at"]:
        return _page("This submission is closed", [
            "Prolific reports this submission as returned or timed out, so it cannot be "
            "continued. Thank you for your time."], status=410)
    batch_id = int(study["batch_id"])
    done = _answered(request.user, batch_id)
    if done < int(study["tasks_per_participant"]):
        open_one = (TaskAssignment.objects
                    .filter(assigned_to=request.user, task__batch_id=batch_id, completed=False,
                            expires_at__gt=dj_timezone.now())
                    .order_by("id").first())
        if open_one is not None:
            return redirect("task_assignment", open_one.task_id, open_one.id)
        batch = Batch.objects.get(id=batch_id)
        if batch.active and batch.available_task_ids_for(request.user).exists():
            return redirect("accept_next_task", batch_id)
    if done == 0:
        return _page("No tasks are left for you", [
            "Every task of this study has already been answered by enough participants. "
            "Please return the study on Prolific (\u201cReturn\u201d on the study page); you "
            "will not be penalised. Thank you for your time."], status=200)
    with _db() as conn:
        conn.execute("UPDATE sessions SET completed_at = COALESCE(completed_at, ?), answered = ? "
                     "WHERE session_id = ?", (_now(), done, info["session_id"]))
    return redirect(study["completion_url"])


def middleware(get_response):
    """Keep a signed-in Prolific participant inside the gateway: Turkle's index page, the pages
    of other batches and their tasks, and the "no more tasks" redirect lead back to
    ``/prolific/next/``, which finishes the study once the participant has answered their share."""
    from django.shortcuts import redirect

    def handle(request):
        info = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
        if not info or not getattr(request, "user", None) or not request.user.is_authenticated:
            return get_response(request)
        path = request.path
        if path == "/" or _elsewhere(path, int(info["batch_id"])):
            return redirect(NEXT_PATH)
        match = _ACCEPT_NEXT.match(path)
        if match:
            if int(match.group(1)) != int(info["batch_id"]):
                return redirect(NEXT_PATH)
            study = _study(info["study_id"])
            if study is None or _answered(request.user, int(info["batch_id"])) >= \
                    int(study["tasks_per_participant"]):
                return redirect(NEXT_PATH)
        response = get_response(request)
        if response.status_code in (301, 302) and urlsplit(response.get("Location", "")).path == "/":
            return redirect(NEXT_PATH)
        return response

    return handle


def _elsewhere(path: str, batch_id: int) -> bool:
    """True for a batch or task page outside the participant's own study: a participant works
    on their study's batch only, whatever URL they type."""
    from turkle.models import Task

    match = _BATCH_PATH.match(path)
    if match:
        return int(match.group(1)) != batch_id
    match = _TASK_PATH.match(path)
    if match:
        return not Task.objects.filter(id=int(match.group(1)), batch_id=batch_id).exists()
    return False


# --------------------------------------------------------------------------- staff API


def _completion_url_ok(url: str, code: str) -> bool:
    """HTTPS (plain HTTP only to a loopback host: a local stand-in), carrying the code."""
    parts = urlsplit(url)
    secure = parts.scheme == "https" or (parts.scheme == "http" and
                                         parts.hostname in ("127.0.0.1", "localhost", "::1"))
    return secure and bool(parts.hostname) and f"cc={code}" in (parts.query or "")


def register_study(request, study_id: str):
    """``PUT /api/cage-eval/prolific/studies/<id>/``: tell the gateway about a study.

    Idempotent: the same values again change nothing; other values for a study that already has
    sessions are refused (participants already saw the first ones)."""
    from rest_framework.response import Response
    from turkle.models import Batch

    data = request.data if isinstance(request.data, dict) else {}
    try:
        batch_id = int(data["batch_id"])
        quota = int(data["tasks_per_participant"])
        code = str(data["completion_code"])
        url = str(data["completion_url"])
    except (KeyError, TypeError, ValueError):
        return Response({"detail": "batch_id, tasks_per_participant, completion_code and "
                                   "completion_url are required"}, status=400)
    if not _ID.match(study_id) or not _CODE.match(code) or quota < 1 or \
            not _completion_url_ok(url, code):
        return Response({"detail": "invalid study id, code, quota or completion URL (https, "
                                   "with ?cc=<code>)"}, status=400)
    if not Batch.objects.filter(id=batch_id).exists():
        return Response({"detail": f"batch {batch_id} does not exist"}, status=400)
    with _db() as conn:
        old = conn.execute("SELECT * FROM studies WHERE study_id = ?", (study_id,)).fetchone()
        values = (batch_id, quota, code, url)
        if old is not None:
            same = (old["batch_id"], old["tasks_per_participant"], old["completion_code"],
                    old["completion_url"]) == values
            seen = conn.execute("SELECT COUNT(*) FROM sessions WHERE study_id = ?",
                                (study_id,)).fetchone()[0]
            if not same and seen:
                return Response({"detail": f"study {study_id} already has {seen} session(s) "
                                           "under other settings"}, status=409)
            if same:
                return Response(_study_json(old), status=200)
        conn.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(study_id) DO "
                     "UPDATE SET batch_id=excluded.batch_id, tasks_per_participant="
                     "excluded.tasks_per_participant, completion_code=excluded.completion_code, "
                     "completion_url=excluded.completion_url",
                     (study_id, *values, _now()))
        row = conn.execute("SELECT * FROM studies WHERE study_id = ?", (study_id,)).fetchone()
    return Response(_study_json(row), status=201 if old is None else 200)


def _study_json(row: sqlite3.Row) -> dict:
    return {k: row[k] for k in row.keys()}


def study_sessions(request, study_id: str):
    """``GET /api/cage-eval/prolific/studies/<id>/sessions/``: every recorded session, with the
    number of tasks each participant has answered so far."""
    from django.contrib.auth import get_user_model
    from rest_framework.response import Response

    study = _study(study_id)
    if study is None:
        return Response({"detail": f"study {study_id} is not registered"}, status=404)
    with _db() as conn:
        rows = [dict(r) for r in conn.execute(
            "SELECT * FROM sessions WHERE study_id = ? ORDER BY first_seen, session_id",
            (study_id,))]
    users = {u.username: u for u in get_user_model().objects.filter(
        username__in=[r["username"] for r in rows])}
    for row in rows:
        user = users.get(row["username"])
        row["answered"] = _answered(user, int(study["batch_id"])) if user else 0
    return Response({"study": _study_json(study), "results": rows})


def release_sessions(request, study_id: str):
    """``POST /api/cage-eval/prolific/studies/<id>/release/`` ``{"session_ids": [...]}``:
    delete those participants' assignments in the study's batch (answered or not), so that the
    tasks go to other participants, and close the sessions. Idempotent."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from rest_framework.response import Response
    from turkle.models import Batch, Task, TaskAssignment

    study = _study(study_id)
    if study is None:
        return Response({"detail": f"study {study_id} is not registered"}, status=404)
    ids = request.data.get("session_ids") if isinstance(request.data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return Response({"detail": "session_ids must be a list of strings"}, status=400)
    batch_id = int(study["batch_id"])
    with _db() as conn:
        rows = [dict(r) for r in conn.execute(
            f"SELECT * FROM sessions WHERE study_id = ? AND session_id IN "
            f"({','.join('?' * len(ids))})", (study_id, *ids))] if ids else []
    released = 0
    with transaction.atomic():
        for row in rows:
            user = get_user_model().objects.filter(username=row["username"]).first()
            if user is None:
                continue
            mine = TaskAssignment.objects.filter(assigned_to=user, task__batch_id=batch_id)
            task_ids = list(mine.values_list("task_id", flat=True))
            released += mine.delete()[0]
            batch = Batch.objects.get(id=batch_id)
            for task in Task.objects.filter(id__in=task_ids):
                done = task.taskassignment_set.filter(completed=True).count()
                if task.completed != (done >= batch.assignments_per_task):
                    task.completed = done >= batch.assignments_per_task
                    task.save()
            batch.update_completed_status()
    with _db() as conn:
        for row in rows:
            conn.execute("UPDATE sessions SET released_at = COALESCE(released_at, ?) "
                         "WHERE session_id = ?", (_now(), row["session_id"]))
    return Response({"sessions": len(rows), "assignments_deleted": released})


def urlpatterns() -> list:
    """The gateway's URL patterns (participant pages and the staff API)."""
    from django.urls import path
    from rest_framework.decorators import api_view

    return [
        path(START_PATH.lstrip("/"), start, name="prolific_start"),
        path(NEXT_PATH.lstrip("/"), next_task, name="prolific_next"),
        path("api/cage-eval/prolific/studies/<str:study_id>/", api_view(["PUT"])(register_study),
             name="prolific_register"),
        path("api/cage-eval/prolific/studies/<str:study_id>/sessions/",
             api_view(["GET"])(study_sessions), name="prolific_sessions"),
        path("api/cage-eval/prolific/studies/<str:study_id>/release/",
             api_view(["POST"])(release_sessions), name="prolific_release"),
    ]
