"""Prolific's side against the local stand-in: schema-checked bodies, faults (429 with
Retry-After, 5xx, a timeout after the server acted, repeats) and money in exact units.

The task host here is :class:`prolific_standin.RecordingHost`, which only records what the gateway is told; the
whole path through a real Turkle server is in test_prolific_gateway.py and the browser test.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from crowd_fixtures import make_run_dir
from prolific_standin import (
    SCHEMAS,
    TOKEN,
    WS,
    ProlificStandIn,
    RecordingHost,
    running,
    settings,
    validate,
)

from cage_eval.errors import BackendError, ConfigError, InputFileError, SpendingRefused
from crowds.prolific import backend, payments
from crowds.prolific.api import MaybeActed, ProlificAPI
from crowds.prolific.ledger import ProlificLedger
from crowds.prolific.study import (
    check_wage,
    estimate_cost,
    format_minor,
    hourly_wage,
    parse_major,
    study_body,
)


@pytest.fixture()
def standin():
    with running(ProlificStandIn()) as state:
        yield state
    assert state.schema_errors == []


def api_for(state, **kw) -> ProlificAPI:
    return ProlificAPI(TOKEN, base_url=state.url, sleep=lambda s: None, **kw)


def do_publish(run, api, host, *, places=5, confirm=True, **kw):
    plan = backend.prepare(run, settings(places=places, **kw), n_tasks=12, assignments=3,
                           fee_rate=Decimal("0.333"), max_cost=None, allow_low_pay=False)
    return backend.publish(plan, api, host, batch_id=1, workspace_id=WS, max_cost=None,
                           confirm=lambda q: confirm)


# --------------------------------------------------------------------------- money


def test_major_units_become_exact_sub_units():
    assert parse_major("1.50", what="x") == 150
    assert parse_major("0.1", what="x") == 10
    assert parse_major("12", what="x") == 1200
    assert parse_major("0.07", what="x") == 7  # float arithmetic would give 7.000000000000001
    for bad in ("0.015", "£1.50", "-1", "1,000", "1.5.0", ""):
        with pytest.raises(ConfigError):
            parse_major(bad, what="--reward")
    assert format_minor(1133, "GBP") == "£11.33"
    assert format_minor(Decimal("283.34"), "USD") == "$2.83"


def test_the_wage_check_uses_prolifics_minimum_per_currency():
    assert hourly_wage(100, 10) == Decimal("6.00")
    assert check_wage(100, 10, "GBP", allow_below=False) == Decimal("6.00")
    with pytest.raises(ConfigError, match=r"pays £5.94/hour, below Prolific's minimum of "
                                          r"£6.00/hour; pay at least £1.00"):
        check_wage(99, 10, "GBP", allow_below=False)
    with pytest.raises(ConfigError, match=r"\$7.98/hour.*\$8.00/hour; pay at least \$1.34"):
        check_wage(133, 10, "USD", allow_below=False)
    assert check_wage(133, 10, "USD", allow_below=True) == Decimal("7.98")
    assert estimate_cost(150, 10, Decimal("0.333"), "GBP").total == 1500 + 500  # 499.5 rounds up


def test_the_study_body_matches_the_create_study_schema():
    body = study_body(settings(completion_code="AB12CD34"), "run1")
    assert validate(body, SCHEMAS["create_study"]) == []
    assert body["external_study_url"] == (
        "https://study.example.org/prolific/start/?PROLIFIC_PID={{%PROLIFIC_PID%}}"
        "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}")
    assert body["reward"] == 150 and body["prolific_id_option"] == "url_parameters"
    assert body["completion_codes"] == [{"code": "AB12CD34", "code_type": "COMPLETED",
                                         "actor": "participant",
                                         "actions": [{"action": "MANUALLY_REVIEW"}]}]
    # The schema can fail: a misspelt field, a wrong type, an unknown enum value.
    assert validate({**body, "reward_pence": 150}, SCHEMAS["create_study"])
    assert validate({**body, "reward": "1.50"}, SCHEMAS["create_study"])
    assert validate({**body, "prolific_id_option": "url"}, SCHEMAS["create_study"])
    assert validate({k: v for k, v in body.items() if k != "reward"}, SCHEMAS["create_study"])


# --------------------------------------------------------------------------- transport faults


def test_429_waits_for_retry_after_and_5xx_reads_are_retried(standin):
    waits = []
    api = ProlificAPI(TOKEN, base_url=standin.url, sleep=waits.append)
    standin.fault("GET", r"/studies/$", "429", 3)
    standin.fault("GET", r"/studies/$", "500")
    assert api.studies() == []
    assert waits[0] == 3.0 and api.waits == [3.0] and len(waits) == 2
    assert standin.calls("GET", r"/studies/$") == 3


def test_a_lost_write_is_never_repeated_blindly(standin):
    api = api_for(standin, timeout=0.5)
    standin.fault("POST", r"/study-cost-calculator/", "timeout-after", 1.5)
    with pytest.raises(MaybeActed, match="may have acted"):
        api.study_cost(150, 5)
    assert standin.calls("POST", r"/study-cost-calculator/") == 1


def test_a_bad_token_is_one_clear_error(standin):
    api = ProlificAPI("wrong", base_url=standin.url)
    with pytest.raises(BackendError, match="refused \\(HTTP 401\\); the API token"):
        api.me()
    with pytest.raises(ConfigError, match="PROLIFIC_TOKEN"):
        ProlificAPI("", base_url=standin.url)


# --------------------------------------------------------------------------- publish


def test_publish_makes_one_draft_then_publishes_only_when_confirmed(tmp_path, standin):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    api, host = api_for(standin), RecordingHost()
    report = do_publish(run, api, host, confirm=False)
    assert report.created and not report.published
    (study,) = standin.studies.values()
    assert study["status"] == "UNPUBLISHED" and study["total_available_places"] == 5
    code = study["completion_codes"][0]["code"]
    assert host.registered[0][1]["completion_url"] == \
        f"https://app.prolific.com/submissions/complete?cc={code}"
    report = do_publish(run, api, host)
    assert report.published and not report.created
    assert study["status"] == "ACTIVE"
    assert do_publish(run, api, host).previously_published
    assert standin.calls("POST", r"/studies/$") == 1
    assert standin.calls("POST", r"/transition/$") == 1


def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(tmp_path, standin):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    api = api_for(standin, timeout=0.5)
    standin.fault("POST", r"/studies/$", "timeout-after", 1.5)
    report = do_publish(run, api, RecordingHost())
    assert report.adopted and report.published
    assert len(standin.studies) == 1 and standin.calls("POST", r"/studies/$") == 1


def test_a_crash_between_create_and_ledger_write_is_reconciled(tmp_path, standin):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    api = api_for(standin)
    standin.fault("POST", r"/studies/$", "500-after")  # acted, then the answer is an error
    standin.fault("GET", r"/studies/$", "500")  # ... and the lookup fails once (retried)
    report = do_publish(run, api, RecordingHost())
    assert report.adopted and len(standin.studies) == 1
    # A ledger left 'creating' by a killed process: the rerun looks before it creates.
    run2 = make_run_dir(tmp_path / "run2", run_id="run2", pairs_per_cell=1)
    plan = backend.prepare(run2, settings(), n_tasks=12, assignments=3, fee_rate=Decimal("0.333"),
                           max_cost=None, allow_low_pay=False)
    with ProlificLedger.open(run2, create=True, run_id="run2") as ledger:
        ledger.set_meta("settings", backend._json(plan.settings.record()))
        ledger.study_creating(5, 1)
    api.create_study(study_body(plan.settings, "run2"))  # the call the killed process made
    report = backend.publish(plan, api, RecordingHost(), batch_id=1, workspace_id=WS,
                             max_cost=None, confirm=lambda q: True)
    assert report.adopted and len(standin.studies) == 2


def test_a_publish_whose_answer_was_lost_is_not_repeated(tmp_path, standin):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    api = api_for(standin)
    standin.fault("POST", r"/transition/$", "500-after")
    assert do_publish(run, api, RecordingHost()).published
    (study,) = standin.studies.values()
    assert study["status"] == "ACTIVE" and standin.calls("POST", r"/transition/$") == 1
    with ProlificLedger.open(run) as ledger:  # as if killed between the call and the record
        ledger.study_state("publishing")
    assert do_publish(run, api, RecordingHost()).published  # Prolific refuses; the study is live
    assert len(standin.studies) == 1


def test_publish_checks_balance_currency_and_settings(tmp_path, standin):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    api = api_for(standin)
    standin.balance = 999  # Prolific prices 5 x £1.50 at £10.00
    with pytest.raises(SpendingRefused, match="has £9.99 available, less than the £10.00"):
        do_publish(run, api, RecordingHost())
    standin.balance, standin.currency = 100_000, "USD"
    with pytest.raises(ConfigError, match="pays in USD, not GBP; rerun with --currency USD"):
        do_publish(run, api, RecordingHost())
    assert standin.studies == {}
    standin.currency = "GBP"
    do_publish(run, api, RecordingHost())
    with pytest.raises(ConfigError, match="other reward"):
        do_publish(run, api, RecordingHost(), reward=200)
    with pytest.raises(ConfigError, match="places are only ever raised"):
        do_publish(run, api, RecordingHost(), places=4)
    with pytest.raises(ConfigError, match="--places 10: 9 places already cover every HIT 3 times"):
        do_publish(run, api, RecordingHost(), places=10)
    do_publish(run, api, RecordingHost(), places=8)  # an explicit, confirmed rerun raises them
    (study,) = standin.studies.values()
    assert study["total_available_places"] == 8


# --------------------------------------------------------------------------- reconciliation


def published(tmp_path, standin):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    api, host = api_for(standin), RecordingHost()
    do_publish(run, api, host)
    (study_id,) = standin.studies
    return run, api, host, study_id


def test_returned_and_timed_out_submissions_free_tasks_and_keep_places(tmp_path, standin):
    run, api, host, study_id = published(tmp_path, standin)
    subs = {}
    for pid, status in (("P1", "AWAITING REVIEW"), ("P2", "RETURNED"), ("P3", "TIMED-OUT"),
                        ("P4", "ACTIVE"), ("P5", "SCREENED OUT")):
        subs[pid] = standin.add_submission(study_id, pid, status=status)
        host.gateway_sessions.append({"session_id": subs[pid], "pid": pid, "answered": 2,
                                      "ip_hash": "h"})
    rec = backend.reconcile(run, api, host)
    collected(run, {subs["P1"]: ("P1", [])})
    assert sorted(host.released) == sorted([subs["P2"], subs["P3"], subs["P5"]])
    assert rec.released_sessions == 3 and rec.answered == 4
    assert backend.reconcile(run, api, host).released_sessions == 0  # once each
    assert standin.calls("PATCH", r"/studies/") == 0
    assert standin.studies[study_id]["total_available_places"] == 5
    # Review approves only AWAITING REVIEW; rejecting a RETURNED one is refused before any call.
    plan = payments.plan_review(run, api)
    assert [(d.pid, d.action) for d in plan.decisions] == [("P1", "APPROVE")]
    with pytest.raises(ConfigError, match="status RETURNED; only AWAITING REVIEW"):
        payments.plan_review(run, api, {subs["P2"]: ("FAILED_CHECK", "x" * 120)},
                             override_fair_rejection=True)
    standin.fault("POST", r"/submissions/\w+/transition/", "500-after")
    assert payments.apply_review(run, api, plan) == 1
    assert payments.apply_review(run, api, plan) == 0
    assert payments.plan_review(run, api).decisions == []
    assert standin.calls("POST", r"/submissions/\w+/transition/") == 1
    assert standin.submissions[subs["P1"]]["status"] == "APPROVED"
    assert standin.submissions[subs["P2"]]["status"] == "RETURNED"


def test_a_rejection_needs_a_category_and_100_characters(tmp_path, standin):
    run, api, host, study_id = published(tmp_path, standin)
    sid = standin.add_submission(study_id, "P1", status="AWAITING REVIEW")
    collected(run, {sid: ("P1", [False, False])})
    with pytest.raises(ConfigError, match="Prolific needs at least 100"):
        payments.plan_review(run, api, {sid: ("FAILED_CHECK", "too short")})
    with pytest.raises(ConfigError, match="--category 'BAD'"):
        payments.plan_review(run, api, {sid: ("BAD", "x" * 100)})
    with pytest.raises(ConfigError, match="Prolific needs at least 100"):
        payments.plan_review(run, api, reject_failed_attention=True, message="too short")
    plan = payments.plan_review(run, api, {sid: ("FAILED_CHECK", "y" * 100)})
    payments.apply_review(run, api, plan)
    assert standin.submissions[sid]["status"] == "REJECTED"


# --------------------------------------------------------------------------- fair rejection


def collected(run, sessions, *, pairs=2):
    """Write RUN/hit_items.csv (4 pairs, 4 attention checks) and a Prolific results.csv:
    ``sessions`` maps SESSION_ID -> (PID, [passed, ...] per attention check answered); every
    session also answers ``pairs`` pair HITs."""
    import csv

    from cage_eval import runs
    from hitgen.items import build_hit_items, read_hit_items, write_hit_items

    if not (run / runs.HIT_ITEMS).exists():
        write_hit_items(run, build_hit_items(run, attention_rate=1.0))
    items = read_hit_items(run)
    checks = [it for it in items if it.kind == "attention"]
    pair_items = [it for it in items if it.kind == "pair"]
    flip = {"top": "bottom", "bottom": "top"}
    with (run / runs.RESULTS).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Input.item_id", "Answer.choice", "WorkerId", "Prolific.PID",
                         "Prolific.SessionId"])
        for sid, (pid, passed) in sessions.items():
            for it, ok in zip(checks, passed, strict=False):
                writer.writerow([it.item_id, it.expected if ok else flip[it.expected], pid, pid,
                                 sid])
            for it in pair_items[:pairs]:
                writer.writerow([it.item_id, "top", pid, pid, sid])
    return items


def _awaiting(standin, study_id, host, pids):
    subs = {}
    for pid in pids:
        subs[pid] = standin.add_submission(study_id, pid, status="AWAITING REVIEW")
        host.gateway_sessions.append({"session_id": subs[pid], "pid": pid, "answered": 6,
                                      "ip_hash": ""})
    return subs


def test_review_follows_the_fair_rejection_rule_on_the_collected_checks(tmp_path, standin):
    from analysis.plan import AnalysisPlan

    run, api, host, study_id = published(tmp_path, standin)
    subs = _awaiting(standin, study_id, host, ["GOOD", "ONCE", "TWICE", "NOCHECK", "LATE"])
    backend.reconcile(run, api, host)
    collected(run, {subs["GOOD"]: ("GOOD", [True] * 4), subs["ONCE"]: ("ONCE", [False] + [True] * 3),
                    subs["TWICE"]: ("TWICE", [False, True, False, True]),
                    subs["NOCHECK"]: ("NOCHECK", [])})
    # Without --reject-failed-attention nobody is rejected.
    plan = payments.plan_review(run, api)
    got = {d.pid: (d.action, d.reason) for d in plan.decisions}
    assert got["GOOD"] == ("APPROVE", "4 attention check(s), none failed")
    assert got["NOCHECK"] == ("APPROVE", "no attention check answered")
    assert got["ONCE"] == ("APPROVE", "1 of 4 attention check(s) failed; not rejected "
                                      "(fair-rejection rule needs 2); still counted by the "
                                      "analysis; approved by the fair-rejection rule")
    assert got["TWICE"][0] == "APPROVE" and "rejection allowed but not asked for" in got["TWICE"][1]
    assert plan.left == [(subs["LATE"], "no answer collected (run cage-eval prolific collect "
                                        "first)")]
    # With it, exactly the participant with two failed checks is rejected, as a failed check.
    plan = payments.plan_review(run, api, reject_failed_attention=True)
    rejected = [d for d in plan.decisions if d.action == "REJECT"]
    assert [(d.pid, d.category) for d in rejected] == [("TWICE", "FAILED_CHECK")]
    assert rejected[0].message == payments.attention_message(2, 4)
    assert len(rejected[0].message) >= 100 and "2 of the 4 attention checks" in rejected[0].message
    assert rejected[0].reason == ("2 of 4 attention check(s) failed; rejection allowed "
                                  "(fair-rejection rule: 2 or more)")
    # An explicit rejection below the rule is refused, unless overridden (and recorded).
    why = "z" * 120
    with pytest.raises(ConfigError, match="participant ONCE failed 1 attention check.*needs 2 "
                                          "before a rejection.*--override-fair-rejection"):
        payments.plan_review(run, api, {subs["ONCE"]: ("LOW_EFFORT", why)})
    with pytest.raises(ConfigError, match="participant GOOD failed 0"):
        payments.plan_review(run, api, {subs["GOOD"]: ("LOW_EFFORT", why)})
    plan = payments.plan_review(run, api, {subs["ONCE"]: ("LOW_EFFORT", why)},
                                reject_failed_attention=True, override_fair_rejection=True)
    forced = next(d for d in plan.decisions if d.pid == "ONCE")
    assert forced.action == "REJECT" and forced.override and "--override-fair-rejection" in \
        forced.reason
    assert payments.apply_review(run, api, plan) == 4
    assert {p: standin.submissions[subs[p]]["status"] for p in subs} == {
        "GOOD": "APPROVED", "ONCE": "REJECTED", "TWICE": "REJECTED", "NOCHECK": "APPROVED",
        "LATE": "AWAITING REVIEW"}
    body = next(b for m, p, b in standin.requests if p.endswith(f"/{subs['TWICE']}/transition/"))
    assert body == {"action": "REJECT", "rejection_category": "FAILED_CHECK",
                    "message": payments.attention_message(2, 4)}
    with ProlificLedger.open(run) as ledger:
        assert ("fair-rejection-overridden", f"{subs['ONCE']} ONCE") in ledger.events()
        assert {s["pid"]: s["status"] for s in ledger.sessions()}["TWICE"] == "REJECTED"
    assert payments.plan_review(run, api, plan=AnalysisPlan()).decisions == []


def test_the_plan_can_ask_for_a_return_instead_and_asks_once(tmp_path, standin):
    from analysis.plan import AnalysisPlan

    run, api, host, study_id = published(tmp_path, standin)
    subs = _awaiting(standin, study_id, host, ["ONCE", "TWICE", "GOOD"])
    backend.reconcile(run, api, host)
    collected(run, {subs["ONCE"]: ("ONCE", [False, True, True, True]),
                    subs["TWICE"]: ("TWICE", [False, False, True, True]),
                    subs["GOOD"]: ("GOOD", [True] * 4)})
    plan = AnalysisPlan(below_rejection="ask-return", attention_min_accuracy=0.8)
    review = payments.plan_review(run, api, plan=plan)
    got = {d.pid: d for d in review.decisions}
    assert {p: d.action for p, d in got.items()} == {
        "ONCE": "REQUEST_RETURN", "TWICE": "REQUEST_RETURN", "GOOD": "APPROVE"}
    assert got["ONCE"].reason == ("1 of 4 attention check(s) failed; not rejected "
                                  "(fair-rejection rule needs 2); excluded from the analysis by "
                                  "the attention rule; the plan asks for a return "
                                  "(below_rejection: ask-return)")
    # A request whose answer is lost is never sent again (the participant would get it twice).
    slow = ProlificAPI(TOKEN, base_url=standin.url, sleep=lambda s: None, timeout=0.5)
    standin.fault("POST", rf"/{subs['ONCE']}/request-return/", "timeout-after", 1.5)
    assert payments.apply_review(run, slow, review) == 3
    assert payments.apply_review(run, api, review) == 0
    assert standin.calls("POST", r"/request-return/") == 2
    assert standin.calls("POST", r"/submissions/\w+/transition/") == 1
    body = next(b for m, p, b in standin.requests if p.endswith(f"/{subs['TWICE']}/request-return/"))
    assert body == {"request_return_reasons": [payments.return_reason(2, 4)]}
    assert payments.return_reason(2, 4) == ("Failed 2 of 4 attention checks (one image of the "
                                            "pair was plainly damaged).")
    assert standin.submissions[subs["ONCE"]]["status"] == "AWAITING REVIEW"  # never rejected
    again = payments.plan_review(run, api, plan=plan)
    assert again.decisions == [] and {sid for sid, _ in again.left} == {subs["ONCE"],
                                                                         subs["TWICE"]}
    assert "a return was requested" in again.left[0][1]
    with ProlificLedger.open(run) as ledger:
        states = {sid: ledger.return_request(sid)["state"] for sid in (subs["ONCE"],
                                                                        subs["TWICE"])}
    assert states == {subs["ONCE"]: "unknown", subs["TWICE"]: "done"}
    # Once they returned it, the place is Prolific's again: their tasks are freed, their
    # answers never reach results.csv.
    standin.set_status(subs["TWICE"], "RETURNED")
    backend.reconcile(run, api, host)
    assert subs["TWICE"] in host.released


# --------------------------------------------------------------------------- bonuses


def test_bonuses_are_exact_and_paid_once(tmp_path, standin):
    run, api, host, study_id = published(tmp_path, standin)
    for pid in ("P1", "P2"):
        sid = standin.add_submission(study_id, pid, status="APPROVED")
        host.gateway_sessions.append({"session_id": sid, "pid": pid, "answered": 4})
    backend.reconcile(run, api, host)
    csv_file = tmp_path / "bonus.csv"
    csv_file.write_text("participant,amount\nP1,0.50\nP2,1.07\n")
    plan = payments.read_bonus_csv(csv_file, run)
    assert plan.rows == [("P1", 50), ("P2", 107)] and plan.total == 157
    assert plan.csv_text == "P1,0.50\nP2,1.07"
    before = standin.balance
    unpaid = payments.bonus(run, api, plan, confirm=lambda q: False)
    assert not unpaid.paid and unpaid.amount == 157
    standin.fault("POST", r"/pay/$", "500-after")  # paid, but the answer is lost
    with pytest.raises(BackendError, match="pays it at most once"):
        payments.bonus(run, api, plan, confirm=lambda q: True)
    done = payments.bonus(run, api, plan, confirm=lambda q: True)  # resumes: already paid
    assert done.paid and done.fees == Decimal("52.33") and done.total == Decimal("209.33")
    with pytest.raises(ConfigError, match="already paid"):
        payments.bonus(run, api, plan, confirm=lambda q: True)
    (made,) = standin.bonuses.values()
    assert made["paid"] and made["amount"] == 157
    assert before - standin.balance == 209  # one payment, in pence
    assert standin.calls("POST", r"/bonus-payments/$") == 1


def test_a_bonus_priced_in_other_units_is_never_paid(tmp_path, standin, monkeypatch):
    run, api, host, study_id = published(tmp_path, standin)
    sid = standin.add_submission(study_id, "P1", status="APPROVED")
    host.gateway_sessions.append({"session_id": sid, "pid": "P1", "answered": 4})
    backend.reconcile(run, api, host)
    original = standin._create_bonus

    def in_pounds(body):  # a server answering in major units
        status, made = original(body)
        return status, {**made, "amount": made["amount"] / 100}

    monkeypatch.setattr(standin, "_create_bonus", in_pounds)
    csv_file = tmp_path / "bonus.csv"
    csv_file.write_text("P1,2.00\n")
    with pytest.raises(BackendError, match="2.0 sub-units, but the CSV adds up to 200"):
        payments.bonus(run, api, payments.read_bonus_csv(csv_file, run), lambda q: True)
    assert standin.calls("POST", r"/pay/$") == 0
    csv_file.write_text("P9,1.00\n")
    with pytest.raises(InputFileError, match="P9.*took no part"):
        payments.read_bonus_csv(csv_file, run)
    csv_file.write_text("P1,1.005\n")
    with pytest.raises(ConfigError, match="at most two decimals"):
        payments.read_bonus_csv(csv_file, run)


_KILLED_PUBLISHER = """
import sys
from decimal import Decimal
sys.path.insert(0, {tests!r})
from prolific_standin import TOKEN, WS, RecordingHost, settings
from crowds.prolific import backend
from crowds.prolific.api import ProlificAPI
plan = backend.prepare({run!r}, settings(), n_tasks=12, assignments=3, fee_rate=Decimal("0.333"),
                       max_cost=None, allow_low_pay=False)
backend.publish(plan, ProlificAPI(TOKEN, base_url={url!r}), RecordingHost(), batch_id=1,
                workspace_id=WS, max_cost=None, confirm=lambda q: True)
"""


def test_a_publisher_killed_while_prolific_creates_the_study_leaves_no_duplicate(tmp_path, standin):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    standin.fault("POST", r"/studies/$", "timeout-after", 60)  # acts, then never answers
    code = _KILLED_PUBLISHER.format(tests=str(Path(__file__).parents[2] / "support"), run=str(run),
                                    url=standin.url)
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not standin.studies and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(standin.studies) == 1
    with ProlificLedger.open(run) as ledger:
        assert ledger.study().state == "creating"
    report = do_publish(run, api_for(standin), RecordingHost())
    assert report.adopted and report.published and len(standin.studies) == 1
    assert standin.calls("POST", r"/studies/$") == 1
