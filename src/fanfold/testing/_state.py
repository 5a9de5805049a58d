"""The simulated server's mutable state: configuration, hidden limits, draws and request log."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from typing import Any, NamedTuple

from fanfold.testing._config import SimServerConfig
from fanfold.testing._faults import Dice, Fault
from fanfold.testing._limits import TokenBucket


class RequestRecord(NamedTuple):
    """One logged request to ``/v1/chat/completions``."""

    time: float
    """``time.monotonic()`` when the request arrived."""
    prompt: str
    """Text of the last user message ('' if none or the body was unreadable)."""
    outcome: int | str
    """HTTP status answered, or "stall" / "drop" / "malformed"."""
    params: dict[str, Any] = {}
    """The request's settings: its JSON body without `messages` and `tools`."""

    @property
    def max_tokens(self) -> int | None:
        """The request's `max_completion_tokens` or `max_tokens`, if it set one."""
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def _new_bucket(config: SimServerConfig) -> TokenBucket | None:
    if config.rate_limit_rps is None:
        return None
    return TokenBucket(config.rate_limit_rps, config.effective_burst, time.monotonic())


class SimState:
    """Everything requests change, behind one lock (requests run on the server's loop
    thread; tests read counters from others)."""

    def __init__(self, config: SimServerConfig) -> None:
        self.lock = threading.Lock()
        self.config = config
        self.log: list[RequestRecord] = []
        self.seen_prompts: set[str] = set()
        self.tokens = 0
        self.in_flight = 0
        self.admitted = 0
        self.max_in_flight = 0
        self.dice = Dice(config.seed)
        self.bucket = _new_bucket(config)
        self.ids = itertools.count(1)

    def update(self, **knobs: Any) -> SimServerConfig:
        """Validate and apply new knobs; a new seed restarts the draws, a new rate limit
        refills the bucket."""
        with self.lock:
            old = self.config
            new = SimServerConfig.model_validate({**old.model_dump(), **knobs})
            if new.seed != old.seed:
                self.dice = Dice(new.seed)
            if (new.rate_limit_rps, new.effective_burst) != (
                old.rate_limit_rps,
                old.effective_burst,
            ):
                self.bucket = _new_bucket(new)
            self.config = new
            return new

    def reset(self) -> None:
        """Clear the log, counters and first-attempt memory; refill the token bucket; draw
        latencies and faults from the seed's start again (runs after a reset see the same ones)."""
        with self.lock:
            self.log.clear()
            self.seen_prompts.clear()
            self.tokens = 0
            self.max_in_flight = self.in_flight
            self.bucket = _new_bucket(self.config)
            self.dice = Dice(self.config.seed)

    def record(self, arrived: float, prompt: str, outcome: int | str, body: Any = None) -> None:
        """Log one chat request's outcome (and its settings, from ``body``)."""
        params = (
            {k: v for k, v in body.items() if k not in ("messages", "tools")}
            if isinstance(body, dict)
            else {}
        )
        with self.lock:
            self.log.append(RequestRecord(arrived, prompt, outcome, params))

    def enter(self) -> None:
        """A chat request is being handled."""
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        """A chat request has been answered."""
        with self.lock:
            self.in_flight -= 1

    def admit(self, config: SimServerConfig, now: float) -> int | None:
        """Apply the hidden limits; returns None if admitted (call ``release`` when done),
        else the retry-after in ms."""
        with self.lock:
            limit = config.rate_limit_concurrency
            if limit is not None and self.admitted >= limit:
                expected = config.latency_median or config.latency
                return config.retry_after_ms or max(1, math.ceil(expected * 1000))
            if self.bucket is not None:
                wait = self.bucket.take(now)
                if wait > 0:
                    return config.retry_after_ms or max(1, math.ceil(wait * 1000))
            self.admitted += 1
            return None

    def release(self) -> None:
        """An admitted request is done."""
        with self.lock:
            self.admitted -= 1

    def draw(self, config: SimServerConfig, prompt: str) -> tuple[Fault | None, float]:
        """The fault (if any) and latency of one admitted request."""
        with self.lock:
            first_attempt = prompt not in self.seen_prompts
            self.seen_prompts.add(prompt)
            fault = None
            if first_attempt or not config.fault_first_attempts_only:
                fault = self.dice.fault(config)
            return fault, self.dice.latency(config)

    def add_tokens(self, count: int) -> None:
        """Count the tokens of a reply sent."""
        with self.lock:
            self.tokens += count

    def next_id(self) -> str:
        """A fresh completion id."""
        with self.lock:
            return f"chatcmpl-sim{next(self.ids)}"

    def stats(self) -> dict[str, Any]:
        """Requests, outcomes, tokens and concurrency so far, as ``/stats`` serves them."""
        with self.lock:
            outcomes = Counter(str(record.outcome) for record in self.log)
            return {
                "requests": len(self.log),
                "statuses": dict(sorted(outcomes.items())),
                "tokens": self.tokens,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }
