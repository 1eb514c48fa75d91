"""Publish a run's HITs to a Turkle server and collect the answers (the in-lab crowd backend).

One run becomes one Turkle *project* (the HIT template) and one *batch* (one task per HIT item,
``assignments_per_task`` workers each, login required). Publishing is idempotent and resumable:

- ``RUN/turkle_ledger.sqlite`` (:mod:`crowds.turkle.ledger`) records the server URL, the project
  and batch ids and what was published (assignments, hours, a hash of the input CSV and of the
  template). It is written before each create call (state ``creating``) and after it. It never
  holds a token or password.
- Turkle has no idempotency key, so project and batch carry deterministic names derived from the
  run id; a rerun after a crash between a create call and the ledger update finds them by name
  and adopts them instead of creating a second one. A rerun after success only checks that the
  batch is still there.

Task inputs are ``item_id``, ``image_top`` and ``image_bottom`` (the contract's Turkle fields);
images travel as ``data:`` URIs (any Turkle server) or are copied into the server home and served
at ``/cage-images/`` to logged-in users (servers started by :mod:`crowds.turkle.server`). Turkle
substitutes values raw, so every value is checked to be URL-safe first.

``collect`` downloads the batch results CSV and writes it to ``RUN/results.csv`` byte for byte as
Turkle serves it (docs/platforms.md §1.5: ``HITId ... WorkTimeInSeconds``,
``Input.<fields>``, ``Answer.<fields>``, ``Turkle.Username``; ``WorkerId`` is Turkle's integer
user id). Nothing here prints.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cage_eval import files, runs
from cage_eval.errors import BackendError, ConfigError, RunDirError
from crowds.answers import (
    InvalidAnswer,
    KeptAside,
    answer_problem,
    keep_other_origin,
    shown,
    write_invalid_answers,
)
from crowds.turkle.ledger import CREATING, PUBLISHED, Publication, TurkleLedger, utc_now

if TYPE_CHECKING:
    from crowds.turkle.api import TurkleAPI
    from hitgen.items import HitItem

TEMPLATE_FIELDS = ("item_id", "image_top", "image_bottom")
#: The fields the HIT form posts (``hitgen.render.FORM_FIELDS``).
FORM_FIELDS = ("choice", "item_id", "elapsed_ms")
#: The metadata columns Turkle's results CSV starts with, in order (``Batch._get_csv_fieldnames``).
TURKLE_META_COLUMNS = (
    "HITId", "HITTypeId", "Title", "CreationTime", "MaxAssignments",
    "AssignmentDurationInSeconds", "AssignmentId", "WorkerId", "AcceptTime", "SubmitTime",
    "WorkTimeInSeconds",
)
TURKLE_USERNAME_COLUMN = "Turkle.Username"
IMAGE_MODES = ("data-uri", "server")
#: Turkle's default template size limit, in bytes (TURKLE_TEMPLATE_LIMIT = 64 KB).
TEMPLATE_LIMIT_BYTES = 64 * 1024
MAX_ASSIGNMENTS = 50
MAX_HOURS = 24 * 30
SERVER_IMAGES_URL = "/cage-images/"
_IMAGE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

# --------------------------------------------------------------------------- options and results


@dataclass(frozen=True)
class TurklePublishOptions:
    """How a run is published to Turkle; defaults are the CLI's defaults.

    ``assignments``: workers per task (Turkle's ``assignments_per_task``; its API defaults to 1,
    so it is always sent). ``hours``: time a worker has for one task. ``images``: ``data-uri`` or
    ``server`` (copied into the server home, needs ``server_home``). ``domain`` and
    ``templates_dir`` choose the texts and template; ``seed`` and ``attention_rate`` are used only
    when ``RUN/hit_items.csv`` does not exist yet.
    """

    assignments: int = 3
    hours: int = 24
    images: str = "data-uri"
    domain: str = "digits"
    templates_dir: Path | None = None
    seed: int = 0
    attention_rate: float = 0.0
    #: The analysis plan to freeze (``analysis.plan.AnalysisPlan``; quality-control rules
    #: included); the defaults when None. Its ``catch_trials`` is set from the HIT items.
    analysis_plan: Any = None

    def __post_init__(self) -> None:
        if not 1 <= self.assignments <= MAX_ASSIGNMENTS:
            raise ConfigError(f"--assignments {self.assignments}: must be between 1 and "
                              f"{MAX_ASSIGNMENTS} (3 is the paper's design)")
        if not 1 <= self.hours <= MAX_HOURS:
            raise ConfigError(f"--hours {self.hours}: must be between 1 and {MAX_HOURS}")
        if self.images not in IMAGE_MODES:
            raise ConfigError(f"--images {self.images!r}: must be one of {', '.join(IMAGE_MODES)}")


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` did. ``created`` is False when the run was already published."""

    url: str
    project_id: int
    batch_id: int
    n_tasks: int
    assignments: int
    created: bool
    adopted: bool

    @property
    def worker_url(self) -> str:
        """The page a logged-in worker opens to start on this batch."""
        return f"{self.url}/batch/{self.batch_id}/accept_next_task/"


