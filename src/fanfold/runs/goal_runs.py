"""Goal runs by id: plan a goal and run the plan with a checkpoint, then resume it.

    run = start_goal_run("Compare three note apps", checkpoint="runs.db")
    state = run.run()                       # run.run_id names it
    ...                                     # the process dies mid-run
    resume_run(run.run_id, "runs.db")       # the same call as for a plan's run

The goal graph (`compile_goal`) keeps its plan in the checkpoint once the planner
has made it, so a resumed run does not plan again; every call that finished before
the run stopped, subtasks started while the plan streamed included, is journaled in
the run's store and not requested again. The goal, the run options and the planner's
options are kept in the thread (the state's `run`), so a resume needs only the id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig

from fanfold._langgraph import open_step
from fanfold.errors import InputInterface
from fanfold.graphs.goal import CompiledGoalGraph, compile_goal
from fanfold.plan.models import TaskPlan
from fanfold.runs.config import compile_options, kept_options
from fanfold.runs.stream import EventHandler, execute

__all__ = ["GoalRun", "goal_run_info", "open_goal_run", "read_goal_run", "start_goal_run"]

GoalRunMode = Literal["new", "continue", "finished"]
ValuesHandler = Callable[[dict[str, Any]], None]
"""Takes each full state of the goal graph as it changes (the plan appears in one)."""

PLANNER_OPTIONS = ("attempts", "max_subtasks", "replan")
"""`compile_goal` arguments a goal run keeps besides the run options."""


def goal_run_info(run_info: Any) -> dict[str, Any] | None:
    """A checkpointed thread's `run` when it records a goal run, else None."""
    if isinstance(run_info, Mapping) and isinstance(run_info.get("goal"), str):
        return dict(run_info)
    return None


@dataclass
class GoalRun:
    """A goal run ready to go: its compiled goal graph, its input and where it checkpoints.

    Made by `start_goal_run` (a new run) or `open_run`/`aopen_run` (resuming one);
    `run` or `arun` runs it and returns the goal graph's final state (`GoalOutput`).

    Attributes:
        mode: "new"; "continue" (an interrupted run goes on where it stopped, with the
            plan it had made); "finished" (nothing to do: `arun` returns the state).
        planner: the planner's options (`attempts`, `max_subtasks`, `replan`).
        values: the thread's state when the run was opened.
    """

    goal: str
    graph: CompiledGoalGraph
    inputs: dict[str, Any]
    run_id: str | None = None
    checkpoint: str | None = None
    mode: GoalRunMode = "new"
    payload: Any = None
    values: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    planner: dict[str, Any] = field(default_factory=dict)
    next: tuple[str, ...] = ()
    """The goal graph's nodes left to run when the run was opened."""

    @property
    def plan(self) -> TaskPlan | None:
        """The plan the run made before it stopped, if it had made one."""
        data = self.values.get("plan")
        return TaskPlan.model_validate(data) if data is not None else None

    async def arun(
        self, on_event: EventHandler | None = None, on_values: ValuesHandler | None = None
    ) -> dict[str, Any]:
        """Run to the end and return the final state; `on_event` gets each lifecycle event
        (the planner's and the subtasks'), `on_values` each full state.

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
            options={"nested": True, "on_values": on_values},
        )

    def run(
        self, on_event: EventHandler | None = None, on_values: ValuesHandler | None = None
    ) -> dict[str, Any]:
        """`arun` from synchronous code (not from inside a running event loop)."""
        return asyncio.run(self.arun(on_event, on_values))


def _compile(
    options: Mapping[str, Any], planner: Mapping[str, Any], input_interface: InputInterface
) -> CompiledGoalGraph:
    chosen = {k: planner[k] for k in PLANNER_OPTIONS if planner.get(k) is not None}
    return compile_goal(**chosen, **compile_options(options, input_interface=input_interface))


def start_goal_run(
    goal: str,
    inputs: Mapping[str, Any] | None = None,
    *,
    checkpoint: str | None = None,
    run_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    planner: Mapping[str, Any] | None = None,
    input_interface: InputInterface = "python",
) -> GoalRun:
    """Compile a new run that plans `goal` and runs the plan, checkpointed under `run_id`.

    Args:
        goal: the job to plan and run, in plain words.
        inputs: the run inputs (the planner is offered their names).
        checkpoint: a SQLite file or postgresql:// URL; makes the run resumable by id.
        run_id: the id to keep the run under; default a new one when checkpointed.
        options: run options (`fanfold.runs.config`), kept in the checkpoint.
        planner: `compile_goal`'s `attempts`, `max_subtasks` and `replan`, kept too.
        input_interface: where the inputs come from, so that input errors name its option.

    Raises:
        PlanError, StoreError, PriceError: as `start_run`, for the run options.
    """
    from fanfold.runs.api import new_run_id

    run_options = dict(options or {})
    planner_options = {k: v for k, v in (planner or {}).items() if v is not None}
    unknown = sorted(set(planner_options) - set(PLANNER_OPTIONS))
    if unknown:
        raise TypeError(f"planner options are {', '.join(PLANNER_OPTIONS)}, not {unknown}")
    graph = _compile(run_options, planner_options, input_interface)
    if checkpoint is not None and run_id is None:
        run_id = new_run_id()
    kept = kept_options(run_options)  # no password reaches the checkpoint
    given = dict(inputs or {})
    payload: dict[str, Any] = {"goal": goal, "inputs": given}
    if checkpoint is not None:
        payload["run"] = {"goal": goal, "options": kept, "planner": planner_options}
    return GoalRun(
        goal=goal,
        graph=graph,
        inputs=given,
        run_id=run_id,
        checkpoint=str(checkpoint) if checkpoint is not None else None,
        payload=payload,
        options=kept,
        planner=planner_options,
    )


async def open_goal_run(
    saver: Any,
    run_id: str,
    target: str,
    info: Mapping[str, Any],
    *,
    cache: bool | None = None,
    input_interface: InputInterface = "python",
) -> GoalRun:
    """Prepare to resume the goal run `info` describes (see `fanfold.runs.aopen_run`)."""
    options = dict(info.get("options") or {})
    if cache is not None:
        options["cache"] = cache
    planner = dict(info.get("planner") or {})
    graph = _compile(options, planner, input_interface)
    values, upcoming = await read_goal_run(saver, run_id)
    return GoalRun(
        goal=str(info["goal"]),
        graph=graph,
        inputs=dict(values.get("inputs") or {}),
        run_id=run_id,
        checkpoint=target,
        mode="continue" if upcoming else "finished",
        values=values,
        options=options,
        planner=planner,
        next=upcoming,
    )


async def read_goal_run(saver: Any, run_id: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A goal run's state and the nodes it has left; nothing runs and no model is resolved."""
    reader = compile_goal(model="simulated", aggregator=None, cache=False, checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": run_id}}
    state = await reader.aget_state(config)
    return dict(state.values), open_step(state)
