"""The run-scoped dispatcher: start each subtask's call the moment its own dependencies finish.

LangGraph executes a graph in supersteps, so a node waits for the slowest node of the
previous step even when its own inputs were ready long before. The dispatcher runs
underneath the graph: when a run starts it creates one asyncio task per subtask, each
awaiting only its dependencies' tasks. The graph's node for a subtask then just awaits
that task and commits the result, so nodes, join edges and checkpoints stay LangGraph's
while the model calls follow the critical path.

A map subtask runs one call per item of its list. Each item is retried on its own and
waits for a slot like any call; a map over another map's items starts item i as soon
as upstream item i is done.

With a persistent cache (`runtime.cache`), a call of a kind that needs a model is looked
up before it waits for a slot and, once it succeeds, stored at once: a run killed before
LangGraph committed that subtask's node still finds the call on its next attempt. A
checkpointed run also journals each finished call (`journal`, in the run's LangGraph
store), with or without a cache, so its resume requests none of them again.

With a budget (`runtime.budget`), each call sets its estimated cost aside when it gets a
slot; the first call that would take the spent cost, plus the calls in flight, past the
budget is skipped with the reason "budget", and so is every call after it. The
aggregate's estimated cost is set aside from the start, so the aggregate always runs.

Nothing here imports LangGraph: the graph layer passes in how to build each call's
config and where lifecycle events go.

The parts: `dispatch_state` (the run's state and events), `call_attempts` (one call
with retries), `map_items` (a map's items) and this module (when each subtask runs).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Mapping
from typing import Any

from fanfold.scheduling.dispatch_state import (
    CallConfigFactory,
    EventSink,
    ItemTasks,
    for_budget,
    item_id,
)
from fanfold.scheduling.events import EVENT_TYPE
from fanfold.scheduling.map_items import ITEM_WINDOW, MapItems
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult

__all__ = [
    "EVENT_TYPE",
    "ITEM_WINDOW",
    "CallConfigFactory",
    "Dispatcher",
    "EventSink",
    "ItemTasks",
    "item_id",
]


class Dispatcher(MapItems):
    """Runs one graph invocation's subtasks as dependency-driven asyncio tasks.

    Args:
        runtime: the compiled plan.
        run_id: the graph run's id.
        inputs: the run's inputs (defaults filled in, checked).
        done: results already known (a resumed or retried run); they are not run again.
        loop: the event loop the tasks run on.
        call_config: builds the config of each call (its node, tags, callbacks).
        emit: receives lifecycle events, or None when nobody listens.
        reuse_items: for a retried map, item results that already succeeded, by index.
        budget: the run's Budget when the run has spent before the plan ran (a goal
            run's planner); None makes one from `runtime.budget`.
        journal: where this checkpointed run journals its finished calls (or None).

    A plan that grows while it runs (a streamed plan) hands its larger runtime to
    `extend`; `discard` cancels subtasks the finished plan no longer has.
    """

    # -- scheduling ---------------------------------------------------------------------

    def start(self) -> None:
        """Create a task for every subtask not yet done (call on the dispatcher's loop)."""
        # Highest priority first: the first ready subtasks take free slots without queueing.
        ranked = sorted(self.runtime.order, key=self.runtime.priorities.__getitem__, reverse=True)
        for sid in ranked:
            self._ensure(sid)

    def extend(self, runtime: PlanRuntime, inputs: Mapping[str, Any]) -> None:
        """Run a larger plan: `runtime` holds every subtask started so far, unchanged.

        The new subtasks start at once (call on the dispatcher's loop).

        Args:
            runtime: the grown plan's runtime.
            inputs: the run's inputs as `runtime.run_inputs` gives them.
        """
        self.runtime = runtime
        self.inputs = dict(inputs)
        self.task = runtime.task_text(self.inputs)
        self._count_input_items()
        self.start()

    def adopt(
        self,
        runtime: PlanRuntime,
        inputs: Mapping[str, Any],
        *,
        call_config: CallConfigFactory,
        emit: EventSink | None,
    ) -> None:
        """Hand the dispatcher to the graph run that commits its results.

        Calls started from now on take their config from `call_config` and events go
        to `emit`; then `extend(runtime, inputs)`. Call on the dispatcher's loop.
        """
        self._call_config = call_config
        self._emit_event = emit
        self._context = contextvars.copy_context()
        self.extend(runtime, inputs)

    def discard(self, sids: list[str]) -> list[str]:
        """Cancel the calls of subtasks a plan no longer has (or has changed); forget them.

        Each one that had started is announced with the status "discarded". Call on
        the dispatcher's loop; its dependents must be discarded too.

        Returns:
            The subtasks that had started (or finished), in the given order.
        """
        dropped: list[str] = []
        for sid in sids:
            task = self._tasks.pop(sid, None)
            result = self.done.pop(sid, None)
            self._waiting.pop(sid, None)
            self._dependents.pop(sid, None)
            waiter = self._waiters.pop(sid, None)
            if waiter is not None:
                waiter.cancel()
            self._item_lists.pop(sid, None)
            if task is None and result is None:
                continue
            if task is not None and not task.done():
                task.cancel()
            dropped.append(sid)
            fields: dict[str, Any] = {}
            if result is not None:
                fields = {"total_tokens": result.usage.total_tokens, "cost": result.cost}
            self._emit(sid, "discarded", None, **fields)
        gone = set(sids)
        for sid, dependents in self._dependents.items():
            self._dependents[sid] = [d for d in dependents if d not in gone]
        for task in list(self._item_tasks):
            if task.get_name().startswith(tuple(f"fanfold:{sid}[" for sid in dropped)):
                task.cancel()
        return dropped

    def _ensure(self, sid: str) -> None:
        """Schedule `sid`: start it now if its dependencies are done, else when they are.

        A subtask that waits has no task yet, only a count of the dependencies it waits
        for; the last of them to finish starts it (`_dependency_done`).
        """
        if sid in self.done or sid in self._tasks or sid in self._waiting:
            return
        self._waiting[sid] = 0  # scheduled: a second _ensure returns at once
        source = self._item_source(sid)
        waits = 0
        for dep in self.runtime.dependencies[sid]:
            self._ensure(dep)
            if dep != source and not self._finished(dep):
                waits += 1
                self._dependents.setdefault(dep, []).append(sid)
        if sid in self.runtime.maps:
            self._item_lists[sid] = self.loop.create_future()
        if waits:
            self._waiting[sid] = waits
        else:
            del self._waiting[sid]
            self._launch(sid)

    def _finished(self, sid: str) -> bool:
        task = self._tasks.get(sid)
        return sid in self.done or (task is not None and task.done())

    def _item_source(self, sid: str) -> str | None:
        """The map whose items `sid` maps over one by one (it waits per item), if any."""
        subtask = self.runtime.subtasks[sid]
        source = subtask.map if subtask.map in self.runtime.maps else None
        if source is not None and source in subtask.placeholders:
            return None  # the prompt shows the whole upstream list: wait for all of it
        return source

    def _launch(self, sid: str) -> None:
        task = self._spawn(self._run(sid), sid, None)
        self._tasks[sid] = task
        task.add_done_callback(functools.partial(self._dependency_done, sid))
        waiter = self._waiters.pop(sid, None)
        if waiter is not None:
            task.add_done_callback(functools.partial(_settle_waiter, waiter))

    def _finish(self, result: SubtaskResult) -> SubtaskResult:
        finished = super()._finish(result)
        # Started before this task ends, so they queue for a slot before this call's
        # slot is freed (by a done callback of this task).
        task = self._tasks.get(result.id)
        if task is not None and task is asyncio.current_task():
            self._start_dependents(result.id)
        return finished

    def _dependency_done(self, sid: str, task: asyncio.Task[SubtaskResult]) -> None:
        """A subtask's task ended: start its dependents if its result did not (an error)."""
        if self._tasks.get(sid) is task:
            self._start_dependents(sid)

    def _start_dependents(self, sid: str) -> None:
        """Start each dependent of `sid` that waited for it last."""
        if self._stopped:
            return  # cancelled with the run
        for dependent in self._dependents.pop(sid, ()):
            waits = self._waiting.get(dependent)
            if waits is None:
                continue  # discarded
            if waits > 1:
                self._waiting[dependent] = waits - 1
            else:
                del self._waiting[dependent]
                self._launch(dependent)

    async def result(self, sid: str) -> SubtaskResult:
        """Wait for subtask `sid` and return its result (starting it if needed)."""
        if sid in self.done:
            return self.done[sid]
        self._ensure(sid)
        task = self._tasks.get(sid)
        if task is None:  # waiting for its dependencies
            waiter = self._waiters.get(sid)
            if waiter is None:
                waiter = self._waiters[sid] = self.loop.create_future()
            return await asyncio.shield(waiter)
        # Shielded: a cancelled waiter must not cancel a call other subtasks wait for.
        return await asyncio.shield(task)

    def cancel(self) -> None:
        """Cancel every call still running (call on the dispatcher's loop)."""
        self._stopped = True  # no dependent starts from here on
        for task in [*self._tasks.values(), *self._item_tasks, *self._waiters.values()]:
            if not task.done():
                task.cancel()

    async def aclose(self) -> None:
        """Cancel what is still running and wait until it has stopped."""
        self.cancel()
        pending = [t for t in [*self._tasks.values(), *self._item_tasks] if not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one subtask --------------------------------------------------------------------

    async def _dependency(self, dep: str) -> SubtaskResult:
        if dep in self.done:
            return self.done[dep]
        task = self._tasks.get(dep)
        if task is None:  # an item-wise map's source that has not started
            return await self.result(dep)
        # Awaited directly, not shielded: dispatcher tasks are only ever cancelled together.
        return await task

    def _blocked(self, dep: str, result: SubtaskResult) -> bool:
        if result.ok:
            return False
        # A map that may run on a partial list lets its dependents run when it has a list.
        partial = self.runtime.subtasks[dep].allow_partial and result.items is not None
        return not partial

    async def _run(self, sid: str) -> SubtaskResult:
        try:
            return await self._run_subtask(sid)
        finally:
            self._set_item_list(sid, None)  # never leave an item-wise map waiting

    async def _run_subtask(self, sid: str) -> SubtaskResult:
        subtask = self.runtime.subtasks[sid]
        source = self._item_source(sid)
        deps: dict[str, SubtaskResult] = {}
        for dep in self.runtime.dependencies[sid]:
            if dep != source:  # an item-wise map waits for each upstream item, not the list
                deps[dep] = await self._dependency(dep)  # done: it started when they were
        blocked = [dep for dep, res in deps.items() if self._blocked(dep, res)]
        if blocked:
            return self._skip(sid, blocked[0], deps[blocked[0]])
        if subtask.map is None:
            return await self._attempts(sid, deps)
        if source is not None:
            upstream = await self._upstream_items(source)
            if upstream is None:
                return self._skip(sid, source, await self._dependency(source))
            return await self._map(sid, deps, upstream=upstream)
        if subtask.map in self.runtime.subtasks:
            listed = await self._dependency(subtask.map)
            if self._blocked(subtask.map, listed):
                return self._skip(sid, subtask.map, listed)
            if not isinstance(listed.output, list):
                return self._fail_listing(
                    sid,
                    f"subtask {sid!r} maps over subtask {subtask.map!r}, whose output is a "
                    f"{type(listed.output).__name__}, not a list; make {subtask.map!r} "
                    "return a list (a splitter kind, or an output_schema with an array)",
                )
            if listed.items is not None:  # a map's items: those that failed are skipped
                return await self._map(sid, deps, upstream=listed.items)
            return await self._map(sid, deps, items=listed.output)
        return await self._map(sid, deps, items=self.inputs[subtask.map])

    def _skip(self, sid: str, dep: str, dep_result: SubtaskResult) -> SubtaskResult:
        reason = f"dependency {dep!r} {dep_result.status}"
        if for_budget(dep_result):
            reason = f"budget: dependency {dep!r} was skipped for the budget"
        skipped = SubtaskResult(
            id=sid,
            status="skipped",
            error=reason,
            priority=self._priority(sid),
            kind=self.runtime.subtasks[sid].kind,
            cost=0.0,
        )
        self._set_item_list(sid, None)
        return self._finish(skipped)

    def _fail_listing(self, sid: str, error: str) -> SubtaskResult:
        failed = SubtaskResult(
            id=sid,
            status="failed",
            error=error,
            finished_at=time.time(),
            priority=self._priority(sid),
            kind=self.runtime.subtasks[sid].kind,
            cost=0.0,
        )
        self._set_item_list(sid, None)
        return self._finish(failed)

    async def _upstream_items(self, source: str) -> list[Any] | None:
        """Per-item awaitables of map `source` (tasks or finished results), or None."""
        if source in self.done:
            done = self.done[source]
            return list(done.items) if done.items is not None else None
        self._ensure(source)
        tasks = await asyncio.shield(self._item_lists[source])
        return list(tasks) if tasks is not None else None


def _settle_waiter(
    waiter: asyncio.Future[SubtaskResult], task: asyncio.Task[SubtaskResult]
) -> None:
    """Pass a subtask's outcome to those who asked for it before it started."""
    if waiter.done():
        return
    if task.cancelled():
        waiter.cancel()
    elif task.exception() is not None:
        waiter.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        waiter.set_result(task.result())
