"""The run-directory schema helpers: atomic writes, staged run directories, manifest checks."""

from __future__ import annotations

import json

import pytest

from cage_eval import files, runs
from cage_eval.errors import RunDirError


def test_atomic_write_csv_has_fixed_column_order_and_no_temp_left(tmp_path):
    path = tmp_path / "sub" / "t.csv"
    files.atomic_write_csv(path, [{"b": 2, "a": 1}, {"a": 3, "b": 4}], ["a", "b"])
    assert path.read_text() == "a,b\n1,2\n3,4\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.csv"]


def test_atomic_write_csv_rejects_unknown_column_and_keeps_old_file(tmp_path):
    path = tmp_path / "t.csv"
    files.atomic_write_csv(path, [{"a": 1}], ["a"])
    with pytest.raises(ValueError):
        files.atomic_write_csv(path, [{"a": 1, "zzz": 2}], ["a"])
    assert path.read_text() == "a\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_atomic_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        files.atomic_write_json(tmp_path / "m.json", {"x": float("nan")})
    assert not (tmp_path / "m.json").exists()


def test_staged_run_dir_moves_into_place_only_on_success(tmp_path):
    out = tmp_path / "run"
    with files.staged_run_dir(out) as stage:
        (stage / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_staged_run_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), files.staged_run_dir(out) as stage:
        (stage / "a.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_staged_run_dir_refuses_non_empty_without_force_and_replaces_with_force(tmp_path):
    out = tmp_path / "run"
    with files.staged_run_dir(out) as stage:
        (stage / "old.txt").write_text("old")
    with pytest.raises(RunDirError, match="--force"), files.staged_run_dir(out):
        pass
    assert (out / "old.txt").exists()
    with files.staged_run_dir(out, force=True) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [runs.RUN_MARKER, "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_staged_run_dir_failed_replacement_keeps_old_run(tmp_path):
    out = tmp_path / "run"
    with files.staged_run_dir(out) as stage:
        (stage / "old.txt").write_text("old")
    with pytest.raises(KeyError), files.staged_run_dir(out, force=True):
        raise KeyError("x")
    assert sorted(p.name for p in out.iterdir()) == [runs.RUN_MARKER, "old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_staged_run_dir_unwritable_parent_is_a_clear_error(tmp_path):
    # A parent that is a regular file cannot hold a directory, even for root.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="writable --out"), files.staged_run_dir(blocker / "run"):
        pass
    assert blocker.read_text() == "x"


def test_staged_run_dir_out_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="not a directory"), files.staged_run_dir(f):
        pass


def test_read_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        runs.read_manifest(tmp_path / "nope")
    with pytest.raises(RunDirError, match="manifest.json: missing"):
        runs.read_manifest(tmp_path)
    (tmp_path / runs.MANIFEST).write_text("{not json")
    with pytest.raises(RunDirError, match="unreadable"):
        runs.read_manifest(tmp_path)
    (tmp_path / runs.MANIFEST).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(RunDirError, match="schema_version"):
        runs.read_manifest(tmp_path)
    (tmp_path / runs.MANIFEST).write_text(json.dumps({"schema_version": runs.SCHEMA_VERSION}))
    assert runs.read_manifest(tmp_path)["schema_version"] == runs.SCHEMA_VERSION


def test_results_columns_follow_the_mturk_batch_layout():
    cols = runs.RESULTS_COLUMNS
    assert cols[0] == "HITId" and cols[-2:] == ("Approve", "Reject")
    assert cols.index("AssignmentId") < cols.index("Input.item_id") < cols.index("Answer.choice")
    assert len(set(cols)) == len(cols)


def test_dag_name():
    assert runs.dag_name("thick", "bright") == "thick->bright"


def test_csv_text_round_trips_carriage_returns():
    import csv
    import io

    rows = [{"a": "x\ry", "b": "p\r\nq"}, {"a": "plain", "b": "1"}]
    back = list(csv.DictReader(io.StringIO(files.csv_text(rows, ["a", "b"]), newline="")))
    assert back == rows


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    files.atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_staged_run_dir_gets_ordinary_directory_permissions(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    with files.staged_run_dir(tmp_path / "run"):
        pass
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~mask


def test_atomic_write_with_private_mode(tmp_path):
    files.atomic_write_text(tmp_path / "secret.json", "{}", mode=0o600)
    assert (tmp_path / "secret.json").stat().st_mode & 0o777 == 0o600


def test_sigterm_during_a_staged_run_leaves_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import sys, time\n"
        "from cage_eval import files\n"
        "with files.sigterm_as_interrupt(), files.staged_run_dir(sys.argv[1]) as stage:\n"
        "    (stage / 'a.txt').write_text('x')\n"
        "    print('staged', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staged"
        assert any(p.name.startswith(".run.partial-") for p in tmp_path.iterdir())
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()
    deadline = time.monotonic() + 5
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.iterdir()) == []
