"""Fault injection, class 1: no command writes, replaces or deletes what it does not own.

Each test is an attack a hostile or careless user can make: ``report --out`` onto the run's own
files or a file the user wrote, ``generate --force`` onto a folder of the user's, an experiment
name that climbs out of ``runs/``, and two ``generate`` writing the same directory at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from mturk_helpers import snapshot
from report_fixtures import make_report_run

from cage_eval import files, runs
from cage_eval.cli import cli
from cage_eval.errors import RunDirError

ROOT = Path(__file__).resolve().parents[1]
SMALL_MOG = ["-e", "mog", "--set", "flow.steps=30", "--set", "data.n=300", "--set", "cage.k=200",
             "--set", "cage.n_null=4", "--set", "cage.mmd_n=20", "--set",
             "cage.mmd_permutations=4", "--set", "cage.k_null_observation=50",
             "--set", "cage.alphas=[1]"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(result, start: str) -> str:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "\n" not in text, text
    assert text.startswith(f"Error: {start}"), text
    return text


# --------------------------------------------------------------------------- report --out


@pytest.mark.parametrize("name", [runs.RESULTS, runs.HIT_ITEMS, runs.MANIFEST, runs.PAIRS,
                                  runs.DIRECTIONS])
def test_report_out_never_replaces_a_run_file(tmp_path, name):
    run = make_report_run(tmp_path / "run")
    target = run / name
    if not target.exists():
        target.write_text("HITId,WorkerId\nH1,W1\n")
    before = snapshot(run)
    text = one_error_line(invoke("report", run, "--out", target), str(target))
    assert "not a cage-eval report" in text
    assert snapshot(run) == before


def test_report_out_never_writes_a_new_file_named_like_a_run_file(tmp_path):
    run = make_report_run(tmp_path / "run")
    before = snapshot(run)
    text = one_error_line(invoke("report", run, "--out", run / runs.RESULTS), str(run / runs.RESULTS))
    assert "run file" in text
    assert snapshot(run) == before


def test_report_out_never_replaces_a_users_file(tmp_path):
    run = make_report_run(tmp_path / "run")
    mine = tmp_path / "notes.html"
    mine.write_text("<html><body>my notes</body></html>\n")
    text = one_error_line(invoke("report", run, "--out", mine), str(mine))
    assert "not a cage-eval report" in text
    assert mine.read_text() == "<html><body>my notes</body></html>\n"


def test_report_out_refuses_the_default_page_when_the_user_wrote_it(tmp_path):
    run = make_report_run(tmp_path / "run")
    (run / runs.REPORT).write_text("my own page\n")
    one_error_line(invoke("report", run), str(run / runs.REPORT))
    assert (run / runs.REPORT).read_text() == "my own page\n"


def test_report_out_replaces_its_own_report(tmp_path):
    run = make_report_run(tmp_path / "run")
    out = tmp_path / "copy.html"
    for _ in range(2):  # a new file, then the report it wrote
        res = invoke("report", run, "--out", out)
        assert res.exit_code == 0, res.output
    assert '<meta name="generator" content="cage-eval report' in out.read_text()


def test_report_is_refused_while_another_process_holds_the_run(tmp_path):
    run = make_report_run(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        text = one_error_line(invoke("report", run), str(run))
        assert f"is being collected by process {proc.pid}" in text
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not (run / runs.REPORT).exists()


_HOLDER = """
import sys, time
from cage_eval import files
with files.run_lock(sys.argv[1], "collected"):
    print("locked", flush=True)
    time.sleep(120)
