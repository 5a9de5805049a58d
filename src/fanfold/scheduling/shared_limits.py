"""Rate limits shared by every process that uses the same store and endpoint key.

`RateLimiter` keeps its state in memory, so two runs in two processes (or on two
machines) against one provider each take the provider's whole limit. A
`SharedRateLimiter` is a `Limiter` too (the dispatcher and `compile_plan(rate_limiter=...)`
use it unchanged) but keeps the pacing policy's state (`fanfold.scheduling.pacing`) in a
SQLite file (runs on one machine) or a PostgreSQL database (workers on several machines;
see `fanfold.scheduling.shared_store`):

* Concurrency slots are leases: rows with an expiry time. A process renews its leases
  while its calls run; a crashed process stops renewing, so its slots come back when
  its leases expire (at most `lease_seconds` after the crash).
* Requests per second: one shared schedule (the last start, and pauses). Each granted
  slot reserves the next start, so all processes together keep to the pace. Starts are
  reserved at most PACE_HORIZON (0.5 s) ahead, so a changed pace takes effect at once
  and a process that comes later is not queued behind another's whole backlog.
* Tokens per minute: one shared token bucket.
* The learned window and pace: the policy's rules applied to what all processes report
  (a 429 anywhere cuts the shared window or pace once per burst; successes anywhere
  grow them). The calls in flight before a rejected one are counted over every
  process's leases.

Within a process, waiters still queue locally by priority (`shared_waiters`): a
background thread (the "keeper", `shared_keeper`) acquires shared slots for the process
and hands each to the best local waiter. Between processes, free slots (and starts
within the horizon) go round-robin to the processes that wait, the one that has waited
longest first, so no process starves another.

The keeper polls: with PostgreSQL it also LISTENs, and a process that frees slots
NOTIFYs, so waiters wake at once (the poll, every 0.1 s, only catches expired leases);
with SQLite it checks `PRAGMA data_version` (a cheap read that changes when another
process commits) every 2 ms while it waits, and re-reads the tables every 50 ms.
Times are the database's clock with PostgreSQL (machines' clocks may differ) and the
machine's with SQLite.

Every process should give the same limits for the same key; each applies its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from fanfold.scheduling.limits import Permit, Priority, left_after, minute_left, priority_key
from fanfold.scheduling.pacing import SAME_BURST, PaceLimits, PaceState
from fanfold.scheduling.shared_keeper import Keeper
from fanfold.scheduling.shared_store import (
    SCHEMA,
    TABLES,
    SharedLimitsError,
    open_store,
)
from fanfold.scheduling.shared_sync import (
    Limited,
    Outcome,
    Success,
    Work,
    round_robin_share,
)
from fanfold.scheduling.shared_waiters import Ask, Waiters, fail
from fanfold.scheduling.storage import one_line, shown_target

__all__ = ["SCHEMA", "TABLES", "SharedLimitsError", "SharedRateLimiter", "round_robin_share"]

_log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 10.0


# -- the limiter ----------------------------------------------------------------------------------


_OPEN: dict[tuple[Any, ...], SharedRateLimiter] = {}
_OPEN_LOCK = threading.Lock()


class SharedRateLimiter:
    """A `Limiter` whose limits are shared by every process using the same store and key.

    Args:
        target: a SQLite file path (processes on one machine; created if missing) or a
            postgresql:// URL (workers on several machines). The tables are created if
            missing (see SCHEMA).
        key: the endpoint, e.g. "openai:gpt-4o-mini" or `endpoint_key(model)`; limiters
            with the same key in the same store share their limits.
        max_concurrency: most calls in flight, all processes together (None: no cap).
        requests_per_second: a known request-rate limit, all processes together.
        tokens_per_minute: a known token-rate limit, all processes together.
        adaptive: learn the window and the pace from 429s (shared: a 429 anywhere
            slows everyone).
        lease_seconds: how long a slot stays taken without renewal; a crashed process's
            slots come back within this time. Held leases are renewed every quarter of it.

    Raises:
        SharedLimitsError: a bad path, an unreachable database, tables that are missing
            and may not be created, or a bad setting; one line naming the setting, any
            password masked.
    """

    PACE_HORIZON = 0.5
    """Seconds ahead a process may reserve request starts; later callers wait their turn."""
    SYNC_STALE = 0.05
    """Seconds after which a sync scheduled on an event loop that has not run it (busy,
    or stopped) is left to the keeper."""

    def __init__(
        self,
        target: str | os.PathLike[str],
        key: str | Sequence[str],
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        try:
            self.limits = PaceLimits(
                max_concurrency=max_concurrency,
                requests_per_second=requests_per_second,
                tokens_per_minute=tokens_per_minute,
                adaptive=adaptive,
            )
        except ValueError as exc:
            setting = str(exc).split(" ", 1)[0]
            raise SharedLimitsError(str(exc), setting=setting) from exc
        if not isinstance(lease_seconds, int | float) or not 0 < lease_seconds < math.inf:
            raise SharedLimitsError(
                f"lease_seconds must be a positive number of seconds, not {lease_seconds!r}",
                setting="lease_seconds",
            )
        self.key = _key_text(key)
        target = os.fspath(target)
        if not target:
            raise SharedLimitsError(
                "the shared limits target is empty; pass a SQLite file path or a postgresql:// URL",
                setting="target",
            )
        self.target = shown_target(target)
        self.lease_seconds = float(lease_seconds)
        self.max_concurrency = max_concurrency
        self.requests_per_second = requests_per_second
        self.tokens_per_minute = tokens_per_minute
        self.adaptive = adaptive
        self.rate_limited = 0
        """429s this process saw."""
        self._lock = threading.Lock()
        self._order = itertools.count()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._waiters = Waiters()  # changed holding self._lock
        self._closed = False
        self._sync_due: float | None = None
        """When a sync was scheduled on an event loop (None: none is due)."""
        store = open_store(target, self.key)
        self._keeper = Keeper(
            store,
            key=self.key,
            holder=self.holder,
            limits=self.limits,
            lease_seconds=self.lease_seconds,
            horizon=self.PACE_HORIZON,
            target=self.target,
            take_work=self._take_work,
            give_back=self._give_back,
            hand_out=self._hand_out,
        )
        self._wake = self._keeper.wake
        try:
            with self._keeper.db_lock:
                self._keeper.register()
        except Exception as exc:
            store.close()
            raise SharedLimitsError(
                f"shared limits target {self.target}: cannot use it: "
                f"{one_line(exc, target)}; check the path or URL and the rights on it",
                setting="target",
                target=self.target,
            ) from exc
        self._keeper.start()
        atexit.register(self.close)

    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str],
        key: str | Sequence[str],
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> SharedRateLimiter:
        """Open a limiter on `target` (a path or a postgresql:// URL) for endpoint `key`."""
        return cls(
            target,
            key,
            max_concurrency=max_concurrency,
            requests_per_second=requests_per_second,
            tokens_per_minute=tokens_per_minute,
            adaptive=adaptive,
            lease_seconds=lease_seconds,
        )

    @classmethod
    def shared(cls, key: Any, **limits: Any) -> SharedRateLimiter:
        """The process-wide limiter for `key`, `target=` and these limits (opened once)."""
        target = limits.pop("target", None)
        if target is None:
            raise SharedLimitsError(
                "SharedRateLimiter.shared needs target=, a SQLite file path or a postgresql:// URL",
                setting="target",
            )
        full_key = (os.fspath(target), _key_text(key), tuple(sorted(limits.items())))
        with _OPEN_LOCK:
            limiter = _OPEN.get(full_key)
            if limiter is None or limiter.closed:
                limiter = _OPEN[full_key] = cls(target, key, **limits)
            return limiter

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SharedRateLimiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter({self.target!r}, {self.key!r}, "
            f"max_concurrency={self.max_concurrency}, "
            f"requests_per_second={self.requests_per_second}, "
            f"tokens_per_minute={self.tokens_per_minute}, adaptive={self.adaptive}, "
            f"lease_seconds={self.lease_seconds})"
        )

    @property
    def state(self) -> PaceState:
        """The shared state as of this process's last transaction."""
        return self._keeper.state

    # -- the Limiter API ---------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The shared pace in effect for this process, as of its last transaction."""
        return self.state.effective_rate(self.limits)

    @property
    def window(self) -> int | None:
        """The shared window in effect, as of this process's last transaction."""
        return self.state.cap(self.limits)

    async def acquire(self, priority: Priority = 0.0, *, tokens: int = 0) -> Permit:
        """Wait for a shared slot and the shared pace; higher `priority` goes first here."""
        w = self._waiters
        loop = asyncio.get_running_loop()
        ask = Ask((priority_key(priority), next(self._order)), loop, loop.create_future(), tokens)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            heapq.heappush(w.asks, ask)
            w.live += 1
        self._wake.set()
        try:
            permit = await ask.future
        except asyncio.CancelledError:
            with self._lock:
                granted = ask.granted
                if not granted:
                    ask.granted = True  # given up: the keeper skips it
                    w.live -= 1
            if granted and ask.future.done() and not ask.future.cancelled():
                self.release(ask.future.result())
            elif granted:
                self.release()
            raise
        delay = permit.started - time.monotonic()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self.release(permit)
                raise
        return permit

    def release(self, permit: Permit | None = None) -> None:
        """Free a slot: its lease is deleted and the slot goes to the next waiter."""
        with self._lock:
            self._waiters.release(permit)
        self._wake_soon()

    def _wake_soon(self) -> None:
        """Sync once the caller's callback is done: on this thread if the store is free
        at once (the freed slot goes straight to the next waiter), else on the keeper's.

        The dispatcher reports a 429 and then releases the slot it freed: syncing on
        the event loop's next turn lets one transaction see both, so the slot's next
        call is paced by the policy's answer to that 429.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._wake.set()
            return
        now = time.monotonic()
        with self._lock:
            if self._sync_due is not None and now - self._sync_due < self.SYNC_STALE:
                return  # one transaction for every release until it runs
            self._sync_due = now
        loop.call_soon(self._sync_now)

    def _sync_now(self) -> None:
        with self._lock:
            self._sync_due = None
        if not self._keeper.sync_now():
            self._wake.set()

    def record_success(
        self,
        tokens: int = 0,
        permit: Permit | None = None,
        *,
        remaining: int | None = None,
        refill_in: float | None = None,
    ) -> None:
        """A call succeeded: the shared window and pace grow (at the next transaction);
        `remaining` requests are left in the provider's window, which refills in
        `refill_in` seconds."""
        w = self._waiters
        with self._lock:
            if remaining is not None:
                remaining = left_after(remaining, w.held, permit)
            success = Success(None, None, remaining, refill_in)
            if permit is not None:
                in_flight = permit.in_flight - w.rejected_before.pop(permit.seq, 0)
                latency = time.monotonic() - permit.started
                success = Success(in_flight, latency, remaining, refill_in)
            w.pending_successes.append(success)

    def record_rate_limited(
        self,
        retry_after: float | None = None,
        permit: Permit | None = None,
        *,
        max_pause: float | None = None,
    ) -> None:
        """The provider answered 429: the shared window or pace is cut, for every process.

        `retry_after` pauses every process's calls for that long, at most `max_pause`.
        """
        w = self._waiters
        with self._lock:
            self.rate_limited += 1
            seq = in_flight = None
            overtaken = 0
            if permit is not None:
                seq = permit.seq
                in_flight = permit.in_flight - w.rejected_before.pop(permit.seq, 0)
                now = time.monotonic()
                for other in w.held:  # they counted this call among theirs in flight
                    if other > permit.seq:
                        w.rejected_before[other] = w.rejected_before.get(other, 0) + 1
                        # Started with it (not booked later): it may have got there first.
                        started = w.starts.get(other, math.inf)
                        overtaken += started <= min(now, permit.started + SAME_BURST)
            limited = Limited(retry_after, seq, in_flight, minute_left(), max_pause, overtaken)
            w.pending_limited.append(limited)
        self._wake_soon()

    def close(self) -> None:
        """Stop the keeper, give back this process's leases and leave the store."""
        w = self._waiters
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = [a for a in w.asks if not a.granted]
            for ask in waiting:
                ask.granted = True
            w.live = 0
        atexit.unregister(self.close)
        for ask in waiting:
            with contextlib.suppress(RuntimeError):
                ask.loop.call_soon_threadsafe(fail, ask.future, f"{self!r} was closed")
        self._keeper.stop()
        with self._lock:  # the last feedback, and every lease this process still has
            last = w.drain()
        self._keeper.leave(last)

    @property
    def active(self) -> int:
        """Callers of this process holding a slot."""
        return self._waiters.active

    @property
    def waiting(self) -> int:
        """Callers of this process queued for a slot."""
        with self._lock:
            return self._waiters.live

    def snapshot(self) -> dict[str, Any]:
        """The shared state now: pace, window, slots in use, waiting processes, counters."""
        return self._keeper.snapshot()

    # -- the waiters (the keeper thread calls these) -----------------------------------------

    def _take_work(self, renew: bool) -> Work:
        """What the next transaction does."""
        with self._lock:
            return self._waiters.work(renew, self.state, self.limits, self.PACE_HORIZON)

    def _give_back(self, work: Work) -> None:
        """A transaction failed: keep its feedback and releases for the next one."""
        with self._lock:
            self._waiters.give_back(work)

    def _hand_out(self, outcome: Outcome) -> None:
        """Give the slots just acquired to the best waiters, in priority order."""
        with self._lock:
            again = self._waiters.hand_out(outcome)
        if again:
            self._wake.set()


def _key_text(key: str | Sequence[str]) -> str:
    text = key if isinstance(key, str) else "|".join(str(part) for part in key)
    if not text:
        raise SharedLimitsError(
            "the shared limits key is empty; pass the endpoint, e.g. 'openai:gpt-4o-mini'",
            setting="key",
        )
    return text
