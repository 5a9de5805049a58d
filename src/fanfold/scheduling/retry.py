"""The one retry layer: which errors are transient, and how long to wait before retrying.

Provider SDK retries are switched off for models fanfold creates, and LangGraph's node
RetryPolicy is not used, so a call is attempted at most `max_attempts` times in all.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from fanfold.scheduling.minute_budget import is_minute_budget, refill_wait

TRANSIENT_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a subtask's call is retried.

    Args:
        max_attempts: attempts per subtask, the first included (a subtask's own
            `max_attempts` overrides it).
        initial_backoff: seconds before the second attempt, doubled each time.
        max_backoff: upper bound for one wait (also caps a server's Retry-After).
        jitter: random fraction added to or taken from each wait.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.25
    max_backoff: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(self.max_backoff, max(0.0, retry_after)) * random.uniform(1.0, 1.2)
        base = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))

    def wait(
        self, attempt: int, retry_after: float | None, *, minute_left: float | None = None
    ) -> float | None:
        """Seconds before the next attempt; None when the provider asks for longer than
        `max_backoff`. A per-minute budget (a retry-after of 10 to 60 s) is waited for
        until the minute refills (`minute_left`: seconds to the next wall-clock minute)."""
        if is_minute_budget(retry_after):
            assert retry_after is not None
            return refill_wait(retry_after, minute_left)
        if retry_after is not None and retry_after > self.max_backoff:
            return None
        return self.backoff(attempt, retry_after)


@dataclass(frozen=True)
class Failure:
    """What an exception means for retrying."""

    transient: bool
    status: int | None = None
    retry_after: float | None = None

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


def classify(exc: BaseException, _depth: int = 0) -> Failure:
    """Decide whether `exc` is worth retrying and what the server asked for."""
    status = _status_of(exc)
    # Only an error status is a verdict: langchain_openai attaches the (200) response to
    # errors raised while parsing it, such as a truncated JSON body.
    if status is not None and status >= 400:
        transient = status in TRANSIENT_STATUS or status >= 500
        return Failure(transient, status, _retry_after(exc) if transient else None)
    if isinstance(exc, TimeoutError | ConnectionError):
        return Failure(True)
    if isinstance(exc, json.JSONDecodeError):
        # A reply cut off mid-body fails to parse inside the SDK: worth another try. The
        # same error raised by a node kind's own code is a verdict on its input.
        return Failure(_raised_in_sdk(exc))
    name = type(exc).__name__
    module = type(exc).__module__
    # SDK and transport errors, matched by name so no provider package is imported.
    if module.startswith(("openai", "httpx", "httpcore", "anthropic", "aiohttp")) and any(
        word in name
        for word in (
            "Connection",
            "Timeout",
            "Protocol",
            "Network",
            "ReadError",
            "WriteError",
            "ResponseValidation",
            "Decode",
        )
    ):
        return Failure(True)
    # Only an explicit `raise ... from cause` (how SDKs wrap transport errors) passes the
    # verdict on; an error raised while handling another one is a new error.
    cause = exc.__cause__
    if cause is not None and cause is not exc and _depth < 4:
        return classify(cause, _depth + 1)
    return Failure(False)


_SDK_MODULES = ("openai", "httpx", "httpx2", "httpcore", "langchain_openai", "anthropic", "aiohttp")


def is_timeout(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a request that timed out."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError) or "timeout" in type(seen).__name__.lower():
            return True
        seen = seen.__cause__
    return False


def _raised_in_sdk(exc: BaseException) -> bool:
    """Whether the innermost frame that raised `exc` belongs to a provider SDK or transport."""
    tb = exc.__traceback__
    module = ""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    if module.startswith("json"):
        # json's own frames sit innermost; look at who called json.
        tb, caller = exc.__traceback__, ""
        while tb is not None:
            name = str(tb.tb_frame.f_globals.get("__name__", ""))
            if not name.startswith("json"):
                caller = name
            tb = tb.tb_next
        module = caller
    return module.split(".", 1)[0] in _SDK_MODULES


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


RETRY_AFTER_PREFIXES = ("", "llm_provider-")
"""Where a retry-after may come: the server's own header, or a provider's as LiteLLM
forwards it (`llm_provider-retry-after`)."""


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait, or None.

    Read from `retry-after-ms`, else `Retry-After`, else LiteLLM's forwarded
    `llm_provider-retry-after-ms` and `llm_provider-retry-after`. A value that is not a
    number of (milli)seconds or an HTTP date counts as absent.
    """
    headers: Any = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    for prefix in RETRY_AFTER_PREFIXES:
        try:
            ms = headers.get(f"{prefix}retry-after-ms")
            value = headers.get(f"{prefix}retry-after")
        except (TypeError, ValueError, AttributeError):
            return None
        seconds = _number(ms)
        if seconds is not None:
            return seconds / 1000.0
        seconds = retry_after_seconds(value)
        if seconds is not None:
            return seconds
    return None


def retry_after_seconds(value: Any) -> float | None:
    """A `Retry-After` value (seconds or an HTTP date) in seconds from now; None if invalid."""
    seconds = _number(value)
    if seconds is not None or not isinstance(value, str):
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return max(0.0, parsed.timestamp() - time.time())
    except (OverflowError, OSError, ValueError):
        return None


def _number(value: Any) -> float | None:
    """A finite, non-negative number given as text, or None."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
