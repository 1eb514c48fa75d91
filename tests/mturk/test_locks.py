"""One process at a time per run (two real publishers against the local MTurk endpoint), and a
resumed publish that must read and look like the first part."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from fake_mturk import FakeMTurk
from mturk_helpers import PUBLISH_OPTIONS, environ_with

from cage_eval import runs
from cage_eval.cli import cli
from cage_eval.errors import BackendError
from mturk.aws import make_client
from mturk.environments import SANDBOX
from mturk.hits import HitSettings
from mturk.ledger import CREATED, Ledger
from mturk.publish import PublishRequest, prepare, publish

ROOT = Path(__file__).resolve().parents[2]
ITEM_ID = re.compile(r"h[0-9a-f]{15}")
SETTINGS = HitSettings(reward="0.05", assignments=3, lifetime_s=259200, duration_s=600,
                       auto_approve_s=259200)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _per_item(server) -> Counter:
    return Counter(ITEM_ID.findall(h["Question"])[0] for h in server.hits.values())


def test_two_publishers_at_once_one_wins_no_duplicates_and_a_rerun_completes(aws_env, tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=3)                 # 12 items
    with FakeMTurk(latency_s=0.3, max_lifetime_s=300) as server:
        cmd = [sys.executable, "-m", "cage_eval.cli", "publish", str(run), *PUBLISH_OPTIONS,
               "--endpoint-url", server.url, "--concurrency", "1"]
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=environ_with(aws_env), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        out = [p.communicate(timeout=240) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 1], out
        winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
        stderr = out[loser][1]
        assert stderr == (f"Error: {run} is being published by process {procs[winner].pid}; "
                          "wait for it to finish, then run the command again\n")
        assert "HITs: 12 of 12 published (12 created now" in out[winner][0]
        assert len(server.hits) == 12 and set(_per_item(server).values()) == {1}
        assert not list(run.glob(".ledger.sqlite*")) and not (run / runs.LOCK).exists()

        rerun = invoke("publish", run, *PUBLISH_OPTIONS, "--endpoint-url", server.url)
        assert rerun.exit_code == 0, rerun.output
        assert "HITs: 12 of 12 published (0 created now" in rerun.output
        assert len(server.hits) == 12
    with Ledger.open(run) as ledger:
        assert [r.state for r in ledger.rows()] == [CREATED] * 12


_HOLDER = textwrap.dedent("""
    import sys, time
    from cage_eval import files
    with files.run_lock(sys.argv[1], "published"):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.mark.parametrize("command", ["collect", "review", "expire", "publish"])
def test_collect_review_expire_wait_for_a_publisher(aws_env, tmp_path, command):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    with FakeMTurk(max_lifetime_s=120) as server:
        assert invoke("publish", run, *PUBLISH_OPTIONS, "--endpoint-url", server.url).exit_code == 0
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        extra = PUBLISH_OPTIONS if command == "publish" else []
        try:
            assert holder.stdout.readline().strip() == "locked"
            calls = sum(server.calls.values())
            result = invoke(command, run, *extra, "--endpoint-url", server.url)
            assert sum(server.calls.values()) == calls             # not one MTurk call
        finally:
            holder.kill()
            holder.wait(timeout=30)
        assert result.exit_code == 1
        assert result.output == (f"Error: {run} is being published by process {holder.pid}; "
                                 "wait for it to finish, then run the command again\n")
        # The killed holder's lock went with it.
        result = invoke(command, run, *extra, "--endpoint-url", server.url)
        assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- a resumed publish


def _interrupted(run: Path, server: FakeMTurk, after: int = 2) -> None:
    """Publish with the digits texts until ``after`` HITs exist, then lose the credentials."""
    def stop(done: int, total: int) -> None:
        if done >= after:
            server.credential_error = "ExpiredTokenException"

    plan = prepare(run, PublishRequest(settings=SETTINGS, concurrency=1), SANDBOX)
    with pytest.raises(BackendError):
        publish(plan, make_client(endpoint_url=server.url), on_progress=stop, sleep=lambda s: None)
    server.credential_error = None
    with Ledger.open(run) as ledger:
        assert 0 < ledger.counts()[CREATED] < 8


def test_resume_with_other_texts_is_refused(aws_env, tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)                 # 8 items
    with FakeMTurk(max_lifetime_s=120) as server:
        _interrupted(run, server)
        before = len(server.hits)
        result = invoke("publish", run, *PUBLISH_OPTIONS, "--endpoint-url", server.url,
                        "--domain", "faces")
        assert result.exit_code == 1
        assert result.output == (
            f"Error: {run / runs.LEDGER}: this run was published with other HIT texts "
            "(description, keywords, question, title differ); resume with the same domain or "
            "texts file, so that all of the run's HITs read the same\n")
        assert len(server.hits) == before
        result = invoke("publish", run, *PUBLISH_OPTIONS, "--endpoint-url", server.url)
        assert result.exit_code == 0, result.output
        titles = {h["Title"] for h in server.hits.values()}
        questions = {"handwritten digits" in h["Question"] for h in server.hits.values()}
        assert titles == {"Which handwritten digit looks more real?"} and questions == {True}
        assert len(server.hits) == 8


def test_resume_with_other_templates_is_refused(aws_env, tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "_style.html.jinja").write_text("<style>img { border: 9px solid red; }</style>\n")
    with FakeMTurk(max_lifetime_s=120) as server:
        _interrupted(run, server)
        result = invoke("publish", run, *PUBLISH_OPTIONS, "--endpoint-url", server.url,
                        "--templates", templates)
        assert result.exit_code == 1
        assert "this run was published with other HIT templates (digest " in result.output
        assert "resume with the same templates directory" in result.output
