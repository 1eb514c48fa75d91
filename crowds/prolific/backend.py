"""Publish a run's study on Prolific and reconcile its submissions with the answers.

The tasks live on a *task host* (the embedded Turkle server and its Prolific gateway; the CLI
passes :class:`crowds.turkle.host.TurkleTaskHost`), so this module needs only the small
:class:`TaskHost` protocol. Publishing:

1. the settings (with a random completion code made once) go into ``RUN/prolific_ledger.sqlite``
   before any call; a rerun with other settings is refused, except ``--places``, which only a
   confirmed, explicit rerun raises;
2. the workspace balance must cover Prolific's own cost figure for the study;
3. the study is created as a draft (ledger row before and after; a lost answer is followed by a
   lookup of the run's ``internal_name``, never by a blind second create);
4. the gateway learns the study's batch, quota and completion URL;
5. only after the caller confirms the pilot size is the study published.

Reconciliation maps Prolific submissions to the gateway's sessions by ``SESSION_ID`` (which *is*
the submission id): RETURNED, TIMED-OUT and SCREENED OUT submissions have their tasks released
for other participants and their answers never reach ``results.csv``.
"""

from __future__ import annotations

import csv
import io
import math
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from cage_eval import files, runs
from cage_eval.errors import BackendError, ConfigError, RunDirError, SpendingRefused
from crowds.answers import KeptAside, keep_other_origin
from crowds.prolific.api import ApiRefused, MaybeActed, ProlificAPI
from crowds.prolific.ledger import ProlificLedger
from crowds.prolific.study import (
    Cost,
    StudySettings,
    check_wage,
    estimate_cost,
    format_minor,
    internal_name,
    study_body,
)

#: Submissions whose places went back to Prolific: their tasks are freed, their answers dropped.
FREED = frozenset({"RETURNED", "TIMED-OUT", "TIME-OUT", "SCREENED OUT"})
#: Submissions that may be approved or rejected (Prolific refuses every other status).
REVIEWABLE = "AWAITING REVIEW"
#: ``AssignmentStatus`` of the results for each submission status (the analysis drops Rejected).
ASSIGNMENT_STATUS = {"APPROVED": "Approved", "REJECTED": "Rejected"}
#: Columns added to Turkle's layout. ``Crowd.StudyId`` and ``Crowd.IpHash`` are the shared
#: columns the analysis's duplicate-participant rule reads; ``WorkerId`` becomes the PID.
PROLIFIC_COLUMNS = ("Prolific.PID", "Prolific.SessionId", "Prolific.SubmissionStatus",
                    "Crowd.StudyId", "Crowd.IpHash", "AssignmentStatus")
USERNAME_PREFIX = "prolific_"
#: Settings a rerun may not change (they were shown to participants or paid for).
FROZEN_SETTINGS = ("name", "description", "reward", "currency", "minutes",
                   "tasks_per_participant", "gateway_url", "completion_page", "devices",
                   "auto_approve", "filter_set_id", "project")


class TaskHost(Protocol):
    """Where participants do the tasks (``crowds.turkle.host.TurkleTaskHost``)."""

    url: str

    def register(self, study_id: str, *, batch_id: int, tasks_per_participant: int,
                 completion_code: str, completion_url: str) -> None: ...

    def sessions(self, study_id: str) -> list[dict[str, Any]]: ...

    def release(self, study_id: str, session_ids: list[str]) -> int: ...

    def results(self, run_dir: Path) -> Any: ...


@dataclass(frozen=True)
class PublishPlan:
    """What a publish would do and cost (the dry run prints it)."""

    run_dir: Path
    run_id: str
    settings: StudySettings
    cost: Cost
    wage: Decimal
    n_tasks: int
    assignments: int

    @property
    def places_for_all(self) -> int:
        """Places that cover every task ``assignments`` times."""
        return math.ceil(self.n_tasks * self.assignments / self.settings.tasks_per_participant)


@dataclass
class PublishReport:
    """What :func:`publish` did."""

    study_id: str = ""
    created: bool = False
    adopted: bool = False
    published: bool = False
    places: int = 0
    previously_published: bool = False
    steps: list[str] = field(default_factory=list)


def run_id_of(run_dir: Path) -> str:
    manifest = runs.read_manifest(run_dir)
    run_id = str(manifest.get("run_id") or "")
    if not run_id.replace("-", "").replace("_", "").isalnum():
        raise RunDirError(f"{Path(run_dir) / runs.MANIFEST}: field run_id is {run_id!r}; "
                          "regenerate the run")
    return run_id


