"""``cage-eval prolific ...`` as a researcher runs it: the dry run's figures, the refusals, and a
whole study against a real Turkle server and the Prolific stand-in; the token is never written."""

from __future__ import annotations

from decimal import Decimal

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from prolific_standin import TOKEN, ProlificStandIn, running

from analysis.quality import describe_rules, publish_plan
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
        "Analysis plan to freeze before the first HIT (pre-registered quality control):",
        *(f"  {line}" for line in describe_rules(publish_plan(None, catch_trials=0))),
        "Dry run: nothing was created.",
    ]
    assert sorted(p.name for p in run.iterdir()) == ["images", "manifest.json", "pairs.csv"]


def test_the_dry_run_shows_the_quality_rules_it_would_freeze(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    (tmp_path / "pilot.txt").write_text("# pilot participants\n5f0000000000000000000abc\n")
    res = invoke("prolific", "publish", run, "--public-url", PUBLIC, "--reward", "1.50",
                 "--minutes", "10", "--places", "4", "--tasks-per-participant", "4",
                 "--attention-rate", "0.5", "--min-response-time", "3", "--block-list",
                 tmp_path / "pilot.txt", "--below-rejection", "ask-return", "--dry-run")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "Study: 4 places x £1.50 for about 10 min = £9.00/hour"
    assert lines[1] == ("Tasks: 6 HITs x 3 participants each; 4 HITs per participant; 5 places "
                        "cover every HIT")
    start = lines.index("Analysis plan to freeze before the first HIT (pre-registered quality "
                        "control):")
    wanted = publish_plan(None, catch_trials=2, min_response_time_s=3.0,
                          block_list=tmp_path / "pilot.txt", below_rejection="ask-return")
    assert lines[start + 1:-1] == [f"  {line}" for line in describe_rules(wanted)]
    text = res.output
    assert "the answers of 1 participant id(s) declared before the study never count" in text
    assert "answered in less than 3 s (SubmitTime - AcceptTime) is excluded" in text
    assert "Catch trials: 2 attention-check item(s) among the HITs." in text
    assert "with fewer failed checks the participant is asked to return the submission" in text
    assert lines[-1] == "Dry run: nothing was created."
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
        assert "Reviewed 6 submission(s): approved 6, rejected 0, asked 0 to return." in res.output
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


@pytest.mark.slow
def test_publish_freezes_the_plan_and_review_follows_its_fair_rejection_rule(tmp_path):
    pytest.importorskip("turkle", reason="Turkle is not installed")
    from prolific_fixtures import Participant, Study

    from analysis.plan import load_plan
    from cage_eval.cli.published import spending
    from crowds.turkle import server as turkle_server
    from crowds.turkle.api import TurkleAPI
    from crowds.turkle.host import TurkleTaskHost
    from hitgen.items import read_hit_items

    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    home = tmp_path / "home"
    pids = {"GOOD": "5f0cc0000000000000000001", "ONCE": "5f0cc0000000000000000002",
            "TWICE": "5f0cc0000000000000000003"}
    (tmp_path / "pilot.txt").write_text("5f0cc00000000000000000ff\n")
    with running(ProlificStandIn()) as standin, \
            turkle_server.start_server(home, port=0, timeout=60) as server:
        env = {"PROLIFIC_TOKEN": TOKEN, "CAGE_EVAL_PROLIFIC_API_URL": standin.url,
               "CAGE_EVAL_TURKLE_TOKEN": ""}
        publish = ["prolific", "publish", run, "--home", home, "--public-url", PUBLIC,
                   "--reward", "1.50", "--minutes", "10", "--places", "3",
                   "--tasks-per-participant", "8", "--attention-rate", "1.0",
                   "--completion-page", standin.completion_page, "--yes"]
        res = invoke(*publish, "--block-list", tmp_path / "pilot.txt", env=env)
        assert res.exit_code == 0, res.output
        out = res.output
        assert "  Catch trials: 4 attention-check item(s) among the HITs." in out
        # The rules come first: frozen before the batch and the study exist.
        assert out.index("Analysis plan to freeze before the first HIT") < \
            out.index("analysis plan frozen: analysis_plan.json") < out.index("batch 1 created") \
            < out.index("Study ")
        plan = load_plan(run)
        assert plan.catch_trials == 4 and plan.blocked_participants == ("5f0cc00000000000000000ff",)
        assert plan.reject_min_failed_checks == 2 and plan.below_rejection == "approve"
        again = invoke(*publish, "--min-response-time", "5", env=env)
        assert again.exit_code == 0, again.output
        assert "Analysis plan: already frozen in analysis_plan.json (never rewritten):" in \
            again.output
        assert ("WARNING: the frozen plan keeps min_response_time_s 0.0; the option asking for "
                "5.0 is ignored") in again.stderr
        assert "Already published; 3 places." in again.output and load_plan(run) == plan

        (study_id,) = standin.studies
        code = standin.studies[study_id]["completion_codes"][0]["code"]
        turkle = TurkleAPI(server.url, turkle_server.read_credentials(home).token)
        study = Study(run, server.url, standin, None, TurkleTaskHost(turkle), study_id, code, 1)
        items = {it.item_id: it for it in read_hit_items(run)}
        flip = {"top": "bottom", "bottom": "top"}
        sids = {}
        for name, wrong in (("GOOD", 0), ("ONCE", 1), ("TWICE", 2)):
            seen: list[str] = []

            def choose(item_id, wrong=wrong, seen=seen):
                it = items[item_id]
                if it.kind != "attention":
                    return "top"
                seen.append(item_id)
                return flip[it.expected] if len(seen) <= wrong else it.expected

            p = Participant(study, pids[name])
            p.arrive()
            assert p.answer(choose) == 8
            p.finish()
            sids[name] = p.session_id
        res = invoke("prolific", "collect", run, "--home", home, env=env)
        assert ": 24 answers from 3 participant(s)" in res.output, res.output
        assert list(sids.values()) == [f"{n:024x}" for n in (2, 3, 4)]  # docs/prolific.md's

        res = invoke("prolific", "review", run, "--reject-failed-attention", "--dry-run", env=env)
        assert res.exit_code == 0, res.output
        assert res.output.splitlines() == [
            "Awaiting review: 3 submission(s) (2 to approve, 1 to reject, 0 asked to return, 0 "
            "left to you)",
            f"  approve {sids['GOOD']} (PID {pids['GOOD']}): 4 attention check(s), none failed",
            f"  approve {sids['ONCE']} (PID {pids['ONCE']}): 1 of 4 attention check(s) failed; "
            "not rejected (fair-rejection rule needs 2); still counted by the analysis; approved "
            "by the fair-rejection rule",
            f"  reject  {sids['TWICE']} (PID {pids['TWICE']}) [FAILED_CHECK]: 2 of 4 attention "
            "check(s) failed; rejection allowed (fair-rejection rule: 2 or more)",
            "3 decision(s); nothing was changed.",
        ]
        assert standin.calls("POST", r"/submissions/") == 0
        why = "You did not pay attention to the task. " * 3
        res = invoke("prolific", "review", run, "--reject", sids["ONCE"], "--category",
                     "LOW_EFFORT", "--message", why, env=env)
        assert res.exit_code == 1 and res.output.count("\n") == 1
        assert res.output.startswith(f"Error: --reject {sids['ONCE']}: participant "
                                     f"{pids['ONCE']} failed 1 attention check(s)")
        assert "--override-fair-rejection" in res.output
        res = invoke("prolific", "review", run, "--reject-failed-attention", "--yes", env=env)
        assert res.exit_code == 0, res.output
        assert res.output.splitlines()[-1] == ("Reviewed 3 submission(s): approved 2, rejected "
                                               "1, asked 0 to return.")
        assert {n: standin.submissions[sids[n]]["status"] for n in sids} == {
            "GOOD": "APPROVED", "ONCE": "APPROVED", "TWICE": "REJECTED"}
        rejection = standin.submissions[sids["TWICE"]]
        assert rejection["status"] == "REJECTED"
        res = invoke("prolific", "review", run, env=env)
        assert res.output.splitlines()[-1] == "0 decision(s); nothing was changed."
    # The report's money: what the ledger says was paid (Prolific priced 3 places at £6.00).
    money = spending(run)
    assert (money.backend, money.currency, money.approved, money.rejected) == (
        "prolific", "GBP", 2, 1)
    assert money.fee_per_assignment == Decimal("0.50") and money.paid == Decimal("4.00")
    assert money.planned_total == Decimal("6.00")
    assert standin.schema_errors == []
