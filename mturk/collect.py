"""Collect answers: every assignment of every HIT in the ledger -> ``RUN/results.csv``.

For each HIT the ledger holds, ``GetHIT`` plus ``ListAssignmentsForHIT`` over *all* statuses
(``Submitted``, ``Approved``, ``Rejected``), paginated 100 at a time (docs/platforms.md §2.8). The
raw API records, answer XML included, are archived as ``RUN/raw_answers/<HITId>.json`` (MTurk
disposes of HITs after 120 days). ``RUN/results.csv`` follows the requester website's
batch-results layout, exactly the columns of ``cage_eval.runs.RESULTS_COLUMNS``, and is written
atomically. An assignment whose answer does not parse or is not a valid form answer
(:mod:`crowds.answers`) is left out of it and listed in ``RUN/raw_answers/invalid_answers.csv``.
The run lock is held throughout.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cage_eval import files, progress, runs
from cage_eval.errors import RunDirError
from crowds.answers import (
    InvalidAnswer,
    KeptAside,
    answer_problem,
    keep_other_origin,
    mturk_time,
    write_invalid_answers,
)
from mturk import aws
from mturk.ledger import CREATED, Ledger

ASSIGNMENT_STATUSES = ("Submitted", "Approved", "Rejected")
ANSWER_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
PAGE_SIZE = 100


def parse_answer_xml(xml_text: str) -> dict[str, str]:
    """The fields of a ``QuestionFormAnswers`` document: ``{QuestionIdentifier: FreeText}``.

    A field posted more than once keeps every value, joined with ``|``.

    Raises
    ------
    ValueError
        Not a QuestionFormAnswers document.
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"answer XML does not parse: {exc}") from None
    ns = {"ns": ANSWER_NS}
    if root.tag != f"{{{ANSWER_NS}}}QuestionFormAnswers":
        raise ValueError(f"answer XML root is {root.tag!r}, not QuestionFormAnswers")
    answers: dict[str, str] = {}
    for answer in root.findall("ns:Answer", ns):
        name = (answer.findtext("ns:QuestionIdentifier", default="", namespaces=ns) or "").strip()
        value = answer.findtext("ns:FreeText", default="", namespaces=ns) or ""
        if not name:
            continue
        answers[name] = f"{answers[name]}|{value}" if name in answers else value
    return answers


def list_assignments(client: Any, hit_id: str,
                     statuses: Iterable[str] = ASSIGNMENT_STATUSES) -> list[dict[str, Any]]:
    """Every assignment of one HIT with the given statuses, following ``NextToken``."""
    out: list[dict[str, Any]] = []
    try:
        pages = client.get_paginator("list_assignments_for_hit").paginate(
            HITId=hit_id, AssignmentStatuses=list(statuses), PaginationConfig={"PageSize": PAGE_SIZE})
        for page in pages:
            out.extend(page.get("Assignments", []))
    except Exception as exc:
        raise aws.backend_error(exc, f"ListAssignmentsForHIT {hit_id}") from None
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.astimezone(timezone.utc).isoformat()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k != "ResponseMetadata"}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


@dataclass
class CollectReport:
    """What :func:`collect` found: ``assignments`` fetched, of which ``invalid`` were left out of
    ``results.csv`` (``malformed``: the AssignmentIds whose answer XML did not parse)."""

    hits: int = 0
    assignments: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)
    invalid: list[InvalidAnswer] = field(default_factory=list)
    results_path: Path | None = None
    kept_aside: KeptAside | None = None


def _row(hit: dict[str, Any], a: dict[str, Any], item: Any, run_id: str, lifetime_s: Any,
         answers: dict[str, str]) -> dict[str, str]:
    accept, submit = a.get("AcceptTime"), a.get("SubmitTime")
    work = ""
    if isinstance(accept, datetime) and isinstance(submit, datetime):
        work = str(int((submit - accept).total_seconds()))
    row = {
        "HITId": hit["HITId"],
        "HITTypeId": hit.get("HITTypeId", ""),
        "Title": hit.get("Title", ""),
        "Description": hit.get("Description", ""),
        "Keywords": hit.get("Keywords", ""),
        "Reward": f"${hit['Reward']}" if hit.get("Reward") else "",
        "CreationTime": mturk_time(hit.get("CreationTime")),
        "MaxAssignments": str(hit.get("MaxAssignments", "")),
        "RequesterAnnotation": hit.get("RequesterAnnotation", ""),
        "AssignmentDurationInSeconds": str(hit.get("AssignmentDurationInSeconds", "")),
        "AutoApprovalDelayInSeconds": str(hit.get("AutoApprovalDelayInSeconds", "")),
        "Expiration": mturk_time(hit.get("Expiration")),
        "NumberOfSimilarHITs": "",
        "LifetimeInSeconds": str(lifetime_s or ""),
        "AssignmentId": a["AssignmentId"],
        "WorkerId": a.get("WorkerId", ""),
        "AssignmentStatus": a.get("AssignmentStatus", ""),
        "AcceptTime": mturk_time(accept),
        "SubmitTime": mturk_time(submit),
        "AutoApprovalTime": mturk_time(a.get("AutoApprovalTime")),
        "ApprovalTime": mturk_time(a.get("ApprovalTime")),
        "RejectionTime": mturk_time(a.get("RejectionTime")),
        "RequesterFeedback": a.get("RequesterFeedback", ""),
        "WorkTimeInSeconds": work,
        "LifetimeApprovalRate": "",
        "Last30DaysApprovalRate": "",
        "Last7DaysApprovalRate": "",
        "Input.item_id": item.item_id,
        "Input.image_top": item.image_top,
        "Input.image_bottom": item.image_bottom,
        "Input.run_id": run_id,
        "Approve": "",
        "Reject": "",
    }
    for column in runs.RESULTS_ANSWER_COLUMNS:
        row[column] = answers.get(column.removeprefix("Answer."), "")
    return {c: row[c] for c in runs.RESULTS_COLUMNS}


