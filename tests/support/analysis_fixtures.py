"""Simulated crowd answers for the analysis tests, written in every layout ``analyze`` reads.

``make_analysis_run`` builds a synthetic run (``crowd_fixtures.make_run_dir``) with real HIT items
(``hitgen.items.build_hit_items``). ``simulate`` draws judgements with a planted preference rate
per (DAG, setting); ``write_results`` / ``write_batch`` / ``write_turkle`` / ``write_tidy`` write the
same judgements as ``cage-eval collect`` output, a requester-website batch file, Turkle's results
CSV and the tidy format.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from crowd_fixtures import make_run_dir

from analysis.join import JUDGEMENT_COLUMNS
from cage_eval import files, runs
from hitgen.items import HitItem, build_hit_items, write_hit_items


@dataclass
class Judgement:
    """One assignment as a backend would report it."""

    item: HitItem
    worker: str
    worker_num: int
    hit_num: int
    assignment_id: str
    choice: str
    submit: dt.datetime
    work_time_s: int
    status: str = "Approved"


def make_analysis_run(path: Path, *, pairs_per_cell: int = 6, attention_rate: float = 0.0,
                      dags=(("thick", "bright"), ("slant", "thick")), seed: int = 0
                      ) -> tuple[Path, list[HitItem]]:
    """A run directory with pairs.csv, images and hit_items.csv; returns (run, items)."""
    run = make_run_dir(path, pairs_per_cell=pairs_per_cell, dags=dags, seed=seed, size=8)
    items = build_hit_items(run, seed=seed, attention_rate=attention_rate)
    write_hit_items(run, items)
    return run, items


def simulate(items: list[HitItem], *, p_cause: float | Mapping[tuple[str, str], float] = 0.5,
             annotators: int = 3, n_workers: int = 12, attention_accuracy: float = 1.0,
             seed: int = 0) -> list[Judgement]:
    """``annotators`` distinct workers per item; the worker prefers cause with ``p_cause``."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2026, 11, 28, 16, 0, 0)
    out = []
    for h, item in enumerate(items):
        workers = rng.choice(n_workers, size=annotators, replace=False)
        for j, w in enumerate(workers):
            if item.kind == "pair":
                p = p_cause if isinstance(p_cause, float | int) else p_cause[(item.dag, item.setting)]
                role = "cause" if rng.random() < p else "effect"
                choice = "top" if item.role_top == role else "bottom"
            else:
                right = rng.random() < attention_accuracy
                choice = item.expected if right else ("bottom" if item.expected == "top" else "top")
            out.append(Judgement(
                item=item, worker=f"A{w:03d}WRK", worker_num=int(w) + 1, hit_num=h + 1,
                assignment_id=f"3ASG{h:05d}{j}", choice=choice,
                submit=t0 + dt.timedelta(seconds=37 * len(out)),
                work_time_s=int(rng.integers(5, 60)),
            ))
    return out


def _mturk_time(t: dt.datetime) -> str:
    return t.strftime("%a %b %d %H:%M:%S UTC %Y")


def _mturk_row(j: Judgement, run_id: str, annotation: str) -> dict[str, str]:
    row = dict.fromkeys(runs.RESULTS_COLUMNS, "")
    row.update({
        "HITId": f"3HIT{j.hit_num:06d}", "HITTypeId": "3TYPE", "Title": "Which looks more real?",
        "Reward": "$0.05", "CreationTime": _mturk_time(j.submit - dt.timedelta(hours=1)),
        "MaxAssignments": "3", "RequesterAnnotation": annotation,
        "AssignmentDurationInSeconds": "600", "AssignmentId": j.assignment_id,
        "WorkerId": j.worker, "AssignmentStatus": j.status,
        "AcceptTime": _mturk_time(j.submit - dt.timedelta(seconds=j.work_time_s)),
        "SubmitTime": _mturk_time(j.submit), "WorkTimeInSeconds": str(j.work_time_s),
        "Input.item_id": j.item.item_id, "Input.image_top": j.item.image_top,
        "Input.image_bottom": j.item.image_bottom, "Input.run_id": run_id,
        "Answer.choice": j.choice, "Answer.item_id": j.item.item_id,
        "Answer.elapsed_ms": str(1000 * j.work_time_s),
    })
    if j.status == "Rejected":
        row["RejectionTime"] = _mturk_time(j.submit + dt.timedelta(hours=2))
        row["RequesterFeedback"] = "failed attention check"
    return row


def write_results(path: Path, judgements: list[Judgement], run_id: str) -> Path:
    """``cage-eval collect`` layout (``runs.RESULTS_COLUMNS``)."""
    rows = [_mturk_row(j, run_id, runs.REQUESTER_ANNOTATION_PREFIX + run_id) for j in judgements]
    files.atomic_write_csv(path, rows, runs.RESULTS_COLUMNS)
    return path


