"""Publish a run's HIT items to MTurk: idempotent, resumable, concurrent.

The order of events (docs/platforms.md §3, items 1-3):

1. :func:`prepare` (no AWS call, nothing written): validate every option, read or build the HIT
   items, check the ledger's environment, estimate the cost and apply ``--max-cost``.
2. :func:`publish`: check the account balance; write ``hit_items.csv`` (once) and freeze the
   analysis plan; create the ledger; create the HIT type; *reconcile* items a crash may have left
   half-created (state ``creating``) by listing the requester's HITs; then create every missing HIT
   with ``CreateHITWithHITType`` from a bounded thread pool. Each create is bracketed by two ledger
   writes and carries a deterministic ``UniqueRequestToken``; MTurk's "HIT already exists" /
   "already been processed" answer is resolved by looking the HIT up.

A rerun after a crash at any point therefore creates exactly the HITs that are still missing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cage_eval import files, runs
from cage_eval import progress as progress_report
from cage_eval.errors import BackendError, ConfigError, RunDirError, SpendingRefused
from mturk import aws
from mturk.costs import CostEstimate, estimate_cost
from mturk.environments import Environment
from mturk.hits import (
    HitSettings,
    create_hit_args,
    hit_type_args,
    requester_annotation,
    unique_request_token,
)
from mturk.ledger import CREATED, CREATING, Ledger

IMAGE_MODES = ("data-uri", "s3")
#: SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 86400
MAX_CONCURRENCY = 64
_ITEM_ID = re.compile(r"h[0-9a-f]{15}")
_HIT_ID = re.compile(r"\b[A-Z0-9]{20,64}\b")
#: How often one item is tried again after botocore itself gave up on a transient error.
OUTER_ATTEMPTS = 3


@dataclass(frozen=True)
class PublishRequest:
    """What the user asked ``cage-eval publish`` for (besides the AWS connection)."""

    settings: HitSettings
    domain: str = "digits"
    texts_file: Path | None = None  # overrides domain: a JSON/TOML file with the seven HIT texts
    templates_dir: Path | None = None
    images: str = "data-uri"
    bucket: str | None = None
    s3_prefix: str = "cage-eval"
    attention_rate: float = 0.0
    seed: int = 0
    concurrency: int = 16
    max_cost: Decimal | None = None
    #: The analysis plan to freeze (quality-control rules included); the defaults when None.
    #: Its ``catch_trials`` is set from the HIT items at publish time.
    analysis_plan: Any = None

    def __post_init__(self) -> None:
        if self.images not in IMAGE_MODES:
            raise ConfigError(f"--images {self.images!r}: expected one of {', '.join(IMAGE_MODES)}")
        if self.images == "s3":
            if not self.bucket:
                raise ConfigError("--images s3 needs --bucket NAME (a private bucket you own)")
            expires = self.settings.lifetime_s + self.settings.duration_s
            if expires > MAX_PRESIGN_S:
                raise ConfigError(
                    f"--images s3: presigned image URLs must stay valid for the HIT lifetime plus the "
                    f"assignment duration ({expires} s), but SigV4 allows at most {MAX_PRESIGN_S} s "
                    "(7 days); shorten --lifetime or use --images data-uri"
                )
        elif self.bucket:
            raise ConfigError("--bucket only applies with --images s3")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"--concurrency {self.concurrency}: expected 1..{MAX_CONCURRENCY}")
        if not 0.0 <= self.attention_rate <= 1.0:
            raise ConfigError(f"--attention-rate {self.attention_rate}: expected a share in [0, 1]")

    @property
    def presign_expires_s(self) -> int:
        """How long presigned image URLs must stay valid."""
        return self.settings.lifetime_s + self.settings.duration_s


@dataclass(frozen=True)
class PublishPlan:
    """Everything :func:`publish` will do, worked out without calling AWS or writing anything."""

    run_dir: Path
    run_id: str
    env: Environment
    request: PublishRequest
    items: list[Any]                 # hitgen.items.HitItem
    items_from_file: bool            # hit_items.csv existed (a resume)
    created: frozenset[str]          # item_ids the ledger already holds as created
    estimate: CostEstimate           # the whole run
    remaining: CostEstimate          # what is still to be created
    texts: Any                       # hitgen.texts.HitTexts
    hit_type_args: dict[str, Any]
    page: dict[str, Any]             # page_record(): digests of the texts and templates

    @property
    def n_attention(self) -> int:
        """Number of attention-check items."""
        return sum(1 for it in self.items if it.kind == "attention")

    @property
    def n_dags(self) -> int:
        """Number of DAGs among the pair items."""
        return len({it.dag for it in self.items if it.kind == "pair"})


@dataclass
class PublishReport:
    """What one :func:`publish` call did."""

    hit_type_id: str
    preview_url: str
    total: int
    created_now: int = 0
    already_existed: int = 0       # resolved via "already exists" + lookup
    reconciled: int = 0            # found by listing HITs after a crash
    previously_created: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def created_total(self) -> int:
        """HITs that exist for this run after the call."""
        return self.previously_created + self.created_now + self.already_existed + self.reconciled


def _hitgen() -> Any:
    """Import hitgen lazily (it pulls in jinja2, numpy and PIL)."""
    import hitgen.hosting
    import hitgen.items
    import hitgen.render
    import hitgen.texts

    return hitgen


def page_record(texts: Any, templates_dir: Path | None) -> dict[str, Any]:
    """What the workers read, as digests: a short SHA-256 of each HIT text (title, description,
    keywords, question, instructions, labels) and the digest of every template in effect.

    Stored in the ledger at the first publish; a resume must match it, so one run's HITs never
    mix wordings or page layouts.
    """
    import dataclasses
    import hashlib

    digests = {name: hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
               for name, value in dataclasses.asdict(texts).items()}
    return {"texts": digests, "templates": _hitgen().render.template_digest(templates_dir)}


def _check_page(ledger: Ledger, page: dict[str, Any]) -> None:
    """Refuse a resume whose texts or templates differ from the recorded ones."""
    recorded = ledger.page
    if not recorded:  # a ledger from before page digests were kept: publish records them
        return
    changed = sorted(k for k, v in page["texts"].items() if recorded.get("texts", {}).get(k) != v)
    if changed:
        raise ConfigError(
            f"{ledger.path}: this run was published with other HIT texts ({', '.join(changed)} "
            "differ); resume with the same domain or texts file, so that all of the run's HITs "
            "read the same")
    if recorded.get("templates") != page["templates"]:
        raise ConfigError(
            f"{ledger.path}: this run was published with other HIT templates (digest "
            f"{str(recorded.get('templates'))[:12]}, now {page['templates']}); resume with the same "
            "templates directory, so that all of the run's HITs look the same")


def token_items(items: Iterable[Any], run_id: str, env: Environment) -> list[tuple[str, str, str]]:
    """``(item_id, kind, UniqueRequestToken)`` for the ledger."""
    return [(it.item_id, it.kind, unique_request_token(run_id, it.item_id, env.name)) for it in items]


def prepare(run_dir: Path, request: PublishRequest, env: Environment) -> PublishPlan:
    """Validate, read the run and the ledger, and estimate the cost. Calls no AWS API, writes nothing.

    The HIT items come from ``RUN/hit_items.csv`` when it exists (a resume, or items made with
    ``cage-eval hits``), else they are built by hitgen (attention images may be added to ``images/``;
    ``hit_items.csv`` itself is written only by :func:`publish`).

    Raises
    ------
    RunDirError, ConfigError, SpendingRefused
        Not a run / no pairs, a ledger from another environment or with other settings, bad
        options, or an estimate above ``--max-cost``.
    """
    hg = _hitgen()
    run_dir = Path(run_dir)
    manifest = runs.read_manifest(run_dir)
    run_id = str(manifest.get("run_id") or "")
    if not run_id:
        raise RunDirError(f"{run_dir / runs.MANIFEST}: field run_id is missing; regenerate the run")
    if not manifest.get("complete"):
        raise RunDirError(f"{run_dir / runs.MANIFEST}: the run is not complete; rerun `cage-eval generate`")
    if (run_dir / runs.TURKLE_LEDGER).exists():
        raise RunDirError(
            f"{run_dir / runs.TURKLE_LEDGER}: this run was published on a local Turkle server, and both "
            "backends write results.csv; copy the run (without turkle_ledger.sqlite) to publish it on MTurk"
        )
    texts = (hg.texts.HitTexts.from_file(request.texts_file) if request.texts_file
             else hg.texts.HitTexts.for_domain(request.domain))

    page = page_record(texts, request.templates_dir)
    created: frozenset[str] = frozenset()
    if Ledger.exists(run_dir):
        with Ledger.open(run_dir, environment=env.name, run_id=run_id) as ledger:
            recorded = ledger.settings
            wanted = request.settings.as_record()
            diff = sorted(k for k in wanted if recorded.get(k) != wanted[k])
            if diff:
                was = ", ".join(f"{k}={recorded.get(k)!r}" for k in diff)
                raise ConfigError(
                    f"{ledger.path}: this run was published with {was}; rerun publish with the same "
                    "options (HITs of one run must not differ)"
                )
            _check_page(ledger, page)
            created = frozenset(r.item_id for r in ledger.rows(state=CREATED))
    elif (run_dir / runs.HIT_ITEMS).exists():
        pass
    else:
        hg.items.read_pairs(run_dir)  # a clear error for a run without pairs, before building

    hit_items_path = run_dir / runs.HIT_ITEMS
    if hit_items_path.exists():
        items = hg.items.read_hit_items(run_dir)
        from_file = True
    else:
        items = hg.items.build_hit_items(run_dir, seed=request.seed,
                                         attention_rate=request.attention_rate)
        from_file = False
    unknown = created - {it.item_id for it in items}
    if unknown:
        raise RunDirError(f"{hit_items_path}: lacks {len(unknown)} item(s) the ledger has published "
                          f"(e.g. {sorted(unknown)[0]}); restore the original hit_items.csv")
    check_images(run_dir, items)

    s = request.settings
    masters = s.qualifications.masters
    estimate = estimate_cost(s.reward, s.assignments, len(items), masters=masters)
    remaining = estimate_cost(s.reward, s.assignments, len(items) - len(created), masters=masters)
    if request.max_cost is not None and estimate.total > request.max_cost:
        raise SpendingRefused(
            f"estimated cost ${estimate.total:.2f} ({estimate.describe()}) is above "
            f"--max-cost ${request.max_cost:.2f}; raise --max-cost or reduce --assignments/--reward"
        )
    args = hit_type_args(s, env, title=texts.title, description=texts.description,
                         keywords=texts.keywords)
    return PublishPlan(run_dir=run_dir, run_id=run_id, env=env, request=request, items=items,
                       items_from_file=from_file, created=created, estimate=estimate,
                       remaining=remaining, texts=texts, hit_type_args=args, page=page)


def check_images(run_dir: Path, items: Iterable[Any]) -> None:
    """Check every image the items show (:func:`hitgen.hosting.read_image`) before anything is
    created: a link, a substituted file or a malformed PNG stops the publish with nothing sent."""
    reader = _hitgen().hosting.ImageReader(run_dir)
    for it in items:
        reader.read(it.image_top)
        reader.read(it.image_bottom)


def check_balance(client: Any, needed: Decimal) -> Decimal:
    """``GetAccountBalance``; raise :class:`SpendingRefused` if it cannot cover ``needed`` dollars."""
    try:
        response = client.get_account_balance()
    except Exception as exc:
        raise aws.backend_error(exc, "GetAccountBalance") from None
    available = Decimal(str(response.get("AvailableBalance", "0")))
    if available < needed:
        raise SpendingRefused(
            f"the MTurk account balance is ${available:.2f}, less than the ${needed:.2f} this publish "
            "may spend; add funds (requester site > My Account) or publish fewer HITs"
        )
    return available


def is_already_exists(exc: BaseException) -> bool:
    """True for MTurk's duplicate-token answers (``HitAlreadyExists`` or "already been processed")."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    turk_code = str(response.get("TurkErrorCode", "")) + str(response.get("Error", {}).get("TurkErrorCode", ""))
    message = aws.error_message(exc).lower()
    return ("HitAlreadyExists" in turk_code or "already been processed" in message
            or "already exists" in message)


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try with the same token (throttling, 5xx, connection problems)."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.ReadTimeoutError):
        return True
    code = aws.error_code(exc)
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return (code in {"ServiceFault", "ServiceUnavailable", "ThrottlingException", "Throttling",
                     "RequestLimitExceeded", "TooManyRequestsException", "InternalError"}
            or (isinstance(status, int) and status >= 500))


