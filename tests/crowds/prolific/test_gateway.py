"""The participant's path through a real Turkle server's Prolific gateway, reconciliation with
RETURNED / TIMED-OUT submissions, and ``analyze`` on a Prolific study against the same answers
laid out as an MTurk study."""

from __future__ import annotations

import csv
from collections import Counter

import pandas as pd
import pytest

pytest.importorskip("turkle", reason="Turkle is not installed: pip install -e '.[turkle]'")

import requests  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from prolific_fixtures import Participant, prolific_study  # noqa: E402

from cage_eval import runs  # noqa: E402
from cage_eval.cli import cli  # noqa: E402
from crowds.prolific import backend, payments  # noqa: E402
from hitgen.items import read_hit_items  # noqa: E402

pytestmark = pytest.mark.slow


def _choose(item_id: str) -> str:
    return "top" if int(item_id[-1], 16) % 2 else "bottom"


def _results(run) -> list[dict[str, str]]:
    with (run / runs.RESULTS).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_participants_arrive_resume_and_finish_with_their_code(tmp_path):
    with prolific_study(tmp_path, tasks_per_participant=2) as s:
        bare = requests.get(f"{s.turkle_url}/prolific/start/", timeout=20)
        assert bare.status_code == 400
        assert "This page can only be opened from Prolific" in bare.text
        assert "missing PROLIFIC_PID, STUDY_ID, SESSION_ID" in bare.text
        assert "Nothing was recorded." in bare.text
        odd = requests.get(s.start_url("P1<script>", "S1"), timeout=20)
        assert odd.status_code == 400 and "invalid PROLIFIC_PID" in odd.text
        other = requests.get(s.start_url("P1", "S1").replace(s.study_id, "ffff"), timeout=20)
        assert other.status_code == 404 and "not open here" in other.text

        first = Participant(s, "5f0aa0000000000000000001")
        landed = first.arrive()
        assert "/assignment/" in landed
        assert first.arrive() == landed  # a second visit resumes the open task
        # Another run's batch on the same server (a lab study) is out of a participant's reach.
        other = host_batch(s, tmp_path)
        for path in (f"/batch/{other}/accept_next_task/", f"/batch/{other}/preview_next_task/",
                     "/"):
            assert first.session.get(s.turkle_url + path, timeout=20).url == landed
        assert first.answer(_choose) == 2
        assert first.landed == f"{s.standin.completion_page}?cc={s.code}"
        assert s.standin.completions == [s.code]
        assert first.arrive() == first.landed  # done: straight back to the completion page
        first.finish()
        # The gateway's staff API is closed to anonymous visitors and to participants.
        staff = f"{s.turkle_url}/api/cage-eval/prolific/studies/{s.study_id}/"
        for client in (requests.Session(), first.session):
            assert client.get(staff + "sessions/", timeout=20).status_code in (401, 403)
            assert client.post(staff + "release/", json={"session_ids": [first.session_id]},
                               timeout=20).status_code in (401, 403)
            assert client.get(f"{s.turkle_url}/admin/", timeout=20).url.endswith(
                "/admin/login/?next=/admin/")

        # A made-up SESSION_ID (no submission on Prolific) can take a task, which is freed again.
        forger = Participant(s, "5f0aa0000000000000000077", session_id="abcdef0123")
        forger.arrive()
        assert forger.answer(_choose, n=1) == 1
        for i in range(2, 6):
            p = Participant(s, f"5f0aa00000000000000000{i:02d}")
            p.arrive()
            assert p.answer(_choose) == 2 and "cc=" in p.landed
            p.finish()
        # The forger holds 2 of the 12 places in Turkle (one answered, one open): freed.
        rec = backend.reconcile(s.run, s.api, s.host)
        assert rec.released_sessions == 1 and rec.released_assignments == 2
        p = Participant(s, "5f0aa0000000000000000006")
        p.arrive()
        assert p.answer(_choose) == 2 and "cc=" in p.landed
        p.finish()
        late = Participant(s, "5f0aa0000000000000000099")
        late.arrive()
        page = late.session.get(late.landed, timeout=20)
        assert "No tasks are left for you" in page.text and "return the study" in page.text

        sessions = {x["pid"]: x for x in s.host.sessions(s.study_id)}
        assert len(sessions) == 8 and sessions[first.pid]["visits"] == 3
        assert sessions[first.pid]["answered"] == 2 and sessions[late.pid]["answered"] == 0
        assert len({x["ip_hash"] for x in sessions.values()}) == 1  # one machine, one hash
        assert len(sessions[first.pid]["ip_hash"]) == 16

        result = backend.collect(s.run, s.api, s.host)
    rows = _results(s.run)
    assert result.rows == len(rows) == 12 and result.participants == 6
    assert result.dropped_unknown == 0 and "5f0aa0000000000000000077" not in str(rows)
    per_item = Counter(r["Input.item_id"] for r in rows)
    assert set(per_item.values()) == {3} and len(per_item) == 4
    judges = {}
    for r in rows:
        judges.setdefault(r["Input.item_id"], set()).add(r["Prolific.PID"])
        assert r["Turkle.Username"] == f"prolific_{r['Prolific.PID']}"
        assert s.standin.submissions[r["Prolific.SessionId"]]["participant_id"] == r["Prolific.PID"]
        assert r["Prolific.SubmissionStatus"] == "AWAITING REVIEW"
        assert r["AssignmentStatus"] == "Submitted" and r["Crowd.StudyId"] == s.study_id
        assert r["Crowd.IpHash"] == sessions[r["Prolific.PID"]]["ip_hash"]
        assert r["WorkerId"] == r["Prolific.PID"]  # block lists and duplicates work on PIDs
        assert float(r["WorkTimeInSeconds"]) >= 0 and r["Answer.elapsed_ms"] == "2100"
    assert all(len(v) == 3 for v in judges.values())


