"""``cage-eval prolific ...`` as a researcher runs it: the dry run's figures, the refusals, and a
whole study against a real Turkle server and the Prolific stand-in; the token is never written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from prolific_standin import TOKEN, ProlificStandIn, running

from cage_eval.cli import cli

PUBLIC = "https://study.example.org"


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env or {}, catch_exceptions=False)


def test_the_dry_run_shows_wage_cost_and_link_and_calls_nothing(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    res = invoke("prolific", "publish", run, "--public-url", PUBLIC, "--reward", "1.50",
                 "--minutes", "10", "--places", "6", "--tasks-per-participant", "2", "--dry-run")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        "Study: 6 places x £1.50 for about 10 min = £9.00/hour",
        "Tasks: 4 HITs x 3 participants each; 2 HITs per participant; 6 places cover every HIT",
        "Estimated cost: £12.00 (rewards £9.00, fees £3.00) (fee rate 0.333; publish checks "
        "Prolific's own figure against the balance)",
        "Participants start at: https://study.example.org/prolific/start/?PROLIFIC_PID="
        "{{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}",
        "Dry run: nothing was created.",
    ]
    assert sorted(p.name for p in run.iterdir()) == ["images", "manifest.json", "pairs.csv"]


@pytest.mark.parametrize("args, message", [
    (["--reward", "0.99"], "Error: --reward £0.99 for --minutes 10 pays £5.94/hour, below "
                           "Prolific's minimum of £6.00/hour; pay at least £1.00"),
    (["--reward", "£1.50"], "Error: --reward '£1.50': write an amount in pounds/dollars"),
    (["--reward", "1.50", "--public-url", "http://study.example.org"],
     "Error: --public-url 'http://study.example.org': give the HTTPS base URL"),
    (["--reward", "1.50", "--max-cost", "5"], "Error: estimated cost £12.00 (rewards £9.00, "
                                              "fees £3.00) is above --max-cost £5.00"),
])
def test_mistakes_are_one_error_line(tmp_path, args, message):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    base = ["prolific", "publish", run, "--public-url", PUBLIC, "--minutes", "10", "--places",
            "6", "--tasks-per-participant", "2", "--dry-run"]
    res = invoke(*base, *args)
    assert res.exit_code == 1 and res.output.startswith(message), res.output
    assert res.output.count("\n") == 1
    ok = invoke(*base, "--reward", "0.99", "--allow-low-pay")
    assert ok.exit_code == 0 and "£5.94/hour" in ok.output


@pytest.mark.slow
def test_a_whole_study_from_the_command_line(tmp_path):
    pytest.importorskip("turkle", reason="Turkle is not installed")
    from prolific_fixtures import Participant, Study

    from crowds.turkle import server as turkle_server
    from crowds.turkle.api import TurkleAPI
    from crowds.turkle.host import TurkleTaskHost

    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    home = tmp_path / "home"
    with running(ProlificStandIn()) as standin, \
            turkle_server.start_server(home, port=0, timeout=60) as server:
        env = {"PROLIFIC_TOKEN": TOKEN, "CAGE_EVAL_PROLIFIC_API_URL": standin.url,
               "CAGE_EVAL_TURKLE_TOKEN": ""}
        common = ["--home", home]
        publish = ["prolific", "publish", run, *common, "--public-url", PUBLIC, "--reward",
                   "1.50", "--minutes", "10", "--places", "6", "--tasks-per-participant", "2",
                   "--completion-page", standin.completion_page]
        draft = CliRunner().invoke(cli, [str(a) for a in publish], env=env, input="n\n")
        assert draft.exit_code == 0, draft.output
        assert "Left as a draft with 6 places; rerun to publish it." in draft.output
        res = invoke(*publish, "--yes", env=env)
        assert res.exit_code == 0, res.output
        assert "Published with 6 places." in res.output
        (study_id,) = standin.studies
        assert len(standin.studies) == 1 and standin.studies[study_id]["status"] == "ACTIVE"
        again = invoke(*publish, "--yes", env=env)
        assert "Already published; 6 places." in again.output
        no_token = invoke("prolific", "status", run, *common, env={**env, "PROLIFIC_TOKEN": ""})
        assert no_token.exit_code == 1
        assert no_token.output.startswith("Error: no Prolific API token; set PROLIFIC_TOKEN")

        code = standin.studies[study_id]["completion_codes"][0]["code"]
        turkle = TurkleAPI(server.url, turkle_server.read_credentials(home).token)
        study = Study(run, server.url, standin, None, TurkleTaskHost(turkle), study_id, code, 1)
        quitter = Participant(study, "5f0dd0000000000000000009")
        quitter.arrive()
        quitter.answer(lambda item: "top", n=1)
        standin.set_status(quitter.session_id, "RETURNED")
        res = invoke("prolific", "status", run, *common, env=env)
        assert res.exit_code == 0, res.output
        assert "Freed the tasks of 1 returned/timed-out/screened-out submission(s) " \
               "(2 assignment(s)); places unchanged" in res.output
        for i in range(1, 7):
            p = Participant(study, f"5f0dd00000000000000000{i:02d}")
            p.arrive()
            assert p.answer(lambda item: "bottom") == 2
            p.finish()
        res = invoke("prolific", "collect", run, *common, env=env)
        assert res.exit_code == 0, res.output
        assert "Wrote" in res.output and ": 12 answers from 6 participant(s)" in res.output
        assert "Rewards (before fees): £0.00 approved, £9.00 awaiting review, of £9.00 for " \
               "all places" in res.output
        res = invoke("prolific", "review", run, "--dry-run", env=env)
        assert res.output.count("approve ") == 6 and "nothing was changed" in res.output
        res = invoke("prolific", "review", run, "--yes", env=env)
        assert "Reviewed 6 submission(s)." in res.output
        res = invoke("prolific", "status", run, *common, env=env)
        assert "Rewards (before fees): £9.00 approved, £0.00 awaiting review" in res.output
        assert "submissions: 6 APPROVED, 1 RETURNED" in res.output
        (tmp_path / "bonus.csv").write_text("5f0dd0000000000000000001,0.25\n")
        res = invoke("prolific", "bonus", run, "--csv", tmp_path / "bonus.csv", "--yes", env=env)
        assert res.exit_code == 0, res.output
        assert res.output.splitlines()[-1].endswith("£0.25 + fees £0.08 = £0.33; paid")
        res = invoke("prolific", "bonus", run, "--csv", tmp_path / "bonus.csv", "--yes", env=env)
        assert res.exit_code == 1 and "already paid" in res.output
    assert standin.schema_errors == []
    for path in run.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