class HitIndex:
    """``item_id -> HIT`` for this run's HITs on MTurk, built by listing every HIT (``ListHITs``).

    Only HITs of this run's HIT type and ``RequesterAnnotation`` count; the item is recognised by
    its (unique) opaque item id in the question.
    """

    def __init__(self, client: Any, *, annotation: str, hit_type_id: str, item_ids: set[str]) -> None:
        self._client = client
        self._annotation = annotation
        self._hit_type_id = hit_type_id
        self._item_ids = item_ids
        self._lock = threading.Lock()
        self._index: dict[str, dict[str, Any]] | None = None

    def refresh(self) -> dict[str, dict[str, Any]]:
        """List all HITs again (paginated) and rebuild the index."""
        found: dict[str, dict[str, Any]] = {}
        try:
            for page in self._client.get_paginator("list_hits").paginate(
                    PaginationConfig={"PageSize": 100}):
                for hit in page.get("HITs", []):
                    if (hit.get("RequesterAnnotation") != self._annotation
                            or hit.get("HITTypeId") != self._hit_type_id):
                        continue
                    ids = set(_ITEM_ID.findall(hit.get("Question", ""))) & self._item_ids
                    if len(ids) == 1:
                        found.setdefault(ids.pop(), hit)
        except Exception as exc:
            raise aws.backend_error(exc, "ListHITs") from None
        self._index = found
        return found

    def find(self, item_id: str) -> dict[str, Any] | None:
        """The HIT of ``item_id`` (listing once, again if not found), or None."""
        with self._lock:
            if self._index is None or item_id not in self._index:
                self.refresh()
            assert self._index is not None
            return self._index.get(item_id)


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


