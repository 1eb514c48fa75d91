"""The Prolific study of a run: its settings, its request body, and its money.

Money is exact: amounts are integers in the workspace currency's sub-unit (pence, cents), which is
what Prolific's API takes and answers (``reward``, ``total_cost``, a bonus's ``amount``), while
people write major units (``--reward 1.50``, a bonus CSV's ``PID,0.50``). :func:`parse_major`
is the one place that converts, refusing anything that is not a whole number of sub-units.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from cage_eval.errors import ConfigError

#: Prolific's minimum hourly pay per workspace currency (major units per hour).
MINIMUM_HOURLY = {"GBP": Decimal("6.00"), "USD": Decimal("8.00")}
SYMBOLS = {"GBP": "£", "USD": "$"}
#: Prolific's own placeholders, replaced per participant when they open the study.
URL_PARAMETERS = ("PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}"
                  "&SESSION_ID={{%SESSION_ID%}}")
GATEWAY_PATH = "/prolific/start/"
#: Prolific's completion page; participants arrive there with ``?cc=<code>``.
DEFAULT_COMPLETION_PAGE = "https://app.prolific.com/submissions/complete"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEVICES = ("desktop", "tablet", "mobile")
MAX_PLACES = 10_000
_MAJOR = re.compile(r"^\d+(\.\d{1,2})?$")


def parse_major(text: str, *, what: str) -> int:
    """``'1.50'`` -> ``150``: a non-negative amount in major units as whole sub-units.

    Refuses currency symbols, signs, thousands separators and more than two decimals (a third
    decimal would be a fraction of a penny, which Prolific cannot pay).
    """
    value = str(text).strip()
    if not _MAJOR.match(value):
        raise ConfigError(f"{what} {text!r}: write an amount in pounds/dollars with at most two "
                          "decimals, e.g. 1.50 (no currency sign)")
    try:
        minor = Decimal(value) * 100
    except InvalidOperation:
        raise ConfigError(f"{what} {text!r}: not a number") from None
    return int(minor)


def format_minor(minor: int | Decimal, currency: str) -> str:
    """``150, 'GBP'`` -> ``'£1.50'`` (sub-units shown in major units, exactly)."""
    value = (Decimal(minor) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{SYMBOLS.get(currency, currency + ' ')}{value}"


def hourly_wage(reward_minor: int, minutes: int) -> Decimal:
    """Major units per hour for ``reward_minor`` sub-units per ``minutes`` of work."""
    return (Decimal(reward_minor) * 60 / Decimal(minutes) / 100).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP)


def check_wage(reward_minor: int, minutes: int, currency: str, *, allow_below: bool) -> Decimal:
    """The hourly wage the reward implies; :class:`ConfigError` below Prolific's minimum."""
    wage = hourly_wage(reward_minor, minutes)
    floor = MINIMUM_HOURLY[currency]
    if wage < floor and not allow_below:
        need = int((floor * minutes * 100 / 60).to_integral_value(rounding="ROUND_CEILING"))
        raise ConfigError(
            f"--reward {format_minor(reward_minor, currency)} for --minutes {minutes} pays "
            f"{format_minor(wage * 100, currency)}/hour, below Prolific's minimum of "
            f"{format_minor(floor * 100, currency)}/hour; pay at least "
            f"{format_minor(need, currency)} (or pass --allow-low-pay if Prolific agreed)")
    return wage


@dataclass(frozen=True)
class Cost:
    """An estimate in sub-units: rewards, Prolific's fee (with VAT where it applies), total."""

    rewards: int
    fees: int
    currency: str

    @property
    def total(self) -> int:
        return self.rewards + self.fees

    def describe(self) -> str:
        return (f"{format_minor(self.total, self.currency)} (rewards "
                f"{format_minor(self.rewards, self.currency)}, fees "
                f"{format_minor(self.fees, self.currency)})")


def estimate_cost(reward_minor: int, places: int, fee_rate: Decimal, currency: str) -> Cost:
    """``reward x places`` plus ``fee_rate`` of it, rounded up to a whole sub-unit."""
    rewards = reward_minor * places
    fees = int((Decimal(rewards) * fee_rate).to_integral_value(rounding="ROUND_CEILING"))
    return Cost(rewards, fees, currency)


def check_completion_page(url: str) -> str:
    """Prolific's completion page: HTTPS (plain HTTP only on a loopback host, for a local
    stand-in), no query of its own."""
    parts = urlsplit(url.strip())
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)
    if not secure or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"--completion-page {url!r}: Prolific's completion page, e.g. "
                          f"{DEFAULT_COMPLETION_PAGE}")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def completion_url(page: str, code: str) -> str:
    """Where a participant who finished goes: Prolific's completion page with the code."""
    return f"{page}?cc={code}"


def external_url(gateway_url: str) -> str:
    """The study's external URL: the gateway with Prolific's three placeholders."""
    return f"{gateway_url}{GATEWAY_PATH}?{URL_PARAMETERS}"


