"""Rewards, MTurk fees and cost estimates (docs/platforms.md §2.6). Pure functions.

Money is handled as :class:`decimal.Decimal` throughout, in US dollars.

Fees: MTurk charges 20% of each reward, 40% when a HIT has 10 or more assignments (the extra 20% is
why cage-eval refuses 10+ unless asked), plus 5% for Masters, and at least $0.01 per assignment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from cage_eval.errors import ConfigError

#: MTurk's own pattern for ``Reward`` (service-2.json ``CurrencyAmount``); botocore does not check it.
REWARD_PATTERN = re.compile(r"^[0-9]+(\.)?[0-9]{0,2}$")

BASE_FEE = Decimal("0.20")
TEN_PLUS_EXTRA_FEE = Decimal("0.20")
MASTERS_EXTRA_FEE = Decimal("0.05")
MINIMUM_FEE = Decimal("0.01")
#: From this many assignments per HIT on, the fee doubles.
TEN_PLUS = 10
CENT = Decimal("0.01")


def parse_reward(text: str) -> str:
    """Validate a reward string and return it in MTurk's canonical form (``"0.05"``).

    Raises
    ------
    ConfigError
        Not a plain dollar amount with at most two decimals (``$0.05``, ``0.055``, ``-1``), or zero.
    """
    text = str(text).strip()
    if not REWARD_PATTERN.match(text):
        raise ConfigError(
            f"--reward {text!r}: not a dollar amount MTurk accepts; write it like 0.05 "
            "(digits, at most two decimals, no $ sign)"
        )
    value = Decimal(text)
    if value <= 0:
        raise ConfigError(f"--reward {text!r}: must be more than 0.00 dollars")
    return str(value.quantize(CENT))


def reward_amount(reward: str) -> Decimal:
    """A validated reward string as a Decimal."""
    try:
        return Decimal(parse_reward(reward))
    except InvalidOperation:  # pragma: no cover - parse_reward already matched the pattern
        raise ConfigError(f"--reward {reward!r}: not a number") from None


def fee_rate(assignments: int, *, masters: bool = False) -> Decimal:
    """MTurk's commission as a fraction of the reward: 0.20, 0.40 for 10+ assignments, +0.05 Masters."""
    rate = BASE_FEE
    if assignments >= TEN_PLUS:
        rate += TEN_PLUS_EXTRA_FEE
    if masters:
        rate += MASTERS_EXTRA_FEE
    return rate


def fee_per_assignment(reward: Decimal, assignments: int, *, masters: bool = False) -> Decimal:
    """The commission on one assignment, at least $0.01, rounded to the cent."""
    fee = (reward * fee_rate(assignments, masters=masters)).quantize(CENT, rounding=ROUND_HALF_UP)
    return max(fee, MINIMUM_FEE)


@dataclass(frozen=True)
class CostEstimate:
    """What a batch of HITs costs if every assignment is approved."""

    reward: Decimal            # per assignment, dollars
    assignments: int           # per HIT
    hits: int
    fee_rate: Decimal          # nominal rate (before the $0.01 minimum)
    fee_per_assignment: Decimal
    masters: bool

    @property
    def per_assignment(self) -> Decimal:
        """Reward plus fee for one assignment."""
        return self.reward + self.fee_per_assignment

    @property
    def rewards(self) -> Decimal:
        """Total paid to workers."""
        return self.reward * self.assignments * self.hits

    @property
    def fees(self) -> Decimal:
        """Total paid to MTurk."""
        return self.fee_per_assignment * self.assignments * self.hits

    @property
    def total(self) -> Decimal:
        """Rewards plus fees."""
        return self.rewards + self.fees

    def describe(self) -> str:
        """One line: ``$0.05 x 3 assignments x 10 HITs x (1 + 20% fee) = $1.80``."""
        minimum = " (the $0.01 minimum fee applies)" if (
            self.reward * self.fee_rate < MINIMUM_FEE) else ""
        return (
            f"${self.reward} x {self.assignments} assignments x {self.hits} HITs x "
            f"(1 + {self.fee_rate * 100:.0f}% fee){minimum} = ${self.total:.2f} "
            f"(rewards ${self.rewards:.2f}, fees ${self.fees:.2f})"
        )


def estimate_cost(reward: str, assignments: int, hits: int, *, masters: bool = False) -> CostEstimate:
    """Cost of ``hits`` HITs with ``assignments`` each at ``reward`` dollars per assignment."""
    if assignments < 1:
        raise ConfigError(f"--assignments {assignments}: must be at least 1")
    if hits < 0:
        raise ValueError(f"hits must be >= 0, got {hits}")
    amount = reward_amount(reward)
    return CostEstimate(
        reward=amount,
        assignments=assignments,
        hits=hits,
        fee_rate=fee_rate(assignments, masters=masters),
        fee_per_assignment=fee_per_assignment(amount, assignments, masters=masters),
        masters=masters,
    )


def parse_money(text: str, *, option: str = "--max-cost") -> Decimal:
    """A non-negative dollar amount such as ``25`` or ``12.50``."""
    try:
        value = Decimal(str(text).strip().lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"{option} {text!r}: not a dollar amount; write it like 25 or 12.50") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{option} {text!r}: must be a non-negative dollar amount")
    return value
