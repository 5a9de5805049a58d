"""What a gateway or provider says about a reply: its cost and the requests left.

Read from the reply's response headers (a ChatOpenAI made by fanfold asks for them;
`include_response_headers=True` on your own) and its OpenAI-compatible `usage`:

* the call's cost: LiteLLM's `x-litellm-response-cost` header, else `usage.cost`
  (OpenRouter and other OpenAI-compatible gateways). It comes ahead of the price table.
* the requests left in the provider's current window: `x-ratelimit-remaining-requests`,
  refilled after `x-ratelimit-reset-requests` ("1m0s", "6ms") or, when that is not
  said (LiteLLM), at the next minute on the wall clock.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fanfold.scheduling.minute_budget import MINUTE, REFILL_MARGIN

COST_HEADER = "x-litellm-response-cost"
REMAINING_HEADER = "x-ratelimit-remaining-requests"
RESET_HEADER = "x-ratelimit-reset-requests"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class ReplyReport:
    """What one reply said about itself (None: not said)."""

    cost: float | None = None
    """USD the gateway says the call cost."""
    remaining_requests: int | None = None
    """Requests left in the provider's current window."""
    reset_requests: float | None = None
    """Seconds until that window refills, when the provider says."""

    def refill_in(self, started: float, now: float | None = None) -> float | None:
        """Seconds until the window of `remaining_requests` refills (None: unknown).

        Without a reset header the window is the wall clock's minute (LiteLLM's count);
        a reply to a call started (`started`, Unix time) in an earlier minute counts
        nothing of this one.
        """
        if self.remaining_requests is None:
            return None
        if self.reset_requests is not None:
            return self.reset_requests
        now = time.time() if now is None else now
        if started // MINUTE != now // MINUTE:
            return None
        return MINUTE - now % MINUTE + REFILL_MARGIN


NOTHING_SAID = ReplyReport()
"""The report of a reply that said nothing of itself (shared: reports are frozen)."""


def read_report(headers: Mapping[str, Any] | None, usage: Mapping[str, Any] | None) -> ReplyReport:
    """The report in a reply's response headers and its raw `usage` mapping."""
    if not headers and not (usage and "cost" in usage):
        return NOTHING_SAID
    lowered = {str(k).lower(): v for k, v in (headers or {}).items()}
    cost = _number(lowered.get(COST_HEADER))
    if cost is None and usage:
        cost = _number(usage.get("cost"))
    remaining = _number(lowered.get(REMAINING_HEADER), negative=True)
    return ReplyReport(
        cost=cost,
        remaining_requests=None if remaining is None else max(0, int(remaining)),
        reset_requests=_duration(lowered.get(RESET_HEADER)),
    )


def report_of(message: Any) -> ReplyReport:
    """The report in a LangChain reply's `response_metadata` (headers, token_usage)."""
    metadata = getattr(message, "response_metadata", None)
    if not isinstance(metadata, Mapping):
        return NOTHING_SAID
    headers = metadata.get("headers")
    usage = metadata.get("token_usage")
    return read_report(
        headers if isinstance(headers, Mapping) else None,
        usage if isinstance(usage, Mapping) else None,
    )


def _number(value: Any, *, negative: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or (number < 0 and not negative):
        return None
    return number


def _duration(value: Any) -> float | None:
    """Seconds in "1m0s", "6ms", "0.5s" or a plain number of seconds; None if invalid."""
    plain = _number(value)
    if plain is not None or not isinstance(value, str):
        return plain
    text = value.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)
