"""``cage-eval turkle ...`` as a user runs it: serve in a real process, then add-workers,
publish, status and collect through the CLI against that server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from turkle_helpers import Worker

from cage_eval import runs
from cage_eval.cli import cli
from crowds.turkle import server as turkle_server

pytest.importorskip("turkle", reason="Turkle is not installed: pip install -e '.[turkle]'")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``cage-eval turkle serve`` in its own process, as a user starts it; stopped with SIGINT."""
    home = tmp_path_factory.mktemp("lab") / "home"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cage_eval.cli import main; main()", "turkle", "serve",
         "--home", str(home), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CAGE_EVAL_TURKLE_TOKEN": ""},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        assert lines and lines[-1].startswith("Press Ctrl-C"), "".join(lines)
        url = json.loads((home / "server.json").read_text())["url"]
        yield home, url, lines
    finally:
        pid = json.loads((home / "server.json").read_text())["pid"] if (
            home / "server.json").exists() else None
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    assert proc.returncode == 0, rest
    assert rest.strip().endswith("Turkle stopped.")
    assert not (home / "server.json").exists()
    if pid is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_serve_prints_where_to_go_and_no_secret(served):
    home, url, lines = served
    out = "".join(lines)
    assert out.startswith(f"Turkle is running at {url}/")
    assert url.startswith("http://127.0.0.1:")
    assert f"{url}/admin/ as 'admin'" in out
    assert "credentials.json (mode 0600)" in out
    assert f"cage-eval turkle add-workers --home {home} NAME..." in out
    creds = turkle_server.read_credentials(home)
    assert creds.token and creds.token not in out and creds.admin_password not in out


def test_add_workers_publish_status_collect(served, tmp_path):
    home, url, _ = served
    res = invoke("turkle", "add-workers", "--home", str(home), "--count", "2")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "Added 2 worker(s): worker1, worker2"
    creds = turkle_server.read_credentials(home)
    assert not any(p in res.output for p in creds.workers.values())
    res = invoke("turkle", "add-workers", "--home", str(home), "worker1")
    assert res.output.splitlines()[0] == "Already there: worker1"

    run = make_run_dir(tmp_path / "run", run_id="c11000000000001", pairs_per_cell=1)
    res = invoke("turkle", "publish", str(run), "--home", str(home), "--assignments", "2")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "analysis plan frozen: analysis_plan.json"
    assert lines[1] == "project 1 created: cage-eval c11000000000001"
    assert lines[2] == "batch 1 created: 4 tasks x 2 assignments"
    assert lines[3] == f"Published 4 tasks x 2 assignments: project 1, batch 1 at {url}"
    assert lines[4] == f"Workers log in at {url}/login/ and start at {url}/batch/1/accept_next_task/"

    res = invoke("turkle", "publish", str(run), "--home", str(home), "--assignments", "2")
    assert res.exit_code == 0
    assert f"Nothing to do: {run} is already published as batch 1 at {url}" in res.output

    res = invoke("turkle", "status", str(run), "--home", str(home))
    assert res.output == f"Batch 1 at {url}: 0/8 assignments finished, 0/4 tasks complete\n"

    for name in ("worker1", "worker2"):
        worker = Worker(url, name, creds.workers[name])
        worker.login()
        assert len(worker.work_all(1, lambda item: "top")) == 4

    res = invoke("turkle", "status", str(run), "--home", str(home))
    assert res.output == f"Batch 1 at {url}: 8/8 assignments finished, 4/4 tasks complete (done)\n"
    res = invoke("turkle", "collect", str(run), "--home", str(home))
    assert res.exit_code == 0, res.output
    assert res.output == (f"Wrote {run / runs.RESULTS}: 8 answers from 2 worker(s) on 4/4 items "
                          "(8/8 assignments, done)\n")


def test_publish_freezes_the_quality_rules(served, tmp_path):
    from analysis.plan import load_plan

    home, url, _ = served
    run = make_run_dir(tmp_path / "run", run_id="c11000000000004", pairs_per_cell=2)
    block = tmp_path / "pilot.csv"
    block.write_text("PROLIFIC_PID,Status\n5f0aa,APPROVED\n")
    res = invoke("turkle", "publish", str(run), "--home", str(home), "--attention-rate", "0.5",
                 "--min-response-time", "2.5", "--block-list", str(block))
    assert res.exit_code == 0, res.output
    plan = load_plan(run)
    assert plan.min_response_time_s == 2.5 and plan.blocked_participants == ("5f0aa",)
    assert plan.catch_trials == 4 and plan.reject_min_failed_checks == 2


