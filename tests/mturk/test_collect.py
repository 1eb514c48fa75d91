"""Collecting answers and reviewing them against the local MTurk endpoint."""

import csv
import json
from datetime import datetime, timezone

import pytest
from fake_mturk import answer_xml

from cage_eval import runs
from cage_eval.errors import ConfigError
from hitgen.items import read_hit_items
from mturk.aws import make_client
from mturk.collect import collect, mturk_time, parse_answer_xml
from mturk.environments import SANDBOX
from mturk.hits import HitSettings
from mturk.ledger import Ledger
from mturk.publish import PublishRequest, prepare, publish
from mturk.review import apply_review, plan_review

SETTINGS = HitSettings(reward="0.05", assignments=3, lifetime_s=259200, duration_s=600,
                       auto_approve_s=259200)


def published(run, server, attention_rate=0.0):
    client = make_client(endpoint_url=server.url)
    publish(prepare(run, PublishRequest(settings=SETTINGS, attention_rate=attention_rate), SANDBOX), client)
    items = {it.item_id: it for it in read_hit_items(run)}
    with Ledger.open(run) as ledger:
        rows = ledger.rows()
    return client, items, rows


def test_mturk_time_format():
    t = datetime(2026, 11, 28, 16, 38, 44, tzinfo=timezone.utc)
    assert mturk_time(t) == "Sat Nov 28 16:38:44 UTC 2026"
    assert mturk_time(t.timestamp()) == "Sat Nov 28 16:38:44 UTC 2026"
    assert mturk_time(None) == ""


def test_parse_answer_xml():
    xml = answer_xml({"choice": "top", "item_id": "h0123456789abcde", "elapsed_ms": "1500"})
    assert parse_answer_xml(xml) == {"choice": "top", "item_id": "h0123456789abcde", "elapsed_ms": "1500"}
    assert parse_answer_xml(answer_xml({"note": "a <b> & c"})) == {"note": "a <b> & c"}
    with pytest.raises(ValueError, match="does not parse"):
        parse_answer_xml("<QuestionFormAnswers")
    with pytest.raises(ValueError, match="not QuestionFormAnswers"):
        parse_answer_xml("<Other/>")


def test_collect_all_statuses_with_pagination(aws_env, run_dir, fake):
    client, items, rows = published(run_dir, fake)
    statuses = ("Submitted", "Approved", "Rejected")
    expected = {}
    first = rows[0]
    for k in range(130):  # > 100: ListAssignmentsForHIT needs two pages for this HIT
        choice = ("top", "bottom")[k % 2]
        aid = fake.add_assignment(first.hit_id, f"AWORKER{k:04d}",
                                  {"choice": choice, "item_id": first.item_id, "elapsed_ms": str(1000 + k)},
                                  status=statuses[k % 3])
        expected[aid] = (choice, statuses[k % 3], str(1000 + k))
    for row in rows[1:3]:
        aid = fake.add_assignment(row.hit_id, "AOTHER", {"choice": "top", "item_id": row.item_id,
                                                         "elapsed_ms": "7"})
        expected[aid] = ("top", "Submitted", "7")
    before = fake.calls["ListAssignmentsForHIT"]
    report = collect(run_dir, client)
    assert fake.calls["ListAssignmentsForHIT"] - before == len(rows) + 1   # one extra page
    assert report.assignments == 132 and report.hits == 8
    assert report.by_status == {"Submitted": 46, "Approved": 43, "Rejected": 43}

    with open(run_dir / runs.RESULTS, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == runs.RESULTS_COLUMNS
        table = list(reader)
    assert len(table) == 132
    for r in table:
        choice, status, elapsed = expected[r["AssignmentId"]]
        item = items[r["Input.item_id"]]
        assert (r["Answer.choice"], r["AssignmentStatus"], r["Answer.elapsed_ms"]) == (choice, status, elapsed)
        assert r["Answer.item_id"] == item.item_id
        assert (r["Input.image_top"], r["Input.image_bottom"]) == (item.image_top, item.image_bottom)
        assert r["Input.run_id"] == "5e1f0c2a9b7d4e33"
        assert r["RequesterAnnotation"] == "cage-eval:5e1f0c2a9b7d4e33"
        assert r["Reward"] == "$0.05" and r["MaxAssignments"] == "3" and r["LifetimeInSeconds"] == "259200"
        assert r["WorkTimeInSeconds"] == "12"
        datetime.strptime(r["SubmitTime"], "%a %b %d %H:%M:%S UTC %Y")
        if status == "Approved":
            assert r["ApprovalTime"] and not r["RejectionTime"]
    raw = json.loads((run_dir / runs.RAW_ANSWERS_DIR / f"{first.hit_id}.json").read_text())
    assert raw["item_id"] == first.item_id and len(raw["assignments"]) == 130
    assert "QuestionFormAnswers" in raw["assignments"][0]["Answer"]
    assert len(list((run_dir / runs.RAW_ANSWERS_DIR).glob("*.json"))) == 8


def test_malformed_answer_is_archived_and_reported(aws_env, run_dir, fake):
    client, items, rows = published(run_dir, fake)
    aid = fake.add_assignment(rows[0].hit_id, "AW", {"choice": "top"})
    fake.assignments[aid]["Answer"] = "<broken"
    report = collect(run_dir, client)
    assert report.malformed == [aid] and report.assignments == 1
    assert [(i.AssignmentId, i.field) for i in report.invalid] == [(aid, "answer")]


def test_invalid_answers_are_set_aside_and_reported(aws_env, run_dir, fake):
    from click.testing import CliRunner

    from cage_eval.cli import cli

    client, items, rows = published(run_dir, fake)
    item = rows[0].item_id
    good = fake.add_assignment(rows[0].hit_id, "AGOOD", {"choice": "top", "item_id": item,
                                                         "elapsed_ms": "1200"})
    posted = {"AHUGE": {"choice": "x" * 200_000}, "ALEFT": {"choice": "=HYPERLINK(1)"},
              "AECHO": {"choice": "top", "item_id": "h" + "0" * 15},
              "ATIME": {"choice": "top", "elapsed_ms": "-1"}}
    bad = {w: fake.add_assignment(rows[1].hit_id, w, a) for w, a in posted.items()}
    result = CliRunner().invoke(cli, ["collect", str(run_dir), "--endpoint-url", fake.url])
    assert result.exit_code == 0, result.output
    assert "Collected 5 assignments from 8 HITs" in result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("Warning:"))
    assert warning.startswith("Warning: 4 assignment(s) with an invalid answer left out of "
                              "results.csv (e.g. assignment ") and "x" * 41 not in warning
    with open(run_dir / runs.RESULTS, newline="") as fh:
        assert [r["AssignmentId"] for r in csv.DictReader(fh)] == [good]
    with open(run_dir / runs.RAW_ANSWERS_DIR / "invalid_answers.csv", newline="") as fh:
        invalid = {r["AssignmentId"]: (r["field"], r["problem"]) for r in csv.DictReader(fh)}
    assert invalid == {
        bad["AHUGE"]: ("choice", "is 200,000 characters long (at most 64)"),
        bad["ALEFT"]: ("choice", "is '=HYPERLINK(1)', not top or bottom"),
        bad["AECHO"]: ("item_id", f"is 'h000000000000000', not the item shown ({rows[1].item_id})"),
        bad["ATIME"]: ("elapsed_ms", "is '-1', not a number of milliseconds"),
    }
    raw = json.loads((run_dir / runs.RAW_ANSWERS_DIR / f"{rows[1].hit_id}.json").read_text())
    assert any("x" * 200_000 in a["Answer"] for a in raw["assignments"])  # nothing lost