@dataclass(frozen=True)
class BatchProgress:
    """Progress of a published batch (Turkle's ``/api/batches/{id}/progress/``)."""

    url: str
    batch_id: int
    total_tasks: int
    total_assignments: int
    finished_tasks: int
    finished_assignments: int

    @property
    def complete(self) -> bool:
        return self.total_assignments > 0 and self.finished_assignments >= self.total_assignments


@dataclass(frozen=True)
class CollectResult:
    """What :func:`collect` wrote: ``rows`` usable assignments by ``workers`` distinct users in
    ``path``; the whole download in ``raw``; ``invalid`` assignments set aside."""

    path: Path
    raw: Path
    rows: int
    workers: int
    items_answered: int
    invalid: list[InvalidAnswer]
    progress: BatchProgress
    kept_aside: KeptAside | None = None

    @property
    def invalid_choices(self) -> int:
        """How many assignments were set aside as invalid."""
        return len(self.invalid)


# --------------------------------------------------------------------------- inputs


def _items(run_dir: Path, options: TurklePublishOptions) -> list[HitItem]:
    from hitgen.items import build_hit_items, read_hit_items, write_hit_items

    if (run_dir / runs.HIT_ITEMS).exists():
        return read_hit_items(run_dir)
    items = build_hit_items(run_dir, seed=options.seed, attention_rate=options.attention_rate)
    write_hit_items(run_dir, items)
    return items


def render_template(options: TurklePublishOptions) -> str:
    """The Turkle HIT template (an HTML fragment), checked against Turkle's rules."""
    from hitgen.render import render_turkle_template
    from hitgen.texts import HitTexts

    html = render_turkle_template(HitTexts.for_domain(options.domain),
                                  templates_dir=options.templates_dir)
    where = f"Turkle template ({options.templates_dir or 'built-in'})"
    if re.search(r"<\s*form\b", html, re.IGNORECASE):
        raise ConfigError(f"{where}: contains a <form> element; Turkle adds its own form, so a "
                          "Turkle template must not have one")
    missing = [f for f in TEMPLATE_FIELDS if "${" + f + "}" not in html]
    if missing:
        raise ConfigError(f"{where}: placeholder(s) {', '.join('${' + m + '}' for m in missing)} "
                          "missing")
    extra = sorted(set(re.findall(r"\$\{(\w+)\}", html)) - set(TEMPLATE_FIELDS))
    if extra:
        raise ConfigError(f"{where}: unknown placeholder(s) {', '.join(extra)}; the tasks only "
                          f"provide {', '.join(TEMPLATE_FIELDS)}")
    size = len(html.encode("utf-8"))
    if size > TEMPLATE_LIMIT_BYTES:
        raise ConfigError(f"{where}: {size} bytes, over Turkle's {TEMPLATE_LIMIT_BYTES}-byte "
                          "template limit")
    return html


class ServerImageHost:
    """Images copied into a Turkle server home and served at ``/cage-images/<name>``.

    The URL is relative to the server, so it works under whatever host name workers use.
    """

    def __init__(self, run_dir: Path, server_home: Path) -> None:
        from crowds.turkle.server import IMAGES_DIR
        from hitgen.hosting import ImageReader

        self.run_dir = Path(run_dir)
        self.target = Path(server_home) / IMAGES_DIR
        self.reader = ImageReader(self.run_dir)
        if not Path(server_home).is_dir():
            raise ConfigError(f"--home {server_home}: no such server home; --images server needs "
                              "the home of the running server")

    def url(self, image_name: str) -> str:
        data = self.reader.read(image_name)
        if not _IMAGE_NAME.match(image_name):
            raise RunDirError(f"{self.run_dir / runs.IMAGES_DIR / image_name}: name not servable "
                              "by URL; use --images data-uri")
        dest = self.target / image_name
        if not dest.is_file() or dest.read_bytes() != data:
            self.target.mkdir(parents=True, exist_ok=True)
            files.atomic_write_bytes(dest, data)
        return SERVER_IMAGES_URL + image_name