def test_returned_and_timed_out_submissions_free_their_tasks(tmp_path):
    from analysis.plan import AnalysisPlan

    # Every participant here comes from 127.0.0.1 (one IP hash): a plan that reports shared
    # addresses without excluding them, so that Table 2 holds every answer that counts.
    keep = AnalysisPlan(duplicate_participants="keep")
    with prolific_study(tmp_path, tasks_per_participant=2, analysis_plan=keep) as s:
        quitter = Participant(s, "5f0bb0000000000000000001")
        quitter.arrive()
        assert quitter.answer(_choose, n=1) == 1
        s.standin.set_status(quitter.session_id, "RETURNED")
        slow = Participant(s, "5f0bb0000000000000000002")
        slow.arrive()
        assert slow.answer(_choose) == 2
        s.standin.set_status(slow.session_id, "TIMED-OUT")

        rec = backend.reconcile(s.run, s.api, s.host)
        assert rec.released_sessions == 2 and rec.released_assignments == 4  # 3 answered + 1 open
        assert backend.reconcile(s.run, s.api, s.host).released_sessions == 0
        closed = quitter.session.get(s.start_url(quitter.pid, quitter.session_id), timeout=20)
        assert closed.status_code == 410 and "returned or timed out" in closed.text

        # Their tasks went back to the pool: six more participants cover every HIT 3 times.
        for i in range(3, 9):
            p = Participant(s, f"5f0bb00000000000000000{i:02d}")
            p.arrive()
            assert p.answer(_choose) == 2, p.pid
            p.finish()
        result = backend.collect(s.run, s.api, s.host)
        assert s.standin.calls("PATCH", r"/studies/") == 0  # places never raised
        assert s.standin.studies[s.study_id]["total_available_places"] == 6

        plan = payments.plan_review(s.run, s.api)
        assert len(plan.decisions) == 6 and {d.action for d in plan.decisions} == {"APPROVE"}
        assert payments.apply_review(s.run, s.api, plan) == 6
        assert s.standin.calls("POST", rf"/submissions/{quitter.session_id}/transition/") == 0
        assert s.standin.calls("POST", rf"/submissions/{slow.session_id}/transition/") == 0
        backend.collect(s.run, s.api, s.host)  # statuses now APPROVED
    rows = _results(s.run)
    assert result.rows == 12 and len(rows) == 12
    assert not {quitter.pid, slow.pid} & {r["Prolific.PID"] for r in rows}
    assert set(Counter(r["Input.item_id"] for r in rows).values()) == {3}
    assert {r["AssignmentStatus"] for r in rows} == {"Approved"}

    # The same answers as an MTurk study give the same Table 2.
    items = {it.item_id for it in read_hit_items(s.run)}
    mturk = tmp_path / "mturk_results.csv"
    with mturk.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=runs.RESULTS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for n, r in enumerate(rows):
            assert r["Input.item_id"] in items
            writer.writerow({
                "HITId": f"3HIT{r['Input.item_id'][:20]}", "HITTypeId": "3TYPE",
                "AssignmentId": f"3ASG{n:06d}", "WorkerId": f"A{r['Prolific.PID'].upper()}",
                "AssignmentStatus": "Approved",
                "RequesterAnnotation": f"{runs.REQUESTER_ANNOTATION_PREFIX}9a1c0e5d7b3f2a61",
                "Input.item_id": r["Input.item_id"], "Input.image_top": r["Input.image_top"][:9],
                "Input.image_bottom": r["Input.image_bottom"][:9], "Input.run_id": "9a1c0e5d7b3f2a61",
                "Answer.choice": r["Answer.choice"], "Answer.item_id": r["Answer.item_id"],
                "Answer.elapsed_ms": r["Answer.elapsed_ms"]})
    runner = CliRunner()
    for name, path in (("prolific", s.run / runs.RESULTS), ("mturk", mturk)):
        res = runner.invoke(cli, ["analyze", str(path), "--run", str(s.run), "--out",
                                  str(tmp_path / name), "--n-boot", "200"],
                            catch_exceptions=False)
        assert res.exit_code == 0, res.output
    prolific = pd.read_csv(tmp_path / "prolific" / "table2.csv")
    other = pd.read_csv(tmp_path / "mturk" / "table2.csv")
    pd.testing.assert_frame_equal(prolific, other)
    assert prolific["n"].sum() == 12