def _resolve_existing(client: Any, exc: BaseException, item_id: str, index: HitIndex) -> dict[str, Any]:
    """Find the HIT a duplicate-token answer refers to: by the HITId in the message, else by listing."""
    for candidate in _HIT_ID.findall(aws.error_message(exc)):
        try:
            hit = client.get_hit(HITId=candidate)["HIT"]
        except Exception:
            continue
        if item_id in hit.get("Question", ""):
            return hit
    hit = index.find(item_id)
    if hit is None:
        raise BackendError(
            f"MTurk CreateHITWithHITType: MTurk says the HIT of item {item_id} already exists "
            f"({aws.error_message(exc)}), but no HIT of this run carries that item; "
            "wait a minute (MTurk is eventually consistent) and rerun publish"
        )
    return hit


def _image_host(plan: PublishPlan, s3_client: Any) -> Any:
    """The image host; with S3, every image of a not-yet-created HIT is uploaded first."""
    hg = _hitgen()
    request = plan.request
    if request.images != "s3":
        return hg.hosting.DataUriHost(plan.run_dir)
    from mturk.images_s3 import S3ImageHost

    prefix = "/".join(p for p in (request.s3_prefix.strip("/"), plan.run_id) if p) + "/"
    host = S3ImageHost(s3_client, request.bucket, plan.run_dir, prefix=prefix,
                       expires_in=request.presign_expires_s)
    names = sorted({n for it in plan.items if it.item_id not in plan.created
                    for n in (it.image_top, it.image_bottom)})
    try:
        host.upload(names)
    except Exception as exc:
        if isinstance(exc, ConfigError | RunDirError | BackendError):
            raise
        raise aws.backend_error(exc, "PutObject", context="S3") from None
    return host