def fetch_hit(client: Any, hit_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``GetHIT`` and every assignment of one HIT."""
    try:
        hit = client.get_hit(HITId=hit_id)["HIT"]
    except Exception as exc:
        raise aws.backend_error(exc, f"GetHIT {hit_id}") from None
    return hit, list_assignments(client, hit_id)


def collect(run_dir: Path, client: Any, *, concurrency: int = 8) -> CollectReport:
    """Fetch every assignment of the run's HITs; archive raw answers; write ``results.csv``.

    Raises
    ------
    RunDirError : no ledger / no HIT items, a ledger from another run, or another process holds
        the run.
    BackendError : MTurk refused a call (nothing is written then).
    """
    from hitgen.items import read_hit_items

    run_dir = Path(run_dir)
    run_id = str(runs.read_manifest(run_dir).get("run_id") or "")
    items = {it.item_id: it for it in read_hit_items(run_dir)}
    with Ledger.open(run_dir, run_id=run_id) as ledger:
        rows = ledger.rows(state=CREATED)
        lifetime_s = ledger.settings.get("lifetime_s", "")
    if not rows:
        raise RunDirError(f"{run_dir / runs.LEDGER}: no HIT has been created yet; run "
                          f"`cage-eval publish {run_dir}` first")
    missing = [r.item_id for r in rows if r.item_id not in items]
    if missing:
        raise RunDirError(f"{run_dir / runs.HIT_ITEMS}: lacks item {missing[0]} that the ledger "
                          "published; restore the original hit_items.csv")
    with files.run_lock(run_dir, "collected"):
        with ThreadPoolExecutor(max_workers=max(1, concurrency),
                                thread_name_prefix="collect") as pool, \
                progress.bar(len(rows), "fetching answers", "HIT") as bar:
            fetched = []
            for result in pool.map(lambda r: fetch_hit(client, str(r.hit_id)), rows):
                fetched.append(result)
                bar.update(1)
        return _write_results(run_dir, run_id, items, rows, fetched, lifetime_s)


def _write_results(run_dir: Path, run_id: str, items: dict[str, Any], rows: list[Any],
                   fetched: list[tuple[dict[str, Any], list[dict[str, Any]]]],
                   lifetime_s: Any) -> CollectReport:
    """Archive the raw answers, then write ``results.csv`` and ``invalid_answers.csv``."""
    report = CollectReport(hits=len(rows))
    raw_dir = run_dir / runs.RAW_ANSWERS_DIR
    out_rows: list[dict[str, str]] = []
    for row, (hit, assignments) in zip(rows, fetched, strict=True):
        files.atomic_write_json(raw_dir / f"{hit['HITId']}.json",
                               {"item_id": row.item_id, "hit": _jsonable(hit),
                                "assignments": _jsonable(assignments)})
        assignments = sorted(assignments, key=lambda a: (str(a.get("SubmitTime", "")), a["AssignmentId"]))
        for a in assignments:
            report.assignments += 1
            report.by_status[a.get("AssignmentStatus", "")] += 1
            try:
                answers = parse_answer_xml(a.get("Answer") or "")
                problem = answer_problem(answers, row.item_id)
            except ValueError:
                answers, problem = {}, ("answer", "XML does not parse")
                report.malformed.append(a["AssignmentId"])
            if problem is not None:
                report.invalid.append(InvalidAnswer(str(a["AssignmentId"]),
                                                    str(a.get("WorkerId", "")), hit["HITId"],
                                                    row.item_id, *problem))
                continue
            out_rows.append(_row(hit, a, items[row.item_id], run_id, lifetime_s, answers))
    write_invalid_answers(run_dir, report.invalid)
    path = run_dir / runs.RESULTS
    report.kept_aside = keep_other_origin(run_dir, "mturk")
    files.atomic_write_csv(path, out_rows, runs.RESULTS_COLUMNS)
    report.results_path = path
    return report