def prepare(run_dir: Path, settings: StudySettings, *, n_tasks: int, assignments: int,
            fee_rate: Decimal, max_cost: int | None, allow_low_pay: bool) -> PublishPlan:
    """Check everything that needs no call: the wage, the cost, ``--max-cost``, and (on a rerun)
    that the settings are the ones the study was made with. The completion code is the one in
    the ledger, or a new random one."""
    run_dir = Path(run_dir)
    run_id = run_id_of(run_dir)
    wage = check_wage(settings.reward, settings.minutes, settings.currency,
                      allow_below=allow_low_pay)
    code = settings.completion_code or secrets.token_hex(4).upper()
    if ProlificLedger.exists(run_dir):
        with ProlificLedger.open(run_dir, run_id=run_id) as ledger:
            old = ledger.settings
        if old is not None:
            changed = [k for k in FROZEN_SETTINGS
                       if _norm(old.get(k)) != _norm(settings.record().get(k))]
            if changed:
                raise ConfigError(f"{run_dir / ledger.path.name}: this run's study was made with "
                                  f"other {', '.join(changed)}; rerun with the same options (a "
                                  "second study would recruit new participants for the same pairs)")
            code = str(old["completion_code"])
    settings = replace(settings, completion_code=code)
    enough = math.ceil(n_tasks * assignments / settings.tasks_per_participant)
    if settings.places > enough:
        raise ConfigError(f"--places {settings.places}: {enough} places already cover every HIT "
                          f"{assignments} times ({n_tasks} HITs, {settings.tasks_per_participant} "
                          "per participant); the others would find nothing to do")
    cost = estimate_cost(settings.reward, settings.places, fee_rate, settings.currency)
    if max_cost is not None and cost.total > max_cost:
        raise SpendingRefused(f"estimated cost {cost.describe()} is above --max-cost "
                              f"{format_minor(max_cost, settings.currency)}; lower --places or "
                              "--reward, or raise --max-cost")
    return PublishPlan(run_dir, run_id, settings, cost, wage, n_tasks, assignments)


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def pick_workspace(api: ProlificAPI, workspace: str | None) -> str:
    """The workspace whose balance pays: the one given, or the only one the token sees."""
    if workspace:
        return workspace
    found = api.workspaces()
    if len(found) != 1:
        raise ConfigError(f"the API token sees {len(found)} workspaces; name the one that pays "
                          "with --workspace ID (or PROLIFIC_WORKSPACE)")
    return str(found[0]["id"])


def check_balance(api: ProlificAPI, workspace_id: str, plan: PublishPlan, places: int,
                  max_cost: int | None) -> int:
    """Prolific's own cost for ``places`` must fit the available balance and ``--max-cost``;
    the workspace must pay in the plan's currency. Returns the cost in sub-units."""
    s = plan.settings
    balance = api.balance(workspace_id)
    currency = str(balance.get("currency_code", ""))
    if currency != s.currency:
        raise ConfigError(f"workspace {workspace_id} pays in {currency or '?'}, not "
                          f"{s.currency}; rerun with --currency {currency} (the reward is in "
                          "its sub-units)")
    total = int(Decimal(str(api.study_cost(s.reward, places).get("total_cost", 0))))
    if max_cost is not None and total > max_cost:
        raise SpendingRefused(f"Prolific prices {places} places at "
                              f"{format_minor(total, currency)}, above --max-cost "
                              f"{format_minor(max_cost, currency)}")
    available = int(balance.get("available_balance", 0))
    if available < total:
        raise SpendingRefused(f"workspace {workspace_id} has {format_minor(available, currency)} "
                              f"available, less than the {format_minor(total, currency)} the "
                              "study costs; top it up on Prolific or lower --places")
    return total


def _find_study(api: ProlificAPI, run_id: str) -> dict[str, Any] | None:
    name = internal_name(run_id)
    found = [s for s in api.studies() if s.get("internal_name") == name]
    if len(found) > 1:
        raise BackendError(f"Prolific has {len(found)} studies named {name!r}; delete the "
                           "extra drafts on Prolific and rerun")
    return found[0] if found else None


def _ensure_study(api: ProlificAPI, ledger: ProlificLedger, plan: PublishPlan, batch_id: int,
                  report: PublishReport) -> str:
    row = ledger.study()
    if row is not None and row.study_id:
        return row.study_id
    if row is not None and row.state == "creating":  # a create may have happened: look first
        found = _find_study(api, plan.run_id)
        if found is not None:
            ledger.study_created(str(found["id"]), how="adopted")
            report.adopted = True
            return str(found["id"])
    ledger.study_creating(plan.settings.places, batch_id)
    try:
        study = api.create_study(study_body(plan.settings, plan.run_id))
    except MaybeActed as exc:
        found = _find_study(api, plan.run_id)
        if found is None:
            raise BackendError(f"{exc}; no study of this run exists on Prolific, so rerun the "
                               "same command to create it") from None
        ledger.study_created(str(found["id"]), how="adopted")
        report.adopted = True
        return str(found["id"])
    ledger.study_created(str(study["id"]), how="created")
    report.created = True
    return str(study["id"])


