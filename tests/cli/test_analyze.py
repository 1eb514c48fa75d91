"""``cage-eval analyze`` and ``cage-eval power`` through click's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from analysis_fixtures import make_analysis_run, simulate, write_results, write_tidy
from click.testing import CliRunner
from crowd_fixtures import DEFAULT_RUN_ID

from analysis.plan import AnalysisPlan, freeze_plan
from cage_eval import runs
from cage_eval.cli import cli

PLANTED = {("thick->bright", "same_source"): 0.85, ("thick->bright", "same_destination"): 0.2,
           ("slant->thick", "same_source"): 0.5, ("slant->thick", "same_destination"): 0.5}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    run, items = make_analysis_run(base / "run", pairs_per_cell=20, attention_rate=0.1)
    judgements = simulate(items, p_cause=PLANTED, n_workers=9, seed=1)
    results = write_results(run / runs.RESULTS, judgements, DEFAULT_RUN_ID)
    return run, judgements, results


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_analyze_help_does_not_import_torch():
    code = (
        "import sys\n"
        "import analysis, analysis.report, analysis.tables\n"
        "bad = [m for m in ('torch', 'cage', 'boto3') if m in sys.modules]\n"
        "assert not bad, ('analysis imported', bad)\n"
        "import cage_eval.cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(cage_eval.cli.cli, ['analyze', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'Turn crowd answers' in r.output\n"
        "bad = [m for m in ('torch', 'boto3') if m in sys.modules]\n"
        "assert not bad, ('the CLI imported', bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_analyze_writes_every_output_and_a_readable_table(study, tmp_path):
    run, _, results = study
    out = tmp_path / "tables"
    res = invoke("analyze", results, "--out", out, "--n-boot", 200)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"{results} (mturk, run {DEFAULT_RUN_ID})"
    assert lines[1].startswith("Analysis plan: no frozen plan found; defaults used")
    table = pd.read_csv(out / "table2.csv")
    cell = table.set_index(["dag", "setting"]).loc[("thick->bright", "same_source")]
    assert cell.significant and cell.n == 60
    assert f"{cell.k}/60*" in res.output
    grid = lines[lines.index(next(x for x in lines if x.startswith("DAG "))) + 3]
    assert grid.split()[0] == "thick->bright" and grid.split()[1].endswith("/60*")
    for name in ("table2.csv", "table2.md", "table2.tex", "workers.csv", "analysis.json"):
        assert (out / name).is_file()
    data = json.loads((out / "analysis.json").read_text())
    assert data["plan"]["correction"] == "bonferroni" and len(data["cells"]) == 4
    assert data["exclusions"]["pair_rows_in"] == 240
    assert "\\begin{tabular}" in (out / "table2.tex").read_text()
    assert f"{cell.k}/60\\*" in (out / "table2.md").read_text()
    assert not list(out.glob(".*tmp"))
    assert max(len(x) for x in lines if not x.startswith(("Wrote", "Analysis plan", str(results)))) <= 100


def test_frozen_plan_followed_and_override_warned(study, tmp_path):
    import shutil

    run, judgements, _ = study
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("analysis"))
    freeze_plan(copy, AnalysisPlan(correction="holm"))
    res = invoke("analyze", copy / runs.RESULTS, "--n-boot", 0)
    assert res.exit_code == 0
    assert "Analysis plan: frozen in the run at" in res.output and "WARNING" not in res.output
    assert "after Holm correction" in res.output
    res = invoke("analyze", copy / runs.RESULTS, "--n-boot", 0, "--correction", "none",
                 "--alpha", "0.01")
    assert res.exit_code == 0
    assert "WARNING: option overrides the frozen plan: correction 'holm' -> 'none'" in res.output
    assert "WARNING: option overrides the frozen plan: alpha 0.05 -> 0.01" in res.output
    assert (copy / "analysis" / "table2.csv").is_file()


def test_power_command(tmp_path, study):
    res = invoke("power", "--dags", 4, "--p-expected", 0.65)
    assert res.exit_code == 0
    assert res.output.splitlines()[2] == (
        "  pooled judgements: 41 pairs (123 judgements) per DAG and setting")
    run, _, _ = study
    res = invoke("power", "--run", run)
    assert res.exit_code == 0
    assert "(2 tests)" in res.output and "at 20 pairs x 3" in res.output


# --------------------------------------------------------------------------- bad input


def _bad(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _results_text(results: Path, edit) -> str:
    df = pd.read_csv(results, dtype=str, keep_default_na=False)
    return edit(df).to_csv(index=False)


def _set(df: pd.DataFrame, row: int, col: str, value: str) -> pd.DataFrame:
    df = df.copy()
    df.loc[row, col] = value
    return df


CASES = {
    "empty": (lambda r: "", r"the file is empty"),
    "header only": (lambda r: ",".join(runs.RESULTS_COLUMNS) + "\n",
                    r"0 of 88 HITs answered yet \(the file has a header and no rows\)"),
    "binary": (lambda r: b"PK\x03\x04\x00\x00garbage", r"not a CSV file \(binary"),
    "json": (lambda r: '{"HITId": 1}\n', r"line 1: not a CSV file \(it looks like JSON"),
    "one column": (lambda r: "hello\nworld\n", r"line 1: not a CSV results file"),
    "missing column": (lambda r: _results_text(r, lambda d: d.drop(columns=["Input.item_id"])),
                       r"line 1: missing column\(s\) Input.item_id"),
    "no answer column": (lambda r: _results_text(r, lambda d: d.drop(columns=["Answer.choice"])),
                         r"line 1: missing column Answer.choice"),
    "unknown answer": (lambda r: _results_text(r, lambda d: _set(d, 4, "Answer.choice", "left")),
                       r"line 6: column Answer.choice: 'left' is not one of top, bottom"),
    "blank answer": (lambda r: _results_text(r, lambda d: _set(d, 0, "Answer.choice", "")),
                     r"line 2: column Answer.choice: an empty value"),
    "unknown item": (lambda r: _results_text(r, lambda d: _set(d, 9, "Input.item_id", "hfeed")),
                     r"line 11: column Input.item_id: 'hfeed' is not an item of run"),
    "mixed runs": (lambda r: _results_text(r, lambda d: _set(d, 7, "Input.run_id", "0ther")),
                   r"line 9: column Input.run_id: answers of run '0ther' mixed with run"),
    "malformed": (lambda r: ",".join(runs.RESULTS_COLUMNS) + '\n"unterminated,\n',
                  r"line 2: not a well-formed CSV \(unexpected end of data\); repair the file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line_and_no_output(case, study, tmp_path):
    _, _, results = study
    make, pattern = CASES[case]
    path = _bad(tmp_path, "results.csv", make(results))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["analyze", str(path), "--run", str(study[0]), "--out", str(out)])
    assert res.exit_code == 1, res.output
    err = res.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"Error: {path}: "), res.output
    import re

    assert re.search(pattern, err[0]), err[0]
    assert "Traceback" not in res.output
    assert not out.exists()


TIDY_CASES = {
    "bad preferred": ("preferred", 3, "left", r"line 5: column preferred: 'left' is not one of cause, effect"),
    "bad setting": ("setting", 0, "same_thing", r"line 2: column setting: 'same_thing'"),
    "bad dag": ("dag", 1, "thick", r"line 3: column dag: expected '<cause>-><effect>'"),
    "empty worker": ("worker_id", 2, "", r"line 4: column worker_id is empty"),
    "unknown pair": ("pair_id", 5, "nope-001", r"line 7: column pair_id: 'nope-001' is not a pair of run"),
}


@pytest.mark.parametrize("case", sorted(TIDY_CASES))
def test_bad_tidy_input(case, study, tmp_path):
    run, judgements, _ = study
    col, row, value, pattern = TIDY_CASES[case]
    good = write_tidy(tmp_path / "good.csv", judgements)
    df = pd.read_csv(good, dtype=str, keep_default_na=False)
    df.loc[row, col] = value
    path = tmp_path / "tidy.csv"
    path.write_text(df.to_csv(index=False))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["analyze", str(path), "--run", str(run), "--out", str(out)])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {path}: ") and len(res.output.strip().splitlines()) == 1
    import re

    assert re.search(pattern, res.output), res.output
    assert not out.exists()


def test_run_of_another_study_is_refused(study, tmp_path):
    _, judgements, results = study
    other, _ = make_analysis_run(tmp_path / "other", pairs_per_cell=2)
    manifest = json.loads((other / runs.MANIFEST).read_text())
    manifest["run_id"] = "abcdef0123456789"
    (other / runs.MANIFEST).write_text(json.dumps(manifest))
    res = CliRunner().invoke(cli, ["analyze", str(results), "--run", str(other),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert f"but {other} is run 'abcdef0123456789'; pass the right --run DIR" in res.output
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_refused(study, tmp_path):
    _, _, results = study
    target = tmp_path / "taken"
    target.write_text("not a directory")
    res = CliRunner().invoke(cli, ["analyze", str(results), "--out", str(target), "-q"])
    assert res.exit_code == 1 and "Invalid value for '--out'" in res.output  # click refuses it
    # The library refuses it too, for API callers.
    from analysis.report import AnalysisOptions, analyze_file
    from analysis.tables import write_outputs
    from cage_eval.errors import ConfigError

    result = analyze_file(results, options=AnalysisOptions(n_boot=0))
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        write_outputs(result, target)
    assert target.read_text() == "not a directory"


def test_tidy_without_positions_and_without_run(study, tmp_path):
    _, judgements, _ = study
    path = write_tidy(tmp_path / "tidy.csv", judgements, with_position=False)
    res = invoke("analyze", path, "--n-boot", 0, "--no-gee")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"{path} (tidy)"
    table = pd.read_csv(tmp_path / "analysis" / "table2.csv")
    assert table["position_n"].eq(0).all() and table["gee_rate"].isna().all()
    assert table["n"].sum() == 240
    assert "position: -." in res.output
