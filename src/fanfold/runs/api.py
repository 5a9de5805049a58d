"""Runs by id: run a plan with a checkpoint, read a run's state, resume it.

    run = start_run("plan.yaml", {"topic": "tides"}, checkpoint="runs.db")
    state = run.run()                       # final state; run.run_id names it
    ...                                     # the process dies mid-run
    resume_run(run.run_id, "runs.db")       # finishes it; retries failures once done
    get_run(run.run_id, "runs.db").finished

The checkpoint is a SQLite file or a postgresql:// URL. A run keeps its plan and its
options (see `fanfold.runs.config`) in the checkpoint, so resuming needs only the id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig

from fanfold._langgraph import open_step
from fanfold.checkpoints import open_checkpointer
from fanfold.errors import InputInterface, StoreError
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.compiled import CompiledPlanGraph
from fanfold.plan.models import TaskPlan
from fanfold.runs.config import compile_options, kept_options
from fanfold.runs.goal_runs import GoalRun, goal_run_info, open_goal_run, read_goal_run
from fanfold.runs.stream import EventHandler, execute
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.scheduling.storage import is_postgres_url, shown_target
from fanfold.state.results import SubtaskResult

__all__ = [
    "PlanRun",
    "RunNotFoundError",
    "RunState",
    "aget_run",
    "aopen_run",
    "aresume_run",
    "arun_plan",
    "get_run",
    "is_complete",
    "new_run_id",
    "open_run",
    "resume_run",
    "run_plan",
    "start_run",
    "task_text",
]

RunMode = Literal["new", "continue", "retry", "finished"]


class RunNotFoundError(StoreError):
    """The checkpoint has no run with that id, or the checkpoint file does not exist."""

    def __init__(self, message: str, *, run_id: str, target: str) -> None:
        super().__init__(message, setting="checkpoint", target=shown_target(target))
        self.run_id = run_id


def new_run_id() -> str:
    """A fresh run id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


def task_text(
    plan: TaskPlan,
    inputs: Mapping[str, Any] | None = None,
    *,
    input_interface: InputInterface = "python",
) -> str:
    """The plan's task with its run inputs (and their defaults) filled in.

    Raises:
        MissingInputError, MapInputError: the inputs do not suit the plan.
    """
    runtime = PlanRuntime(plan=plan, kinds={}, models={}, input_interface=input_interface)
    return runtime.task_text(runtime.run_inputs(inputs))


def is_complete(state: Mapping[str, Any], plan: TaskPlan) -> bool:
    """Whether every subtask and the aggregation succeeded in a run's final state."""
    results: Mapping[str, SubtaskResult] = state.get("results") or {}
    done = all(sid in results and results[sid].ok for sid in plan.ids)
    return done and state.get("totals") is not None and not state.get("aggregate_error")


@dataclass(frozen=True)
class RunState:
    """Where a checkpointed run stands.

    Attributes:
        run_id: the run's id (its LangGraph thread id).
        plan: the plan the run runs; for a goal run, None until the planner made it.
        options: the run's options, as it was started with.
        values: the run's state (`inputs`, `results`, `output`, `totals`, ...).
        next: the nodes left to run; empty once the run has finished.
        goal: a goal run's goal (None for a plan's run).
    """

    run_id: str
    plan: TaskPlan | None
    options: dict[str, Any]
    values: dict[str, Any]
    next: tuple[str, ...]
    goal: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the run got to its end (possibly with failed subtasks)."""
        return not self.next

    @property
    def results(self) -> dict[str, SubtaskResult]:
        """Each finished subtask's result, by id."""
        return dict(self.values.get("results") or {})

    @property
    def failed(self) -> list[str]:
        """The subtasks without a succeeded result, in plan order."""
        results = self.results
        ids = self.plan.ids if self.plan is not None else []
        return [sid for sid in ids if sid not in results or not results[sid].ok]

    @property
    def complete(self) -> bool:
        """Whether every subtask and the aggregation succeeded."""
        return self.plan is not None and is_complete(self.values, self.plan)


