"""Per-minute budgets: whether a 429's retry-after means a spent per-minute counter, and
how long until it refills (the pacing policy, the retry policy and gateway hints agree)."""

from __future__ import annotations

BUDGET_HINT = 10.0
"""A retry-after of this many seconds or more means a spent per-minute budget."""
MINUTE = 60.0
REFILL_MARGIN = 0.25
"""Seconds waited past a window's refill, so the first call lands in the new window."""


def is_minute_budget(retry_after: float | None) -> bool:
    """Whether a 429's retry-after means a per-minute counter (`BUDGET_HINT` to 60 s):
    waited for until the minute refills, however long the retry policy's max_backoff."""
    return retry_after is not None and BUDGET_HINT <= retry_after <= MINUTE + 1.0


def refill_wait(retry_after: float, minute_left: float | None) -> float:
    """Seconds until a spent per-minute budget refills: to the next minute on the wall
    clock (as LiteLLM and most gateways count), never longer than the retry-after."""
    if minute_left is None:
        return retry_after
    return min(retry_after, minute_left + REFILL_MARGIN)