def check_gateway_url(url: str) -> str:
    """The public base URL of the Turkle server; HTTPS (Prolific participants' browsers will
    refuse to post answers to a plain-HTTP page from an HTTPS study), no path or query."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.path.strip("/"):
        raise ConfigError(f"--public-url {url!r}: give the HTTPS base URL participants reach "
                          "the Turkle server at, e.g. https://study.example.org "
                          "(docs/prolific.md: exposing the server)")
    return f"https://{parts.netloc}"


@dataclass(frozen=True)
class StudySettings:
    """What one run's Prolific study is; frozen into the ledger at the first publish.

    Attributes
    ----------
    name, description : shown to participants on Prolific.
    reward : per place, in sub-units of ``currency``.
    currency : ``GBP`` or ``USD`` (the workspace's; checked against its balance).
    minutes : ``estimated_completion_time``; the wage check divides by it.
    places : ``total_available_places`` (the pilot size; never raised automatically).
    tasks_per_participant : HITs each participant answers before the completion page.
    gateway_url : the HTTPS base URL of the Turkle server.
    completion_page : Prolific's completion page (the code is added as ``?cc=``).
    completion_code : the COMPLETED code (random, made once per run).
    devices : ``device_compatibility``.
    auto_approve : COMPLETED triggers ``AUTOMATICALLY_APPROVE`` instead of ``MANUALLY_REVIEW``.
    filter_set_id : a Prolific filter set (e.g. one excluding earlier participants), or ''.
    project : the Prolific project id to create the study in, or '' (the default project).
    """

    name: str
    description: str
    reward: int
    currency: str
    minutes: int
    places: int
    tasks_per_participant: int
    gateway_url: str
    completion_page: str = DEFAULT_COMPLETION_PAGE
    completion_code: str = ""
    devices: tuple[str, ...] = ("desktop",)
    auto_approve: bool = False
    filter_set_id: str = ""
    project: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.currency not in MINIMUM_HOURLY:
            raise ConfigError(f"--currency {self.currency!r}: Prolific workspaces pay in "
                              f"{' or '.join(MINIMUM_HOURLY)}")
        if self.reward <= 0:
            raise ConfigError("--reward: must be more than 0")
        if not 1 <= self.minutes <= 24 * 60:
            raise ConfigError(f"--minutes {self.minutes}: between 1 and {24 * 60}")
        if not 1 <= self.places <= MAX_PLACES:
            raise ConfigError(f"--places {self.places}: between 1 and {MAX_PLACES}")
        if self.tasks_per_participant < 1:
            raise ConfigError("--tasks-per-participant: at least 1")
        check_completion_page(self.completion_page)
        bad = [d for d in self.devices if d not in DEVICES]
        if bad or not self.devices:
            raise ConfigError(f"--device {bad[0] if bad else ''!r}: one of {', '.join(DEVICES)}")
        if not self.name.strip() or not self.description.strip():
            raise ConfigError("--title and --description must not be empty")

    def record(self) -> dict[str, Any]:
        """The settings as stored in the ledger (JSON)."""
        out = asdict(self)
        out["devices"] = list(self.devices)
        return out

    @property
    def completion_url(self) -> str:
        return completion_url(self.completion_page, self.completion_code)

    @property
    def maximum_minutes(self) -> int:
        """``maximum_allowed_time``: Prolific's own floor (2 + 2t + 2 sqrt t) rounded up,
        at least three times the estimate."""
        t = Decimal(self.minutes)
        floor = 2 + 2 * t + 2 * t.sqrt()
        return max(int(floor.to_integral_value(rounding="ROUND_CEILING")), 3 * self.minutes)


def internal_name(run_id: str) -> str:
    """The study's ``internal_name``: how a rerun finds a study created before a crash."""
    return f"cage-eval:{run_id}"


def study_body(settings: StudySettings, run_id: str) -> dict[str, Any]:
    """The ``POST /api/v1/studies/`` body (field names of Prolific's ``CreateStudy``)."""
    action = "AUTOMATICALLY_APPROVE" if settings.auto_approve else "MANUALLY_REVIEW"
    body: dict[str, Any] = {
        "name": settings.name,
        "internal_name": internal_name(run_id),
        "description": settings.description,
        "external_study_url": external_url(settings.gateway_url),
        "prolific_id_option": "url_parameters",
        "completion_codes": [{"code": settings.completion_code, "code_type": "COMPLETED",
                              "actor": "participant", "actions": [{"action": action}]}],
        "total_available_places": settings.places,
        "estimated_completion_time": settings.minutes,
        "maximum_allowed_time": settings.maximum_minutes,
        "reward": settings.reward,
        "device_compatibility": list(settings.devices),
        "peripheral_requirements": [],
        "metadata": run_id,
    }
    if settings.filter_set_id:
        body["filter_set_id"] = settings.filter_set_id
    else:
        body["filters"] = []
    if settings.project:
        body["project"] = settings.project
    return body
