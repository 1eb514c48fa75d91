"""No command may replace a directory that holds a study, a run above it, or the run it reads;
the run lock; output files follow the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from fake_mturk import FakeMTurk
from mturk_helpers import PUBLISH_OPTIONS, snapshot

from cage_eval import files, runs
from cage_eval.cli import cli
from cage_eval.errors import RunDirError

ROOT = Path(__file__).resolve().parents[2]
SMALL_MOG = ["-e", "mog", "--set", "flow.steps=30", "--set", "data.n=300", "--set", "cage.k=200",
             "--set", "cage.n_null=4", "--set", "cage.mmd_n=20", "--set",
             "cage.mmd_permutations=4", "--set", "cage.k_null_observation=50",
             "--set", "cage.alphas=[1]"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def published(aws_env, tmp_path):
    """A run published to the local MTurk endpoint: ledger, blinding map, frozen plan."""
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    with FakeMTurk(max_lifetime_s=120) as server:
        result = invoke("publish", run, *PUBLISH_OPTIONS, "--endpoint-url", server.url)
        assert result.exit_code == 0, result.output
    for name in (runs.LEDGER, runs.HIT_ITEMS, runs.ANALYSIS_PLAN):
        assert (run / name).is_file()
    return run


def test_generate_force_refuses_a_published_run(published, tmp_path):
    before = snapshot(published)
    result = invoke("generate", *SMALL_MOG, "--out", published, "--force",
                    "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.startswith(f"Error: {published}: holds a study (ledger.sqlite, hit_items.csv, "
                           "analysis_plan.json)")
    assert "Archive it first" in line and "\n" not in line
    assert snapshot(published) == before
    assert sorted(p.name for p in published.parent.iterdir()) == ["run"]


def test_generate_force_refuses_a_directory_above_a_run(tmp_path):
    top = tmp_path / "runs"
    run = make_run_dir(top / "digits", pairs_per_cell=1)
    before = snapshot(top)
    result = invoke("generate", *SMALL_MOG, "--out", top, "--force",
                    "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.output == (f"Error: {top}: contains the run directory {run}; replacing {top} "
                             "would delete it; write to a directory that holds no run\n")
    assert snapshot(top) == before


@pytest.mark.parametrize("where", ["run", "above"])
def test_export_batch_never_replaces_the_run_it_reads(tmp_path, where):
    run = make_run_dir(tmp_path / "runs" / "run", pairs_per_cell=1)
    assert invoke("hits", run, "--no-preview").exit_code == 0
    out = run if where == "run" else run.parent
    before = snapshot(tmp_path)
    result = invoke("export-batch", run, "--out", out, "--force")
    assert result.exit_code == 1
    assert result.output == (f"Error: {out}: is the run directory {run} or holds it; writing "
                             "here would replace the run being read; choose a new, separate "
                             "directory\n")
    assert snapshot(tmp_path) == before


def test_export_batch_force_refuses_a_directory_holding_a_turkle_study(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    assert invoke("hits", run, "--no-preview").exit_code == 0
    other = tmp_path / "lab"
    other.mkdir()
    (other / runs.TURKLE_LEDGER).write_bytes(b"published")
    (other / runs.RESULTS).write_text("answers\n")
    result = invoke("export-batch", run, "--out", other, "--force")
    assert result.exit_code == 1 and "holds a study (turkle_ledger.sqlite, results.csv)" in result.output
    assert (other / runs.TURKLE_LEDGER).read_bytes() == b"published"


STUDY = ("ledger.sqlite", "turkle_ledger.sqlite", "hit_items.csv", "analysis_plan.json",
         "results.csv", "raw_answers", "prolific_ledger.sqlite")


def test_the_study_files_are_these():
    assert runs.STUDY_FILES == STUDY


@pytest.mark.parametrize("name", STUDY)
def test_staged_run_dir_refuses_every_kind_of_study_file(tmp_path, name):
    out = tmp_path / "old"
    (out / "nested").mkdir(parents=True)
    target = out / "nested" / name
    if name == "raw_answers":
        target.mkdir()
    else:
        target.write_text("x")
    with pytest.raises(RunDirError, match=f"holds a study \\({name}\\)"):
        with files.staged_run_dir(out, force=True) as stage:
            (stage / "new").write_text("new")
    assert target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_staged_run_dir_checks_again_at_the_swap(tmp_path):
    """A study that appears while the new run is being built still stops the replacement."""
    out = tmp_path / "run"
    with files.staged_run_dir(out) as stage:
        (stage / "directions.csv").write_text("old\n")
    with pytest.raises(RunDirError, match="holds a study"):
        with files.staged_run_dir(out, force=True) as stage:
            (stage / "new").write_text("new")
            (out / runs.LEDGER).write_bytes(b"published meanwhile")
    assert (out / runs.LEDGER).read_bytes() == b"published meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_staged_run_dir_still_replaces_an_unpublished_run(tmp_path):
    out = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    with files.staged_run_dir(out, force=True) as stage:
        (stage / "new").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [runs.RUN_MARKER, "new"]


# --------------------------------------------------------------------------- the run lock


_HOLDER = textwrap.dedent("""
    import sys, time
    from cage_eval import files
    with files.run_lock(sys.argv[1], "published"):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_run_lock_names_the_holder_and_is_released_when_it_dies(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError) as err, files.run_lock(run, "collected"):
            pass
        assert str(err.value) == (f"{run} is being published by process {proc.pid}; wait for "
                                  "it to finish, then run the command again")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with files.run_lock(run, "collected"), files.run_lock(run, "collected"):  # re-entrant
        assert (run / runs.LOCK).read_text().split() == [str(os.getpid()), "collected"]
    assert not (run / runs.LOCK).exists()  # nothing left behind


def test_run_lock_on_a_missing_run(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"), \
            files.run_lock(tmp_path / "nope", "published"):
        pass


# --------------------------------------------------------------------------- file modes


def test_atomic_write_many_follows_the_umask_and_is_all_or_nothing(tmp_path):
    paths = files.atomic_write_many(tmp_path / "out", {"a.csv": b"a\n", "b.md": b"b\n"})
    want = 0o666 & ~_umask()
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [want, want]
    with pytest.raises(TypeError):
        files.atomic_write_many(tmp_path / "out", {"a.csv": b"new\n", "c.tex": None})
    assert (tmp_path / "out" / "a.csv").read_bytes() == b"a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.csv", "b.md"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