def publish(
    plan: PublishPlan,
    client: Any,
    *,
    s3_client: Any = None,
    on_progress: Callable[[int, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishReport:
    """Create every HIT of ``plan`` that does not exist yet; return what was done.

    Parameters
    ----------
    plan : from :func:`prepare`.
    client : a boto3 MTurk client (:func:`mturk.aws.make_client`); shared by the worker threads.
    s3_client : a boto3 S3 client, needed with ``--images s3``.
    on_progress : called as ``on_progress(done, total)`` after each HIT (from worker threads).
    sleep : pause between the outer retries of one item (tests pass a no-op).

    Raises
    ------
    SpendingRefused : the balance cannot cover the remaining cost.
    BackendError : MTurk/S3 refused a call; every HIT created so far is in the ledger, so
        rerunning the same command resumes.
    """
    if plan.request.images == "s3" and s3_client is None:
        raise ValueError("publish with images='s3' needs an s3_client")
    with files.run_lock(plan.run_dir, "published"):
        return _publish_locked(plan, client, s3_client=s3_client, on_progress=on_progress,
                               sleep=sleep)


def _publish_locked(plan: PublishPlan, client: Any, *, s3_client: Any,
                    on_progress: Callable[[int, int], None] | None,
                    sleep: Callable[[float], None]) -> PublishReport:
    """:func:`publish` once the run lock is held: the ledger is read again here, since another
    process may have published since :func:`prepare`."""
    hg = _hitgen()
    run_dir, env, request = plan.run_dir, plan.env, plan.request
    settings = request.settings
    if plan.remaining.hits:
        check_balance(client, plan.remaining.total)
    host = _image_host(plan, s3_client)

    if not plan.items_from_file:
        hg.items.write_hit_items(run_dir, plan.items)
    from analysis.plan import freeze_plan
    from analysis.quality import publish_plan

    freeze_plan(run_dir, publish_plan(request.analysis_plan, catch_trials=plan.n_attention))

    pairs = token_items(plan.items, plan.run_id, env)
    if Ledger.exists(run_dir):
        ledger = Ledger.open(run_dir, environment=env.name, run_id=plan.run_id)
        try:
            _check_page(ledger, plan.page)
        except BaseException:
            ledger.close()
            raise
        if not ledger.page:
            ledger.set_meta("page", json.dumps(plan.page, sort_keys=True), event="page-recorded")
        ledger.add_items(pairs)
    else:
        ledger = Ledger.create(run_dir, environment=env.name, run_id=plan.run_id,
                               settings=settings.as_record(), items=pairs, page=plan.page)
    with ledger:
        return _publish_with_ledger(plan, client, ledger, host=host, on_progress=on_progress,
                                    sleep=sleep)


def _publish_with_ledger(plan: PublishPlan, client: Any, ledger: Ledger, *, host: Any,
                         on_progress: Callable[[int, int], None] | None,
                         sleep: Callable[[float], None]) -> PublishReport:
    hg = _hitgen()
    env, request = plan.env, plan.request
    settings = request.settings
    annotation = requester_annotation(plan.run_id)

    # The HIT type: CreateHITType returns the existing type for identical values, so it is safe.
    hit_type_id = ledger.hit_type_id
    if hit_type_id is None:
        ledger.log("create-hit-type-call")
        try:
            hit_type_id = client.create_hit_type(**plan.hit_type_args)["HITTypeId"]
        except Exception as exc:
            raise aws.backend_error(exc, "CreateHITType") from None
        ledger.set_meta("hit_type_id", hit_type_id, event="hit-type-created")

    rows = {r.item_id: r for r in ledger.rows()}
    report = PublishReport(hit_type_id=hit_type_id, preview_url=env.preview_url(hit_type_id),
                           total=len(plan.items))
    report.previously_created = sum(1 for r in rows.values() if r.state == CREATED)
    index = HitIndex(client, annotation=annotation, hit_type_id=hit_type_id,
                     item_ids={it.item_id for it in plan.items})

    # Reconcile: an item left 'creating' may or may not exist on MTurk (crash between the create
    # call and the ledger write, or a lost answer). MTurk's token guard lasts only 24 h, so look.
    uncertain = [r for r in rows.values() if r.state == CREATING]
    if uncertain:
        found = index.refresh()
        for row in uncertain:
            hit = found.get(row.item_id)
            if hit is not None:
                ledger.mark_created(row.item_id, hit["HITId"], hit["HITTypeId"],
                                    created_at=_iso(hit.get("CreationTime")), how="reconciled")
                report.reconciled += 1

    done_ids = {r.item_id for r in ledger.rows(state=CREATED)}
    todo = [it for it in plan.items if it.item_id not in done_ids]
    if not todo:
        return report

    stop = threading.Event()
    lock = threading.Lock()
    progress = [report.created_total]

    def create_one(item: Any) -> None:
        if stop.is_set():
            return
        try:
            create_item(item)
        except BaseException:
            stop.set()
            raise

    def create_item(item: Any) -> None:
        page = hg.render.render_mturk_page(item, host.url(item.image_top), host.url(item.image_bottom),
                                           plan.texts, templates_dir=request.templates_dir)
        question = hg.render.html_question(page)
        token = unique_request_token(plan.run_id, item.item_id, env.name)
        args = create_hit_args(hit_type_id=hit_type_id, settings=settings, question_xml=question,
                               run_id=plan.run_id, token=token)
        how = "created"
        for attempt in range(1, OUTER_ATTEMPTS + 1):
            ledger.mark_creating(item.item_id, hit_type_id)          # before the call
            try:
                hit = client.create_hit_with_hit_type(**args)["HIT"]
                break
            except Exception as exc:
                if is_already_exists(exc):
                    hit = _resolve_existing(client, exc, item.item_id, index)
                    how = "already-existed"
                    break
                transient = is_transient(exc)
                ledger.mark_failed(item.item_id, f"{aws.error_code(exc) or type(exc).__name__}: "
                                   f"{aws.error_message(exc)}", maybe_created=transient)
                if transient and attempt < OUTER_ATTEMPTS and not stop.is_set():
                    sleep(2.0 ** attempt)
                    continue
                stop.set()
                raise aws.backend_error(exc, "CreateHITWithHITType") from None
        ledger.mark_created(item.item_id, hit["HITId"], hit["HITTypeId"],        # after the call
                            created_at=_iso(hit.get("CreationTime")), how=how)
        with lock:
            if how == "created":
                report.created_now += 1
            else:
                report.already_existed += 1
            progress[0] += 1
            done = progress[0]
        if on_progress is not None:
            on_progress(done, report.total)

    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=request.concurrency, thread_name_prefix="publish") as pool, \
            progress_report.bar(len(todo), "creating HITs", "HIT") as bar:
        futures = [pool.submit(create_one, item) for item in todo]
        for future, item in zip(futures, todo, strict=True):
            exc = future.exception()
            bar.update(1)
            if exc is not None:
                errors.append(exc)
                report.failed.append((item.item_id, str(exc)))
    if errors:
        first = errors[0]
        missing = report.total - report.created_total
        message = (f"{first} -- {report.created_total} of {report.total} HITs exist and are in "
                   f"{ledger.path.name}; {missing} still missing: fix the cause and rerun the same "
                   "publish command to create exactly those")
        if isinstance(first, BackendError):
            raise BackendError(message)
        raise first
    return report
