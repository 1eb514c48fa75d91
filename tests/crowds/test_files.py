"""What the crowd commands leave on disk that a user would not think to check: a Turkle home made
inside a clone is never offered to git, and answers of another origin are never replaced."""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from mturk_helpers import PUBLISH_OPTIONS

from cage_eval import runs
from cage_eval.cli import cli
from crowds.answers import keep_other_origin, results_origin
from crowds.turkle import server as turkle_server
from hitgen.items import read_hit_items
from mturk.ledger import Ledger

GIT = shutil.which("git")


def _git(repo, *args):
    return subprocess.run([GIT, "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_a_turkle_home_made_in_a_clone_is_not_offered_to_git(tmp_path):
    repo = tmp_path / "clone"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README.md").write_text("a clone\n")
    home = turkle_server.init_home(repo / "lab")
    assert (home / "credentials.json").is_file() and (home / "secret_key").is_file()
    # git itself says nothing in the home is untracked (only the clone's own file).
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == "?? README.md\n"
    assert (home / ".gitignore").read_text().splitlines()[-1] == "*"
    # Idempotent, and a home made before the .gitignore existed gets one.
    (home / ".gitignore").unlink()
    turkle_server.init_home(home)
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == "?? README.md\n"


def test_a_directory_of_the_users_own_gets_no_gitignore(tmp_path):
    """--home . inside a clone must not hide the clone from git."""
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notes.txt").write_text("mine\n")
    turkle_server.init_home(own)
    assert not (own / ".gitignore").exists()


def _write(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.mark.parametrize("header, worker, origin", [
    (runs.RESULTS_COLUMNS, "SIM-W001", "simulated"),
    (("HITId", "WorkerId", "Input.item_id", "Answer.choice", "Turkle.Username"), "3", "turkle"),
    (runs.RESULTS_COLUMNS, "A1B2C3", "mturk"),
    (("item", "worker", "choice"), "x", "unknown"),
])
def test_the_origin_of_a_results_file(tmp_path, header, worker, origin):
    path = tmp_path / runs.RESULTS
    row = [worker if h in ("WorkerId", "worker") else "v" for h in header]
    _write(path, header, [row, row])
    assert results_origin(path) == (origin, 2)
    _write(path, header, [])
    assert results_origin(path) == (None, 0)
    assert results_origin(tmp_path / "absent.csv") == (None, 0)


def test_answers_of_another_origin_are_kept_beside(tmp_path):
    path = tmp_path / runs.RESULTS
    _write(path, runs.RESULTS_COLUMNS, [["SIM-W1" if h == "WorkerId" else "v"
                                        for h in runs.RESULTS_COLUMNS]] * 3)
    before = path.read_bytes()
    kept = keep_other_origin(tmp_path, "turkle")
    assert kept is not None and kept.path == tmp_path / "results.simulated.csv"
    assert kept.path.read_bytes() == before and not path.exists()
    assert kept.describe("turkle") == (
        f"the earlier {path} (3 rows of simulated answers) is kept as {kept.path}; results.csv "
        "now holds the answers collected from Turkle")
    # A second file of that origin never replaces the first one kept.
    path.write_bytes(before)
    assert keep_other_origin(tmp_path, "turkle").path == tmp_path / "results.simulated.2.csv"
    assert (tmp_path / "results.simulated.csv").read_bytes() == before
    # The same origin (a repeated collect) is replaced as before: nothing is moved.
    _write(path, runs.RESULTS_COLUMNS, [["A1" if h == "WorkerId" else "v"
                                        for h in runs.RESULTS_COLUMNS]])
    assert keep_other_origin(tmp_path, "mturk") is None and path.exists()


def test_mturk_collect_keeps_simulated_answers_beside_the_real_ones(aws_env, run_dir, fake):
    """The run was tried with simulated answers, then published: collect keeps the simulated
    rows as results.simulated.csv and says so."""
    runner = CliRunner()
    assert runner.invoke(cli, ["hits", str(run_dir)]).exit_code == 0
    res = runner.invoke(cli, ["simulate", str(run_dir), "--p-cause", "0.8"])
    assert res.exit_code == 0, res.output
    simulated = (run_dir / runs.RESULTS).read_bytes()
    n_sim = results_origin(run_dir / runs.RESULTS)[1]
    res = runner.invoke(cli, ["publish", str(run_dir), *PUBLISH_OPTIONS, "--endpoint-url",
                              fake.url])
    assert res.exit_code == 0, res.output
    items = {it.item_id: it for it in read_hit_items(run_dir)}
    with Ledger.open(run_dir) as ledger:
        for row in ledger.rows():
            fake.add_assignment(row.hit_id, "AWORKER1", {
                "choice": "top", "item_id": items[row.item_id].item_id, "elapsed_ms": "800"})
    res = runner.invoke(cli, ["collect", str(run_dir), "--endpoint-url", fake.url])
    assert res.exit_code == 0, res.output
    kept = run_dir / "results.simulated.csv"
    assert kept.read_bytes() == simulated
    assert res.stderr == (f"Note: the earlier {run_dir / runs.RESULTS} ({n_sim} rows of simulated "
                          f"answers) is kept as {kept}; results.csv now holds the answers "
                          "collected from MTurk\n")
    assert results_origin(run_dir / runs.RESULTS) == ("mturk", len(items))
    again = runner.invoke(cli, ["collect", str(run_dir), "--endpoint-url", fake.url])
    assert again.exit_code == 0 and again.stderr == ""
    assert sorted(p.name for p in run_dir.glob("results*.csv")) == ["results.csv",
                                                                    "results.simulated.csv"]