def input_csv(run_dir: Path, items: list[HitItem], options: TurklePublishOptions,
              server_home: Path | None) -> str:
    """The batch's input CSV: ``item_id, image_top, image_bottom``, one row per HIT item."""
    from hitgen.hosting import DataUriHost, check_substitution_value

    if options.images == "server":
        if server_home is None:
            raise ConfigError("--images server needs --home, the home of the running server "
                              "started by `cage-eval turkle serve`")
        host: Any = ServerImageHost(run_dir, server_home)
    else:
        host = DataUriHost(run_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TEMPLATE_FIELDS)
    for item in items:
        row = (item.item_id, host.url(item.image_top), host.url(item.image_bottom))
        for field, value in zip(TEMPLATE_FIELDS, row, strict=True):
            check_substitution_value(value, field=field)
        writer.writerow(row)
    return buf.getvalue()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_not_mturk(run_dir: Path) -> None:
    mturk_ledger = run_dir / runs.LEDGER
    if mturk_ledger.exists():
        raise RunDirError(f"{mturk_ledger}: exists, so this run is published on MTurk and "
                          f"{runs.RESULTS} belongs to `cage-eval collect`; copy the run directory "
                          f"without {runs.LEDGER} to study it on Turkle")


# --------------------------------------------------------------------------- publish


