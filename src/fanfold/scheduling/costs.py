"""Prices, token estimates, the budget and plan estimates (kept for older imports).

Each lives in its own module now: `fanfold.scheduling.prices`, `.tokens`, `.budget`
and `.estimate`.
"""

from __future__ import annotations

from fanfold.scheduling.budget import Budget, BudgetError, UnknownPriceError, check_budget
from fanfold.scheduling.estimate import CallEstimate, PlanEstimate, estimate_plan
from fanfold.scheduling.prices import (
    DEFAULT_PRICES,
    Price,
    PriceError,
    PriceTable,
    format_usd,
    load_prices,
    price_table,
)
from fanfold.scheduling.priorities import DEFAULT_CALL_SECONDS
from fanfold.scheduling.tokens import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    aggregate_input_tokens,
    messages_tokens,
    output_tokens,
    text_tokens,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_CALL_SECONDS",
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_PRICES",
    "Budget",
    "BudgetError",
    "CallEstimate",
    "PlanEstimate",
    "Price",
    "PriceError",
    "PriceTable",
    "UnknownPriceError",
    "aggregate_input_tokens",
    "check_budget",
    "estimate_plan",
    "format_usd",
    "load_prices",
    "messages_tokens",
    "output_tokens",
    "price_table",
    "text_tokens",
]
