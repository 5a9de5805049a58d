"""Map subtasks: one call per item of a list, a window of items in flight at once."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from fanfold.scheduling.batch_client import BatchRound
from fanfold.scheduling.batches import BatchJournal
from fanfold.scheduling.call_attempts import CallAttempts
from fanfold.scheduling.dispatch_state import ItemTasks, cost_source, for_budget, item_id
from fanfold.state.results import Status, SubtaskResult, TokenUsage

ITEM_WINDOW = 1024
"""Most items of one map with a started call (waiting for a slot or in flight) at once.

A call's task, config, prompt and messages exist only while it is in the window, so a
map over 100,000 items holds 100,000 results, not 100,000 calls."""


class MapItems(CallAttempts):
    """Runs a map subtask's items; downstream item-wise maps wait on each item."""

    # -- maps ---------------------------------------------------------------------------

    def _set_item_list(self, sid: str, tasks: ItemTasks | None) -> None:
        future = self._item_lists.get(sid)
        if future is not None and not future.done():
            future.set_result(tasks)

    async def _map(
        self,
        sid: str,
        deps: dict[str, SubtaskResult],
        *,
        items: list[Any] | None = None,
        upstream: list[Any] | None = None,
    ) -> SubtaskResult:
        started = time.time()
        count = len(items if items is not None else upstream or [])
        if self.budget is not None and self._aggregate_items.get(sid) != count:
            self._aggregate_items[sid] = count  # the aggregate will read this many outputs
            self._set_aside_for_aggregate()
        self._emit(sid, "started", started_at=started, items=count, priority=self._priority(sid))
        reuse = self._reuse.pop(sid, {})
        if len(reuse) > count:
            reuse = {}  # a different list: nothing to reuse
        # One future per item, resolved with its result: downstream item-wise maps wait
        # on these, and only the items in the window have a task, config and prompt.
        slots: ItemTasks = [self.loop.create_future() for _ in range(count)]
        self._set_item_list(sid, slots)
        batch = self._open_batch(sid, count)  # a batch waits for every item's request
        window = asyncio.Semaphore(ITEM_WINDOW if batch is None else count)
        for index in range(count):
            if index in reuse and reuse[index].ok:
                slots[index].set_result(reuse[index])
                if batch is not None:
                    batch.settle(index)
                continue
            await window.acquire()
            coro = (
                self._item(sid, deps, index, item=items[index])
                if items is not None
                else self._item_after(sid, deps, index, upstream[index] if upstream else None)
            )
            task = self._spawn(coro, sid, index)
            self._item_tasks.add(task)
            task.add_done_callback(functools.partial(self._item_done, slots[index], window))
            if batch is not None:
                task.add_done_callback(functools.partial(_settle, batch, index))
        try:
            results = list(await asyncio.gather(*slots)) if slots else []
        finally:
            if batch is not None:
                await batch.aclose()
        combined = self._combine(sid, results, started)
        if batch is not None:
            await batch.finish()
            combined.batch = batch.summary()
        return self._finish(combined)

    def _open_batch(self, sid: str, count: int) -> BatchRound | None:
        """The batch map `sid`'s items go out in, when it is sent as one."""
        explicit = self.runtime.batch_maps.get(sid)
        if explicit is None or not self.runtime.batch.batches(explicit=explicit, count=count):
            return None
        journal = self.journal if isinstance(self.journal, BatchJournal) else None
        emit = functools.partial(self._emit_batch, sid)
        batch = BatchRound(sid, count, options=self.runtime.batch, journal=journal, emit=emit)
        self._batches[sid] = batch
        return batch

    def _emit_batch(self, sid: str, state: dict[str, Any]) -> None:
        self._emit(sid, "batch", None, batch=state)

    def _item_done(
        self,
        slot: asyncio.Future[SubtaskResult],
        window: asyncio.Semaphore,
        task: asyncio.Task[SubtaskResult],
    ) -> None:
        self._item_tasks.discard(task)
        window.release()
        if slot.done():
            return
        if task.cancelled():
            slot.cancel()
        elif task.exception() is not None:
            slot.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            slot.set_result(task.result())

    async def _item_after(
        self, sid: str, deps: dict[str, SubtaskResult], index: int, upstream: Any
    ) -> SubtaskResult:
        # Shielded: this item giving up must not cancel the upstream item others await.
        before = (
            await asyncio.shield(upstream) if isinstance(upstream, asyncio.Future) else upstream
        )
        if not isinstance(before, SubtaskResult) or not before.ok:
            status = before.status if isinstance(before, SubtaskResult) else "failed"
            reason = f"dependency item {item_id(self.runtime.subtasks[sid].map or '', index)!r}"
            error = f"{reason} {status}"
            if isinstance(before, SubtaskResult) and for_budget(before):
                error = f"budget: {reason} was skipped for the budget"
            return self._finish_item(
                SubtaskResult(
                    id=item_id(sid, index),
                    status="skipped",
                    error=error,
                    index=index,
                    kind=self.runtime.subtasks[sid].kind,
                    priority=self._priority(sid),
                    cost=0.0,
                ),
                sid,
            )
        return await self._item(sid, deps, index, item=before.output)

    async def _item(
        self, sid: str, deps: dict[str, SubtaskResult], index: int, *, item: Any
    ) -> SubtaskResult:
        result = await self._attempts(sid, deps, item=item, index=index)
        return self._finish_item(result, sid)

    def _combine(self, sid: str, items: list[SubtaskResult], started: float) -> SubtaskResult:
        failed = [r for r in items if not r.ok]
        usage = TokenUsage()
        cached_usage = TokenUsage()
        cost: float | None = 0.0
        for r in items:
            usage = usage + r.usage
            if r.cached_usage is not None:
                cached_usage = cached_usage + r.cached_usage
            cost = None if cost is None or r.cost is None else cost + r.cost
        starts = [r.started_at for r in items if r.started_at is not None]
        error = None
        status: Status = "succeeded"
        if failed:
            status = "failed"
            error = (
                f"{len(failed)} of {len(items)} items did not succeed; first: "
                f"{failed[0].id}: {failed[0].error}"
            )
            over = [r for r in failed if for_budget(r)]
            if len(over) == len(failed):  # nothing failed: the budget stopped the rest
                status = "skipped"
                error = (
                    f"budget: {len(over)} of {len(items)} items skipped for the budget; "
                    f"first: {over[0].id}"
                )
        cached = bool(items) and all(r.cached for r in items)
        return SubtaskResult(
            id=sid,
            status=status,
            output=[r.output if r.ok else None for r in items],
            items=items,
            error=error,
            usage=usage,
            started_at=min(starts, default=started),
            finished_at=time.time(),
            attempts=sum(r.attempts for r in items),
            model=self.runtime.labels.get(sid),
            priority=self._priority(sid),
            kind=self.runtime.subtasks[sid].kind,
            cost=cost,
            cost_source=cost_source({r.cost_source for r in items if r.cost_source}),
            cached=cached,
            cached_usage=cached_usage if any(r.cached for r in items) else None,
        )


def _settle(batch: BatchRound, index: int, _task: object) -> None:
    batch.settle(index)