@dataclass
class PlanRun:
    """A run ready to go: its compiled graph, its input and where it checkpoints.

    Made by `start_run` (a new run) or `open_run`/`aopen_run` (resuming one); `run` or `arun` runs
    it and returns the final state.

    Attributes:
        mode: "new"; "continue" (an interrupted run goes on where it stopped); "retry"
            (a finished run re-runs its failed and skipped subtasks); "finished"
            (nothing to do: `arun` returns the state as it is).
        kept: results this run does not run again.
        options: the run's options (`fanfold.runs.config`).
        reused_items: a retried map's succeeded items, which are not run again.
    """

    plan: TaskPlan
    graph: CompiledPlanGraph
    inputs: dict[str, Any]
    run_id: str | None = None
    checkpoint: str | None = None
    mode: RunMode = "new"
    payload: Any = None
    stream_options: dict[str, Any] = field(default_factory=dict)
    kept: dict[str, SubtaskResult] = field(default_factory=dict)
    reused_items: dict[str, list[SubtaskResult]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> PlanRuntime:
        """The compiled plan's runtime (its subtasks, models, expected durations)."""
        runtime = self.graph.fanfold_runtime
        assert runtime is not None
        return runtime

    @property
    def task_text(self) -> str:
        """The plan's task with the run inputs filled in."""
        return self.runtime.task_text(self.inputs)

    async def arun(self, on_event: EventHandler | None = None) -> dict[str, Any]:
        """Run to the end and return the final state; `on_event` gets each lifecycle event.

        Raises:
            CheckpointStoreError: the checkpoint cannot be opened.
        """
        if self.mode == "finished":
            return self.values
        return await execute(
            self.graph,
            self.payload,
            checkpoint=self.checkpoint,
            run_id=self.run_id,
            on_event=on_event,
            options=self.stream_options,
        )

    def run(self, on_event: EventHandler | None = None) -> dict[str, Any]:
        """`arun` from synchronous code (not from inside a running event loop)."""
        return asyncio.run(self.arun(on_event))


def start_run(
    plan: TaskPlan | Mapping[str, Any] | str | Path,
    inputs: Mapping[str, Any] | None = None,
    *,
    checkpoint: str | Path | None = None,
    run_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    strict_inputs: bool = False,
    input_interface: InputInterface = "python",
) -> PlanRun:
    """Compile a new run of `plan`, checkpointed to `checkpoint` under `run_id`.

    Args:
        plan: a TaskPlan, a mapping, or a plan file's path.
        inputs: the run inputs.
        checkpoint: a SQLite file or postgresql:// URL; makes the run resumable by id.
        run_id: the id to keep the run under; default a new one when checkpointed.
        options: run options (`fanfold.runs.config`), kept in the checkpoint.
        strict_inputs: refuse inputs the plan neither declares nor uses.
        input_interface: where the inputs come from, so that input errors name its option.

    Raises:
        PlanError: the plan or the inputs are invalid.
        StoreError, PriceError: a store or prices file named by the options is unusable.
    """
    task_plan = TaskPlan.coerce(plan)
    run_options = dict(options or {})
    graph = compile_plan(task_plan, **compile_options(run_options, input_interface=input_interface))
    runtime = graph.fanfold_runtime
    assert runtime is not None
    given = dict(inputs or {})
    if strict_inputs:
        runtime.check_input_names(given)
    run_inputs = runtime.run_inputs(given)
    target = str(checkpoint) if checkpoint is not None else None
    if target is not None and run_id is None:
        run_id = new_run_id()
    kept = kept_options(run_options)  # no password reaches the checkpoint
    payload = {
        "inputs": given,
        "run": {"plan": task_plan.model_dump(mode="json"), "options": kept},
    }
    return PlanRun(
        plan=task_plan,
        graph=graph,
        inputs=run_inputs,
        run_id=run_id,
        checkpoint=target,
        payload=payload,
        options=kept,
    )


async def _run_info(saver: Any, run_id: str) -> Any:
    """What a checkpointed thread keeps about its run (its `run`), read from its checkpoint."""
    config: RunnableConfig = {"configurable": {"thread_id": run_id}}
    stored = await saver.aget_tuple(config)
    return (stored.checkpoint.get("channel_values") or {}).get("run") if stored else None


async def _stored_run(saver: Any, run_id: str, target: str) -> tuple[TaskPlan, dict[str, Any]]:
    """The plan and options a checkpointed run keeps, read straight from its checkpoint."""
    run_info = await _run_info(saver, run_id)
    if not isinstance(run_info, Mapping) or "plan" not in run_info:
        raise RunNotFoundError(
            f"run {run_id!r} not found in {shown_target(target)!r}; check the run id and "
            "the checkpoint",
            run_id=run_id,
            target=target,
        )
    return TaskPlan.model_validate(run_info["plan"]), dict(run_info.get("options") or {})


def _check_exists(target: str, run_id: str) -> None:
    if not is_postgres_url(target) and not Path(target).is_file():
        raise RunNotFoundError(
            f"checkpoint file {target!r} does not exist; pass the checkpoint the run used",
            run_id=run_id,
            target=target,
        )


async def aget_run(run_id: str, checkpoint: str | Path) -> RunState:
    """Read a checkpointed run's state by its id; nothing runs and no model is resolved.

    Raises:
        RunNotFoundError: no such checkpoint file, or no run with that id in it.
        CheckpointStoreError: the checkpoint cannot be opened.
    """
    target = str(checkpoint)
    _check_exists(target, run_id)
    async with open_checkpointer(target) as saver:
        goal = goal_run_info(await _run_info(saver, run_id))
        if goal is not None:
            values, upcoming = await read_goal_run(saver, run_id)
            plan = TaskPlan.model_validate(values["plan"]) if values.get("plan") else None
            options = dict(goal.get("options") or {})
            return RunState(run_id, plan, options, values, upcoming, goal=goal["goal"])
        task_plan, options = await _stored_run(saver, run_id, target)
        # The run's own nodes, so that `next` says what is left; no model is called.
        graph = compile_plan(
            task_plan, model="simulated", aggregator=None, cache=False, checkpointer=saver
        )
        state = await graph.aget_state({"configurable": {"thread_id": run_id}})
    return RunState(run_id, task_plan, options, dict(state.values), open_step(state))


async def aopen_run(
    run_id: str,
    checkpoint: str | Path,
    *,
    cache: bool | None = None,
    input_interface: InputInterface = "python",
) -> PlanRun | GoalRun:
    """Prepare to resume a checkpointed run by its id, with its own plan and options.

    An interrupted run goes on where it stopped (mode "continue"); a finished run with
    failed or skipped subtasks re-runs them (mode "retry"), keeping succeeded results
    and a failed map's succeeded items; a complete run has nothing to do ("finished").
    Calls that finished before a crash come from the cache unless the run had none.

    Args:
        cache: False to call the model afresh (no cache); default as the run was started.

    Raises:
        RunNotFoundError: no such checkpoint file, or no run with that id in it.
        CheckpointStoreError: the checkpoint cannot be opened.
        PlanError, StoreError, ...: as `start_run`.
    """
    target = str(checkpoint)
    _check_exists(target, run_id)
    config: RunnableConfig = {"configurable": {"thread_id": run_id}}
    async with open_checkpointer(target) as saver:
        goal = goal_run_info(await _run_info(saver, run_id))
        if goal is not None:
            return await open_goal_run(
                saver, run_id, target, goal, cache=cache, input_interface=input_interface
            )
        task_plan, options = await _stored_run(saver, run_id, target)
        if cache is not None:
            options["cache"] = cache
        graph = compile_plan(task_plan, **compile_options(options, input_interface=input_interface))
        state = await graph.copy(update={"checkpointer": saver}).aget_state(config)
    values = dict(state.values)
    runtime = graph.fanfold_runtime
    assert runtime is not None
    results: dict[str, SubtaskResult] = dict(values.get("results") or {})
    run = PlanRun(
        plan=task_plan,
        graph=graph,
        inputs=runtime.run_inputs(values.get("inputs") or {}),
        run_id=run_id,
        checkpoint=target,
        values=values,
        kept=results,
        options=options,
    )
    failed = [sid for sid in task_plan.ids if sid not in results or not results[sid].ok]
    if open_step(state):
        run.mode = "continue"
    elif failed:
        run.mode = "retry"
        run.payload, run.stream_options = graph.retry_request(values)
        run.kept = {sid: r for sid, r in results.items() if r.ok}
        run.reused_items = {
            sid: [item for item in r.items if item.ok]
            for sid, r in results.items()
            if not r.ok and r.items
        }
    else:
        run.mode = "finished"
    return run


async def arun_plan(
    plan: TaskPlan | Mapping[str, Any] | str | Path,
    inputs: Mapping[str, Any] | None = None,
    *,
    checkpoint: str | Path | None = None,
    run_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    on_event: EventHandler | None = None,
) -> dict[str, Any]:
    """Run `plan` to the end (checkpointed when `checkpoint` is given); its final state.

    Pass `run_id` to choose the id to resume it by; see `start_run` for the rest.
    """
    run = start_run(plan, inputs, checkpoint=checkpoint, run_id=run_id, options=options)
    return await run.arun(on_event)


def run_plan(
    plan: TaskPlan | Mapping[str, Any] | str | Path,
    inputs: Mapping[str, Any] | None = None,
    *,
    checkpoint: str | Path | None = None,
    run_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    on_event: EventHandler | None = None,
) -> dict[str, Any]:
    """Synchronous `arun_plan`."""
    run = start_run(plan, inputs, checkpoint=checkpoint, run_id=run_id, options=options)
    return run.run(on_event)


async def aresume_run(
    run_id: str,
    checkpoint: str | Path,
    *,
    cache: bool | None = None,
    on_event: EventHandler | None = None,
) -> dict[str, Any]:
    """Resume a checkpointed run by its id (see `aopen_run`); its final state."""
    run = await aopen_run(run_id, checkpoint, cache=cache)
    return await run.arun(on_event)


def resume_run(
    run_id: str,
    checkpoint: str | Path,
    *,
    cache: bool | None = None,
    on_event: EventHandler | None = None,
) -> dict[str, Any]:
    """Synchronous `aresume_run`."""
    return asyncio.run(aresume_run(run_id, checkpoint, cache=cache, on_event=on_event))


def open_run(
    run_id: str,
    checkpoint: str | Path,
    *,
    cache: bool | None = None,
    input_interface: InputInterface = "python",
) -> PlanRun | GoalRun:
    """Synchronous `aopen_run`."""
    return asyncio.run(aopen_run(run_id, checkpoint, cache=cache, input_interface=input_interface))


def get_run(run_id: str, checkpoint: str | Path) -> RunState:
    """Synchronous `aget_run`."""
    return asyncio.run(aget_run(run_id, checkpoint))
