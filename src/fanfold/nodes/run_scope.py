"""One object per graph invocation that owns that run's dispatcher.

`CompiledPlanGraph` opens a `RunScope` for every invocation and hands it to the nodes
through LangGraph's per-run context (`RunContext`); the first node to run creates the
dispatcher, which starts every call as soon as its own dependencies are done.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.runtime import get_runtime
from langgraph.store.base import BaseStore

from fanfold._langgraph import subtask_call_config
from fanfold.nodes.journal import StoreJournal
from fanfold.scheduling.costs import Budget
from fanfold.scheduling.dispatcher import Dispatcher, item_id
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult


class _BackgroundLoop:
    """A process-wide event loop thread that runs the dispatchers of synchronous runs.

    One loop for the whole process, not one per run, so that async HTTP clients that
    providers cache per process are always used from the same loop.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="fanfold-dispatch", daemon=True
                )
                thread.start()
                cls._loop = loop
            return cls._loop


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared event loop that synchronous runs dispatch on."""
    return _BackgroundLoop.get()


def trusted_results(
    runtime: PlanRuntime, results: Mapping[str, SubtaskResult]
) -> dict[str, SubtaskResult]:
    """The results a resumed run may keep: all but a skip whose reason is gone.

    A subtask is skipped because a dependency did not succeed. If that dependency has
    since succeeded (a retry that was interrupted), the skip is stale and must run.
    """
    kept: dict[str, SubtaskResult] = {}
    for sid in runtime.order:
        result = results.get(sid)
        if result is None:
            continue
        if result.status == "skipped":
            deps = runtime.dependencies[sid]
            if not any(dep in kept and not kept[dep].ok for dep in deps):
                continue
        kept[sid] = result
    return kept


class RunScope:
    """Per-invocation home of the dispatcher.

    Args:
        run_id: the graph run's id (also passed to LangGraph as `run_id`).
        done: results the run must not request again (a retry's kept results, or what
            a resumed thread already has); None to read them from the first node's state.
        greedy: start every subtask as soon as the dispatcher exists.
        events: whether lifecycle events are wanted ("custom" streaming).
        reuse_items: for a retried map, its items that already succeeded, by index.
        dispatcher: a dispatcher that started this run's calls already (a goal run's
            streamed plan); the first node hands it this run's plan, config and events.
        budget: the run's Budget when it has spent already (a goal run's planner).
        store: where the run journals its finished calls when LangGraph gives the run
            no store of its own (`fanfold.nodes.journal.store_beside`).
    """

    def __init__(
        self,
        run_id: uuid.UUID,
        *,
        done: Mapping[str, SubtaskResult] | None = None,
        greedy: bool = True,
        events: bool = True,
        reuse_items: Mapping[str, Mapping[int, SubtaskResult]] | None = None,
        dispatcher: Dispatcher | None = None,
        budget: Budget | None = None,
        store: BaseStore | None = None,
    ) -> None:
        self.run_id = run_id
        self.store = store
        self.done = dict(done) if done is not None else None
        self.greedy = greedy
        self.events = events
        self.reuse_items = reuse_items
        self._adopted = dispatcher
        self._budget = budget
        self._dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def dispatcher_or_none(self) -> Dispatcher | None:
        return self._dispatcher

    def dispatcher(
        self,
        runtime: PlanRuntime,
        state: Mapping[str, Any],
        config: RunnableConfig,
        *,
        sync: bool,
    ) -> Dispatcher:
        """Return this run's dispatcher, creating and starting it on first use.

        Raises:
            PlanError: the run's inputs do not suit the plan.
            RuntimeError: the run was already closed.
        """
        with self._lock:
            if self._dispatcher is not None:
                return self._dispatcher
            if self._closed:
                raise RuntimeError("this fanfold run has already finished")
            loop = background_loop() if sync else asyncio.get_running_loop()
            writer: Any = None
            if self.events:
                try:
                    writer = get_stream_writer()
                except RuntimeError:
                    writer = None
            call_config = functools.partial(subtask_config, config, self.run_id)
            if self._adopted is not None:
                dispatcher = self._adopted
                adopt = functools.partial(
                    dispatcher.adopt,
                    runtime,
                    runtime.run_inputs(state.get("inputs")),
                    call_config=call_config,
                    emit=writer,
                )
                if sync:
                    # Queued before any node asks the loop for a result.
                    dispatcher.loop.call_soon_threadsafe(adopt)
                else:
                    adopt()
                self._dispatcher = dispatcher
                return dispatcher
            done = self.done if self.done is not None else dict(state.get("results") or {})
            dispatcher = Dispatcher(
                runtime,
                run_id=self.run_id,
                inputs=runtime.run_inputs(state.get("inputs")),
                done=trusted_results(runtime, done),
                loop=loop,
                call_config=call_config,
                emit=writer,
                reuse_items=self.reuse_items,
                budget=self._budget,
                journal=self._journal(config),
            )
            if self.greedy:
                if sync:
                    loop.call_soon_threadsafe(dispatcher.start)
                else:
                    dispatcher.start()
            self._dispatcher = dispatcher
            return dispatcher

    def _journal(self, config: RunnableConfig) -> StoreJournal | None:
        return run_journal(config, self.store)

    def close(self) -> None:
        """Cancel calls still running (safe from any thread, without waiting)."""
        with self._lock:
            self._closed = True
            dispatcher = self._dispatcher
        if dispatcher is not None and not dispatcher.loop.is_closed():
            dispatcher.loop.call_soon_threadsafe(dispatcher.cancel)

    async def aclose(self) -> None:
        """Cancel calls still running and, on this loop, wait for them to stop."""
        with self._lock:
            self._closed = True
            dispatcher = self._dispatcher
        if dispatcher is None:
            return
        if dispatcher.loop is asyncio.get_running_loop():
            await dispatcher.aclose()
        else:
            self.close()


def run_journal(config: RunnableConfig, store: BaseStore | None = None) -> StoreJournal | None:
    """A node's run journal: its LangGraph store (else `store`), on a checkpointed thread."""
    thread_id = (config.get("configurable") or {}).get("thread_id")
    if thread_id is None:
        return None
    try:
        found = get_runtime().store
    except (RuntimeError, KeyError):
        found = None
    found = found or store
    return StoreJournal(found, str(thread_id)) if found is not None else None


def subtask_config(
    base: RunnableConfig, run_id: uuid.UUID, sid: str, index: int | None
) -> RunnableConfig:
    """The config of one call of subtask `sid` (map item `index`) under `base`."""
    return subtask_call_config(
        base,
        sid,
        run_id=run_id,
        index=index,
        item_id=item_id(sid, index) if index is not None else None,
    )


@dataclass
class RunContext:
    """LangGraph's per-run context for a fanfold graph.

    Attributes:
        scope: the run's scope (its dispatcher).
        user: the context the caller passed to invoke/stream, if any.
    """

    scope: RunScope
    user: Any = None


def current_scope() -> RunScope:
    """The run scope of the running graph invocation.

    A node run outside `CompiledPlanGraph.stream` (for example by a graph recompiled
    from `graph.builder`) gets a private, non-greedy scope that runs only its own
    subtask from the dependency results already in state.
    """
    try:
        context = get_runtime().context
    except (RuntimeError, KeyError):
        context = None
    if isinstance(context, RunContext):
        return context.scope
    return RunScope(uuid.uuid4(), greedy=False, events=False)
