"""The run-scoped dispatcher: start each subtask's call the moment its own dependencies finish.

LangGraph executes a graph in supersteps, so a node waits for the slowest node of the
previous step even when its own inputs were ready long before. The dispatcher runs
underneath the graph: when a run starts it creates one asyncio task per subtask, each
awaiting only its dependencies' tasks. The graph's node for a subtask then just awaits
that task and commits the result, so nodes, join edges and checkpoints stay LangGraph's
while the model calls follow the critical path.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.callbacks import BaseCallbackManager, CallbackManager
from langchain_core.runnables import RunnableConfig

from fanfold._secrets import describe_error
from fanfold.graphs.retry import classify
from fanfold.graphs.runtime import PlanRuntime
from fanfold.models.resolve import model_label
from fanfold.nodes.prompts import subtask_messages, subtask_prompt
from fanfold.nodes.registry import SubtaskCall
from fanfold.state.results import Status, SubtaskResult

EVENT_TYPE = "fanfold.subtask"


class Dispatcher:
    """Runs one graph invocation's subtasks as dependency-driven asyncio tasks.

    Args:
        runtime: the compiled plan.
        run_id: the graph run's id; model calls are reported as its children.
        inputs: the run's inputs (defaults filled in).
        done: results already committed (a resumed run); they are not run again.
        config: the config of the node that created the dispatcher, used as the base
            for each subtask's own call config.
        loop: the event loop the tasks run on.
        writer: LangGraph's stream writer for "custom" lifecycle events.
    """

    def __init__(
        self,
        runtime: PlanRuntime,
        *,
        run_id: uuid.UUID,
        inputs: Mapping[str, Any],
        done: Mapping[str, SubtaskResult],
        config: RunnableConfig,
        loop: asyncio.AbstractEventLoop,
        writer: Callable[[Any], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self.inputs = dict(inputs)
        self.task = runtime.task_text(self.inputs)
        self.done: dict[str, SubtaskResult] = dict(done)
        self.loop = loop
        self.started_at = time.time()
        self.events: list[dict[str, Any]] = []
        self._base_config = config
        self._writer = writer
        self._context = contextvars.copy_context()
        self._tasks: dict[str, asyncio.Task[SubtaskResult]] = {}

    # -- scheduling ---------------------------------------------------------------------

    def start(self) -> None:
        """Create a task for every subtask not yet done (call on the dispatcher's loop)."""
        # Highest priority first: the first ready subtasks take free slots without queueing.
        ranked = sorted(self.runtime.order, key=self.runtime.priorities.__getitem__, reverse=True)
        for sid in ranked:
            self._ensure(sid)

    def _ensure(self, sid: str) -> asyncio.Task[SubtaskResult] | None:
        if sid in self.done:
            return None
        task = self._tasks.get(sid)
        if task is None:
            for dep in self.runtime.dependencies[sid]:
                self._ensure(dep)
            task = self.loop.create_task(
                self._run(sid), name=f"fanfold:{sid}", context=self._context
            )
            self._tasks[sid] = task
        return task

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
        for task in self._tasks.values():
            if not task.done():
                task.cancel()

    async def aclose(self) -> None:
        """Cancel what is still running and wait until it has stopped."""
        self.cancel()
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one subtask --------------------------------------------------------------------

    async def _run(self, sid: str) -> SubtaskResult:
        deps = self.runtime.dependencies[sid]
        # Awaited directly, not shielded: dispatcher tasks are only ever cancelled together.
        dep_results = {
            dep: self.done[dep] if dep in self.done else await self._tasks[dep] for dep in deps
        }
        blocked = [dep for dep, res in dep_results.items() if not res.ok]
        if blocked:
            dep = blocked[0]
            reason = f"dependency {dep!r} {dep_results[dep].status}"
            skipped = SubtaskResult(
                id=sid, status="skipped", error=reason, priority=self._priority(sid)
            )
            return self._finish(skipped)
        subtask = self.runtime.subtasks[sid]
        model = self.runtime.models.get(sid)
        label = model_label(model) if model is not None else None
        limiter = self.runtime.limiters[sid]
        policy = self.runtime.retry
        budget = subtask.max_attempts or policy.max_attempts
        priority_rank = self.runtime.priorities[sid]
        priority = self._priority(sid)
        prompt = subtask_prompt(
            subtask, task=self.task, inputs=self.inputs, dependencies=dep_results
        )
        messages = subtask_messages(subtask, task=self.task, prompt=prompt)
        estimate = len(prompt) // 4 + (subtask.expected_output_tokens or 256)
        first_start: float | None = None
        attempt = 0

        def result(status: Status, **fields: Any) -> SubtaskResult:
            return SubtaskResult(
                id=sid,
                status=status,
                started_at=first_start,
                finished_at=time.time(),
                attempts=attempt,
                model=label,
                priority=priority,
                **fields,
            )

        while True:
            attempt += 1
            await limiter.acquire(priority_rank, tokens=estimate)
            started = time.time()
            first_start = first_start or started
            self._emit(sid, "started", started_at=started, attempt=attempt, priority=priority)
            call = SubtaskCall(
                subtask=subtask,
                task=self.task,
                prompt=prompt,
                messages=messages,
                dependencies=dep_results,
                inputs=self.inputs,
                model=model,
                config=self._call_config(sid),
                attempt=attempt,
            )
            try:
                outcome = await self.runtime.kinds[sid].run(call)
            except Exception as exc:
                limiter.release()
                failure = classify(exc)
                if failure.rate_limited:
                    limiter.record_rate_limited(failure.retry_after)
                error = describe_error(exc)
                if failure.transient and attempt < budget:
                    delay = policy.backoff(attempt, failure.retry_after)
                    self._emit(
                        sid,
                        "retrying",
                        attempt=attempt,
                        error=error,
                        delay=delay,
                        priority=priority,
                    )
                    await asyncio.sleep(delay)
                    continue
                if failure.transient:
                    error = f"{error} (gave up after {attempt} attempts)"
                return self._finish(result("failed", error=error))
            limiter.record_success(outcome.usage.total_tokens)
            # Free the slot only after the dependents this result unblocks have queued:
            # they wake from this task's done callbacks, registered before this one.
            this_task = asyncio.current_task()
            if this_task is None:
                limiter.release()
            else:
                this_task.add_done_callback(lambda _task: limiter.release())
            return self._finish(result("succeeded", output=outcome.output, usage=outcome.usage))

    def _priority(self, sid: str) -> float:
        """The priority events report: the explicit one, else the expected remaining path."""
        explicit = self.runtime.subtasks[sid].priority
        return explicit if explicit is not None else self.runtime.remaining[sid]

    def _finish(self, result: SubtaskResult) -> SubtaskResult:
        self.done[result.id] = result
        self._emit(
            result.id,
            result.status,
            started_at=result.started_at,
            finished_at=result.finished_at or time.time(),
            duration=result.duration,
            error=result.error,
            attempts=result.attempts,
            total_tokens=result.usage.total_tokens,
            priority=result.priority,
        )
        return result

    def _emit(self, sid: str, status: str, **fields: Any) -> None:
        event = {"type": EVENT_TYPE, "subtask": sid, "status": status, "time": time.time()}
        event.update(fields)
        self.events.append(event)
        if self._writer is not None:
            try:
                self._writer(event)
            except Exception:  # noqa: S110 - a closed stream must not fail the subtask
                pass

    def _call_config(self, sid: str) -> RunnableConfig:
        """A config that reports this subtask's model call as its own node's work.

        The call usually starts before LangGraph runs the node, so it is parented to the
        graph run and tagged with the node's name; "messages" streaming and tracing
        then attribute its tokens to `sid`.
        """
        base = self._base_config
        metadata = dict(base.get("metadata") or {})
        parent_ns = str(metadata.get("langgraph_checkpoint_ns", "")).split("|")[:-1]
        metadata.update(
            {
                "langgraph_node": sid,
                "langgraph_triggers": (f"branch:to:{sid}",),
                "langgraph_path": ("__pregel_pull", sid),
                "langgraph_checkpoint_ns": "|".join([*parent_ns, f"{sid}:{uuid.uuid4()}"]),
                "fanfold_subtask": sid,
            }
        )
        metadata.pop("langgraph_step", None)
        tags = [t for t in (base.get("tags") or []) if not t.startswith("graph:step:")]
        tags.append(f"fanfold:subtask:{sid}")
        configurable = {
            k: v for k, v in (base.get("configurable") or {}).items() if not k.startswith("__")
        }
        config: RunnableConfig = {
            "metadata": metadata,
            "tags": tags,
            "configurable": configurable,
            "run_name": sid,
        }
        callbacks = base.get("callbacks")
        if isinstance(callbacks, BaseCallbackManager):
            handlers = list(callbacks.inheritable_handlers)
            config["callbacks"] = CallbackManager(
                handlers=handlers,
                inheritable_handlers=handlers,
                parent_run_id=self.run_id,
                tags=[t for t in callbacks.inheritable_tags if not t.startswith("graph:step:")],
                inheritable_tags=[
                    t for t in callbacks.inheritable_tags if not t.startswith("graph:step:")
                ],
                metadata={},
                inheritable_metadata={},
            )
        elif callbacks:
            config["callbacks"] = callbacks
        return config
