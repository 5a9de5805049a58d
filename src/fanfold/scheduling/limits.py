"""Rate limits shared by every subtask of a run and, by default, by every run in the process.

`RateLimiter` applies the pacing policy (`fanfold.scheduling.pacing`) to a state in
memory:

* a concurrency cap (the stated `max_concurrency` and the learned window) whose free
  slots go to the highest-priority waiter first;
* starts at the pace (a stated `requests_per_second`, or the learned one) and within
  a `tokens_per_minute` budget; the next start is worked out from the last one at the
  pace in effect when it comes, so a pace that rises applies to calls already waiting;
* adaptation from 429s and successes when the real limits are unknown (see the policy).

`Limiter` is what the dispatcher needs of a limiter; `SharedRateLimiter` (limits
shared across processes) is the other one.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fanfold.scheduling.pacing import SAME_BURST, PaceLimits, PaceState

_SHARED: dict[tuple[Any, ...], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


Priority = float | tuple[float, ...]


def priority_key(priority: Priority) -> tuple[float, ...]:
    """The heap key of a priority: higher priorities sort first."""
    values = priority if isinstance(priority, tuple) else (priority,)
    return tuple(-v for v in values)


@dataclass(frozen=True)
class Permit:
    """One call's right to run: handed back to `release` and the `record_*` methods."""

    seq: int
    """The call's sequence number (starts granted before it, plus one)."""
    in_flight: int
    """Calls in flight when it started, itself not counted."""
    started: float
    """time.monotonic() at its start."""


@runtime_checkable
class Limiter(Protocol):
    """What the dispatcher needs of a limiter (`RateLimiter`, `SharedRateLimiter`)."""

    max_concurrency: int | None
    requests_per_second: float | None
    tokens_per_minute: float | None
    adaptive: bool
    rate_limited: int

    @property
    def rate(self) -> float | None:
        """The pace in effect, requests per second (None: none)."""
        ...

    @property
    def window(self) -> int | None:
        """The most calls in flight now (None: no cap)."""
        ...

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        ...

    async def acquire(self, priority: Priority = 0.0, *, tokens: int = 0) -> Permit: ...

    def release(self, permit: Permit | None = None) -> None: ...

    def record_success(
        self,
        tokens: int = 0,
        permit: Permit | None = None,
        *,
        remaining: int | None = None,
        refill_in: float | None = None,
    ) -> None: ...

    def record_rate_limited(
        self,
        retry_after: float | None = None,
        permit: Permit | None = None,
        *,
        max_pause: float | None = None,
    ) -> None: ...


def minute_left(wall: float | None = None) -> float:
    """Seconds to the next minute on the wall clock (per-minute budgets refill then)."""
    now = time.time() if wall is None else wall
    return 60.0 - now % 60.0


@dataclass(order=True)
class _Waiter:
    key: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)
    granted: bool = field(default=False, compare=False)


@dataclass
class _Pacer:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    dead: bool = False


