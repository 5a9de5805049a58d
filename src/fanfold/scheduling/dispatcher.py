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
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

from fanfold._secrets import describe_error
from fanfold.models.caps import output_cap, with_output_cap
from fanfold.models.resolve import model_label
from fanfold.plan.models import SubTask
from fanfold.plan.prompts import subtask_messages, subtask_prompt
from fanfold.plan.template import MissingFieldError
from fanfold.scheduling.batch_client import UNLIMITED, BatchRound
from fanfold.scheduling.batches import BatchJournal
from fanfold.scheduling.budget import Budget
from fanfold.scheduling.cache import CallJournal, call_key, revive
from fanfold.scheduling.calls import KindOutput, SubtaskCall, attempt_config, billed_usage
from fanfold.scheduling.events import EVENT_TYPE
from fanfold.scheduling.limits import Limiter, Permit, minute_left
from fanfold.scheduling.retry import Failure, classify, is_timeout
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.scheduling.tokens import (
    aggregate_input_tokens,
    messages_tokens,
    output_tokens,
    reply_tokens,
)
from fanfold.state.results import Status, SubtaskResult, TokenUsage

CallConfigFactory = Callable[[str, int | None], RunnableConfig]
"""(subtask id, item index or None) -> the config of that call."""
EventSink = Callable[[dict[str, Any]], None]

ItemTasks = list["asyncio.Future[SubtaskResult]"]

ITEM_WINDOW = 1024
"""Most items of one map with a started call (waiting for a slot or in flight) at once.

A call's task, config, prompt and messages exist only while it is in the window, so a
map over 100,000 items holds 100,000 results, not 100,000 calls."""


def item_id(sid: str, index: int) -> str:
    """The id of item `index` of map subtask `sid`, e.g. `analyse[3]`."""
    return f"{sid}[{index}]"


