"""Rewards, fees, cost estimates and durations (docs/platforms.md §2.2 and 2.6)."""

from decimal import Decimal

import pytest

from cage_eval.errors import ConfigError
from mturk.costs import estimate_cost, fee_per_assignment, fee_rate, parse_money, parse_reward
from mturk.durations import format_duration, parse_duration


@pytest.mark.parametrize("text, canonical", [("0.05", "0.05"), ("1", "1.00"), ("1.", "1.00"),
                                             ("0.5", "0.50"), ("12.34", "12.34"), (" 0.10 ", "0.10")])
def test_reward_accepts_mturk_pattern(text, canonical):
    assert parse_reward(text) == canonical


@pytest.mark.parametrize("text", ["$0.05", "0.055", "-1", "1e-2", "0,05", "", ".5", "abc", "0.00", "0"])
def test_reward_rejects_what_mturk_would(text):
    with pytest.raises(ConfigError, match="--reward"):
        parse_reward(text)


def test_fee_rates():
    assert fee_rate(3) == Decimal("0.20")
    assert fee_rate(9) == Decimal("0.20")
    assert fee_rate(10) == Decimal("0.40")
    assert fee_rate(3, masters=True) == Decimal("0.25")
    assert fee_rate(12, masters=True) == Decimal("0.45")


def test_minimum_fee_of_one_cent_per_assignment():
    # 20% of $0.03 is $0.006 -> the $0.01 minimum applies; 20% of $0.05 is exactly $0.01.
    assert fee_per_assignment(Decimal("0.03"), 3) == Decimal("0.01")
    assert fee_per_assignment(Decimal("0.05"), 3) == Decimal("0.01")
    assert fee_per_assignment(Decimal("0.50"), 3) == Decimal("0.10")


def test_estimate_matches_closed_form():
    # reward x assignments x HITs x (1 + fee): 0.25 * 3 * 140 * 1.2 = 126
    est = estimate_cost("0.25", 3, 140)
    assert est.total == Decimal("126.00")
    assert est.rewards == Decimal("105.00") and est.fees == Decimal("21.00")
    # 10 assignments: the fee doubles -> 0.25 * 10 * 140 * 1.4 = 490
    assert estimate_cost("0.25", 10, 140).total == Decimal("490.00")
    # Masters adds 5%: 0.20 * 3 * 100 * 1.25 = 75
    assert estimate_cost("0.20", 3, 100, masters=True).total == Decimal("75.00")
    # minimum fee: 0.02 + 0.01 per assignment
    assert estimate_cost("0.02", 3, 10).total == Decimal("0.90")
    assert "$0.01 minimum" in estimate_cost("0.02", 3, 10).describe()


def test_parse_money():
    assert parse_money("25") == Decimal("25")
    assert parse_money("$12.50") == Decimal("12.50")
    for bad in ("-1", "lots", "nan"):
        with pytest.raises(ConfigError, match="--max-cost"):
            parse_money(bad)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("3d", 259200),
                                           ("1w", 604800), ("45", 45), ("365d", 31536000)])
def test_durations(text, seconds):
    assert parse_duration(text, option="--lifetime") == seconds


def test_duration_limits():
    with pytest.raises(ConfigError, match=r"--lifetime '366d' = 31622400 s: outside"):
        parse_duration("366d", option="--lifetime")
    with pytest.raises(ConfigError, match="--duration '29s'"):
        parse_duration("29s", option="--duration")
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("3 days", option="--lifetime")
    assert parse_duration("0", option="--auto-approve", minimum=0, maximum=30 * 86400) == 0
    with pytest.raises(ConfigError, match="--auto-approve"):
        parse_duration("31d", option="--auto-approve", minimum=0, maximum=30 * 86400)
    assert format_duration(259200) == "3d" and format_duration(45) == "45s"
