"""One process's side of a shared limiter: its callers waiting for a slot, and the slots
and feedback it has not yet told the store.

Callers queue by priority (a heap of `Ask`). Each transaction of the keeper takes the
work to do (`Waiters.work`: the best waiters the window and the pace may admit, the
leases freed by `release`, the feedback to report); a failed one gives it back
(`give_back`); a closing limiter takes the last (`drain`). The slots a transaction got
go to the best waiters still waiting (`hand_out`), each on its own event loop. The
limiter (`fanfold.scheduling.shared_limits`) holds `lock` while it changes any of this.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass, field
from typing import Any

from fanfold.scheduling.limits import Permit
from fanfold.scheduling.pacing import PaceLimits, PaceState
from fanfold.scheduling.shared_sync import Limited, Outcome, Success, Work

__all__ = ["Ask", "Waiters", "fail"]


@dataclass(order=True)
class Ask:
    key: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[Permit] = field(compare=False)
    tokens: int = field(default=0, compare=False)
    granted: bool = field(default=False, compare=False)
    """Granted a slot, or given up (cancelled): no longer waiting."""


class Waiters:
    """The callers of one process waiting for a shared slot, and the slots they hold.

    Every method but `__init__` is called holding the limiter's lock.
    """

    def __init__(self) -> None:
        self.asks: list[Ask] = []  # callers waiting, best first (a heap)
        self.live = 0  # callers waiting
        self.active = 0
        """Callers holding a slot."""
        self.held: dict[int, str] = {}  # seq -> lease id of callers holding a slot
        self.starts: dict[int, float] = {}  # seq -> time.monotonic() of its start
        self.rejected_before: dict[int, int] = {}  # seq -> earlier calls since rejected
        self.leaseless = 0  # callers holding a slot granted while no cap applied
        self.to_release: list[str] = []
        self.pending_successes: list[Success] = []
        self.pending_limited: list[Limited] = []

    def work(self, renew: bool, state: PaceState, limits: PaceLimits, horizon: float) -> Work:
        """What the next transaction does."""
        limit = self.live
        cap = state.cap(limits)
        if cap is not None:
            limit = min(limit, cap)
        rate = state.effective_rate(limits)
        if rate is not None:  # at most the starts within the pace horizon
            limit = min(limit, int(horizon * rate) + 2)
        best: list[Ask] = []
        while len(best) < limit and self.asks:
            ask = heapq.heappop(self.asks)
            if not ask.granted:
                if ask.loop.is_closed():
                    ask.granted = True
                    self.live -= 1
                    continue
                best.append(ask)
        for ask in best:
            heapq.heappush(self.asks, ask)
        work = Work(
            want=self.live,
            asks=[a.tokens for a in best],
            releases=self.to_release,
            successes=self.pending_successes,
            limited=self.pending_limited,
            held=[(lease, seq) for seq, lease in self.held.items()],
            renew=renew,
        )
        self.to_release, self.pending_successes, self.pending_limited = [], [], []
        return work

    def release(self, permit: Permit | None) -> None:
        """A caller freed its slot (`permit`; None: any one): its lease goes at the next
        transaction."""
        self.active = max(0, self.active - 1)
        lease = None
        if permit is not None and permit.seq in self.held:
            lease = self.held.pop(permit.seq)
            self.starts.pop(permit.seq, None)
        elif permit is None and self.held:
            seq = next(iter(self.held))
            lease = self.held.pop(seq)
            self.starts.pop(seq, None)
        elif self.leaseless:
            self.leaseless -= 1
        if lease is not None:
            self.to_release.append(lease)
        if not self.held:
            self.rejected_before.clear()

    def drain(self) -> Work:
        """The last transaction of a closing limiter: its feedback, and every lease held."""
        last = Work(
            want=0,
            asks=[],
            releases=[*self.held.values(), *self.to_release],
            successes=self.pending_successes,
            limited=self.pending_limited,
            held=[],
            renew=False,
        )
        self.held, self.to_release, self.leaseless = {}, [], 0
        self.starts.clear()
        self.pending_successes, self.pending_limited = [], []
        return last

    def give_back(self, work: Work) -> None:
        """A transaction failed: keep its feedback and releases for the next one."""
        self.to_release[:0] = work.releases
        self.pending_successes[:0] = work.successes
        self.pending_limited[:0] = work.limited

    def hand_out(self, outcome: Outcome) -> bool:
        """Give the slots just acquired to the best waiters, in priority order.

        Returns:
            Whether a slot found no waiter and goes back at the next transaction.
        """
        again = False
        for grant in outcome.grants:
            ask = self._pop_waiter()
            if ask is None:  # the waiters gave up meanwhile: return the slot
                if grant.lease is not None:
                    self.to_release.append(grant.lease)
                again = True
                continue
            ask.granted = True
            self.live -= 1
            permit = Permit(grant.seq, grant.in_flight, outcome.mono + grant.delay)
            try:
                ask.loop.call_soon_threadsafe(_grant, ask.future, permit)
            except RuntimeError:  # its event loop is closed
                if grant.lease is not None:
                    self.to_release.append(grant.lease)
                again = True
                continue
            self.active += 1
            if grant.lease is not None:
                self.held[grant.seq] = grant.lease
                self.starts[grant.seq] = permit.started
            else:
                self.leaseless += 1
        return again

    def _pop_waiter(self) -> Ask | None:
        while self.asks:
            ask = heapq.heappop(self.asks)
            if not ask.granted and not ask.loop.is_closed():
                return ask
            if not ask.granted:
                ask.granted = True
                self.live -= 1
        return None


def _grant(future: asyncio.Future[Permit], permit: Permit) -> None:
    if not future.done():
        future.set_result(permit)


def fail(future: asyncio.Future[Permit], message: str) -> None:
    """Fail a waiter's future with a RuntimeError (on its event loop's thread)."""
    if not future.done():
        future.set_exception(RuntimeError(message))