def test_review_rejects_only_failed_attention_checks(aws_env, tmp_path, fake):
    from crowd_fixtures import make_run_dir

    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
    client, items, rows = published(run, fake, attention_rate=0.25)
    attention = [r for r in rows if items[r.item_id].kind == "attention"]
    pair = next(r for r in rows if items[r.item_id].kind == "pair")
    assert len(attention) == 2
    a_item = items[attention[0].item_id]
    wrong = "bottom" if a_item.expected == "top" else "top"
    ok = fake.add_assignment(attention[0].hit_id, "AGOOD", {"choice": a_item.expected})
    # ABAD fails both checks (a wrong and a missing answer): the fair-rejection rule allows it.
    bad = fake.add_assignment(attention[0].hit_id, "ABAD", {"choice": wrong})
    blank = fake.add_assignment(attention[1].hit_id, "ABAD", {"item_id": attention[1].item_id})
    p1 = fake.add_assignment(pair.hit_id, "AP1", {"choice": "top"})
    done = fake.add_assignment(pair.hit_id, "AP2", {"choice": "top"}, status="Approved")

    decisions = plan_review(run, client, reject_failed_attention=True)
    by_id = {d.assignment_id: d for d in decisions}
    assert done not in by_id                                  # only Submitted ones are touched
    assert {a for a, d in by_id.items() if d.action == "reject"} == {bad, blank}
    assert by_id[ok].action == by_id[p1].action == "approve"
    with pytest.raises(ConfigError, match="--feedback"):
        apply_review(run, client, decisions, feedback="  ")
    fake.not_ready_reviews = 1                                # "status of: null" right after submit
    report = apply_review(run, client, decisions, feedback="Attention check failed",
                          retry_delays=(0.0,))
    assert (report.approved, report.rejected, report.failed) == (2, 2, [])
    assert fake.assignments[bad]["AssignmentStatus"] == "Rejected"
    assert fake.assignments[bad]["RequesterFeedback"] == "Attention check failed"
    assert fake.assignments[ok]["AssignmentStatus"] == "Approved"
    with Ledger.open(run) as ledger:
        assert ledger.reviews() == {ok: "approved", p1: "approved", bad: "rejected", blank: "rejected"}
    # Nothing is left to review; a second reject attempt on the same assignments is refused by MTurk
    assert plan_review(run, client, reject_failed_attention=True) == []
    again = apply_review(run, client, [by_id[bad]], feedback="x", retry_delays=())
    assert again.rejected == 0 and len(again.failed) == 1
    assert again.failed[0][1].startswith("RequestError: This operation can be called with a status of: Submitted")


def test_without_reject_flag_everything_is_approved(aws_env, tmp_path, fake):
    from crowd_fixtures import make_run_dir

    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    client, items, rows = published(run, fake, attention_rate=0.25)
    att = next(r for r in rows if items[r.item_id].kind == "attention")
    wrong = "bottom" if items[att.item_id].expected == "top" else "top"
    fake.add_assignment(att.hit_id, "ABAD", {"choice": wrong})
    decisions = plan_review(run, client, reject_failed_attention=False)
    assert [d.action for d in decisions] == ["approve"]
    assert "approved anyway" in decisions[0].reason
