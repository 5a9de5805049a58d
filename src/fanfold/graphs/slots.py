"""A concurrency limit that hands free slots to the highest-priority waiter first."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class PrioritySlots:
    """At most `limit` holders at once; waiters are served by priority, then arrival.

    With `limit=None` acquiring never waits. Must be used from one event loop.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {limit}")
        self.limit = limit
        self.active = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: float = 0.0) -> None:
        """Wait for a slot; higher `priority` is served first."""
        if self.limit is None:
            return
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._seq), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Free a slot, handing it straight to the best waiter if there is one."""
        if self.limit is None:
            return
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self.active -= 1

    @property
    def waiting(self) -> int:
        """How many acquirers are queued."""
        return sum(1 for _, _, f in self._waiters if not f.done())