def test_user_mistakes_are_one_error_line(served, tmp_path):
    home, url, _ = served
    run = make_run_dir(tmp_path / "run", run_id="c11000000000002", pairs_per_cell=1)
    dead = f"http://127.0.0.1:{turkle_server.free_port()}"
    cases = [
        (["turkle", "publish", str(run), "--home", str(home), "--url", dead],
         f"Error: Turkle at {dead}: cannot connect"),
        (["turkle", "publish", str(run), "--home", str(home), "--assignments", "0"],
         "Error: --assignments 0: must be between 1 and 50"),
        (["turkle", "publish", str(run), "--home", str(tmp_path / "nohome")],
         f"Error: no Turkle server URL: no server is running from {tmp_path / 'nohome'}"),
        (["turkle", "status", str(run), "--home", str(home)],
         f"Error: {run / runs.TURKLE_LEDGER}: missing; publish the run first"),
        (["turkle", "add-workers", "--home", str(home)], "Error: no worker names"),
        (["turkle", "add-workers", "--home", str(home), "bad-name"],
         "Error: worker name 'bad-name': use 1-150 ASCII letters, digits or _"),
    ]
    for args, first in cases:
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 1, (args, res.output)
        assert res.output.startswith(first), (args, res.output)
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    nopairs = make_run_dir(tmp_path / "nopairs", run_id="c11000000000003", pairs_per_cell=1)
    (nopairs / runs.PAIRS).unlink()
    res = CliRunner().invoke(cli, ["turkle", "publish", str(nopairs), "--home", str(home)])
    assert res.exit_code == 1 and res.output.startswith(f"Error: {nopairs / runs.PAIRS}: missing")
    assert sorted(p.name for p in run.iterdir()) == ["images", "manifest.json", "pairs.csv"]
    assert not (nopairs / runs.TURKLE_LEDGER).exists()


def test_help_texts():
    for sub in ("serve", "add-workers", "publish", "status", "collect"):
        res = invoke("turkle", sub, "--help")
        assert res.exit_code == 0 and "Example: cage-eval turkle" in res.output
    assert "publish" in invoke("turkle", "--help").output


def test_token_from_the_environment(served, tmp_path, monkeypatch):
    home, url, _ = served
    monkeypatch.setenv("CAGE_EVAL_TURKLE_TOKEN", "0" * 40)
    res = CliRunner().invoke(cli, ["turkle", "add-workers", "--home", str(home), "x1"])
    assert res.exit_code == 1 and "refused (HTTP 40" in res.output
    monkeypatch.setenv("CAGE_EVAL_TURKLE_TOKEN", turkle_server.read_credentials(home).token)
    res = CliRunner().invoke(cli, ["turkle", "add-workers", "--home", str(home), "--url", url,
                                   "x1"])
    assert res.exit_code == 0 and "Added 1 worker(s): x1" in res.output


def test_stopped_server_is_a_clear_error(tmp_path):
    home = tmp_path / "home"
    with turkle_server.start_server(home, port=0, timeout=60) as srv:
        run = make_run_dir(tmp_path / "run", run_id="c11000000000004", pairs_per_cell=1)
        assert invoke("turkle", "publish", str(run), "--home", str(home)).exit_code == 0
        url = srv.url
    ledger = (run / runs.TURKLE_LEDGER).read_bytes()
    for sub in ("status", "collect"):
        res = CliRunner().invoke(cli, ["turkle", sub, str(run), "--home", str(home)])
        assert res.exit_code == 1
        assert res.output.startswith(f"Error: no Turkle server URL: no server is running from "
                                     f"{home}"), res.output
        res = CliRunner().invoke(cli, ["turkle", sub, str(run), "--home", str(home), "--url", url])
        assert res.exit_code == 1
        assert res.output.startswith(f"Error: Turkle at {url}: cannot connect"), res.output
    assert (run / runs.TURKLE_LEDGER).read_bytes() == ledger
    assert not (run / runs.RESULTS).exists()
    assert Path(home / "credentials.json").exists()
