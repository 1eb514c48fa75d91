"""``cage-eval analyze`` before all answers are in: no answers yet, and partial coverage."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from analysis_fixtures import make_analysis_run, simulate, write_results, write_turkle
from click.testing import CliRunner
from crowd_fixtures import DEFAULT_RUN_ID

from cage_eval import runs
from cage_eval.cli import cli
from crowds.turkle.backend import TURKLE_META_COLUMNS, TURKLE_USERNAME_COLUMN
from crowds.turkle.ledger import CREATING, Publication, TurkleLedger
from mturk.ledger import Ledger


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("coverage")
    run, items = make_analysis_run(base / "run", pairs_per_cell=10, attention_rate=0.1)
    return run, items


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_error_line(res, path) -> str:
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


def _turkle_ledger(run, assignments: int) -> None:
    with TurkleLedger.open(run, create=True) as ledger:
        ledger.start(Publication(
            run_id=DEFAULT_RUN_ID, server_url="http://127.0.0.1:1", project_name="p",
            batch_name="b", project_id=None, batch_id=None, assignments_per_task=assignments,
            allotted_hours=24, images="data-uri", n_tasks=1, input_sha256="a" * 64,
            template_sha256="b" * 64, state=CREATING, created_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z"))


def test_turkle_results_before_any_answer(study, tmp_path):
    """Turkle serves an empty batch's results with the metadata columns only (no Input.*)."""
    run, items = study
    work = tmp_path / "run"
    import shutil

    shutil.copytree(run, work)
    _turkle_ledger(work, 3)
    path = work / runs.RESULTS
    path.write_text(",".join([*TURKLE_META_COLUMNS, TURKLE_USERNAME_COLUMN]) + "\n")
    err = _one_error_line(_invoke("analyze", path), path)
    n = len(items)
    assert f"0 of {3 * n} assignments answered yet ({n} HITs x 3 assignments)" in err
    assert "missing column" not in err
    assert not (work / "analysis").exists()


def test_collect_results_before_any_answer(study, tmp_path):
    """`cage-eval collect` writes the header alone while no worker has submitted."""
    run, items = study
    work = tmp_path / "run"
    import shutil

    shutil.copytree(run, work)
    with Ledger.create(work, environment="sandbox", run_id=DEFAULT_RUN_ID,
                       settings={"reward": "0.05", "assignments": 5},
                       items=[(it.item_id, it.kind, f"t{i}") for i, it in enumerate(items)]):
        pass
    path = work / runs.RESULTS
    path.write_text(",".join(runs.RESULTS_COLUMNS) + "\n")
    err = _one_error_line(_invoke("analyze", path), path)
    n = len(items)
    assert f"0 of {5 * n} assignments answered yet ({n} HITs x 5 assignments)" in err


def test_no_answers_without_a_ledger_counts_hits(study, tmp_path):
    run, items = study
    path = tmp_path / "results.csv"
    path.write_text(",".join(runs.RESULTS_COLUMNS) + "\n")
    err = _one_error_line(_invoke("analyze", path, "--run", run), path)
    assert f"0 of {len(items)} HITs answered yet" in err


def test_partial_answers_print_coverage_and_warn(study, tmp_path):
    run, items = study
    # Answers for half the pairs of thick->bright/same_source and none of slant->thick/same_destination.
    cell = [it for it in items if (it.dag, it.setting) == ("thick->bright", "same_source")]
    dropped = {it.item_id for it in cell[:5]} | {
        it.item_id for it in items if (it.dag, it.setting) == ("slant->thick", "same_destination")}
    judgements = simulate([it for it in items if it.item_id not in dropped], p_cause=0.5,
                          n_workers=9, seed=3)
    path = write_results(tmp_path / "results.csv", judgements, DEFAULT_RUN_ID)
    res = _invoke("analyze", path, "--run", run, "--n-boot", 0, "--no-gee")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("Coverage"))
    table = lines[head:head + 7]
    rows = {tuple(x.split()[:2]): x.split()[2:] for x in table[3:]}
    assert rows[("same_source", "thick->bright")] == ["5/10", "15/30"]
    assert rows[("same_destination", "thick->bright")] == ["10/10", "30/30"]
    assert rows[("same_destination", "slant->thick")] == ["0/10", "0/30"]
    warning = ("WARNING: answers cover 25 of 40 pairs (75 of 120 planned assignments); "
               "thick->bright/same_source and slant->thick/same_destination are incomplete")
    assert any(x.startswith(warning) for x in lines)
    assert res.stderr.count("WARNING: answers cover") == 1
    data = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    cov = {(c["dag"], c["setting"]): c for c in data["coverage"]["cells"]}
    assert cov[("thick->bright", "same_source")]["pairs_answered"] == 5
    assert cov[("slant->thick", "same_destination")]["assignments_planned"] == 30
    # The empty cell is still a row of Table 2 (0/0), so nobody mistakes it for a null result.
    table2 = pd.read_csv(tmp_path / "analysis" / "table2.csv")
    assert set(zip(table2.dag, table2.setting, strict=True)) >= {("thick->bright", "same_source")}


def test_complete_answers_say_so_in_one_line(study, tmp_path):
    run, items = study
    path = write_turkle(tmp_path / "results.csv", simulate(items, n_workers=9, seed=4))
    res = _invoke("analyze", path, "--run", run, "--n-boot", 0, "--no-gee")
    assert res.exit_code == 0, res.output
    assert "Coverage: all 40 pairs answered (120 of 120 planned assignments)." in res.output
    assert "WARNING: answers cover" not in res.output


def test_planned_assignments_read_from_the_file(study, tmp_path):
    """Without a ledger the plan comes from the file's MaxAssignments column."""
    run, items = study
    judgements = simulate(items[: len(items) // 2], n_workers=9, seed=5)
    path = write_results(tmp_path / "results.csv", judgements, DEFAULT_RUN_ID)
    rows = list(csv.DictReader(path.open()))
    assert {r["MaxAssignments"] for r in rows} == {"3"}
    res = _invoke("analyze", path, "--run", run, "--n-boot", 0, "--no-gee")
    assert res.exit_code == 0, res.output
    assert "planned assignments" in res.output and "WARNING: answers cover" in res.output
