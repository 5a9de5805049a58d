"""What a run's dispatcher knows and says: its plan, inputs, results, budget and events.

`DispatchState` holds one graph invocation's scheduling state; `CallAttempts`,
`MapItems` and `Dispatcher` build on it. It starts each call's task with that call's
own ambient config and announces results as lifecycle events.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

from fanfold.models.resolve import model_label
from fanfold.scheduling.batch_client import BatchRound
from fanfold.scheduling.budget import Budget
from fanfold.scheduling.cache import CallJournal
from fanfold.scheduling.events import EVENT_TYPE
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.scheduling.tokens import aggregate_input_tokens, output_tokens, reply_tokens
from fanfold.state.results import SubtaskResult

CallConfigFactory = Callable[[str, int | None], RunnableConfig]
"""(subtask id, item index or None) -> the config of that call."""
EventSink = Callable[[dict[str, Any]], None]

ItemTasks = list["asyncio.Future[SubtaskResult]"]


def item_id(sid: str, index: int) -> str:
    """The id of item `index` of map subtask `sid`, e.g. `analyse[3]`."""
    return f"{sid}[{index}]"


class DispatchState:
    """One graph invocation's scheduling state (see `Dispatcher` for the arguments)."""

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
        # Subtasks waiting for their dependencies (no task yet): how many they wait for,
        # who waits for each subtask, and who asked for a result before it started.
        self._waiting: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        self._waiters: dict[str, asyncio.Future[SubtaskResult]] = {}
        self._stopped = False
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

    def _report(self, result: SubtaskResult, sid: str, index: int | None) -> SubtaskResult:
        """Record and announce a subtask's result; a map item is announced by its map."""
        return result if index is not None else self._finish(result)

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


def for_budget(result: SubtaskResult) -> bool:
    """Whether a result was skipped because the budget stopped the run's calls."""
    return result.status == "skipped" and (result.error or "").startswith("budget")


def cost_source(sources: set[str]) -> str | None:
    """Where a call's cost came from: "gateway", "price table" or "mixed"."""
    if not sources:
        return None
    return next(iter(sources)) if len(sources) == 1 else "mixed"