class RateLimiter:
    """Concurrency, request-rate and token-rate limits with adaptive pacing.

    Args:
        max_concurrency: most calls in flight (None: no cap).
        requests_per_second: a known request-rate limit (None: unknown).
        tokens_per_minute: a known token-rate limit (None: unknown).
        adaptive: learn the window and the pace from 429s.
    """

    SUCCESS_WINDOW = PaceLimits.success_window
    """Seconds of successes used to measure the rate the provider is sustaining."""
    DECREASE = PaceLimits.decrease
    """After a 429 on the pace, pace at this fraction of the measured success rate."""
    INCREASE = PaceLimits.increase
    """Requests per second added to the pace per successful call."""
    INITIAL_WINDOW = PaceLimits.initial_window
    """Slow start: calls in flight before any feedback."""
    MAX_WINDOW = PaceLimits.max_window
    """The learned window never grows past this."""
    RECHECK = 0.05
    """Seconds between looks at the pace by the first call waiting for its start."""

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
    ) -> None:
        self.limits = PaceLimits(
            max_concurrency=max_concurrency,
            requests_per_second=requests_per_second,
            tokens_per_minute=tokens_per_minute,
            adaptive=adaptive,
        )
        self.max_concurrency = max_concurrency
        self.requests_per_second = requests_per_second
        self.tokens_per_minute = tokens_per_minute
        self.adaptive = adaptive
        self.state = PaceState.fresh(time.monotonic(), self.limits)
        self.active = 0
        """Callers holding a slot (waiting for their start, or running)."""
        self.rate_limited = 0
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._order = itertools.count()
        self._pacers: collections.deque[_Pacer] = collections.deque()
        self._running: dict[int, Permit] = {}
        self._rejected_before: dict[int, int] = {}  # seq -> earlier calls since rejected

    @classmethod
    def shared(cls, key: Any, **limits: Any) -> RateLimiter:
        """The process-wide limiter for `key` (an endpoint) and these limits."""
        full_key = (key, tuple(sorted(limits.items())))
        with _SHARED_LOCK:
            limiter = _SHARED.get(full_key)
            if limiter is None:
                limiter = _SHARED[full_key] = cls(**limits)
            return limiter

    @property
    def rate(self) -> float | None:
        """The pace in effect, requests per second (None: none)."""
        return self.state.effective_rate(self.limits)

    @property
    def window(self) -> int | None:
        """The most calls in flight now (None: no cap)."""
        return self.state.cap(self.limits)

    def snapshot(self) -> dict[str, Any]:
        """Pace, window and counters now."""
        with self._lock:
            return {**self.state.describe(self.limits), "in_flight": len(self._running)}

    # -- acquiring --------------------------------------------------------------------

    async def acquire(self, priority: Priority = 0.0, *, tokens: int = 0) -> Permit:
        """Wait for a slot, then for the pace; higher `priority` goes first."""
        while True:
            await self._take_slot(priority)
            try:
                permit = await self._pace(tokens)
            except BaseException:
                self.release()
                raise
            if permit is not None:
                return permit
            # The window was cut while it waited for its start: in line for a slot again.

    async def _take_slot(self, priority: Priority) -> None:
        with self._lock:
            cap = self.state.cap(self.limits)
            if cap is None or (self.active < cap and not self._waiters):
                self.active += 1
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(
                (priority_key(priority), next(self._order)), loop, loop.create_future()
            )
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

    async def _pace(self, tokens: int) -> Permit | None:
        """Wait for this call's start: first in line, then until the pace allows it.

        Returns None, its slot given back, if a cut window is full of calls started
        meanwhile (a 429 in the first window, whose starts go apart).
        """
        with self._lock:
            now = time.monotonic()
            if not self._pacers and self.state.start_delay(now, tokens, self.limits) <= 0:
                return self._start(now, tokens)
            loop = asyncio.get_running_loop()
            me = _Pacer(loop, loop.create_future())
            self._pacers.append(me)
            if self._pacers[0] is me:
                me.future.set_result(None)
        try:
            await me.future
            while True:
                with self._lock:
                    now = time.monotonic()
                    delay = self.state.start_delay(now, tokens, self.limits)
                    if delay <= 0:
                        self._next_pacer()
                        cap = self.state.cap(self.limits)
                        if cap is not None and len(self._running) >= cap:
                            self.active = max(0, self.active - 1)
                            self._grant_free()
                            return None
                        return self._start(now, tokens)
                # Looked at again soon: a pace that rises meanwhile applies at once.
                await asyncio.sleep(min(delay, self.RECHECK))
        except BaseException:
            with self._lock:
                me.dead = True
                if self._pacers and self._pacers[0] is me:
                    self._next_pacer()
            raise

    def _start(self, now: float, tokens: int) -> Permit:
        """Book a start now (lock held)."""
        seq, _ = self.state.reserve(now, tokens, self.limits)
        permit = Permit(seq, len(self._running), now)
        self._running[seq] = permit
        return permit

    def _next_pacer(self) -> None:
        """The first in line has started or gone: wake the next live one (lock held)."""
        if self._pacers:
            self._pacers.popleft()
        while self._pacers:
            pacer = self._pacers[0]
            if not pacer.dead and not pacer.loop.is_closed():
                try:
                    pacer.loop.call_soon_threadsafe(_grant, pacer.future)
                    return
                except RuntimeError:  # its loop closed meanwhile
                    pass
            self._pacers.popleft()

    def release(self, permit: Permit | None = None) -> None:
        """Free a slot, handing it to the best live waiter."""
        with self._lock:
            self.active = max(0, self.active - 1)
            if permit is not None:
                self._running.pop(permit.seq, None)
            elif self._running:
                permit = self._running.pop(min(self._running))
            if permit is not None and not self._running:
                self._rejected_before.clear()
            self._grant_free()

    def _grant_free(self) -> None:
        """Hand free slots to the best live waiters (lock held)."""
        if not self._waiters:
            return
        cap = self.state.cap(self.limits)
        while self._waiters and (cap is None or self.active < cap):
            waiter = heapq.heappop(self._waiters)
            if waiter.granted or waiter.future.done() or waiter.loop.is_closed():
                continue
            waiter.granted = True
            self.active += 1
            waiter.loop.call_soon_threadsafe(_grant, waiter.future)

    # -- feedback ---------------------------------------------------------------------

    def record_success(
        self,
        tokens: int = 0,
        permit: Permit | None = None,
        *,
        remaining: int | None = None,
        refill_in: float | None = None,
    ) -> None:
        """A call succeeded: the window and the pace may grow. `remaining`: requests the
        provider says are left in its window, which refills in `refill_in` seconds."""
        with self._lock:
            if remaining is not None:
                remaining = left_after(remaining, self._running, permit)
            now = time.monotonic()
            in_flight = latency = None
            if permit is not None:
                in_flight = permit.in_flight - self._rejected_before.pop(permit.seq, 0)
                latency = now - permit.started
                _discount_just_started(self._running, self._rejected_before, permit, now, latency)
            self.state.on_success(
                now,
                self.limits,
                in_flight=in_flight,
                latency=latency,
                remaining=remaining,
                refill_in=refill_in,
            )
            self._grant_free()

    def record_rate_limited(
        self,
        retry_after: float | None = None,
        permit: Permit | None = None,
        *,
        max_pause: float | None = None,
    ) -> None:
        """The provider answered 429: cut the window, slow the pace, or pause (see the policy).

        `retry_after` pauses every call for that long, at most `max_pause` seconds.
        """
        with self._lock:
            self.rate_limited += 1
            in_flight = None
            overtaken = 0
            if permit is not None:
                in_flight = permit.in_flight - self._rejected_before.pop(permit.seq, 0)
                for seq, other in self._running.items():
                    if seq > permit.seq:  # they counted this call among theirs in flight
                        self._rejected_before[seq] = self._rejected_before.get(seq, 0) + 1
                        overtaken += other.started - permit.started <= SAME_BURST
            self.state.on_rate_limited(
                time.monotonic(),
                self.limits,
                retry_after=retry_after,
                in_flight=in_flight,
                seq=permit.seq if permit is not None else None,
                minute_left=minute_left(),
                max_pause=max_pause,
                overtaken=overtaken,
            )

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        with self._lock:
            return sum(1 for w in self._waiters if not w.granted)


def left_after(remaining: int, running: Mapping[int, Any], permit: Permit | None) -> int:
    """Requests left once the calls still in flight are counted: a gateway may count a
    call when it ends (LiteLLM does), so those in flight are spent already."""
    others = len(running) - int(permit is not None and permit.seq in running)
    return max(0, remaining - others)


def _discount_just_started(
    running: dict[int, Permit], discount: dict[int, int], done: Permit, now: float, latency: float
) -> None:
    """Calls that started just before `done` came back counted it, but the provider had
    already let it go (its answer was on the way): they had one call fewer in flight."""
    recent = now - max(0.005, 0.05 * latency)
    # Newest first: permits are booked in sequence order at nondecreasing times, so the
    # scan stops at the first one that is not recent (O(recent), not O(in flight)).
    for seq in reversed(running):
        if seq <= done.seq or running[seq].started <= recent:
            break
        discount[seq] = discount.get(seq, 0) + 1


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
