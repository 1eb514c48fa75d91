"""End to end on a real Turkle server: hits -> turkle publish -> workers answer -> collect -> analyze.

The results CSV here is the one Turkle itself exports (integer ids, ``Turkle.Username``, data-URI
images), so this checks the analysis against the real thing rather than a hand-written imitation.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from turkle_helpers import Worker

from cage_eval import runs
from cage_eval.cli import cli
from crowds.turkle import server as turkle_server

pytest.importorskip("turkle", reason="needs the optional extra: pip install -e '.[turkle]'")


@pytest.mark.slow
def test_turkle_answers_give_the_planted_table(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cage_eval.cli import main; main()", "turkle", "serve",
         "--home", str(home), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CAGE_EVAL_TURKLE_TOKEN": ""},
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith("Press Ctrl-C"):
                break
        url = json.loads((home / "server.json").read_text())["url"]
        runner = CliRunner()

        def ok(*args):
            res = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
            assert res.exit_code == 0, res.output
            return res.output

        ok("turkle", "add-workers", "--home", home, "--count", 3)
        run = make_run_dir(tmp_path / "run", pairs_per_cell=4, size=8)
        ok("hits", run, "--attention-rate", 0.25)
        ok("turkle", "publish", run, "--home", home, "--assignments", 3)
        items = {r["item_id"]: r for r in csv.DictReader((run / runs.HIT_ITEMS).open())}

        def choose_for(worker: str):
            def choose(item_id: str) -> str:
                it = items[item_id]
                if it["kind"] == "attention":  # worker3 fails every attention check
                    wrong = "bottom" if it["expected"] == "top" else "top"
                    return wrong if worker == "worker3" else it["expected"]
                # Cause preferred in same_source, effect in same_destination (the paper's finding).
                want = "cause" if it["setting"] == "same_source" else "effect"
                return "top" if it["role_top"] == want else "bottom"
            return choose

        creds = turkle_server.read_credentials(home)
        for name in ("worker1", "worker2", "worker3"):
            worker = Worker(url, name, creds.workers[name])
            worker.login()
            worker.work_all(1, choose_for(name))
        ok("turkle", "collect", run, "--home", home)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()

    out = CliRunner().invoke(cli, ["analyze", str(run / runs.RESULTS), "--n-boot", "200"],
                             catch_exceptions=False).output
    lines = out.splitlines()
    assert lines[0].startswith(f"{run / runs.RESULTS} (turkle, run ")
    assert "Analysis plan: frozen in the run at" in lines[1]  # frozen by `turkle publish`
    table = pd.read_csv(run / "analysis" / "table2.csv").set_index(["dag", "setting"])
    # worker3 failed the attention checks: 2 workers x 4 pairs left per cell.
    assert (table["n"] == 8).all()
    assert (table.xs("same_source", level="setting")["k"] == 8).all()
    assert (table.xs("same_destination", level="setting")["k"] == 0).all()
    assert "Attention checks: 3 worker(s) checked, 1 excluded, 16 pair judgement(s) dropped" in out
    workers = pd.read_csv(run / "analysis" / "workers.csv").set_index("worker_name")
    assert workers.loc["worker3", "excluded"] == "attention checks failed"
    assert workers.loc["worker1", "attention_accuracy"] == 1.0