def publish(plan: PublishPlan, api: ProlificAPI, host: TaskHost, *, batch_id: int,
            workspace_id: str, max_cost: int | None,
            confirm: Callable[[str], bool]) -> PublishReport:
    """Create (or find) the draft study, register it with the gateway, and publish it once
    ``confirm`` agrees to the pilot size. Idempotent: a rerun creates nothing twice.

    ``confirm(question)`` is asked before publishing and before raising the places; a False
    answer leaves the study as it is (a draft stays a draft)."""
    report = PublishReport()
    with files.run_lock(plan.run_dir, "published on Prolific"), \
            ProlificLedger.open(plan.run_dir, create=True, run_id=plan.run_id) as ledger:
        if ledger.settings is None:
            ledger.set_meta("settings", _json(plan.settings.record()))
        ledger.set_meta("run_id", plan.run_id)
        row = ledger.study()
        report.previously_published = row is not None and row.state == "published"
        places = row.places if row is not None else plan.settings.places
        if plan.settings.places < places:
            raise ConfigError(f"--places {plan.settings.places}: the study already has {places} "
                              "places; places are only ever raised")
        if row is None or row.state in ("creating", "draft") or plan.settings.places > places:
            total = check_balance(api, workspace_id, plan, plan.settings.places, max_cost)
            # Prolific's own price (rewards + fees) for the places: the report's fee figure.
            ledger.set_meta("study_cost", _json({"places": plan.settings.places,
                                                 "total_cost": total}))
        study_id = _ensure_study(api, ledger, plan, batch_id, report)
        report.study_id = study_id
        s = plan.settings
        host.register(study_id, batch_id=batch_id, tasks_per_participant=s.tasks_per_participant,
                      completion_code=s.completion_code, completion_url=s.completion_url)
        if not (row and row.registered):
            ledger.study_registered()
        row = ledger.study()
        assert row is not None
        if row.state in ("draft", "publishing"):
            if row.state == "draft" and not confirm(
                    f"Publish study {study_id} with {row.places} places (the pilot) for "
                    f"{format_minor(s.reward, s.currency)} each?"):
                report.places = row.places
                return report
            _publish_study(api, ledger, study_id)
            report.published = True
        if plan.settings.places > row.places:
            if confirm(f"Raise the places of study {study_id} from {row.places} to "
                       f"{plan.settings.places}?"):
                api.update_study(study_id, {"total_available_places": plan.settings.places})
                ledger.study_places(plan.settings.places)
        report.places = ledger.study().places  # type: ignore[union-attr]
        return report


def _publish_study(api: ProlificAPI, ledger: ProlificLedger, study_id: str) -> None:
    ledger.study_state("publishing")
    try:
        api.transition_study(study_id, "PUBLISH")
    except (MaybeActed, ApiRefused) as exc:
        # A lost answer, or a repeat after one (Prolific refuses to publish twice): look.
        status = str(api.study(study_id).get("status", ""))
        if status == "UNPUBLISHED":
            raise BackendError(f"{exc}; the study is still a draft: rerun the same command "
                               "to publish it") from None
    ledger.study_state("published", study_id)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------- reconciliation


@dataclass(frozen=True)
class Reconciliation:
    """Submissions by status, sessions the gateway saw, tasks freed by this call."""

    study_id: str
    places: int
    statuses: dict[str, int]
    sessions: int
    answered: int
    released_sessions: int
    released_assignments: int


def published_study(run_dir: Path) -> tuple[str, int]:
    """``(study_id, places)`` of the run; :class:`RunDirError` when there is none yet."""
    with ProlificLedger.open(run_dir) as ledger:
        row = ledger.study()
    if row is None or not row.study_id:
        raise RunDirError(f"{Path(run_dir) / 'prolific_ledger.sqlite'}: no study recorded; run "
                          f"`cage-eval prolific publish {run_dir}` (it resumes)")
    return row.study_id, row.places