"""


# --------------------------------------------------------------------------- generate --force


def test_generate_force_never_deletes_a_users_folder(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("three years of work\n")
    res = invoke("generate", *SMALL_MOG, "--out", folder, "--force", "--cache-dir", tmp_path / "c")
    text = one_error_line(res, str(folder))
    assert "thesis.txt" in text and "not made by `cage-eval generate`" in text
    assert (folder / "thesis.txt").read_text() == "three years of work\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "c") == ["thesis"]


def test_generate_force_never_deletes_a_users_file_inside_a_run(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    (run / "thesis.txt").write_text("my notes\n")
    before = snapshot(run)
    res = invoke("generate", *SMALL_MOG, "--out", run, "--force", "--cache-dir", tmp_path / "c")
    text = one_error_line(res, str(run))
    assert "thesis.txt" in text
    assert snapshot(run) == before


def test_force_replaces_a_marked_run_and_a_run_made_before_the_marker(tmp_path):
    out = tmp_path / "run"
    with files.staged_run_dir(out, run_id="a1") as stage:
        (stage / runs.DIRECTIONS).write_text("old\n")
    marker = json.loads((out / runs.RUN_MARKER).read_text())
    assert marker["run_id"] == "a1" and marker["made_by"] == "cage-eval generate"
    with files.staged_run_dir(out, force=True, run_id="b2") as stage:
        (stage / runs.DIRECTIONS).write_text("new\n")
    assert (out / runs.DIRECTIONS).read_text() == "new\n"
    old = make_run_dir(tmp_path / "old", pairs_per_cell=1)  # a complete run, no marker
    assert not (old / runs.RUN_MARKER).exists()
    with files.staged_run_dir(old, force=True, run_id="c3") as stage:
        (stage / runs.DIRECTIONS).write_text("new\n")
    assert sorted(p.name for p in old.iterdir()) == [runs.RUN_MARKER, runs.DIRECTIONS]


def test_force_ignores_what_file_browsers_leave_behind(tmp_path):
    out = tmp_path / "run"
    with files.staged_run_dir(out, run_id="a1") as stage:
        (stage / runs.DIRECTIONS).write_text("old\n")
    (out / ".DS_Store").write_bytes(b"\0")
    with files.staged_run_dir(out, force=True, run_id="b2") as stage:
        (stage / runs.DIRECTIONS).write_text("new\n")
    assert (out / runs.DIRECTIONS).read_text() == "new\n"


def test_force_refuses_an_unmarked_directory_without_a_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / runs.DIRECTIONS).write_text("looks like a run\n")
    with pytest.raises(RunDirError, match="not made by `cage-eval generate`"):
        with files.staged_run_dir(out, force=True) as stage:
            (stage / "x").write_text("x")
    assert (out / runs.DIRECTIONS).read_text() == "looks like a run\n"


def test_export_batch_force_never_replaces_a_generate_run(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    assert invoke("hits", run, "--no-preview").exit_code == 0
    other = make_run_dir(tmp_path / "other", pairs_per_cell=1)
    before = snapshot(other)
    res = invoke("export-batch", run, "--out", other, "--force")
    one_error_line(res, str(other))
    assert snapshot(other) == before
    batch = tmp_path / "batch"
    for _ in range(2):  # its own output it replaces
        res = invoke("export-batch", run, "--out", batch, "--force")
        assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------- experiment names


def _mog_named(path: Path, name: str) -> Path:
    """The built-in mog experiment under another ``[experiment] name``."""
    from importlib import resources

    text = (resources.files("cage") / "experiments" / "mog.toml").read_text(encoding="utf-8")
    assert 'name = "mog"' in text
    path.write_text(text.replace('name = "mog"', f"name = {json.dumps(name)}", 1))
    return path


@pytest.mark.parametrize("name", ["../victim", "../../victim", "{tmp}/victim", "a/b", ".hidden",
                                  "..", "", "x\\y", "na me"])
def test_experiment_names_are_simple_names(tmp_path, name, monkeypatch):
    name = name.format(tmp=tmp_path)  # an absolute path, to the victim
    work = tmp_path / "work"  # runs/../../victim from here is tmp_path/victim
    work.mkdir()
    monkeypatch.chdir(work)
    exp = _mog_named(tmp_path / "exp.toml", name)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep\n")
    res = invoke("generate", "-e", exp, *SMALL_MOG[2:], "--force", "--cache-dir", tmp_path / "c")
    text = one_error_line(res, f"{exp}: [experiment] name = {name!r}")
    assert "letters, digits" in text
    assert (victim / "keep.txt").read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "victim", "work"]
    assert list(work.iterdir()) == []


def test_experiment_names_may_use_dots_dashes_and_underscores(tmp_path):
    from cage.config.experiment import load_experiment

    cfg = load_experiment(_mog_named(tmp_path / "exp.toml", "mog_v1.2-b"))
    assert cfg.name == "mog_v1.2-b"


# --------------------------------------------------------------------------- concurrent writers


def _generate_process(out: Path, seed: int, cache: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "cage_eval", "--quiet", "generate", "-e", "mog",
            "--set", "flow.steps=300", "--set", "data.n=2000", "--set", "cage.k=2000",
            "--set", "cage.n_null=20", "--set", "cage.mmd_n=50", "--set",
            "cage.mmd_permutations=20", "--set", "cage.k_null_observation=200",
            "--seed", str(seed), "--out", str(out), "--cache-dir", str(cache)]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_generates_on_one_directory_the_second_is_refused(tmp_path):
    out = tmp_path / "runs" / "same"
    first = _generate_process(out, 1, tmp_path / "cache1")
    try:
        deadline = time.monotonic() + 120
        while not (out.parent.is_dir() and list(out.parent.glob(f".{out.name}.partial-*"))):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first generate never started its run"
            time.sleep(0.05)
        second = _generate_process(out, 2, tmp_path / "cache2")
        _, err = second.communicate(timeout=300)
        assert second.returncode == 1, err
        assert err.strip() == (f"Error: {out} is being generated by process {first.pid}; wait "
                               "for it to finish, then run the command again")
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    finally:
        first.kill()
        first.wait(timeout=30)
    assert json.loads((out / runs.MANIFEST).read_text())["seeds"]["master"] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["same"]  # no stage, no lock left
