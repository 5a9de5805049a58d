"""One object per graph invocation that owns that run's dispatcher."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer

from fanfold.graphs.dispatcher import Dispatcher
from fanfold.graphs.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult
from fanfold.state.schema import SubtaskNodeInput

SCOPE_KEY = "__fanfold_run_scope"
"""Key in `configurable`; LangGraph keeps keys starting with '__' out of checkpoints."""
RETRY_FAILED_KEY = "fanfold_retry_failed"
"""`configurable` flag: a new run on a thread keeps its succeeded results."""


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


class RunScope:
    """Per-invocation home of the dispatcher.

    Args:
        run_id: the graph run's id (also passed to LangGraph as `run_id`).
        fresh: True for a new run, False when resuming from a checkpoint: a fresh run
            ignores results left in the thread's state by an earlier run.
        retry_failed: a new run on a finished thread that keeps its succeeded results.
        greedy: start every subtask as soon as the dispatcher exists.
    """

    def __init__(
        self,
        run_id: uuid.UUID,
        *,
        fresh: bool = True,
        greedy: bool = True,
        retry_failed: bool = False,
    ) -> None:
        self.run_id = run_id
        self.fresh = fresh
        self.retry_failed = retry_failed
        self.greedy = greedy
        self.committed: dict[str, SubtaskResult] = {}
        self._dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def dispatcher_or_none(self) -> Dispatcher | None:
        return self._dispatcher

    def dispatcher(
        self,
        runtime: PlanRuntime,
        state: SubtaskNodeInput,
        config: RunnableConfig,
        *,
        sync: bool,
    ) -> Dispatcher:
        """Return this run's dispatcher, creating and starting it on first use.

        Raises:
            MissingInputError: the run lacks an input a prompt needs.
            RuntimeError: the run was already closed.
        """
        with self._lock:
            if self._dispatcher is not None:
                return self._dispatcher
            if self._closed:
                raise RuntimeError("this fanfold run has already finished")
            loop = background_loop() if sync else asyncio.get_running_loop()
            try:
                writer: Any = get_stream_writer()
            except RuntimeError:
                writer = None
            dispatcher = Dispatcher(
                runtime,
                run_id=self.run_id,
                inputs=runtime.run_inputs(state.get("inputs")),
                done=self._done(state),
                config=config,
                loop=loop,
                writer=writer,
            )
            if self.greedy:
                if sync:
                    loop.call_soon_threadsafe(dispatcher.start)
                else:
                    dispatcher.start()
            self._dispatcher = dispatcher
            return dispatcher

    def _done(self, state: SubtaskNodeInput) -> dict[str, SubtaskResult]:
        """Results the dispatcher must not run again."""
        if self.fresh:
            return {}
        done = {**(state.get("results") or {}), **self.committed}
        if self.retry_failed:
            return {k: v for k, v in done.items() if v.ok}
        return done

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


def scope_from(config: RunnableConfig) -> RunScope:
    """The run scope that CompiledPlanGraph put in `config`.

    A node run outside CompiledPlanGraph.stream (for example by a graph recompiled from
    `graph.builder`) gets a private, non-greedy scope that runs only its own subtask
    from the dependency results already in state.
    """
    scope = (config.get("configurable") or {}).get(SCOPE_KEY)
    if isinstance(scope, RunScope):
        return scope
    return RunScope(uuid.uuid4(), fresh=False, greedy=False)