class Dispatcher:
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

    A plan that grows while it runs (a streamed plan) hands its larger runtime to
    `extend`; `discard` cancels subtasks the finished plan no longer has.
        journal: where this checkpointed run journals its finished calls (or None).
    """

    def __init__(
        self,
        runtime: PlanRuntime,
        *,
        run_id: uuid.UUID,
        inputs: Mapping[str, Any],
        done: Mapping[str, SubtaskResult],
        loop: asyncio.AbstractEventLoop,
        call_config: CallConfigFactory,
        emit: EventSink | None = None,
        reuse_items: Mapping[str, Mapping[int, SubtaskResult]] | None = None,
        budget: Budget | None = None,
        journal: CallJournal | None = None,
    ) -> None:
        self.runtime = runtime
        self.journal = journal
        self.run_id = run_id
        self.inputs = dict(inputs)
        self.task = runtime.task_text(self.inputs)
        self.done: dict[str, SubtaskResult] = dict(done)
        self.loop = loop
        self.started_at = time.time()
        self._call_config = call_config
        self._emit_event = emit
        self._reuse = {sid: dict(items) for sid, items in (reuse_items or {}).items()}
        # Each call's context starts from the creator's (tracing and other contextvars)
        # and then gets that call's own config; see _spawn.
        self._context = contextvars.copy_context()
        self._tasks: dict[str, asyncio.Task[SubtaskResult]] = {}
        self._item_lists: dict[str, asyncio.Future[ItemTasks | None]] = {}
        self._item_tasks: set[asyncio.Task[SubtaskResult]] = set()
        self._systems: dict[str, SystemMessage] = {}
        self._capped_models: dict[str, BaseChatModel] = {}
        self.budget: Budget | None = budget
        self._aggregate_items: dict[str, int] = {}
        self._batches: dict[str, BatchRound] = {}
        if runtime.budget is not None and budget is None:
            spent = 0.0
            for res in self.done.values():
                for call in res.items if res.items is not None else [res]:
                    spent += call.cost or 0.0
            self.budget = Budget(runtime.budget, spent=spent)
        self._count_input_items()

    def _count_input_items(self) -> None:
        """With a budget, the items of maps over run inputs, for the aggregate's estimate."""
        if self.budget is None:
            return
        runtime = self.runtime
        for sid in runtime.maps:
            source = runtime.subtasks[sid].map
            listed = self.inputs.get(source) if source in runtime.input_maps else None
            if isinstance(listed, list):
                self._aggregate_items[sid] = len(listed)
        self._set_aside_for_aggregate(starting=True)

    def _set_aside_for_aggregate(self, *, starting: bool = False) -> None:
        """Hold back the aggregate call's estimated cost (maps: their known item counts)."""
        runtime = self.runtime
        if self.budget is None or runtime.aggregate_model is None:
            return
        outputs = {
            sid: (
                max(1, self._aggregate_items.get(sid, 1)) if sid in runtime.maps else 0,
                output_tokens(runtime.subtasks[sid], runtime.models.get(sid)),
            )
            for sid in runtime.order
        }
        settings = runtime.plan.aggregation
        tokens = aggregate_input_tokens(
            self.task, outputs, instructions=settings.instructions, system=settings.system
        )
        label = model_label(runtime.aggregate_model)
        estimate = runtime.prices.estimate(label, tokens, reply_tokens(runtime.aggregate_model))
        if starting:
            self.budget.hold_for_aggregate(estimate or 0.0)
        else:
            self.budget.set_aside_for_aggregate(estimate or 0.0)

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
            self._item_lists.pop(sid, None)
            self._systems.pop(sid, None)
            if task is None and result is None:
                continue
            if task is not None and not task.done():
                task.cancel()
            dropped.append(sid)
            fields: dict[str, Any] = {}
            if result is not None:
                fields = {"total_tokens": result.usage.total_tokens, "cost": result.cost}
            self._emit(sid, "discarded", None, **fields)
        for task in list(self._item_tasks):
            if task.get_name().startswith(tuple(f"fanfold:{sid}[" for sid in dropped)):
                task.cancel()
        return dropped

    def _ensure(self, sid: str) -> asyncio.Task[SubtaskResult] | None:
        if sid in self.done:
            return None
        task = self._tasks.get(sid)
        if task is None:
            for dep in self.runtime.dependencies[sid]:
                self._ensure(dep)
            if sid in self.runtime.maps:
                self._item_lists[sid] = self.loop.create_future()
            task = self._spawn(self._run(sid), sid, None)
            self._tasks[sid] = task
        return task

    def _spawn(self, coro: Any, sid: str, index: int | None) -> asyncio.Task[SubtaskResult]:
        """Start `coro` as a task whose ambient config is this call's own.

        Runnables invoked without an explicit config (and LangGraph's get_config())
        then see this subtask's node, not the node that happened to start the run.
        """
        config = dict(self._call_config(sid, index))
        config.pop("run_name", None)  # names the call's own run, not its children's
        context = self._context.copy()
        context.run(var_child_runnable_config.set, config)  # type: ignore[arg-type]
        name = f"fanfold:{sid}" if index is None else f"fanfold:{item_id(sid, index)}"
        return self.loop.create_task(coro, name=name, context=context)

    async def result(self, sid: str) -> SubtaskResult:
        """Wait for subtask `sid` and return its result (starting it if needed)."""
        if sid in self.done:
            return self.done[sid]
        task = self._ensure(sid)
        assert task is not None
        # Shielded: a cancelled waiter must not cancel a call other subtasks wait for.
        return await asyncio.shield(task)

    def cancel(self) -> None:
        """Cancel every call still running (call on the dispatcher's loop)."""
        for task in [*self._tasks.values(), *self._item_tasks]:
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
        # Awaited directly, not shielded: dispatcher tasks are only ever cancelled together.
        return self.done[dep] if dep in self.done else await self._tasks[dep]

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
        source = subtask.map if subtask.map in self.runtime.maps else None
        if source is not None and source in subtask.placeholders:
            source = None  # the prompt shows the whole upstream list: wait for all of it
        deps: dict[str, SubtaskResult] = {}
        for dep in self.runtime.dependencies[sid]:
            if dep != source:  # an item-wise map waits for each upstream item, not the list
                deps[dep] = await self._dependency(dep)
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
        if _for_budget(dep_result):
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

    # -- maps ---------------------------------------------------------------------------

    def _set_item_list(self, sid: str, tasks: ItemTasks | None) -> None:
        future = self._item_lists.get(sid)
        if future is not None and not future.done():
            future.set_result(tasks)

    async def _upstream_items(self, source: str) -> list[Any] | None:
        """Per-item awaitables of map `source` (tasks or finished results), or None."""
        if source in self.done:
            done = self.done[source]
            return list(done.items) if done.items is not None else None
        self._ensure(source)
        tasks = await asyncio.shield(self._item_lists[source])
        return list(tasks) if tasks is not None else None

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
                batch.close()
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
            if isinstance(before, SubtaskResult) and _for_budget(before):
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
            over = [r for r in failed if _for_budget(r)]
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
            cost_source=_cost_source({r.cost_source for r in items if r.cost_source}),
            cached=cached,
            cached_usage=cached_usage if any(r.cached for r in items) else None,
        )

    # -- one call, with retries ---------------------------------------------------------

    async def _attempts(
        self,
        sid: str,
        deps: dict[str, SubtaskResult],
        *,
        item: Any = None,
        index: int | None = None,
    ) -> SubtaskResult:
        """Run one call (a subtask, or one item of a map) until it succeeds or gives up."""
        runtime = self.runtime
        subtask = runtime.subtasks[sid]
        model = runtime.models.get(sid)
        label = runtime.labels.get(sid)
        limiter = runtime.limiters[sid]
        policy = runtime.retry
        budget = subtask.max_attempts or policy.max_attempts
        priority_rank = runtime.priorities[sid]
        priority = self._priority(sid)
        rid = sid if index is None else item_id(sid, index)
        try:
            prompt = subtask_prompt(
                subtask,
                task=self.task,
                inputs=self.inputs,
                dependencies={dep: res.output for dep, res in deps.items()},
                maps=runtime.maps,
                item=item,
                index=index,
            )
        except MissingFieldError as exc:
            failed = SubtaskResult(
                id=rid,
                status="failed",
                error=f"cannot render the prompt of {rid!r}: {exc}",
                finished_at=time.time(),
                model=label,
                priority=priority,
                kind=subtask.kind,
                index=index,
                cost=0.0,  # no call was made
            )
            return self._report(failed, sid, index)
        messages = [self._system_message(subtask), HumanMessage(prompt)]
        cache_key: str | None = None
        cached = runtime.cache if subtask.cache else None
        batch = self._batches.get(sid) if index is not None else None
        if model is not None and (
            cached is not None or self.journal is not None or batch is not None
        ):
            cache_key = call_key(
                model=model,
                messages=messages,
                kind=subtask.kind,
                output_schema=subtask.output_schema,
                options=subtask.options,
                kind_function=getattr(runtime.kinds[sid], "function", None),
            )
            hit = cached.get(cache_key) if cached is not None else None
            if hit is None and self.journal is not None:
                hit = await self.journal.get(cache_key)
            if hit is not None:
                now = time.time()
                served = SubtaskResult(
                    id=rid,
                    status="succeeded",
                    output=revive(hit.output, subtask.output_schema),
                    started_at=now,
                    finished_at=now,
                    attempts=0,
                    model=label,
                    priority=priority,
                    kind=subtask.kind,
                    index=index,
                    cost=0.0,
                    cached=True,
                    cached_usage=hit.usage,
                )
                return self._report(served, sid, index)
        # One estimate of the call's size, for the rate limiter and the budget alike.
        reply_cap = reply_tokens(model, subtask.expected_output_tokens)
        input_tokens = messages_tokens(messages)
        tokens = input_tokens + reply_cap
        if self.budget is not None and model is not None:
            model = self._capped(sid, model, reply_cap)
        ambient = var_child_runnable_config.get() or self._call_config(sid, index)
        config: RunnableConfig = {**ambient, "run_name": rid}
        first_start: float | None = None
        attempt = 0
        billed = TokenUsage()  # every billed reply of this call, failed attempts included
        spent: float | None = 0.0
        batched = False  # whether the current attempt goes out in the map's batch
        sources: set[str] = set()  # where the attempts' costs came from

        def result(status: Status, **fields: Any) -> SubtaskResult:
            # Built from values of the right types already: no validation on the hot path.
            return SubtaskResult.model_construct(
                id=rid,
                status=status,
                started_at=first_start,
                finished_at=time.time(),
                attempts=attempt,
                model=label,
                priority=priority,
                kind=subtask.kind,
                index=index,
                usage=billed,
                cost=spent,
                cost_source=_cost_source(sources),
                **fields,
            )

        def count(usage: TokenUsage, reserved: float | None, said: float | None = None) -> None:
            """Add one attempt's billed usage to the call and swap its reservation for what
            it cost: what the gateway `said`, else the price table's figure."""
            nonlocal billed, spent
            if said is not None:
                cost: float | None = said
                sources.add("gateway")
            elif not (usage.input_tokens or usage.output_tokens or usage.total_tokens):
                cost = 0.0  # nothing billed (a 429, a timeout): known to be free
            else:
                cost = 0.0 if label is None else runtime.prices.cost(label, usage, batch=batched)
                if label is not None and (usage.total_tokens or cost):
                    sources.add("price table")
            billed = billed + usage
            spent = None if spent is None or cost is None else spent + cost
            if self.budget is not None and reserved is not None:
                self.budget.settle(reserved, cost)

        error = ""
        while True:
            attempt += 1
            # A map's first attempts go out as one batch, outside the rate limits.
            batched = batch is not None and batch.open and attempt == 1 and cache_key is not None
            limiter = UNLIMITED if batched else runtime.limiters[sid]
            permit = await limiter.acquire(priority_rank, tokens=tokens)
            reserved: float | None = None  # USD set aside in the budget for this attempt
            if self.budget is not None and label is not None:
                expected = (
                    runtime.prices.estimate(label, input_tokens, reply_cap, batch=batched) or 0.0
                )
                refusal = self.budget.reserve(expected)
                if refusal is not None:
                    limiter.release(permit)
                    attempt -= 1  # no call was made
                    if attempt == 0:
                        return self._report(result("skipped", error=refusal), sid, index)
                    error = f"{error} (not retried: {refusal})"
                    return self._report(result("failed", error=error), sid, index)
                reserved = expected
            started = time.time()
            first_start = first_start or started
            self._emit(
                sid,
                "started",
                index,
                started_at=started,
                attempt=attempt,
                priority=priority,
                **({"batch": True} if batched else {}),
            )
            call = SubtaskCall(
                subtask=subtask,
                task=self.task,
                prompt=prompt,
                messages=messages,
                dependencies=deps,
                inputs=self.inputs,
                model=model,
                config=attempt_config(config, attempt),
                attempt=attempt,
                item=item,
                index=index,
            )
            try:
                if batched and batch is not None and model is not None and cache_key is not None:
                    lined = dataclasses.replace(call, model=batch.model_for(model))
                    kind_run = _run_kind(runtime.kinds[sid], lined)
                    outcome = await batch.run(index or 0, cache_key, kind_run)
                else:
                    outcome = await _run_kind(runtime.kinds[sid], call)
            except Exception as exc:
                count(billed_usage(exc) or TokenUsage(), reserved)
                failure = classify(exc)
                if failure.rate_limited:  # before the slot goes to the next caller
                    limiter.record_rate_limited(
                        failure.retry_after, permit, max_pause=policy.max_backoff
                    )
                limiter.release(permit)
                error = describe_error(exc)
                delay = policy.wait(attempt, failure.retry_after, minute_left=minute_left())
                too_long = delay is None
                if failure.transient and attempt < budget and delay is not None:
                    self._emit(
                        sid,
                        "retrying",
                        index,
                        attempt=attempt,
                        error=error,
                        reason=_retry_reason(failure, exc),
                        delay=delay,
                        priority=priority,
                    )
                    await asyncio.sleep(delay)
                    continue
                if too_long:
                    error = (
                        f"{error} (the provider asked to wait {failure.retry_after:.0f} s "
                        f"before a retry, longer than the retry policy's max_backoff of "
                        f"{policy.max_backoff:g} s; gave up after {_attempts(attempt)}: rerun "
                        "later, or allow longer waits with RetryPolicy(max_backoff=...))"
                    )
                elif failure.transient:
                    error = f"{error} (gave up after {_attempts(attempt)})"
                if is_timeout(exc):
                    error += _gateway_retrying_note(limiter)
                return self._report(result("failed", error=error), sid, index)
            report = outcome.report
            limiter.record_success(
                outcome.usage.total_tokens,
                permit,
                remaining=report.remaining_requests,
                refill_in=report.refill_in(started),
            )
            count(outcome.usage, reserved, report.cost)
            done = result("succeeded", output=outcome.output)
            if cache_key is not None:
                # Stored now, before LangGraph commits the node: a run killed from here on
                # still finds this call on its next attempt.
                record: dict[str, Any] = {
                    "usage": outcome.usage,
                    "model": label,
                    "kind": subtask.kind,
                    "subtask": rid,
                    "seconds": done.duration,
                }
                if cached is not None:
                    cached.put(cache_key, outcome.output, **record)
                if self.journal is not None:
                    await self.journal.put(cache_key, outcome.output, **record)
            # Free the slot only after the dependents this result unblocks have queued:
            # they wake from this task's done callbacks, registered before this one.
            this_task = asyncio.current_task()
            if this_task is None or index is not None:
                limiter.release(permit)
            else:
                this_task.add_done_callback(functools.partial(_release, limiter, permit))
            return self._report(done, sid, index)

    def _capped(self, sid: str, model: BaseChatModel, tokens: int) -> BaseChatModel:
        """`model` capped at `tokens` per reply under a budget (one copy per subtask), so
        no reply costs more than its reservation; a model that caps itself is kept."""
        if output_cap(model) is not None:
            return model
        capped = self._capped_models.get(sid)
        if capped is None:
            capped = self._capped_models[sid] = with_output_cap(model, tokens) or model
        return capped

    def _report(self, result: SubtaskResult, sid: str, index: int | None) -> SubtaskResult:
        """Record and announce a subtask's result; a map item is announced by its map."""
        return result if index is not None else self._finish(result)

    def _system_message(self, subtask: SubTask) -> SystemMessage:
        """The subtask's system message, built once per run (every item of a map shares it)."""
        message = self._systems.get(subtask.id)
        if message is None:
            first = subtask_messages(subtask, task=self.task, prompt="")[0]
            assert isinstance(first, SystemMessage)
            message = self._systems[subtask.id] = first
        return message

    def _priority(self, sid: str) -> float:
        """The priority events report: the explicit one, else the expected remaining path."""
        explicit = self.runtime.subtasks[sid].priority
        return explicit if explicit is not None else self.runtime.remaining[sid]

    def _finish(self, result: SubtaskResult) -> SubtaskResult:
        self.done[result.id] = result
        if self._emit_event is not None:
            self._emit(result.id, result.status, None, **_outcome(result))
        return result

    def _finish_item(self, result: SubtaskResult, sid: str) -> SubtaskResult:
        if self._emit_event is not None:
            self._emit(sid, result.status, result.index, **_outcome(result))
        return result

    def emit(self, sid: str, status: str, index: int | None = None, **fields: Any) -> None:
        """Send a lifecycle event for `sid` (a subtask, or "aggregate") to the listener."""
        self._emit(sid, status, index, **fields)

    def _emit(self, sid: str, status: str, index: int | None = None, **fields: Any) -> None:
        if self._emit_event is None:
            return  # nobody listens: build nothing
        event = {"type": EVENT_TYPE, "subtask": sid, "status": status, "time": time.time()}
        if index is not None:
            event["item"] = index
            event["id"] = item_id(sid, index)
        event.update(fields)
        try:
            self._emit_event(event)
        except Exception:  # noqa: S110 - a closed stream must not fail the subtask
            pass


