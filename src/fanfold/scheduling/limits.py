"""Rate limits shared by every subtask of a run and, by default, by every run in the process.

`RateLimiter` combines three limits:

* a concurrency cap whose free slots go to the highest-priority waiter first;
* pacing to `requests_per_second` (and a `tokens_per_minute` budget when the provider
  states one);
* adaptation when the real limit is unknown: a 429 sets the pace to the success rate
  just measured (a little under it), and every success raises the pace a little, so
  throughput settles near the provider's limit without a storm of 429s.

It is thread-safe and may be shared by runs on different event loops (synchronous runs
dispatch on a background loop).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

_SHARED: dict[tuple[Any, ...], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


Priority = float | tuple[float, ...]


def _negate(priority: Priority) -> tuple[float, ...]:
    values = priority if isinstance(priority, tuple) else (priority,)
    return tuple(-v for v in values)


@dataclass(order=True)
class _Waiter:
    key: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)
    granted: bool = field(default=False, compare=False)


class RateLimiter:
    """Concurrency, request-rate and token-rate limits with adaptive pacing.

    Args:
        max_concurrency: most calls in flight (None: no cap).
        requests_per_second: a known request-rate limit (None: unknown).
        tokens_per_minute: a known token-rate limit (None: unknown).
        adaptive: learn the rate from 429s when the limit is unknown or lower than stated.
    """

    SUCCESS_WINDOW = 2.0
    """Seconds of successes used to measure the rate the provider is sustaining."""
    DECREASE = 0.9
    """After a 429, pace at this fraction of the measured success rate."""
    INCREASE = 0.02
    """Requests per second added to the pace per successful call."""
    INITIAL_WINDOW = 32
    """Slow start: calls in flight before any feedback when no limit at all is known."""
    MAX_WINDOW = 1024
    """The slow-start window is dropped once this many calls may be in flight."""

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, not {requests_per_second}")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise ValueError(f"tokens_per_minute must be positive, not {tokens_per_minute}")
        self.max_concurrency = max_concurrency
        self.requests_per_second = requests_per_second
        self.tokens_per_minute = tokens_per_minute
        self.adaptive = adaptive
        self.rate: float | None = requests_per_second
        self.active = 0
        self.rate_limited = 0
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._next_slot_time = 0.0
        self._last_start = 0.0
        self._successes: collections.deque[float] = collections.deque()
        self._last_decrease = 0.0
        self._tokens = float(tokens_per_minute or 0.0)
        self._tokens_at = time.monotonic()
        # Slow start when nothing bounds the first wave: the window grows by one per
        # success (doubling every round trip) and is dropped at the first 429, when the
        # pace takes over, so a hidden limit costs a few 429s, not one per ready call.
        unbounded = max_concurrency is None and requests_per_second is None
        self._window: float | None = float(self.INITIAL_WINDOW) if adaptive and unbounded else None

    @classmethod
    def shared(cls, key: Any, **limits: Any) -> RateLimiter:
        """The process-wide limiter for `key` (an endpoint) and these limits."""
        full_key = (key, tuple(sorted(limits.items())))
        with _SHARED_LOCK:
            limiter = _SHARED.get(full_key)
            if limiter is None:
                limiter = _SHARED[full_key] = cls(**limits)
            return limiter

    # -- acquiring --------------------------------------------------------------------

    async def acquire(self, priority: Priority = 0.0, *, tokens: int = 0) -> None:
        """Wait for a concurrency slot, then for the pace; higher `priority` goes first."""
        await self._take_slot(priority)
        try:
            await self._pace(tokens)
        except BaseException:
            self.release()
            raise

    async def _take_slot(self, priority: Priority) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            cap = self._cap()
            if cap is None or (self.active < cap and not self._waiters):
                self.active += 1
                return
            waiter = _Waiter((_negate(priority), next(self._seq)), loop, loop.create_future())
            heapq.heappush(self._waiters, waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    waiter.granted = True  # mark dead so release() skips it
            if granted:
                self.release()
            raise

    async def _pace(self, tokens: int) -> None:
        delay = 0.0
        with self._lock:
            now = time.monotonic()
            if self.rate is not None:
                start = max(now, self._next_slot_time)
                self._next_slot_time = start + 1.0 / self.rate
                delay = start - now
            if self.tokens_per_minute is not None and tokens:
                per_second = self.tokens_per_minute / 60.0
                self._tokens = min(
                    self.tokens_per_minute, self._tokens + (now - self._tokens_at) * per_second
                )
                self._tokens_at = now
                self._tokens -= tokens
                if self._tokens < 0:
                    delay = max(delay, -self._tokens / per_second)
        if delay > 0:
            await asyncio.sleep(delay)
        if self.rate is not None:
            await self._space_from_last_start()

    async def _space_from_last_start(self) -> None:
        """Keep starts at least one interval apart, even after a stalled event loop.

        Waiters whose slots all passed during a stall would otherwise start together, a
        burst a provider answers with 429s; they start one interval after another instead.
        """
        with self._lock:
            now = time.monotonic()
            rate = self.rate
            wait = self._last_start + 1.0 / rate - now if rate else 0.0
            # A little early is the jitter of on-time sleepers, not a burst.
            if wait <= 0.1 / rate if rate else True:
                self._last_start = now
                return
            self._last_start = now + wait
        await asyncio.sleep(wait)

    def release(self) -> None:
        """Free a concurrency slot, handing it to the best live waiter."""
        with self._lock:
            self.active = max(0, self.active - 1)
            self._grant_free()

    def _cap(self) -> float | None:
        """The concurrency in effect: max_concurrency and the slow-start window (lock held)."""
        caps = [c for c in (self.max_concurrency, self._window) if c is not None]
        return min(caps) if caps else None

    def _grant_free(self) -> None:
        """Hand free slots to the best live waiters (lock held)."""
        cap = self._cap()
        while self._waiters and (cap is None or self.active < cap):
            waiter = heapq.heappop(self._waiters)
            if waiter.granted or waiter.future.done() or waiter.loop.is_closed():
                continue
            waiter.granted = True
            self.active += 1
            waiter.loop.call_soon_threadsafe(_grant, waiter.future)

    # -- feedback ---------------------------------------------------------------------

    def record_success(self, tokens: int = 0) -> None:
        """A call succeeded: remember it and probe the pace upward."""
        with self._lock:
            now = time.monotonic()
            self._successes.append(now)
            self._trim(now)
            if self._window is not None:
                self._window += 1
                if self._window >= self.MAX_WINDOW:
                    self._window = None
                self._grant_free()
            if self.rate is not None and self.adaptive:
                self.rate += self.INCREASE
                if self.requests_per_second is not None:
                    self.rate = min(self.rate, self.requests_per_second)

    def record_rate_limited(
        self, retry_after: float | None = None, *, max_pause: float | None = None
    ) -> None:
        """The provider answered 429: slow the pace to just under what it sustained.

        `retry_after` pauses every call for that long, at most `max_pause` seconds.
        """
        if retry_after is not None and max_pause is not None:
            retry_after = min(retry_after, max_pause)
        with self._lock:
            self.rate_limited += 1
            if not self.adaptive:
                return
            if self._window is not None:
                self._window = None  # the pace decides from now on
                self._grant_free()
            now = time.monotonic()
            self._trim(now)
            if now - self._last_decrease < 0.5:
                return  # one decrease per burst of 429s
            self._last_decrease = now
            span = min(self.SUCCESS_WINDOW, now - self._successes[0]) if self._successes else 0
            measured = len(self._successes) / span if span > 0.05 else None
            current = self.rate if self.rate is not None else measured
            if measured is not None and current is not None:
                target = min(current, measured) * self.DECREASE
            elif current is not None:
                target = current * 0.5
            elif retry_after:
                # Cold start: nothing sent has come back yet. The server's retry-after is
                # the spacing it asks for, a far better first pace than 1 request/s.
                target = 1.0 / retry_after
            else:
                target = 1.0
            self.rate = max(0.5, target)
            if retry_after:
                self._next_slot_time = max(self._next_slot_time, now + retry_after)

    def _trim(self, now: float) -> None:
        while self._successes and now - self._successes[0] > self.SUCCESS_WINDOW:
            self._successes.popleft()

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        with self._lock:
            return sum(1 for w in self._waiters if not w.granted)


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
