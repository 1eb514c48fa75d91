"""Pure builders: HIT type and CreateHITWithHITType arguments, qualifications, request tokens."""

import pytest

from cage_eval.errors import ConfigError
from mturk.environments import PRODUCTION, SANDBOX, environment, environment_named
from mturk.hits import (
    LOCALE_QUAL,
    NUMBER_APPROVED_QUAL,
    PERCENT_APPROVED_QUAL,
    HitSettings,
    Qualifications,
    check_token,
    create_hit_args,
    hit_type_args,
    qualification_requirements,
    unique_request_token,
)


def settings(**kw):
    base = dict(reward="0.05", assignments=3, lifetime_s=259200, duration_s=600, auto_approve_s=259200)
    base.update(kw)
    return HitSettings(**base)


def test_environments_differ_where_they_must():
    assert environment() is SANDBOX and environment(False) is PRODUCTION
    assert SANDBOX.masters_qualification_id == "2ARFPLSP75KLA8M8DH1HTEQVJT3SY6"
    assert PRODUCTION.masters_qualification_id == "2F1QJWKUDD8XADTFD2Q0G6UTO95ALH"
    assert SANDBOX.endpoint_url == "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
    assert PRODUCTION.endpoint_url == "https://mturk-requester.us-east-1.amazonaws.com"
    assert SANDBOX.submit_url == "https://workersandbox.mturk.com/mturk/externalSubmit"
    assert PRODUCTION.submit_url == "https://www.mturk.com/mturk/externalSubmit"
    assert SANDBOX.preview_url("3ABC") == "https://workersandbox.mturk.com/mturk/preview?groupId=3ABC"
    assert PRODUCTION.preview_url("3ABC") == "https://www.mturk.com/mturk/preview?groupId=3ABC"
    assert environment_named("production") is PRODUCTION
    with pytest.raises(ConfigError):
        environment_named("live")


def test_production_qualifications():
    q = Qualifications(min_approval=95, min_approved=100, locales=("US", "GB"), masters=True)
    reqs = qualification_requirements(q, PRODUCTION)
    assert [r["QualificationTypeId"] for r in reqs] == [
        PERCENT_APPROVED_QUAL, NUMBER_APPROVED_QUAL, LOCALE_QUAL, PRODUCTION.masters_qualification_id]
    assert reqs[0]["IntegerValues"] == [95] and reqs[0]["Comparator"] == "GreaterThanOrEqualTo"
    assert reqs[2] == {"QualificationTypeId": LOCALE_QUAL, "Comparator": "In",
                       "LocaleValues": [{"Country": "US"}, {"Country": "GB"}],
                       "ActionsGuarded": "DiscoverPreviewAndAccept"}
    one = qualification_requirements(Qualifications(locales=("US",)), PRODUCTION)
    assert one[2]["Comparator"] == "EqualTo"


def test_sandbox_skips_production_only_qualifications_and_uses_its_masters_id():
    q = Qualifications(min_approval=95, min_approved=100, locales=("US",), masters=True)
    reqs = qualification_requirements(q, SANDBOX)
    assert reqs == [{"QualificationTypeId": SANDBOX.masters_qualification_id, "Comparator": "Exists",
                     "ActionsGuarded": "DiscoverPreviewAndAccept"}]
    assert qualification_requirements(Qualifications(), SANDBOX) == []


@pytest.mark.parametrize("kw, match", [
    ({"assignments": 10}, "--allow-10-plus"),
    ({"assignments": 0}, "at least 1"),
    ({"reward": "$1"}, "--reward"),
    ({"lifetime_s": 366 * 86400}, "--lifetime"),
    ({"duration_s": 10}, "--duration"),
    ({"auto_approve_s": 31 * 86400}, "--auto-approve"),
])
def test_settings_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        settings(**kw)


def test_ten_plus_allowed_explicitly():
    assert settings(assignments=12, allow_10_plus=True).assignments == 12


def test_bad_qualifications():
    with pytest.raises(ConfigError, match="--locale 'usa'"):
        Qualifications(locales=("usa",))
    with pytest.raises(ConfigError, match="--min-approval"):
        Qualifications(min_approval=101)


def test_hit_type_args():
    args = hit_type_args(settings(reward="0.1"), PRODUCTION, title="T", description="D", keywords="k")
    assert args["Reward"] == "0.10" and args["AssignmentDurationInSeconds"] == 600
    assert args["AutoApprovalDelayInSeconds"] == 259200
    assert len(args["QualificationRequirements"]) == 3
    assert "QualificationRequirements" not in hit_type_args(settings(), SANDBOX, title="T",
                                                            description="D", keywords="k")


def test_token_is_deterministic_short_and_distinct():
    t = unique_request_token("5e1f0c2a9b7d4e33", "h0123456789abcde", "sandbox")
    assert t == unique_request_token("5e1f0c2a9b7d4e33", "h0123456789abcde", "sandbox")
    assert len(t) <= 64 and t.startswith("cage-eval-")
    assert t != unique_request_token("5e1f0c2a9b7d4e33", "h0123456789abcdf", "sandbox")
    assert t != unique_request_token("5e1f0c2a9b7d4e33", "h0123456789abcde", "production")
    with pytest.raises(ValueError, match="UniqueRequestToken"):
        check_token("x" * 65)
    with pytest.raises(ValueError):
        check_token("")


def test_create_hit_args():
    args = create_hit_args(hit_type_id="3TYPE", settings=settings(), question_xml="<q/>",
                           run_id="abc", token="cage-eval-1")
    assert args == {"HITTypeId": "3TYPE", "MaxAssignments": 3, "LifetimeInSeconds": 259200,
                    "Question": "<q/>", "RequesterAnnotation": "cage-eval:abc",
                    "UniqueRequestToken": "cage-eval-1"}
    with pytest.raises(ConfigError, match="65,535"):
        create_hit_args(hit_type_id="3TYPE", settings=settings(), question_xml="x" * 65536,
                        run_id="abc", token="t")