def _outcome(result: SubtaskResult) -> dict[str, Any]:
    outcome = {
        "started_at": result.started_at,
        "finished_at": result.finished_at or time.time(),
        "duration": result.duration,
        "error": result.error,
        "attempts": result.attempts,
        "total_tokens": result.usage.total_tokens,
        "priority": result.priority,
        "cost": result.cost,
    }
    if result.cached:
        outcome["cached"] = True
    return outcome


def _retry_reason(failure: Failure, exc: BaseException) -> str:
    """Why a call is retried, in a few words: "429 from the provider", "timeout"."""
    if failure.status is not None:
        return f"{failure.status} from the provider"
    name = type(exc).__name__
    return "timeout" if "timeout" in name.lower() else name


def _gateway_retrying_note(limiter: Limiter) -> str:
    """What a timeout may mean when the endpoint has been answering 429s."""
    if not limiter.rate_limited:
        return ""
    return (
        f"; the endpoint answered {limiter.rate_limited} 429s in this run, so a gateway "
        "(such as the LiteLLM proxy) may be retrying the call internally until it times out: "
        "turn its retries off (num_retries: 0 in its config) and fanfold paces the 429s itself"
    )


def _cost_source(sources: set[str]) -> str | None:
    """Where a call's cost came from: "gateway", "price table" or "mixed"."""
    if not sources:
        return None
    return next(iter(sources)) if len(sources) == 1 else "mixed"


def _for_budget(result: SubtaskResult) -> bool:
    """Whether a result was skipped because the budget stopped the run's calls."""
    return result.status == "skipped" and (result.error or "").startswith("budget")


def _settle(batch: BatchRound, index: int, _task: object) -> None:
    batch.settle(index)


def _release(limiter: Limiter, permit: Permit, _task: object) -> None:
    limiter.release(permit)


async def _run_kind(kind: Any, call: SubtaskCall) -> KindOutput:
    """Run `kind` with the attempt's config as the ambient config too (see SubtaskCall)."""
    ambient = {k: v for k, v in call.config.items() if k != "run_name"}
    token = var_child_runnable_config.set(ambient)  # type: ignore[arg-type]
    try:
        output: KindOutput = await kind.run(call)
        return output
    finally:
        var_child_runnable_config.reset(token)


def _attempts(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"
