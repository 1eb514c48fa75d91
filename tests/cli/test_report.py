"""``cage-eval report`` through click's CliRunner, and the reports ``generate`` and ``analyze``
keep up to date."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from analysis_fixtures import make_analysis_run, simulate, write_results
from click.testing import CliRunner
from crowd_fixtures import DEFAULT_RUN_ID
from report_fixtures import make_report_run

from cage_eval import runs
from cage_eval.cli import cli


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_report_writes_the_page_into_the_run(tmp_path):
    run = make_report_run(tmp_path / "run")
    res = _invoke("report", run)
    assert res.exit_code == 0, res.output
    assert res.output == (f"Wrote {run / runs.REPORT}: 2 pair(s), 3 verdict(s), 7 plot(s), "
                          "2 contact sheet(s), no answers yet\n")
    assert (run / runs.REPORT).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    elsewhere = tmp_path / "out" / "copy.html"
    res = _invoke("report", run, "--out", elsewhere)
    assert res.exit_code == 0 and res.output.startswith(f"Wrote {elsewhere}: ")
    assert elsewhere.read_bytes() == (run / runs.REPORT).read_bytes()


@pytest.mark.parametrize("case", ["no directory", "not a run", "incomplete", "no directions"])
def test_a_non_run_or_incomplete_run_is_one_error_line(case, tmp_path):
    run = make_report_run(tmp_path / "run")
    if case == "no directory":
        run = tmp_path / "nowhere"
    elif case == "not a run":
        run = tmp_path / "plain"
        run.mkdir()
    elif case == "incomplete":
        manifest = json.loads((run / runs.MANIFEST).read_text())
        (run / runs.MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    else:
        (run / runs.DIRECTIONS).unlink()
    res = _invoke("report", run)
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and res.output.startswith(f"Error: {run}")
    assert not (run / runs.REPORT).exists()


def test_report_loads_no_torch(tmp_path):
    run = make_report_run(tmp_path / "run")
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cage_eval.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['report', {str(run)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(','.join(m for m in ('torch', 'pandas', 'matplotlib', 'sklearn', 'boto3')\n"
        "               if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.fixture()
def answered(tmp_path):
    """A hand-made run with HIT items and answers, not analysed yet."""
    run, items = make_analysis_run(tmp_path / "run", pairs_per_cell=3)
    make_report_run(run, run_id=DEFAULT_RUN_ID)
    write_results(run / runs.RESULTS, simulate(items, p_cause=0.8, seed=2), DEFAULT_RUN_ID)
    return run


def test_analyze_refreshes_the_runs_report(answered, tmp_path):
    _invoke("report", answered)
    assert "No answers yet" not in (answered / runs.REPORT).read_text()
    assert "not analysed yet" in (answered / runs.REPORT).read_text()
    res = _invoke("analyze", answered / runs.RESULTS, "--n-boot", 0, "--no-gee", "-q")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1].endswith(f"analysis.json, {answered / runs.REPORT}")
    html = (answered / runs.REPORT).read_text()
    assert "not analysed yet" not in html and "Per cell" in html
    # Outputs written elsewhere are not the run's own analysis: the run's page stays as it is.
    before = (answered / runs.REPORT).read_bytes()
    res = _invoke("analyze", answered / runs.RESULTS, "--n-boot", 0, "--no-gee", "-q",
                  "--correction", "holm", "--out", tmp_path / "elsewhere")
    assert res.exit_code == 0 and runs.REPORT not in res.output
    assert (answered / runs.REPORT).read_bytes() == before


def test_analyze_warns_when_the_runs_page_cannot_be_rewritten(answered):
    _invoke("report", answered)
    (answered / runs.CLASSIFIERS).unlink()
    res = _invoke("analyze", answered / runs.RESULTS, "--n-boot", 0, "--no-gee", "-q")
    assert res.exit_code == 0, res.output
    assert res.stderr == (f"WARNING: {answered / runs.REPORT} not updated: "
                          f"{answered / runs.CLASSIFIERS}: missing; run `cage-eval generate "
                          f"--out {answered}` first\n")
    assert (answered / "analysis" / "analysis.json").is_file()
    assert res.stdout.startswith("Wrote ") and runs.REPORT not in res.stdout


def test_analyze_of_crowd_files_only_leaves_no_page_and_says_nothing(tmp_path):
    run, items = make_analysis_run(tmp_path / "run", pairs_per_cell=3)
    write_results(run / runs.RESULTS, simulate(items, p_cause=0.8, seed=2), DEFAULT_RUN_ID)
    res = _invoke("analyze", run / runs.RESULTS, "--n-boot", 0, "--no-gee", "-q")
    assert res.exit_code == 0 and res.stderr == ""
    assert not (run / runs.REPORT).exists()


@pytest.mark.slow
def test_generate_writes_the_report(tiny_digits_run, tmp_path):
    html = (tiny_digits_run / runs.REPORT).read_text(encoding="utf-8")
    manifest = runs.read_manifest(tiny_digits_run)
    assert f"run {manifest['run_id']}" in html and "thick_to_bright__same_source.png" in html
    assert "No answers yet" in html
    # Regenerating from the run's files alone gives the same page.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_digits_run, copy)
    shutil.copystat(tiny_digits_run / runs.MANIFEST, copy / runs.MANIFEST)
    assert _invoke("report", copy).exit_code == 0
    assert (copy / runs.REPORT).read_bytes() == (tiny_digits_run / runs.REPORT).read_bytes()