def _as_mturk(rows: list[dict[str, str]], path) -> None:
    """The same answers laid out as an MTurk batch-results file: same worker ids, statuses and
    times; MTurk knows no study or IP address, so those columns are absent."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=runs.RESULTS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for n, r in enumerate(rows):
            writer.writerow({
                "HITId": f"3HIT{r['Input.item_id'][:20]}", "HITTypeId": "3TYPE",
                "AssignmentId": f"3ASG{n:06d}", "WorkerId": r["Prolific.PID"],
                "AssignmentStatus": r["AssignmentStatus"],
                "AcceptTime": r["AcceptTime"], "SubmitTime": r["SubmitTime"],
                "WorkTimeInSeconds": r["WorkTimeInSeconds"],
                "RequesterAnnotation": f"{runs.REQUESTER_ANNOTATION_PREFIX}9a1c0e5d7b3f2a61",
                "Input.item_id": r["Input.item_id"], "Input.image_top": r["Input.image_top"][:9],
                "Input.image_bottom": r["Input.image_bottom"][:9],
                "Input.run_id": "9a1c0e5d7b3f2a61", "Answer.choice": r["Answer.choice"],
                "Answer.item_id": r["Answer.item_id"],
                "Answer.elapsed_ms": r["Answer.elapsed_ms"]})


def test_analyze_applies_the_planned_exclusions_like_an_mturk_study(tmp_path):
    """Four participants judge every HIT (4 pairs, 4 catch trials): one clean, one blocked
    before the study, one failing 1 check (below the plan's 0.8 accuracy, never rejected) and
    one failing 2 (rejected by review under the fair-rejection rule). Table 2 keeps the clean
    participant's 4 pair judgements, each rule removes 4, and the same answers as an MTurk
    study with the same frozen plan give the same Table 2 and the same exclusion counts."""
    import json

    from analysis.plan import AnalysisPlan, load_plan

    pids = {"GOOD": "5f0ff0000000000000000001", "BLOCKED": "5f0ff0000000000000000002",
            "ONCE": "5f0ff0000000000000000003", "TWICE": "5f0ff0000000000000000004"}
    # Every participant comes from 127.0.0.1 here, so all share one IP hash: the plan reports
    # shared addresses without excluding them (an in-lab policy; the rule is checked below).
    planned = AnalysisPlan(attention_min_accuracy=0.8, blocked_participants=(pids["BLOCKED"],),
                           duplicate_participants="keep")
    with prolific_study(tmp_path, tasks_per_participant=8, assignments=4, attention_rate=1.0,
                        analysis_plan=planned) as s:
        items = {it.item_id: it for it in read_hit_items(s.run)}
        assert sum(it.kind == "attention" for it in items.values()) == 4
        assert load_plan(s.run) == planned.replace(catch_trials=4)
        flip = {"top": "bottom", "bottom": "top"}
        for name, wrong in (("GOOD", 0), ("BLOCKED", 0), ("ONCE", 1), ("TWICE", 2)):
            seen: list[str] = []

            def choose(item_id: str, wrong=wrong, seen=seen) -> str:
                it = items[item_id]
                if it.kind != "attention":
                    return _choose(item_id)
                seen.append(item_id)
                return flip[it.expected] if len(seen) <= wrong else it.expected

            p = Participant(s, pids[name])
            p.arrive()
            assert p.answer(choose) == 8 and "cc=" in p.landed
            p.finish()
        backend.collect(s.run, s.api, s.host)
        review = payments.plan_review(s.run, s.api, reject_failed_attention=True)
        actions = {d.pid: d.action for d in review.decisions}
        assert actions == {pids["GOOD"]: "APPROVE", pids["BLOCKED"]: "APPROVE",
                           pids["ONCE"]: "APPROVE", pids["TWICE"]: "REJECT"}
        payments.apply_review(s.run, s.api, review)
        backend.collect(s.run, s.api, s.host)
    rows = _results(s.run)
    assert len(rows) == 32
    assert {r["AssignmentStatus"] for r in rows if r["Prolific.PID"] == pids["TWICE"]} == {
        "Rejected"}
    mturk = tmp_path / "mturk_results.csv"
    _as_mturk(rows, mturk)
    runner = CliRunner()
    for name, path in (("prolific", s.run / runs.RESULTS), ("mturk", mturk)):
        res = runner.invoke(cli, ["analyze", str(path), "--run", str(s.run), "--out",
                                  str(tmp_path / name), "--n-boot", "200"],
                            catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert "WARNING" not in res.output
    prolific = pd.read_csv(tmp_path / "prolific" / "table2.csv")
    other = pd.read_csv(tmp_path / "mturk" / "table2.csv")
    pd.testing.assert_frame_equal(prolific, other)
    assert prolific["n"].sum() == 4 and prolific["judgements_read"].sum() == 16
    assert {rule: int(prolific[f"excluded_{rule}"].sum()) for rule in (
        "rejected", "blocked_participant", "attention", "shared_ip", "too_fast")} == {
        "rejected": 4, "blocked_participant": 4, "attention": 4, "shared_ip": 0, "too_fast": 0}
    reports = {name: json.loads((tmp_path / name / "analysis.json").read_text())
               for name in ("prolific", "mturk")}
    assert reports["prolific"]["exclusions_by_rule"] == reports["mturk"]["exclusions_by_rule"]
    assert reports["prolific"]["plan"] == reports["mturk"]["plan"] == load_plan(s.run).to_dict()
    # The Prolific file carries the study and the hashed address (MTurk's does not): the
    # participants after the first share it (the rejected one is out before this rule looks),
    # reported under the plan ...
    shared = reports["prolific"]["exclusions"]["duplicate_participants"]["shared_ip"]
    assert sorted(x["participant"] for x in shared) == [pids["BLOCKED"], pids["ONCE"]]
    assert {(x["study"], x["first_participant"]) for x in shared} == {(s.study_id, pids["GOOD"])}
    assert reports["mturk"]["exclusions"]["duplicate_participants"]["shared_ip"] == []
    # ... and excluded when the analysis is told to (a departure from the plan, warned about).
    res = runner.invoke(cli, ["analyze", str(s.run / runs.RESULTS), "--run", str(s.run),
                              "--out", str(tmp_path / "strict"), "--n-boot", "200",
                              "--duplicate-participants", "exclude-later"],
                        catch_exceptions=False)
    assert res.exit_code == 0 and "WARNING" in res.output
    strict = pd.read_csv(tmp_path / "strict" / "table2.csv")
    assert strict["excluded_shared_ip"].sum() > 0


def host_batch(s, tmp_path) -> int:
    """Publish a second run as a plain Turkle batch on the study's server; its batch id."""
    from crowd_fixtures import make_run_dir

    from crowds.turkle.backend import TurklePublishOptions

    run = make_run_dir(tmp_path / "lab_run", run_id="0b0b0b0b0b0b0b0b", pairs_per_cell=1)
    return s.host.publish(run, TurklePublishOptions(assignments=1)).batch_id


def test_behind_an_https_proxy_cookies_are_secure_and_the_client_address_is_hashed(tmp_path):
    with prolific_study(tmp_path, public_host="study.example.org") as s:
        def arrive(pid: str, client: str) -> requests.Response:
            sid = s.standin.add_submission(s.study_id, pid)
            return requests.get(s.start_url(pid, sid), allow_redirects=False, timeout=20,
                                headers={"Host": "study.example.org", "X-Forwarded-Proto": "https",
                                         "X-Forwarded-For": f"10.0.0.1, {client}"})

        first = arrive("5f0ee0000000000000000001", "203.0.113.7")
        assert first.status_code == 302 and first.headers["Location"] == "/prolific/next/"
        cookie = next(c for c in first.cookies if c.name == "sessionid")
        assert cookie.secure
        arrive("5f0ee0000000000000000002", "203.0.113.7")
        arrive("5f0ee0000000000000000003", "198.51.100.9")
        hashes = {x["pid"]: x["ip_hash"] for x in s.host.sessions(s.study_id)}
    assert hashes["5f0ee0000000000000000001"] == hashes["5f0ee0000000000000000002"]
    assert hashes["5f0ee0000000000000000001"] != hashes["5f0ee0000000000000000003"]
    assert "203.0.113.7" not in str(hashes)
