"""MTurk environment profiles: sandbox (the default) and production.

Everything that differs between the two lives here, once (docs/platforms.md §2.1 and §2.7):
the requester API endpoint, the worker-side form submit URL, the worker preview URL, the requester
website and the Masters qualification type ID. A ledger records the environment it was made in and
refuses the other one (:mod:`mturk.ledger`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cage_eval.errors import ConfigError

#: MTurk's requester API lives in us-east-1 only, in both environments.
REGION = "us-east-1"


@dataclass(frozen=True)
class Environment:
    """One MTurk environment and its URLs and IDs."""

    name: str
    endpoint_url: str
    submit_url: str
    preview_url_template: str
    requester_url: str
    masters_qualification_id: str
    #: The worker qualifications (approval rate, approved-HIT count, locale) that only make sense
    #: in production: sandbox worker accounts have no work history and usually fail them.
    apply_worker_history_qualifications: bool

    @property
    def is_production(self) -> bool:
        """True for the environment that spends real money."""
        return self.name == "production"

    def preview_url(self, hit_type_id: str) -> str:
        """The worker-site page that previews the HITs of one HIT type."""
        return self.preview_url_template.format(hit_type_id=hit_type_id)


SANDBOX = Environment(
    name="sandbox",
    endpoint_url="https://mturk-requester-sandbox.us-east-1.amazonaws.com",
    submit_url="https://workersandbox.mturk.com/mturk/externalSubmit",
    preview_url_template="https://workersandbox.mturk.com/mturk/preview?groupId={hit_type_id}",
    requester_url="https://requestersandbox.mturk.com",
    masters_qualification_id="2ARFPLSP75KLA8M8DH1HTEQVJT3SY6",
    apply_worker_history_qualifications=False,
)

PRODUCTION = Environment(
    name="production",
    endpoint_url="https://mturk-requester.us-east-1.amazonaws.com",
    submit_url="https://www.mturk.com/mturk/externalSubmit",
    preview_url_template="https://www.mturk.com/mturk/preview?groupId={hit_type_id}",
    requester_url="https://requester.mturk.com",
    masters_qualification_id="2F1QJWKUDD8XADTFD2Q0G6UTO95ALH",
    apply_worker_history_qualifications=True,
)

ENVIRONMENTS = {env.name: env for env in (SANDBOX, PRODUCTION)}


def environment(sandbox: bool = True) -> Environment:
    """The sandbox profile unless ``sandbox`` is False."""
    return SANDBOX if sandbox else PRODUCTION


def environment_named(name: str) -> Environment:
    """Look an environment up by the name a ledger records (``sandbox`` / ``production``)."""
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown MTurk environment {name!r}; expected one of {', '.join(ENVIRONMENTS)}"
        ) from None