def write_batch(path: Path, judgements: list[Judgement]) -> Path:
    """Requester-website ``Batch_*_batch_results.csv``: image URLs, no run id, CRLF, BatchId."""
    columns = [c for c in runs.RESULTS_COLUMNS if c != "Input.run_id"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writeheader()
        for j in judgements:
            row = _mturk_row(j, "", "BatchId:5012345;")
            del row["Input.run_id"]
            row["Input.image_top"] = "https://bucket.s3.amazonaws.com/" + j.item.image_top
            row["Input.image_bottom"] = "https://bucket.s3.amazonaws.com/" + j.item.image_bottom
            w.writerow(row)
    return path


TURKLE_COLUMNS = (
    "HITId", "HITTypeId", "Title", "CreationTime", "MaxAssignments",
    "AssignmentDurationInSeconds", "AssignmentId", "WorkerId", "AcceptTime", "SubmitTime",
    "WorkTimeInSeconds", "Input.image_bottom", "Input.image_top", "Input.item_id",
    "Answer.choice", "Answer.elapsed_ms", "Answer.item_id", "Turkle.Username",
)


def write_turkle(path: Path, judgements: list[Judgement], *, list_repr: bool = True) -> Path:
    """Turkle's results CSV: integer HITId/WorkerId, Turkle.Username, list-repr answers."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(TURKLE_COLUMNS), quoting=csv.QUOTE_ALL,
                           lineterminator="\n")
        w.writeheader()
        for n, j in enumerate(judgements):
            w.writerow({
                "HITId": str(j.hit_num), "HITTypeId": "1", "Title": "cage-eval",
                "CreationTime": _mturk_time(j.submit - dt.timedelta(hours=1)),
                "MaxAssignments": "3", "AssignmentDurationInSeconds": "3600",
                "AssignmentId": str(n + 1), "WorkerId": str(j.worker_num),
                "AcceptTime": _mturk_time(j.submit - dt.timedelta(seconds=j.work_time_s)),
                "SubmitTime": _mturk_time(j.submit), "WorkTimeInSeconds": str(j.work_time_s),
                "Input.image_bottom": "/static/x/" + j.item.image_bottom,
                "Input.image_top": "/static/x/" + j.item.image_top,
                "Input.item_id": j.item.item_id,
                "Answer.choice": repr([j.choice]) if list_repr and n % 2 == 0 else j.choice,
                "Answer.elapsed_ms": str(1000 * j.work_time_s),
                "Answer.item_id": j.item.item_id,
                "Turkle.Username": f"user{j.worker_num}",
            })
    return path


def write_tidy(path: Path, judgements: list[Judgement], *, with_position: bool = True) -> Path:
    """The tidy layout; attention items are left out (they have no pair)."""
    cols = ["dag", "setting", "pair_id", "worker_id", "preferred"]
    if with_position:
        cols += ["cause_position", "assignment_id", "work_time_s"]
    rows = []
    for j in judgements:
        if j.item.kind != "pair":
            continue
        row = {"dag": j.item.dag, "setting": j.item.setting, "pair_id": j.item.pair_id,
               "worker_id": j.worker, "preferred": j.item.role_of(j.choice)}
        if with_position:
            row.update({"cause_position": "top" if j.item.role_top == "cause" else "bottom",
                        "assignment_id": j.assignment_id, "work_time_s": j.work_time_s})
        rows.append(row)
    files.atomic_write_csv(path, rows, cols)
    return path


def judgement_frame(cells: dict[tuple[str, str], tuple[int, int]], annotators: int = 3,
                    seed: int = 0) -> pd.DataFrame:
    """Pair judgements with exactly k of n preferring cause per cell, 3 per pair."""
    rng = np.random.default_rng(seed)
    rows = []
    for (dag, setting), (k, n) in cells.items():
        prefs = np.array(["cause"] * k + ["effect"] * (n - k))
        rng.shuffle(prefs)
        for i, pref in enumerate(prefs):
            cause_top = (i // annotators) % 2 == 0
            chose_top = (pref == "cause") == cause_top
            rows.append({
                "line": len(rows) + 2, "source": "tidy", "hit_id": "", "assignment_id": "",
                "worker_id": f"w{(i * 7 + len(rows)) % 11}", "worker_name": "", "status": "",
                "marked_reject": "", "submit_time": "", "work_time_s": float("nan"),
                "item_id": "", "kind": "pair", "pair_id": f"{dag}/{setting}/{i // annotators}",
                "dag": dag, "setting": setting, "choice": "top" if chose_top else "bottom",
                "cause_position": "top" if cause_top else "bottom", "preferred": pref,
                "correct": float("nan"),
            })
    return pd.DataFrame(rows, columns=list(JUDGEMENT_COLUMNS))
