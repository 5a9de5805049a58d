"""The pacing policy: how many calls to one endpoint may be in flight, and how fast they start.

Pure rules on a `PaceState`: no clock, no I/O, no asyncio. `RateLimiter` keeps a state in
memory; `SharedRateLimiter` keeps one in a store row that every process applies the same
rules to. Times are seconds on one clock, given by the caller.

When limits are not stated, two things are learned from the provider's answers:

* **The window** (calls in flight). It is the stated `max_concurrency`, trusted from the
  start, or it is learned. Until the first answer, `cold_burst` calls start at once and
  then the calls in flight double every `cold_doubling` seconds (the cold ramp; the
  first `cold_burst` of them at least `cold_first_gaps` apart), so a fast 429 stops it
  near a concurrency limit; the first answer sets the window to the
  calls started (at least `initial_window`), and it doubles every round trip (slow
  start) while it is used. A 429
  that came with as many calls in flight as any recent success had, or more, give or take
  `SKEW` (calls answered but not yet seen; a success counts at most the window less
  one, as a call granted before a cut counted calls the provider did not admit) ("a
  concurrency 429"), sets it to the number
  of calls that were in flight when the rejected one started (less those rejected
  themselves), which is what the provider admitted, but never below the calls in flight
  that the measured success rate needs. Calls sent together reach the provider in any
  order: a 429 that the calls started just after it (`SAME_BURST`) and still in flight
  explain is a concurrency 429 too, and sets the window to all of them at most. From then on it
  grows by one call per round trip, and at the level that last failed it probes ever
  more rarely (every 4, 8, 16 ... round trips) while probes keep failing. The 429s of
  calls sent before a cut are old news: they only lower the window further, and a
  concurrency 429 that meets a full window already at that level, with the success rate
  using at least half of it, changes nothing.
* **The pace** (requests per second). A 429 a concurrency limit does not explain sets
  the pace a little under the success rate just measured (once per burst of 429s); each
  success raises it a little. A `retry-after` on such a 429 pauses every start until then.

A 429 whose retry-after is long (a per-minute counter, `BUDGET_HINT` seconds or more)
is a spent budget, not a pace: starts pause until the next minute (at most the
retry-after, at most `max_pause`) and neither the pace nor the window shrinks. A
success that says how many requests are left in the current window
(`x-ratelimit-remaining-requests`) keeps a count: when it runs out, starts pause until
the window refills, then go again as fast as the window and pace allow (a burst).

Starts are not booked ahead at a pace: the next start is computed from the last one at
the pace in effect now, so when the pace rises the waiting calls go at the new pace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from fanfold.scheduling.minute_budget import BUDGET_HINT, is_minute_budget, refill_wait

Verdict = Literal["window", "rate", "budget", "ignored"]
"""What a 429 changed: the window, the pace, a budget pause, or nothing new."""

SKEW = 0.15
"""Share of calls in flight (at least one) a client may count that the server has already
answered: a 429 with that many fewer in flight than a recent success is a concurrency 429."""
SAME_BURST = 0.01
"""Seconds apart within which calls started together may reach the provider in any order
(new connections): a call started this soon after a rejected one may have overtaken it."""


@dataclass(frozen=True)
class PaceLimits:
    """What the caller states, and the adaptation constants.

    Args:
        max_concurrency: most calls in flight (None: no cap stated).
        requests_per_second: a known request-rate limit (None: unknown).
        tokens_per_minute: a known token-rate limit (None: unknown).
        adaptive: learn the window and the pace from 429s.
    """

    max_concurrency: int | None = None
    requests_per_second: float | None = None
    tokens_per_minute: float | None = None
    adaptive: bool = True
    success_window: float = 2.0
    """Time constant (seconds) of the measured success rate."""
    decrease: float = 0.9
    """After a rate 429, pace at this fraction of the measured success rate."""
    increase: float = 0.02
    """Requests per second added to the pace per success."""
    initial_window: int = 8
    """Calls in flight before any feedback when no cap is stated (slow start)."""
    cold_burst: int = 4
    """Calls that start at once when nothing has answered yet."""
    cold_doubling: float = 0.2
    """Until the first answer, further calls start ever closer together, so the calls in
    flight double every this many seconds: a 429 that comes back fast (a concurrency
    limit on the same host or network) stops the ramp near the limit, and a provider
    without one gets a window of many calls long before its first reply."""
    cold_first_gaps: float = 0.15
    """The least time between the ramp's first `cold_burst` spaced starts: a fresh
    process's first 429 may take this long to be seen (its first requests go out slowly:
    110 to 140 ms from start to recorded 429 on a quiet machine, and 105 to 120 ms for
    call 5 of three processes starting together, so a 0.1 s gap let call 6 meet the
    limit too)."""
    cold_window: int = 64
    """The most calls in flight before the first answer."""
    max_window: int = 1024
    """The window never grows past this."""
    max_probe_every: float = 32.0
    """Round trips between probes above a level that keeps failing, at most."""
    max_pause: float = 60.0
    """The longest pause a retry-after may impose on every start."""

    def __post_init__(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {self.max_concurrency}")
        if self.requests_per_second is not None and not self.requests_per_second > 0:
            raise ValueError(
                f"requests_per_second must be positive, not {self.requests_per_second}"
            )
        if self.tokens_per_minute is not None and not self.tokens_per_minute > 0:
            raise ValueError(f"tokens_per_minute must be positive, not {self.tokens_per_minute}")


@dataclass
class PaceState:
    """One endpoint's pacing state (a row of the shared store, or a limiter's memory)."""

    rate: float | None = None
    """The learned pace, requests per second (None: nothing learned)."""
    window: float | None = None
    """The learned window, calls in flight (None: not adaptive)."""
    ceiling: float | None = None
    """The window that last failed (None: still in slow start)."""
    probe_every: float = 1.0
    """Round trips the window spends at ceiling - 1 before probing the ceiling again."""
    ok_max: float = -1.0
    """Most calls in flight at the start of a recent success (-1: none yet)."""
    ok_max_at: float = 0.0
    cut_seq: int = 0
    """Calls granted before the last window cut; their 429s are old news."""
    last_decrease: float = -1e9
    paused_until: float = 0.0
    """No call starts before this (a retry-after)."""
    last_start: float = -1e9
    tokens: float | None = None
    """The token budget left (None: full)."""
    tokens_at: float = 0.0
    successes: float = 0.0
    """Decayed count of successes at `successes_at`."""
    successes_at: float = 0.0
    successes_since: float = 0.0
    """Start of the current stretch of successes (the measured rate's span)."""
    rtt: float | None = None
    """Seconds per successful call, a low estimate (near the fastest recent calls)."""
    granted: int = 0
    """Starts granted so far (each call's sequence number)."""
    rate_limited: int = 0
    succeeded: int = 0
    window_cuts: int = 0
    rate_cuts: int = 0
    pauses: int = 0
    quota_left: float | None = None
    """Requests left in the provider's current window, as it last said (None: not said)."""
    quota_until: float = 0.0
    """When that window refills."""

    @classmethod
    def fresh(cls, now: float, limits: PaceLimits) -> PaceState:
        window = None
        if limits.adaptive:  # a stated cap is trusted from the start
            window = float(limits.max_concurrency or limits.cold_window)
        return cls(window=window, tokens_at=now, successes_at=now, successes_since=now)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_row(cls, row: Any) -> PaceState:
        return cls(*row)

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.columns())

    # -- what a caller applies --------------------------------------------------------

    def effective_rate(self, limits: PaceLimits) -> float | None:
        """The pace in effect: the learned one, capped by the stated limit."""
        if limits.adaptive and self.rate is not None:
            if limits.requests_per_second is not None:
                return min(self.rate, limits.requests_per_second)
            return self.rate
        return limits.requests_per_second

    def cap(self, limits: PaceLimits) -> int | None:
        """The most calls in flight now (None: no cap)."""
        # The smaller of the stated cap and the learned window (no list: once per call).
        cap: float | None = limits.max_concurrency
        window = self.window if limits.adaptive else None
        if window is not None and (cap is None or window < cap):
            cap = window
        return None if cap is None else max(1, int(cap))

    def next_start(self, limits: PaceLimits) -> float:
        """The earliest time the next call may start, at the pace in effect now."""
        rate = self.effective_rate(limits)
        start = self.paused_until
        if rate is not None:
            start = max(start, self.last_start + 1.0 / rate)
        if self.granted >= limits.cold_burst and self._cold(limits):
            # The calls in flight grow as 2 ** (t / cold_doubling): call n + 1 starts
            # cold_doubling * log2((n + 1) / n) after call n.
            gap = limits.cold_doubling * math.log2((self.granted + 1) / self.granted)
            if self.granted < 2 * limits.cold_burst:
                gap = max(gap, limits.cold_first_gaps)
            start = max(start, self.last_start + gap)
        if self.quota_left is not None and self.quota_left < 1:
            start = max(start, self.quota_until)  # the window's requests are spent
        return start

    def _cold(self, limits: PaceLimits) -> bool:
        """Whether the window is learned and nothing has answered yet (the cold ramp)."""
        return (
            self.window is not None
            and self.ceiling is None
            and limits.max_concurrency is None
            and self.succeeded == 0
            and self.rate_limited == 0
        )

    def _end_cold(self, limits: PaceLimits) -> None:
        """The first answer: the window becomes the calls started so far (all of them in
        flight until now), slow start goes on from there."""
        if self._cold(limits):
            self.window = float(max(limits.initial_window, self.granted))

    def start_delay(self, now: float, tokens: int, limits: PaceLimits) -> float:
        """Seconds until a call that sends `tokens` may start (0: now)."""
        delay = max(0.0, self.next_start(limits) - now)
        budget = limits.tokens_per_minute
        if budget is not None and tokens:
            level = self._token_level(now, budget)
            need = min(float(tokens), budget)
            if level < need:
                delay = max(delay, (need - level) / (budget / 60.0))
        return delay

    def booking_horizon(self, horizon: float, limits: PaceLimits) -> float:
        """How far ahead starts may be booked: `horizon`, or none in the cold ramp (a fast
        429 must stop the calls that would follow it)."""
        return 0.0 if self._cold(limits) else horizon

    def pace_room(self, now: float, horizon: float, limits: PaceLimits) -> int | None:
        """How many more starts may be reserved within `horizon` seconds (None: no pace)."""
        rate = self.effective_rate(limits)
        first = max(now, self.next_start(limits))
        if first > now + horizon:
            return 0
        room = None if rate is None else int((now + horizon - first) * rate) + 1
        if self._cold(limits):  # the rest of the burst, or the ramp's next start
            cold = max(1, limits.cold_burst - self.granted)
            room = cold if room is None else min(room, cold)
        return room

    def reserve(self, now: float, tokens: int, limits: PaceLimits) -> tuple[int, float]:
        """Book the next start for one call.

        Returns:
            The call's sequence number and the seconds it waits for its start.
        """
        start = max(now, self.next_start(limits))
        self.last_start = start
        delay = start - now
        if self.quota_left is not None:
            if start >= self.quota_until:
                self.quota_left = None  # a new window: nothing known of it yet
            else:
                self.quota_left -= 1
        budget = limits.tokens_per_minute
        if budget is not None and tokens:
            level = self._token_level(now, budget) - tokens
            self.tokens, self.tokens_at = level, now
            if level < 0:
                delay = max(delay, -level / (budget / 60.0))
        self.granted += 1
        return self.granted, delay

    def _token_level(self, now: float, budget: float) -> float:
        level = budget if self.tokens is None else self.tokens
        return min(budget, level + max(0.0, now - self.tokens_at) * budget / 60.0)

    # -- the measured success rate ----------------------------------------------------

    def measured(self, now: float, limits: PaceLimits) -> float | None:
        """Successes per second over the last few seconds."""
        count = self._decayed(now, limits)
        span = now - self.successes_since
        if count < 1 or span <= 0.05:
            return None
        tau = limits.success_window
        return count / (tau * (1.0 - math.exp(-span / tau)))

    def _decayed(self, now: float, limits: PaceLimits) -> float:
        age = max(0.0, now - self.successes_at)
        return self.successes * math.exp(-age / limits.success_window)

    # -- feedback ---------------------------------------------------------------------

    def on_success(
        self,
        now: float,
        limits: PaceLimits,
        *,
        in_flight: int | None = None,
        latency: float | None = None,
        remaining: int | None = None,
        refill_in: float | None = None,
    ) -> None:
        """A call succeeded.

        Args:
            in_flight: calls in flight when it started (itself not counted).
            latency: seconds it took.
            remaining: requests the provider says are left in its current window.
            refill_in: seconds until that window refills.
        """
        self._end_cold(limits)
        self.succeeded += 1
        if remaining is not None and refill_in is not None and refill_in >= 0:
            until = now + refill_in
            left = float(remaining)
            if self.quota_left is not None and abs(until - self.quota_until) < 1.0:
                # Replies come back out of order: within one window the lowest count is news.
                left = min(left, self.quota_left)
            self.quota_left, self.quota_until = left, until
        count = self._decayed(now, limits)
        if count < 0.5:
            self.successes_since = now  # a new stretch after a quiet spell
        self.successes = count + 1
        self.successes_at = now
        if latency is not None and latency >= 0:
            # Near the fastest calls: a slow first call (connecting) must not inflate it.
            self.rtt = (
                latency if self.rtt is None else min(latency, 0.95 * self.rtt + 0.05 * latency)
            )
        if in_flight is not None:
            # A call granted before a window cut may count more than the window now lets
            # in: calls the provider did not admit (rejected, or ended and not yet seen).
            cap = self.cap(limits)
            seen = in_flight if cap is None else min(in_flight, cap - 1)
            horizon = max(2.0, 20 * (self.rtt or 0.0))
            if seen >= self.ok_max or now - self.ok_max_at > horizon:
                self.ok_max, self.ok_max_at = float(seen), now
        if not limits.adaptive:
            return
        if self.window is not None and in_flight is not None and in_flight + 1 >= self.window / 2:
            self._grow_window(limits)
        if self.rate is not None:
            self.rate += limits.increase
            if limits.requests_per_second is not None:
                self.rate = min(self.rate, limits.requests_per_second)

    def _grow_window(self, limits: PaceLimits) -> None:
        """A success with the window at least half used: slow start, or one per round trip."""
        assert self.window is not None
        if self.ceiling is None:
            self.window += 1.0
        else:
            if self.window >= self.ceiling + 1:
                # A whole round trip above the level that failed: the limit rose.
                self.ceiling, self.probe_every = self.window + 1, 1.0
            step = 1.0 / self.window
            if self.window + 1.0 >= self.ceiling:
                step /= self.probe_every
            self.window += step
        self.window = min(self.window, float(limits.max_window))

    def on_rate_limited(
        self,
        now: float,
        limits: PaceLimits,
        *,
        retry_after: float | None = None,
        in_flight: int | None = None,
        seq: int | None = None,
        minute_left: float | None = None,
        max_pause: float | None = None,
        overtaken: int = 0,
    ) -> Verdict:
        """The provider answered 429: cut the window, slow the pace, or pause.

        Args:
            retry_after: the seconds the provider asked to wait, if it said.
            in_flight: calls still in flight that started before the rejected one.
            seq: the rejected call's sequence number (from `reserve`).
            minute_left: seconds to the next minute on the wall clock.
            max_pause: the caller's cap on the pause (with `limits.max_pause`).
            overtaken: calls started after the rejected one, within `SAME_BURST`, and
                still in flight when its 429 came back (the provider may have seen them
                first).
        """
        self._end_cold(limits)
        self.rate_limited += 1
        if not limits.adaptive:
            return "ignored"
        cap = limits.max_pause if max_pause is None else min(max_pause, limits.max_pause)
        if retry_after is not None and retry_after >= BUDGET_HINT:
            wait = refill_wait(retry_after, minute_left)
            if is_minute_budget(retry_after):
                cap = limits.max_pause  # a minute's refill is waited for, not given up on
            self.paused_until = max(self.paused_until, now + min(wait, cap))
            self.pauses += 1
            return "budget"
        admitted = self._admitted(in_flight, overtaken)
        if admitted is not None:
            # Never below what carries the success rate now (Little's law): a rate
            # limit's 429s at the top of the range in flight must not shrink it for good.
            measured = self.measured(now, limits)
            floor = int(0.8 * measured * self.rtt) if measured and self.rtt else 1
            level = float(max(admitted, floor))
            if seq is not None and seq <= self.cut_seq:
                # Sent before the last cut took effect: old news, unless the same burst
                # shows a lower level (its replies come back in any order).
                if self.window is not None and level < self.window:
                    self._cut_window(level)
                    return "window"
                return "ignored"
            if self.window is not None and admitted >= int(self.window) > floor >= self.window / 2:
                # The window is already at the level that failed, and in use: the success
                # rate needs half of it. (A full window of calls booked ahead at a pace,
                # across processes, is not: a rate limit's 429 there slows the pace.)
                return "ignored"
            if self.window is not None and level < self.window:
                if self.ceiling is not None and level + 1 >= self.ceiling:
                    self.probe_every = min(self.probe_every * 2, limits.max_probe_every)
                else:
                    self.probe_every = 4.0
                self._cut_window(level)
                return "window"
        return self._slow_pace(now, retry_after, cap, limits)

    def _admitted(self, in_flight: int | None, overtaken: int) -> int | None:
        """The most calls the provider had admitted when it rejected this one, if a
        concurrency limit explains the 429 (None: it does not).

        As many calls in flight as a recent success had, give or take `SKEW`, explain it.
        So do the calls started after it and still in flight (`overtaken`): calls sent
        together reach the provider in any order, so the 9th of a burst may have been
        admitted and the 1st rejected.
        """
        if in_flight is None:
            return None
        busiest = self.ok_max - max(1.0, SKEW * self.ok_max)
        if in_flight >= 1 and in_flight >= busiest:
            return in_flight
        seen = in_flight + max(0, overtaken)
        if seen > in_flight and seen >= busiest:
            return seen
        return None

    def _cut_window(self, level: float) -> None:
        """The provider admitted `level` calls and no more: the window is cut to it."""
        self.ceiling = level + 1
        self.window = max(1.0, level)
        self.cut_seq = self.granted
        self.window_cuts += 1

    def _slow_pace(
        self, now: float, retry_after: float | None, cap: float, limits: PaceLimits
    ) -> Verdict:
        if retry_after:
            retry_after = min(retry_after, cap)
            self.paused_until = max(self.paused_until, now + retry_after)
        if now - self.last_decrease < 0.5:
            return "ignored"  # one decrease per burst of 429s
        self.last_decrease = now
        measured = self.measured(now, limits)
        current = self.effective_rate(limits)
        if current is None:
            current = measured
        if measured is not None and current is not None:
            target = min(current, measured) * limits.decrease
        elif current is not None:
            target = current * 0.5
        elif retry_after:
            target = 1.0 / retry_after  # cold start: the spacing the server asks for
        else:
            target = 1.0
        self.rate = max(0.5, target)
        self.rate_cuts += 1
        return "rate"

    def describe(self, limits: PaceLimits) -> dict[str, Any]:
        """The figures a progress view shows: pace, window, counters."""
        return {
            "rate": self.effective_rate(limits),
            "learned_rate": self.rate,
            "window": self.cap(limits),
            "rate_limited": self.rate_limited,
            "succeeded": self.succeeded,
            "window_cuts": self.window_cuts,
            "rate_cuts": self.rate_cuts,
            "pauses": self.pauses,
        }
