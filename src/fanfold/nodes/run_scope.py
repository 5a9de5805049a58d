"""One object per graph invocation that owns that run's dispatcher.

`CompiledPlanGraph` opens a `RunScope` for every invocation and hands it to the nodes
through LangGraph's per-run context (`RunContext`). A new run starts its dispatcher
before LangGraph's first superstep (`RunScope.start`), with call configs built from the
run's own config, and holds its lifecycle events until the first node hands over the
stream writer; otherwise the first node to run creates the dispatcher. Either way it
starts every call as soon as its own dependencies are done.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.runtime import get_runtime
from langgraph.store.base import BaseStore

from fanfold._langgraph import early_call_base, subtask_call_config
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


class HeldEvents:
    """A stream writer that holds what is written until the run's writer is known."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[Any] = []
        self._writer: Any = None

    @property
    def attached(self) -> bool:
        return self._writer is not None

    def __call__(self, event: Any) -> None:
        with self._lock:
            writer = self._writer
            if writer is None:
                self._held.append(event)
                return
        writer(event)

    def attach(self, writer: Any) -> None:
        """Send what was held to `writer`, in order, and everything after it too."""
        with self._lock:
            if self._writer is not None:
                return
            for event in self._held:
                try:
                    writer(event)
                except Exception:  # noqa: S110 - a closed stream must not fail the run
                    pass
            self._held = []
            self._writer = writer


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
        self._held: HeldEvents | None = None
        self.early_inputs: dict[str, Any] | None = None
        """A new run's inputs when its dispatcher starts before the first superstep."""
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
                if self._held is not None and not self._held.attached:
                    writer = _stream_writer()
                    if writer is not None:
                        self._held.attach(writer)
                return self._dispatcher
            if self._closed:
                raise RuntimeError("this fanfold run has already finished")
            loop = background_loop() if sync else asyncio.get_running_loop()
            writer = _stream_writer() if self.events else None
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

    def start(
        self,
        runtime: PlanRuntime,
        inputs: Mapping[str, Any],
        config: RunnableConfig,
        *,
        context: Any,
        store: BaseStore | None,
        sync: bool,
    ) -> Dispatcher:
        """Create and start this run's dispatcher before LangGraph runs any node.

        Each call is configured from the run's own `config` (`early_call_base`); its
        lifecycle events are held until the first node hands over the stream writer.
        Call `begin` (or let it run) when the calls may start: after LangGraph has
        announced the graph's run to its callbacks.

        Args:
            runtime: the compiled plan.
            inputs: the run's inputs as `runtime.run_inputs` gives them.
            config: the config the graph runs with (callbacks resolved, run_id set).
            context: the run's context object (a `RunContext`).
            store: the graph's own store.
            sync: the run is synchronous (its dispatcher runs on the background loop).
        """
        loop = background_loop() if sync else asyncio.get_running_loop()
        held = HeldEvents() if self.events else None
        base = early_call_base(
            config, context=context, store=store, stream_writer=held or _no_writer
        )
        with self._lock:
            assert self._dispatcher is None and self._adopted is None
            self._held = held
            self._dispatcher = Dispatcher(
                runtime,
                run_id=self.run_id,
                inputs=inputs,
                done=trusted_results(runtime, self.done or {}),
                loop=loop,
                call_config=functools.partial(subtask_config, base, self.run_id),
                emit=held,
                reuse_items=self.reuse_items,
                budget=self._budget,
                journal=run_journal(config, self.store),
            )
            return self._dispatcher

    def begin(self, config: RunnableConfig, *, sync: bool) -> None:
        """Start the calls of the dispatcher `start` made as soon as LangGraph has
        announced the graph's run to `config`'s callbacks (at once when it has none),
        so that tracers see each call's parent run before the call."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        go: Any = dispatcher.start
        if sync:
            go = functools.partial(dispatcher.loop.call_soon_threadsafe, dispatcher.start)
        callbacks = config.get("callbacks")
        if isinstance(callbacks, BaseCallbackManager):
            # Not inherited: only the graph's own run start reaches it, not every node's.
            callbacks.add_handler(_StartWithRun(self.run_id, go), inherit=False)
        else:
            go()

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


class _StartWithRun(BaseCallbackHandler):
    """Calls `go` when the graph's run `run_id` starts (before its first superstep)."""

    run_inline = True

    def __init__(self, run_id: uuid.UUID, go: Any) -> None:
        self.run_id = run_id
        self.go = go

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        if run_id == self.run_id and self.go is not None:
            go, self.go = self.go, None
            go()


def _stream_writer() -> Any:
    """The running node's stream writer, or None outside a node."""
    try:
        return get_stream_writer()
    except RuntimeError:
        return None


def _no_writer(_chunk: Any) -> None:
    """A stream writer for a run nobody streams custom events from."""


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