def publish(
    run_dir: Path,
    api: TurkleAPI,
    options: TurklePublishOptions = TurklePublishOptions(),
    *,
    server_home: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> PublishResult:
    """Publish a run's HIT items to Turkle as one project and one batch (idempotent, resumable).

    Parameters
    ----------
    run_dir : a complete run directory with ``pairs.csv`` (and ``hit_items.csv``, which is built
        with ``options.seed`` / ``options.attention_rate`` when absent).
    api : a :class:`~crowds.turkle.api.TurkleAPI` for a staff user's token.
    options : assignments, hours, images, texts.
    server_home : the running server's home, for ``options.images == 'server'``.
    on_step : called with a short progress line after each step (the CLI echoes them).

    Returns
    -------
    PublishResult; ``created`` False when the run was already published (nothing was created).
    """
    step = on_step or (lambda _msg: None)
    run_dir = Path(run_dir)
    manifest = runs.read_manifest(run_dir)
    run_id = str(manifest.get("run_id") or "")
    if not run_id or not re.fullmatch(r"[A-Za-z0-9_-]+", run_id):
        raise RunDirError(f"{run_dir / runs.MANIFEST}: field run_id is {run_id!r}; regenerate the run")
    runs.require_file(run_dir, runs.PAIRS, made_by=f"cage-eval generate --out {run_dir}")
    _check_not_mturk(run_dir)

    if options.images == "server" and server_home is not None:
        from crowds.turkle.server import recorded_url

        served_from = recorded_url(server_home)
        if served_from != api.url:
            raise ConfigError(f"--images server copies the images into {server_home}, whose "
                              f"server is {served_from or 'not running'}, not {api.url}; pass "
                              "the --home of the server at --url, or use --images data-uri")
    api.whoami_check()  # before anything is written: a dead server or bad token changes nothing
    with files.run_lock(run_dir, "published"):
        template = render_template(options)
        items = _items(run_dir, options)
        csv_text = input_csv(run_dir, items, options, server_home)
        want = Publication(
            run_id=run_id, server_url=api.url, project_name=f"cage-eval {run_id}",
            batch_name=f"{runs.REQUESTER_ANNOTATION_PREFIX}{run_id}", project_id=None,
            batch_id=None, assignments_per_task=options.assignments,
            allotted_hours=options.hours, images=options.images, n_tasks=len(items),
            input_sha256=_sha256(csv_text), template_sha256=_sha256(template), state=CREATING,
            created_at=utc_now(), updated_at=utc_now())
        from analysis.plan import freeze_plan
        from analysis.quality import publish_plan

        frozen = publish_plan(options.analysis_plan,
                              catch_trials=sum(1 for it in items if it.kind == "attention"))
        fresh = not (run_dir / runs.TURKLE_LEDGER).exists()
        if fresh:  # the plan first: the ledger file appears only with a publication in it
            step(f"analysis plan frozen: {freeze_plan(run_dir, frozen).name}")
        with TurkleLedger.open(run_dir, create=True) as ledger:
            pub = ledger.publication()
            if pub is not None:
                _check_same(run_dir, pub, want)
                if pub.state == PUBLISHED and pub.batch_id is not None:
                    api.batch(pub.batch_id)  # still there (raises BackendError if not)
                    ledger.log("publish-rerun", "already published; nothing created")
                    step(f"already published: batch {pub.batch_id} at {pub.server_url}")
                    return PublishResult(pub.server_url, int(pub.project_id or 0),
                                         pub.batch_id, pub.n_tasks, pub.assignments_per_task,
                                         created=False, adopted=False)
                step("resuming an interrupted publish")
            if not fresh:
                step(f"analysis plan frozen: {freeze_plan(run_dir, frozen).name}")
            if pub is None:
                ledger.start(want)
                pub = want

            adopted = False
            project_id = pub.project_id
            if project_id is None:
                project_id, found = _ensure_project(api, pub, template, options)
                ledger.set_project(project_id, adopted=found)
                adopted |= found
                step(f"project {project_id} {'found' if found else 'created'}: {pub.project_name}")
            batch_id = pub.batch_id
            if batch_id is None:
                batch_id, found = _ensure_batch(api, pub, project_id, run_id, csv_text, options)
                ledger.set_batch(batch_id, adopted=found)
                adopted |= found
                step(f"batch {batch_id} {'found' if found else 'created'}: {len(items)} tasks x "
                     f"{options.assignments} assignments")
            return PublishResult(api.url, project_id, batch_id, len(items), options.assignments,
                                 created=True, adopted=adopted)


def _check_same(run_dir: Path, pub: Publication, want: Publication) -> None:
    ledger = run_dir / runs.TURKLE_LEDGER
    where = f"{ledger}: this run was published"
    if pub.run_id != want.run_id:
        raise RunDirError(f"{where} as run {pub.run_id}, but manifest.json says {want.run_id}; "
                          "the ledger belongs to another run")
    if pub.server_url != want.server_url:
        raise ConfigError(f"{where} to {pub.server_url}, not {want.server_url}; pass --url "
                          f"{pub.server_url} (a second server would get a second batch)")
    for label, old, new in (
        ("--assignments", pub.assignments_per_task, want.assignments_per_task),
        ("--hours", pub.allotted_hours, want.allotted_hours),
        ("--images", pub.images, want.images),
    ):
        if old != new:
            raise ConfigError(f"{where} with {label} {old}; rerun with {label} {old} "
                              f"(changing it would need a second batch)")
    if pub.input_sha256 != want.input_sha256 or pub.n_tasks != want.n_tasks:
        raise RunDirError(f"{where} with different HIT items or images ({pub.n_tasks} tasks); "
                          f"{runs.HIT_ITEMS} or images/ changed since; restore them")
    if pub.template_sha256 != want.template_sha256 and pub.project_id is None:
        raise ConfigError(f"{where} with another template (--domain/--templates); rerun with the "
                          "same ones")


def _ensure_project(api: TurkleAPI, pub: Publication, template: str,
                    options: TurklePublishOptions) -> tuple[int, bool]:
    matches = [p for p in api.projects() if p.get("name") == pub.project_name]
    if len(matches) > 1:
        raise BackendError(f"Turkle at {api.url}: {len(matches)} projects are named "
                           f"{pub.project_name!r}; deactivate the extra ones in the admin UI")
    if matches:
        found = matches[0]
        # DRF trims surrounding whitespace from the stored template.
        if found.get("html_template") is not None and found["html_template"] != template.strip():
            raise BackendError(f"Turkle at {api.url}: project {found.get('id')} "
                               f"{pub.project_name!r} has a different template; rename it in "
                               "the admin UI and publish again")
        return int(found["id"]), True
    created = api.create_project({
        "name": pub.project_name,
        "filename": f"cage-eval-{options.domain}.html",
        "html_template": template,
        "assignments_per_task": options.assignments,
        "allotted_assignment_time": options.hours,
        "login_required": True,
        "active": True,
    })
    return int(created["id"]), False


def _ensure_batch(api: TurkleAPI, pub: Publication, project_id: int, run_id: str, csv_text: str,
                  options: TurklePublishOptions) -> tuple[int, bool]:
    matches = [b for b in api.batches()
               if b.get("project") == project_id and b.get("name") == pub.batch_name]
    if len(matches) > 1:
        raise BackendError(f"Turkle at {api.url}: project {project_id} has {len(matches)} "
                           f"batches named {pub.batch_name!r}; deactivate the extra ones in the "
                           "admin UI")
    if matches:
        batch_id = int(matches[0]["id"])
        total = api.progress(batch_id)["total_tasks"]
        if total != pub.n_tasks or matches[0].get("assignments_per_task") != options.assignments:
            raise BackendError(f"Turkle at {api.url}: batch {batch_id} {pub.batch_name!r} has "
                               f"{total} tasks x {matches[0].get('assignments_per_task')} "
                               f"assignments, expected {pub.n_tasks} x {options.assignments}; "
                               "rename it in the admin UI and publish again")
        return batch_id, True
    created = api.create_batch({
        "name": pub.batch_name,
        "project": project_id,
        "filename": f"{run_id}.csv",
        "csv_text": csv_text,
        # Turkle's API does not inherit these from the project; always send them.
        "assignments_per_task": options.assignments,
        "login_required": True,
        "allotted_assignment_time": options.hours,
        "active": True,
    })
    return int(created["id"]), False


# --------------------------------------------------------------------------- status and collect


def published(run_dir: Path) -> Publication:
    """The run's completed publication; :class:`RunDirError` when there is none (the message
    names the MTurk commands for a run published there)."""
    with TurkleLedger.open(run_dir) as ledger:
        pub = ledger.publication()
    if pub is None or pub.state != PUBLISHED or pub.batch_id is None:
        raise RunDirError(f"{Path(run_dir) / runs.TURKLE_LEDGER}: the run is not (completely) "
                          f"published; run `cage-eval turkle publish {run_dir}` (it resumes)")
    return pub


def status(run_dir: Path, api: TurkleAPI) -> BatchProgress:
    """Progress of the run's batch on its Turkle server."""
    pub = published(Path(run_dir))
    _check_server(api, pub)
    p = api.progress(pub.batch_id or 0)
    return BatchProgress(api.url, int(pub.batch_id or 0), p["total_tasks"],
                         p["total_task_assignments"], p["total_finished_tasks"],
                         p["total_finished_task_assignments"])


def _check_server(api: TurkleAPI, pub: Publication) -> None:
    """Refuse a run published to another server than the one the token is for.

    The URL in the run's ledger is never used to decide where the token goes: a copied or
    tampered run could name any server.
    """
    if api.url != pub.server_url:
        raise ConfigError(f"{runs.TURKLE_LEDGER}: the run was published to "
                          f"{shown(pub.server_url, 80)}, not to {api.url}, the server the API "
                          "token is for; the token is sent only to the server of --home or to "
                          "an explicit --url (pass --url with that server only if you trust it)")


@dataclass(frozen=True)
class ResultsCheck:
    """A checked Turkle results download: the usable rows and the invalid assignments.

    ``data`` is what ``RUN/results.csv`` gets: the download byte for byte when every answer is
    valid, else the same layout without the invalid assignments.
    """

    data: bytes
    rows: int
    workers: int
    items_answered: int
    invalid: list[InvalidAnswer]


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Let the csv module read fields up to ``limit`` characters (its default is 128 KiB)."""
    old = csv.field_size_limit(max(limit, csv.field_size_limit()))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _parse_results(data: bytes, source: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BackendError(f"{source}: results are not UTF-8 text") from None
    with _csv_field_limit(len(text) + 1):
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            return list(reader.fieldnames or ()), list(reader)
        except csv.Error as exc:
            raise BackendError(f"{source}: not a readable CSV ({str(exc)[:80]})") from None


def _row_problem(row: dict[str, str | None], header: list[str]) -> tuple[str, str] | None:
    """Why one results row cannot be used (``(field, problem)``), or None."""
    if None in row or any(v is None for v in row.values()):
        return "row", "has the wrong number of fields"
    answers = {c.removeprefix("Answer."): str(row[c]) for c in header if c.startswith("Answer.")}
    unknown = [f for f, v in answers.items() if f not in FORM_FIELDS and v]
    if unknown:
        return shown(unknown[0], 24), "is not a field of the HIT form"
    return answer_problem({f: v for f, v in answers.items() if f in FORM_FIELDS},
                          str(row["Input.item_id"]))


def _without(header: list[str], rows: list[dict[str, str]]) -> bytes:
    """Turkle's layout (every field quoted, ``\n`` line ends) for ``rows``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def check_results_csv(data: bytes, item_ids: set[str], *, source: str) -> ResultsCheck:
    """Check a Turkle results CSV and set invalid assignments aside.

    The header must be Turkle's (metadata columns, ``Input.item_id``, ``Turkle.Username``, and
    ``Answer.choice`` once anything was answered) and every ``Input.item_id`` one of ``item_ids``
    (else :class:`BackendError`: the download is not this run's). An assignment whose answer is
    not a valid form answer (:func:`crowds.answers.answer_problem`, or a field the form does not
    have) is invalid: left out of :attr:`ResultsCheck.data` and listed, never an error.
    """
    header, rows = _parse_results(data, source)
    if tuple(header[: len(TURKLE_META_COLUMNS)]) != TURKLE_META_COLUMNS or \
            header[-1:] != [TURKLE_USERNAME_COLUMN]:
        raise BackendError(f"{source}: not a Turkle results CSV (header "
                           f"{shown(', '.join(header[:4]), 80)}...)")
    # Turkle derives the Input./Answer. columns from the assignments, so an empty batch has none.
    needed = [f"Input.{f}" for f in TEMPLATE_FIELDS] + [f"Answer.{runs.ANSWER_FIELD}"]
    missing = [c for c in needed if c not in header]
    if rows and missing:
        raise BackendError(f"{source}: column(s) {', '.join(missing)} missing; the batch was not "
                           "made from a cage-eval template")
    unknown = sorted({str(r["Input.item_id"]) for r in rows} - item_ids)
    if unknown:
        raise BackendError(f"{source}: item_id {shown(unknown[0])} is not in {runs.HIT_ITEMS}; "
                           "the ledger points at another run's batch")
    valid, invalid = [], []
    for row in rows:
        problem = _row_problem(row, header)
        if problem is None:
            valid.append(row)
            continue
        invalid.append(InvalidAnswer(str(row.get("AssignmentId") or "")[:40],
                                     str(row.get("WorkerId") or "")[:40],
                                     str(row.get("HITId") or "")[:40],
                                     str(row["Input.item_id"]), *problem))
    out = data if not invalid else _without(header, valid)
    return ResultsCheck(out, len(valid), len({r["WorkerId"] for r in valid}),
                        len({r["Input.item_id"] for r in valid}), invalid)


def collect(run_dir: Path, api: TurkleAPI) -> CollectResult:
    """Download the batch results into ``RUN/results.csv`` (Turkle's layout, as served).

    The download is archived byte for byte as ``RUN/raw_answers/turkle_batch_<id>.csv``;
    invalid assignments are left out of ``results.csv`` and listed in
    ``RUN/raw_answers/invalid_answers.csv``. Holds the run lock.
    """
    from hitgen.items import read_hit_items

    run_dir = Path(run_dir)
    _check_not_mturk(run_dir)
    pub = published(run_dir)
    _check_server(api, pub)
    with files.run_lock(run_dir, "collected"):
        batch_id = int(pub.batch_id or 0)
        item_ids = {it.item_id for it in read_hit_items(run_dir)}
        progress = status(run_dir, api)
        data = api.results_csv(batch_id)
        checked = check_results_csv(data, item_ids,
                                    source=f"Turkle at {api.url}: batch {batch_id} results")
        raw = run_dir / runs.RAW_ANSWERS_DIR / f"turkle_batch_{batch_id}.csv"
        files.atomic_write_bytes(raw, data)
        write_invalid_answers(run_dir, checked.invalid)
        path = run_dir / runs.RESULTS
        kept = keep_other_origin(run_dir, "turkle")
        files.atomic_write_bytes(path, checked.data)
        with TurkleLedger.open(run_dir) as ledger:
            ledger.log("collect", f"{checked.rows} rows, {checked.workers} workers, "
                                  f"{checked.items_answered} items, {len(checked.invalid)} invalid")
            for bad in checked.invalid:
                ledger.log("invalid-answer", bad.describe())
    return CollectResult(path, raw, checked.rows, checked.workers, checked.items_answered,
                         checked.invalid, progress, kept)
