"""Pure builders for the MTurk calls that create HITs (docs/platforms.md §2.2, §2.5, §2.7).

Nothing here talks to AWS: each function returns the keyword arguments of one boto3 call, checked
locally against the rules botocore does not enforce (``Reward`` pattern, token length, ranges).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from cage_eval.errors import ConfigError
from cage_eval.runs import REQUESTER_ANNOTATION_PREFIX
from mturk.costs import TEN_PLUS, parse_reward
from mturk.durations import MAX_AUTO_APPROVAL_S, MAX_DURATION_S, MIN_DURATION_S
from mturk.environments import Environment

#: Built-in qualification type IDs, the same in both environments (section 2.7).
PERCENT_APPROVED_QUAL = "000000000000000000L0"
NUMBER_APPROVED_QUAL = "00000000000000000040"
LOCALE_QUAL = "00000000000000000071"
#: MTurk allows at most 10 qualification requirements per HIT and 30 locales with ``In``.
MAX_QUALIFICATIONS = 10
MAX_LOCALES = 30

#: ``UniqueRequestToken``: 1..64 characters (service-2.json ``IdempotencyToken``).
MAX_TOKEN_LENGTH = 64
_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_HIT_TYPE_ID = re.compile(r"^[A-Z0-9]{1,64}$")
TOKEN_PREFIX = "cage-eval-"


@dataclass(frozen=True)
class Qualifications:
    """Who may work on the HITs. ``None``/empty disables a requirement."""

    min_approval: int | None = 95          # Worker_PercentAssignmentsApproved >= this
    min_approved: int | None = 100         # Worker_NumberHITsApproved >= this
    locales: tuple[str, ...] = ("US",)     # ISO 3166 country codes
    masters: bool = False

    def __post_init__(self) -> None:
        if self.min_approval is not None and not 0 <= self.min_approval <= 100:
            raise ConfigError(f"--min-approval {self.min_approval}: expected a percentage 0..100")
        if self.min_approved is not None and self.min_approved < 0:
            raise ConfigError(f"--min-approved {self.min_approved}: expected a count >= 0")
        if len(self.locales) > MAX_LOCALES:
            raise ConfigError(f"--locale given {len(self.locales)} times; MTurk allows at most {MAX_LOCALES}")
        for code in self.locales:
            if not _COUNTRY.match(code):
                raise ConfigError(f"--locale {code!r}: expected a two-letter ISO 3166 country code like US")


@dataclass(frozen=True)
class HitSettings:
    """Everything about the HITs that the user chooses explicitly (all times in seconds)."""

    reward: str                      # canonical dollars, e.g. "0.05"
    assignments: int
    lifetime_s: int
    duration_s: int
    auto_approve_s: int
    qualifications: Qualifications = field(default_factory=Qualifications)
    allow_10_plus: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "reward", parse_reward(self.reward))
        if self.assignments < 1:
            raise ConfigError(f"--assignments {self.assignments}: must be at least 1")
        if self.assignments >= TEN_PLUS and not self.allow_10_plus:
            raise ConfigError(
                f"--assignments {self.assignments}: 10 or more assignments per HIT double MTurk's fee "
                "(20% -> 40%); use at most 9, or pass --allow-10-plus to accept the higher fee"
            )
        for option, value, low, high in (
            ("--lifetime", self.lifetime_s, MIN_DURATION_S, MAX_DURATION_S),
            ("--duration", self.duration_s, MIN_DURATION_S, MAX_DURATION_S),
            ("--auto-approve", self.auto_approve_s, 0, MAX_AUTO_APPROVAL_S),
        ):
            if not low <= value <= high:
                raise ConfigError(f"{option} {value} s: outside MTurk's range {low}..{high} s")

    def as_record(self) -> dict[str, Any]:
        """A JSON-able record of the settings (stored in the ledger to keep reruns consistent)."""
        q = self.qualifications
        return {
            "reward": self.reward,
            "assignments": self.assignments,
            "lifetime_s": self.lifetime_s,
            "duration_s": self.duration_s,
            "auto_approve_s": self.auto_approve_s,
            "min_approval": q.min_approval,
            "min_approved": q.min_approved,
            "locales": list(q.locales),
            "masters": q.masters,
        }


def qualification_requirements(quals: Qualifications, env: Environment) -> list[dict[str, Any]]:
    """``QualificationRequirements`` for ``env``.

    The worker-history requirements (approval rate, approved-HIT count, locale) are production-only:
    in the sandbox they are skipped, because sandbox worker accounts have no history and would be
    locked out. Masters uses the environment's own qualification type ID.
    """
    reqs: list[dict[str, Any]] = []
    guarded = "DiscoverPreviewAndAccept"
    if env.apply_worker_history_qualifications:
        if quals.min_approval is not None:
            reqs.append({"QualificationTypeId": PERCENT_APPROVED_QUAL,
                         "Comparator": "GreaterThanOrEqualTo",
                         "IntegerValues": [quals.min_approval], "ActionsGuarded": guarded})
        if quals.min_approved is not None:
            reqs.append({"QualificationTypeId": NUMBER_APPROVED_QUAL,
                         "Comparator": "GreaterThanOrEqualTo",
                         "IntegerValues": [quals.min_approved], "ActionsGuarded": guarded})
        if quals.locales:
            locales = [{"Country": code} for code in quals.locales]
            if len(locales) == 1:
                reqs.append({"QualificationTypeId": LOCALE_QUAL, "Comparator": "EqualTo",
                             "LocaleValues": locales, "ActionsGuarded": guarded})
            else:
                reqs.append({"QualificationTypeId": LOCALE_QUAL, "Comparator": "In",
                             "LocaleValues": locales, "ActionsGuarded": guarded})
    if quals.masters:
        reqs.append({"QualificationTypeId": env.masters_qualification_id, "Comparator": "Exists",
                     "ActionsGuarded": guarded})
    if len(reqs) > MAX_QUALIFICATIONS:  # pragma: no cover - at most 4 are ever built
        raise ConfigError(f"{len(reqs)} qualification requirements; MTurk allows {MAX_QUALIFICATIONS}")
    return reqs


def hit_type_args(settings: HitSettings, env: Environment, *, title: str, description: str,
                  keywords: str) -> dict[str, Any]:
    """Keyword arguments of ``create_hit_type``."""
    if not title.strip() or not description.strip():
        raise ConfigError("the HIT title and description must not be empty; check the domain texts")
    args: dict[str, Any] = {
        "AutoApprovalDelayInSeconds": settings.auto_approve_s,
        "AssignmentDurationInSeconds": settings.duration_s,
        "Reward": settings.reward,
        "Title": title,
        "Keywords": keywords,
        "Description": description,
    }
    reqs = qualification_requirements(settings.qualifications, env)
    if reqs:
        args["QualificationRequirements"] = reqs
    return args


def requester_annotation(run_id: str) -> str:
    """``RequesterAnnotation`` of every HIT of a run: ``cage-eval:<run_id>``."""
    return f"{REQUESTER_ANNOTATION_PREFIX}{run_id}"


def unique_request_token(run_id: str, item_id: str, environment_name: str) -> str:
    """The deterministic ``UniqueRequestToken`` of one HIT item (``cage-eval-`` + 48 hex digits).

    Deterministic in (environment, run, item), so a retried or rerun create call is recognised by
    MTurk as the same request for 24 hours; the ledger guards beyond that.
    """
    digest = hashlib.sha256(f"{environment_name}|{run_id}|{item_id}".encode()).hexdigest()
    return check_token(TOKEN_PREFIX + digest[:48])


def check_token(token: str) -> str:
    """Validate a ``UniqueRequestToken`` locally (botocore does not check the 64-character limit)."""
    if not _TOKEN.match(token):
        raise ValueError(
            f"UniqueRequestToken {token!r}: must be 1..{MAX_TOKEN_LENGTH} characters of "
            "[A-Za-z0-9._:-]"
        )
    return token


def create_hit_args(*, hit_type_id: str, settings: HitSettings, question_xml: str, run_id: str,
                    token: str) -> dict[str, Any]:
    """Keyword arguments of ``create_hit_with_hit_type`` for one item."""
    if not _HIT_TYPE_ID.match(hit_type_id):
        raise ValueError(f"HITTypeId {hit_type_id!r}: expected 1..64 of [A-Z0-9]")
    if len(question_xml.encode("utf-8")) > 65535:
        raise ConfigError(
            f"the question XML is {len(question_xml.encode('utf-8'))} bytes; MTurk allows 65,535. "
            "Use --images s3 instead of inline data URIs"
        )
    return {
        "HITTypeId": hit_type_id,
        "MaxAssignments": settings.assignments,
        "LifetimeInSeconds": settings.lifetime_s,
        "Question": question_xml,
        "RequesterAnnotation": requester_annotation(run_id),
        "UniqueRequestToken": check_token(token),
    }