def reconcile(run_dir: Path, api: ProlificAPI, host: TaskHost) -> Reconciliation:
    """Bring the ledger up to date with Prolific's submissions and the gateway's sessions, and
    free the tasks of RETURNED, TIMED-OUT and SCREENED OUT submissions, and of sessions that are
    no submission of the study (once each). The study's places are never changed here."""
    study_id, places = published_study(run_dir)
    submissions = api.submissions(study_id)
    sessions = host.sessions(study_id)
    with ProlificLedger.open(run_dir) as ledger:
        for sub in submissions:
            ledger.upsert_session(str(sub["id"]), str(sub.get("participant_id", "")),
                                  status=str(sub.get("status", "")),
                                  started_at=sub.get("started_at"),
                                  completed_at=sub.get("completed_at"),
                                  study_code=sub.get("study_code"))
        for ses in sessions:
            ledger.upsert_session(str(ses["session_id"]), str(ses["pid"]),
                                  ip_hash=ses.get("ip_hash"), answered=int(ses.get("answered", 0)))
        status = {str(s["id"]): str(s.get("status", "")) for s in submissions}
        # Freed: places Prolific gave back, and sessions it never issued (a made-up SESSION_ID
        # typed into the gateway's URL; Prolific creates a submission before it sends anyone).
        to_free = [str(s["session_id"]) for s in sessions
                   if status.get(str(s["session_id"]), "NOT A SUBMISSION") in FREED | {
                       "NOT A SUBMISSION"} and not s.get("released_at")]
        freed = host.release(study_id, to_free) if to_free else 0
        for sid in to_free:
            ledger.session_released(sid)
        if to_free:
            ledger.log("released", f"{len(to_free)} sessions, {freed} assignments")
    return Reconciliation(study_id, places, dict(Counter(status.values())), len(sessions),
                          sum(int(s.get("answered", 0)) for s in sessions
                              if status.get(str(s["session_id"])) not in FREED),
                          len(to_free), freed)


@dataclass(frozen=True)
class CollectReport:
    """What :func:`collect` wrote."""

    path: Path
    raw: Path
    rows: int
    participants: int
    dropped_freed: int
    dropped_unknown: int
    invalid: int
    reconciliation: Reconciliation
    kept_aside: KeptAside | None = None


def collect(run_dir: Path, api: ProlificAPI, host: TaskHost) -> CollectReport:
    """Reconcile, then write ``RUN/results.csv``: the host's checked answers (Turkle's layout)
    with ``WorkerId`` set to the PID, plus ``Prolific.PID``, ``Prolific.SessionId``,
    ``Prolific.SubmissionStatus``, ``Crowd.StudyId``, ``Crowd.IpHash`` (the gateway's keyed hash
    of the client address, for the duplicate-participant rule) and ``AssignmentStatus``
    (Approved/Rejected/Submitted), one row
    per answered task. Answers of freed submissions and of accounts that did not come through the
    gateway are left out."""
    run_dir = Path(run_dir)
    with files.run_lock(run_dir, "collected"):
        hosted = host.results(run_dir)  # archived before anything is released
        rec = reconcile(run_dir, api, host)
        with ProlificLedger.open(run_dir) as ledger:
            sessions = ledger.sessions()
        by_pid: dict[str, dict[str, Any]] = {}
        for ses in sessions:
            # Only sessions Prolific knows count: anyone can type a made-up SESSION_ID into the
            # gateway's URL. A PID's live session wins over a freed one.
            if not ses.get("status") or (ses.get("status") in FREED and ses["pid"] in by_pid):
                continue
            by_pid[ses["pid"]] = ses
        header, rows = _read(hosted.data)
        out, freed, unknown = [], 0, 0
        for row in rows:
            name = row.get("Turkle.Username", "")
            ses = by_pid.get(name[len(USERNAME_PREFIX):]) if name.startswith(USERNAME_PREFIX) \
                else None
            if ses is None:
                unknown += 1
                continue
            if ses.get("status") in FREED or ses.get("released_at"):
                freed += 1
                continue
            status = str(ses.get("status") or "")
            out.append({**row, "WorkerId": ses["pid"], "Prolific.PID": ses["pid"],
                        "Prolific.SessionId": ses["session_id"],
                        "Prolific.SubmissionStatus": status, "Crowd.StudyId": rec.study_id,
                        "Crowd.IpHash": ses.get("ip_hash") or "",
                        "AssignmentStatus": ASSIGNMENT_STATUS.get(status, "Submitted")})
        columns = [c for c in header if c not in PROLIFIC_COLUMNS] + list(PROLIFIC_COLUMNS)
        path = run_dir / runs.RESULTS
        kept = keep_other_origin(run_dir, "prolific")
        files.atomic_write_bytes(path, _write(columns, out))
        with ProlificLedger.open(run_dir) as ledger:
            ledger.log("collect", f"{len(out)} rows, {freed} freed, {unknown} not from Prolific")
    return CollectReport(path, hosted.raw, len(out), len({r["Prolific.PID"] for r in out}),
                         freed, unknown, len(hosted.invalid), rec, kept)


def _read(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    return list(reader.fieldnames or ()), list(reader)


def _write(columns: list[str], rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, quoting=csv.QUOTE_ALL, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")
