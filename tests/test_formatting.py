"""One way to write seconds, money and tokens (issue 15, item 10)."""

from __future__ import annotations

import pytest

from fanfold.formatting import money, seconds, tokens
from fanfold.scheduling.budget import Budget


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0042, "4.2 ms"),
        (0.25, "250 ms"),
        (2.5, "2.50 s"),
        (185.4, "3 min 05 s"),
        (64919.6, "18 h 02 min"),
    ],
)
def test_seconds_read_as_a_person_would_write_them(value, text):
    assert seconds(value) == text


def test_long_runs_are_in_hours_not_a_thousand_minutes():
    assert seconds(64919.6) != "1081 min 59.6 s"


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (0, "$0"),
        (0.0001, "$0.0001"),
        (0.00012, "$0.00012"),
        (0.000012, "$0.000012"),
        (0.0000001, "<$0.000001"),
        (1.23456, "$1.2346"),
        (None, "unknown"),
    ],
)
def test_money_keeps_its_significant_digits_without_trailing_zeros(usd, text):
    assert money(usd) == text


def test_a_budget_refusal_writes_money_like_every_other_view():
    budget = Budget(0.0001)
    refusal = budget.reserve(0.0002)
    assert refusal is not None and "$0.0002 would pass the $0.0001 budget" in refusal
    assert "0.000100" not in refusal


def test_tokens_have_thousands_separators():
    assert tokens(1234567) == "1,234,567"
