"""Every MTurk call cage-eval makes, checked against botocore's real MTurk service model.

``botocore.stub.Stubber`` validates each request's parameters against the model (names, types,
required members) and compares them with the expected parameters given here; responses are
validated against the model's output shapes. No network is used.
"""

from datetime import datetime, timezone

import pytest
from botocore.stub import Stubber
from crowd_fixtures import make_run_dir
from fake_mturk import answer_xml

from analysis.plan import AnalysisPlan
from hitgen.hosting import DataUriHost
from hitgen.items import read_hit_items
from hitgen.render import html_question, render_mturk_page
from mturk.aws import make_client
from mturk.collect import collect
from mturk.environments import SANDBOX
from mturk.expire import PAST, expire
from mturk.hits import HitSettings, Qualifications, unique_request_token
from mturk.ledger import Ledger
from mturk.publish import PublishRequest, prepare, publish
from mturk.review import apply_review, plan_review

T0 = datetime(2026, 11, 28, 16, 38, 44, tzinfo=timezone.utc)
HIT_TYPE = "3TYPEAAAAAAAAAAAAAAAAAAAAAAAA0"


def hit_id(i):
    return f"3HIT{i:026d}"


@pytest.fixture
def stubbed(aws_env, tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    client = make_client(sandbox=True)
    with Stubber(client) as stub:
        yield run, client, stub
        stub.assert_no_pending_responses()


def _plan(run):
    settings = HitSettings(reward="0.05", assignments=3, lifetime_s=259200, duration_s=600,
                           auto_approve_s=259200, qualifications=Qualifications(masters=True))
    plan = prepare(run, PublishRequest(settings=settings, attention_rate=0.25, concurrency=1), SANDBOX)
    assert len(plan.items) == 5 and plan.n_attention == 1
    return plan


def _stub_balance_and_hit_type(stub, plan):
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    stub.add_response("create_hit_type", {"HITTypeId": HIT_TYPE}, {
        "AutoApprovalDelayInSeconds": 259200, "AssignmentDurationInSeconds": 600, "Reward": "0.05",
        "Title": plan.texts.title, "Keywords": plan.texts.keywords, "Description": plan.texts.description,
        "QualificationRequirements": [{"QualificationTypeId": "2ARFPLSP75KLA8M8DH1HTEQVJT3SY6",
                                       "Comparator": "Exists",
                                       "ActionsGuarded": "DiscoverPreviewAndAccept"}],
    })


def _create_params(run, plan, item):
    """The exact CreateHITWithHITType parameters of one item, its deterministic token included."""
    host = DataUriHost(run)
    question = html_question(render_mturk_page(item, host.url(item.image_top),
                                               host.url(item.image_bottom), plan.texts))
    return {"HITTypeId": HIT_TYPE, "MaxAssignments": 3, "LifetimeInSeconds": 259200,
            "Question": question, "RequesterAnnotation": f"cage-eval:{plan.run_id}",
            "UniqueRequestToken": unique_request_token(plan.run_id, item.item_id, "sandbox")}


def _created(i):
    return {"HIT": {"HITId": hit_id(i), "HITTypeId": HIT_TYPE, "CreationTime": T0}}


def _publish_with_stubs(run, client, stub):
    plan = _plan(run)
    _stub_balance_and_hit_type(stub, plan)
    for i, item in enumerate(plan.items):
        stub.add_response("create_hit_with_hit_type", _created(i), _create_params(run, plan, item))
    report = publish(plan, client)
    assert report.created_now == 5
    return plan


def test_publish_calls_match_the_service_model(stubbed):
    run, client, stub = stubbed
    _publish_with_stubs(run, client, stub)
    with Ledger.open(run, environment="sandbox") as ledger:
        assert [r.hit_id for r in ledger.rows()] == [hit_id(i) for i in range(5)]


def test_collect_review_expire_calls_match_the_service_model(stubbed):
    run, client, stub = stubbed
    plan = _publish_with_stubs(run, client, stub)
    items = plan.items
    attention = next(i for i, it in enumerate(items) if it.kind == "attention")
    wrong = "bottom" if items[attention].expected == "top" else "top"

    def assignment(i, k, status, choice):
        a = {"AssignmentId": f"3ASG{i:013d}{k:013d}", "WorkerId": f"A{k:05d}WORKER", "HITId": hit_id(i),
             "AssignmentStatus": status, "AcceptTime": T0, "SubmitTime": T0,
             "Answer": answer_xml({"choice": choice, "item_id": items[i].item_id, "elapsed_ms": "900"})}
        if status == "Approved":
            a["ApprovalTime"] = T0
        return a

    # collect: GetHIT + ListAssignmentsForHIT over all statuses, two pages for the first HIT
    for i in range(5):
        stub.add_response("get_hit", {"HIT": {"HITId": hit_id(i), "HITTypeId": HIT_TYPE, "Reward": "0.05",
                                              "CreationTime": T0, "MaxAssignments": 3}}, {"HITId": hit_id(i)})
        base = {"HITId": hit_id(i), "AssignmentStatuses": ["Submitted", "Approved", "Rejected"],
                "MaxResults": 100}
        if i == 0:
            stub.add_response("list_assignments_for_hit",
                              {"Assignments": [assignment(0, 0, "Submitted", "top")], "NextToken": "p2",
                               "NumResults": 1}, base)
            stub.add_response("list_assignments_for_hit",
                              {"Assignments": [assignment(0, 1, "Approved", "bottom")], "NumResults": 1},
                              {**base, "NextToken": "p2"})
        else:
            stub.add_response("list_assignments_for_hit", {"Assignments": [], "NumResults": 0}, base)
    report = collect(run, client, concurrency=1)
    assert report.assignments == 2 and report.by_status == {"Submitted": 1, "Approved": 1}

    # review: only Submitted assignments are listed; the failed attention check is rejected
    for i in range(5):
        found = []
        if i == 0:
            found = [assignment(0, 0, "Submitted", "top")]
        if i == attention:
            found = [assignment(i, 2, "Submitted", wrong)]
        stub.add_response("list_assignments_for_hit", {"Assignments": found, "NumResults": len(found)},
                          {"HITId": hit_id(i), "AssignmentStatuses": _review_statuses(items, i),
                           "MaxResults": 100})
    # A plan that allows a rejection at the first failed check, so that RejectAssignment is
    # called (the fair-rejection default of 2 is tested in test_quality.py).
    decisions = plan_review(run, client, reject_failed_attention=True, concurrency=1,
                            plan=AnalysisPlan(reject_min_failed_checks=1))
    expected_actions = ["reject"] if attention == 0 else ["approve", "reject"]
    assert [d.action for d in decisions] == expected_actions
    for d in decisions:
        if d.action == "approve":
            stub.add_response("approve_assignment", {}, {"AssignmentId": d.assignment_id})
        else:
            stub.add_response("reject_assignment", {}, {"AssignmentId": d.assignment_id,
                                                        "RequesterFeedback": "Failed the attention check"})
    result = apply_review(run, client, decisions, feedback="Failed the attention check", concurrency=1)
    assert result.rejected == 1 and not result.failed

    # expire: UpdateExpirationForHIT with a time in the past
    for i in range(5):
        stub.add_response("update_expiration_for_hit", {}, {"HITId": hit_id(i), "ExpireAt": PAST})
    assert expire(run, client, concurrency=1) == (5, 0)
    assert read_hit_items(run)[attention].kind == "attention"


def _review_statuses(items, i):
    """review lists every status of a catch-trial HIT (failed checks are counted over all of
    them) and only Submitted assignments of the others."""
    return ["Submitted", "Approved", "Rejected"] if items[i].kind == "attention" else ["Submitted"]


def test_eventual_consistency_error_is_retried(stubbed):
    run, client, stub = stubbed
    plan = _publish_with_stubs(run, client, stub)
    for i in range(5):
        found = [{"AssignmentId": "3ASSIGNMENT000000000000000001", "WorkerId": "AWORKER", "HITId": hit_id(0),
                  "AssignmentStatus": "Submitted",
                  "Answer": answer_xml({"choice": "top"})}] if i == 0 else []
        stub.add_response("list_assignments_for_hit", {"Assignments": found},
                          {"HITId": hit_id(i), "AssignmentStatuses": _review_statuses(plan.items, i),
                           "MaxResults": 100})
    decisions = plan_review(run, client, reject_failed_attention=False, concurrency=1)
    stub.add_client_error("approve_assignment", service_error_code="RequestError",
                          service_message="This operation can be called with a status of: Submitted "
                                          "(status of: null)", http_status_code=400)
    stub.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNMENT000000000000000001"})
    slept = []
    result = apply_review(run, client, decisions, feedback=None, retry_delays=(7.0,), sleep=slept.append)
    assert result.approved == 1 and slept == [7.0]


def test_reconcile_lists_hits_instead_of_creating(stubbed):
    import sqlite3

    run, client, stub = stubbed
    plan = _publish_with_stubs(run, client, stub)
    conn = sqlite3.connect(run / "ledger.sqlite")   # a crash before the answer of item 3 was recorded
    conn.execute("UPDATE hits SET state = 'creating', hit_id = NULL WHERE rowid = 3")
    conn.commit()
    conn.close()
    item = plan.items[2]
    plan2 = prepare(run, plan.request, SANDBOX)
    stub.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    other = {"HITId": hit_id(90), "HITTypeId": HIT_TYPE, "RequesterAnnotation": "cage-eval:someone-else",
             "Question": item.item_id}
    mine = {"HITId": hit_id(2), "HITTypeId": HIT_TYPE, "CreationTime": T0,
            "RequesterAnnotation": f"cage-eval:{plan.run_id}", "Question": f'value="{item.item_id}"'}
    stub.add_response("list_hits", {"HITs": [other], "NextToken": "n2", "NumResults": 1}, {"MaxResults": 100})
    stub.add_response("list_hits", {"HITs": [mine], "NumResults": 1}, {"MaxResults": 100, "NextToken": "n2"})
    report = publish(plan2, client)
    assert report.reconciled == 1 and report.created_now == 0
    with Ledger.open(run) as ledger:
        assert ledger.rows()[2].hit_id == hit_id(2)


def _events(run, item_id):
    import sqlite3

    conn = sqlite3.connect(run / "ledger.sqlite")
    try:
        return [e for (e,) in conn.execute("SELECT event FROM events WHERE item_id = ? ORDER BY seq",
                                           (item_id,))]
    finally:
        conn.close()


def test_duplicate_token_is_resolved_with_get_hit(stubbed):
    """MTurk answers a create whose UniqueRequestToken it has seen with RequestError /
    AWS.MechanicalTurk.HitAlreadyExists naming the HIT: publish looks it up with GetHIT, checks it
    carries the item, records it, and creates nothing twice."""
    run, client, stub = stubbed
    plan = _plan(run)
    _stub_balance_and_hit_type(stub, plan)
    first = plan.items[0]
    message = f"There is already a HIT which exists with the same UniqueRequestToken. HITId: {hit_id(0)}"
    stub.add_client_error("create_hit_with_hit_type", service_error_code="RequestError",
                          service_message=message, http_status_code=400,
                          modeled_fields={"Message": message,
                                          "TurkErrorCode": "AWS.MechanicalTurk.HitAlreadyExists"},
                          expected_params=_create_params(run, plan, first))
    stub.add_response("get_hit", {"HIT": {"HITId": hit_id(0), "HITTypeId": HIT_TYPE, "CreationTime": T0,
                                          "Question": f'<input value="{first.item_id}">'}},
                      {"HITId": hit_id(0)})
    for i, item in enumerate(plan.items[1:], start=1):
        stub.add_response("create_hit_with_hit_type", _created(i), _create_params(run, plan, item))
    slept = []
    report = publish(plan, client, sleep=slept.append)
    assert (report.already_existed, report.created_now, report.created_total) == (1, 4, 5)
    assert slept == []                                 # a duplicate is an answer, not a fault
    with Ledger.open(run) as ledger:
        rows = ledger.rows()
    assert [r.hit_id for r in rows] == [hit_id(i) for i in range(5)]
    assert rows[0].attempts == 1 and rows[0].last_error is None
    assert _events(run, first.item_id) == ["create-call", "already-existed"]


def test_duplicate_token_without_hit_id_is_resolved_by_listing(stubbed):
    """The "already been processed" form names no HIT: publish lists this run's HITs (ListHITs,
    paginated) and takes the one whose question carries the item."""
    run, client, stub = stubbed
    plan = _plan(run)
    _stub_balance_and_hit_type(stub, plan)
    first = plan.items[0]
    token = unique_request_token(plan.run_id, first.item_id, "sandbox")
    stub.add_client_error("create_hit_with_hit_type", service_error_code="RequestError",
                          service_message=f'The idempotency token "{token}" has already been processed.',
                          expected_params=_create_params(run, plan, first))
    theirs = {"HITId": hit_id(91), "HITTypeId": HIT_TYPE, "RequesterAnnotation": "cage-eval:other",
              "Question": f'value="{first.item_id}"'}
    mine = {"HITId": hit_id(0), "HITTypeId": HIT_TYPE, "CreationTime": T0,
            "RequesterAnnotation": f"cage-eval:{plan.run_id}", "Question": f'value="{first.item_id}"'}
    stub.add_response("list_hits", {"HITs": [theirs], "NextToken": "n2", "NumResults": 1},
                      {"MaxResults": 100})
    stub.add_response("list_hits", {"HITs": [mine], "NumResults": 1},
                      {"MaxResults": 100, "NextToken": "n2"})
    for i, item in enumerate(plan.items[1:], start=1):
        stub.add_response("create_hit_with_hit_type", _created(i), _create_params(run, plan, item))
    report = publish(plan, client)
    assert (report.already_existed, report.created_now) == (1, 4)
    with Ledger.open(run) as ledger:
        assert ledger.rows()[0].hit_id == hit_id(0)


def test_throttled_create_is_retried_with_the_same_token(stubbed):
    """A ThrottlingException that reaches publish (botocore's own retries spent) is retried after
    a pause with byte-identical parameters, the same UniqueRequestToken included (checked by the
    Stubber's expected_params), so MTurk can never create the HIT twice."""
    run, client, stub = stubbed
    plan = _plan(run)
    _stub_balance_and_hit_type(stub, plan)
    second = plan.items[1]
    params = _create_params(run, plan, second)
    stub.add_response("create_hit_with_hit_type", _created(0), _create_params(run, plan, plan.items[0]))
    for _ in range(2):
        stub.add_client_error("create_hit_with_hit_type", service_error_code="ThrottlingException",
                              service_message="Rate exceeded", http_status_code=400,
                              expected_params=params)
    stub.add_response("create_hit_with_hit_type", _created(1), params)
    for i, item in enumerate(plan.items[2:], start=2):
        stub.add_response("create_hit_with_hit_type", _created(i), _create_params(run, plan, item))
    slept = []
    report = publish(plan, client, sleep=slept.append)
    assert report.created_now == 5 and report.already_existed == 0 and not report.failed
    assert slept == [2.0, 4.0]                           # exponential pauses between the tries
    with Ledger.open(run) as ledger:
        row = ledger.rows()[1]
    assert (row.item_id, row.state, row.hit_id, row.attempts) == (second.item_id, "created",
                                                                 hit_id(1), 3)
    assert row.token == params["UniqueRequestToken"]
    assert _events(run, second.item_id) == ["create-call", "create-failed", "create-call",
                                            "create-failed", "create-call", "created"]


def test_throttling_that_never_ends_stops_with_the_ledger_intact(stubbed):
    """After the outer attempts are spent, publish stops with one error naming what exists; the
    item stays 'creating' (it may exist), so a rerun looks it up before creating anything."""
    from cage_eval.errors import BackendError
    from mturk.ledger import CREATING
    from mturk.publish import OUTER_ATTEMPTS

    run, client, stub = stubbed
    plan = _plan(run)
    _stub_balance_and_hit_type(stub, plan)
    params = _create_params(run, plan, plan.items[0])
    for _ in range(OUTER_ATTEMPTS):
        stub.add_client_error("create_hit_with_hit_type", service_error_code="ThrottlingException",
                              service_message="Rate exceeded", http_status_code=400,
                              expected_params=params)
    slept = []
    with pytest.raises(BackendError, match=r"0 of 5 HITs exist .* rerun the same publish command"):
        publish(plan, client, sleep=slept.append)
    assert len(slept) == OUTER_ATTEMPTS - 1
    with Ledger.open(run) as ledger:
        row = ledger.rows()[0]
    assert (row.state, row.attempts, row.hit_id) == (CREATING, OUTER_ATTEMPTS, None)
    assert row.last_error.startswith("ThrottlingException: Rate exceeded")
