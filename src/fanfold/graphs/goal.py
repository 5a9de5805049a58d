"""compile_goal: one LangGraph graph that plans a goal, then runs the plan as a subgraph.

    START -> planner -> run_plan -> END

`planner` asks a chat model for a TaskPlan (`fanfold.planning`); `run_plan` compiles that
plan with `compile_plan` and invokes it inside the node, so with `subgraphs=True` the
plan's own nodes, tokens and lifecycle events stream nested under `run_plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Checkpointer, Overwrite

from fanfold.errors import PlanValidationError
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.compiled import CompiledPlanGraph
from fanfold.models.resolve import resolve_model
from fanfold.plan.models import TaskPlan
from fanfold.planning.planner import amake_plan_with_usage, make_plan_with_usage
from fanfold.state.channels import ModelValueChannel, ResultsChannel
from fanfold.state.results import RunTotals, SubtaskResult, TokenUsage

__all__ = ["GoalInput", "GoalOutput", "GoalState", "compile_goal"]

PLANNER_NODE = "planner"
RUN_PLAN_NODE = "run_plan"

_PROBE_PLAN = {"task": "-", "subtasks": [{"id": "probe", "prompt": "-"}]}


class GoalInput(TypedDict):
    """What a goal graph is invoked with."""

    goal: str
    """The job to plan and run, in plain words."""
    inputs: NotRequired[dict[str, Any]]
    """Run inputs, name -> value. The planner is offered every name given here."""


class GoalOutput(TypedDict, total=False):
    """What a goal graph returns; checkpoints hold all of it as plain data."""

    goal: str
    plan: dict[str, Any] | None
    """The plan the planner made, as JSON data (`TaskPlan.model_validate` rebuilds it)."""
    results: Annotated[dict[str, SubtaskResult], ResultsChannel()]
    """Subtask id -> SubtaskResult, as `compile_plan`'s graph returns them."""
    output: Any
    """The aggregate of the results (None without aggregation or when it failed)."""
    totals: Annotated[RunTotals | None, ModelValueChannel(RunTotals)]
    """Counts, tokens and wall time of the plan's run (the planner's tokens not included)."""
    aggregate_error: str | None
    planner_usage: Annotated[TokenUsage | None, ModelValueChannel(TokenUsage)]
    """Tokens of every planner call, rejected plans included."""


class GoalState(GoalOutput, total=False):
    """The state of a goal graph: its output plus the run inputs."""

    inputs: dict[str, Any]


def compile_goal(
    *,
    model: BaseChatModel | str | None = None,
    planner_model: BaseChatModel | str | None = None,
    attempts: int = 3,
    inputs: Mapping[str, str] | None = None,
    max_subtasks: int = 12,
    checkpointer: Checkpointer = None,
    name: str = "fanfold-goal",
    **compile_options: Any,
) -> CompiledStateGraph[GoalState, None, GoalInput, GoalOutput]:
    """Compile a graph that plans a goal with a chat model, then runs the plan.

    Invoke it with `{"goal": "...", "inputs": {...}}`. The `planner` node makes the plan
    (`make_plan_with_usage`, or `amake_plan_with_usage` when run asynchronously); the
    `run_plan` node compiles it with `compile_plan(plan, model=model, **compile_options)`
    and invokes that graph inside the node, so `stream(..., subgraphs=True)` shows the
    plan's nodes, tokens ("messages") and `fanfold.subtask` events ("custom") in a
    namespace under `run_plan`. The result has the keys of `GoalOutput`: `goal`, `plan`
    (plain JSON data), `results`, `output`, `totals`, `aggregate_error` and
    `planner_usage`. Each run replaces the thread's results: in the "updates" stream,
    `results` is a LangGraph `Overwrite` of plain result data.

    Args:
        model: chat model for the plan's subtasks and aggregation: a chat model, a
            "provider:model" string, "simulated", or None for `openai:gpt-4o-mini`.
        planner_model: chat model for the planner; None uses `model`.
        attempts: planner calls allowed per run; each rejected plan is sent back with
            the reason.
        inputs: run inputs the planner may use, name -> description. Names given in a
            run's `inputs` are offered to the planner too (without a description).
        max_subtasks: the most subtasks a plan may have.
        checkpointer: a LangGraph checkpointer for the goal graph. It keeps the plan
            once made, so a thread resumed after `run_plan` failed, or after an
            `interrupt_before=["run_plan"]` review (`update_state` may edit `plan`),
            runs the saved plan without planning again. The plan runs inside one
            node, so a resumed `run_plan` runs all of the plan's subtasks again.
        name: the graph's name in traces.
        compile_options: the other keyword arguments of `compile_plan` (aggregator,
            max_concurrency, requests_per_second, tokens_per_minute, rate_limiter,
            retry, durations, kinds); they are checked here, before anything runs.

    Returns:
        A CompiledStateGraph: invoke, ainvoke, stream, astream or batch it as usual.

    Raises:
        PlanError: a model or aggregator choice is invalid (here); at run time, from invoke
            and stream: `PlannerError` when no planner reply was a valid plan within
            `attempts`, `PlanValidationError` when the goal is empty, and the plan's
            own errors (a missing run input, say) from `run_plan`.
        ValueError: `attempts`, `max_subtasks` or a rate limit is below its minimum.
        TypeError: `compile_options` holds a name `compile_plan` does not take.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    if max_subtasks < 1:
        raise ValueError(f"max_subtasks must be at least 1, not {max_subtasks}")
    subtask_model = resolve_model(model)
    planner = subtask_model if planner_model is None else resolve_model(planner_model)
    # Check the options now, on a one-subtask plan, rather than after a planner call.
    compile_plan(
        TaskPlan.model_validate(_PROBE_PLAN),
        model=subtask_model,
        checkpointer=False,
        **compile_options,
    )
    nodes = _GoalNodes(
        planner=planner,
        model=subtask_model,
        attempts=attempts,
        descriptions=dict(inputs or {}),
        max_subtasks=max_subtasks,
        compile_options=compile_options,
    )
    builder: StateGraph[GoalState, None, GoalInput, GoalOutput] = StateGraph(
        GoalState, input_schema=GoalInput, output_schema=GoalOutput
    )
    builder.add_node(PLANNER_NODE, RunnableLambda(nodes.plan, afunc=nodes.aplan, name=PLANNER_NODE))
    builder.add_node(RUN_PLAN_NODE, RunnableLambda(nodes.run, afunc=nodes.arun, name=RUN_PLAN_NODE))
    builder.add_edge(START, PLANNER_NODE)
    builder.add_edge(PLANNER_NODE, RUN_PLAN_NODE)
    builder.add_edge(RUN_PLAN_NODE, END)
    return builder.compile(checkpointer=checkpointer, name=name)


class _GoalNodes:
    """The two nodes' work; the sync and async variants differ only in how they call."""

    def __init__(
        self,
        *,
        planner: BaseChatModel,
        model: BaseChatModel,
        attempts: int,
        descriptions: dict[str, str],
        max_subtasks: int,
        compile_options: dict[str, Any],
    ) -> None:
        self.planner = planner
        self.model = model
        self.attempts = attempts
        self.descriptions = descriptions
        self.max_subtasks = max_subtasks
        self.compile_options = compile_options

    # -- planner -------------------------------------------------------------------------

    def _request(self, state: GoalState) -> dict[str, Any]:
        goal = state.get("goal")
        if goal is not None and not isinstance(goal, str):
            raise PlanValidationError(
                f"the goal must be a string, not {type(goal).__name__}; invoke the graph "
                "with {'goal': '...', 'inputs': {...}}"
            )
        offered = dict(self.descriptions)
        for input_name in state.get("inputs") or {}:
            offered.setdefault(input_name, "")
        return {
            "goal": goal or "",
            "model": self.planner,
            "attempts": self.attempts,
            "inputs": offered,
            "max_subtasks": self.max_subtasks,
        }

    @staticmethod
    def _planned(plan: TaskPlan, usage: TokenUsage) -> dict[str, Any]:
        # A new plan clears what an earlier run on the same thread left behind.
        return {
            "plan": plan.model_dump(mode="json"),
            "planner_usage": usage,
            "results": Overwrite({}),
            "output": None,
            "totals": None,
            "aggregate_error": None,
        }

    def plan(self, state: GoalState) -> dict[str, Any]:
        plan, usage = make_plan_with_usage(**self._request(state))
        return self._planned(plan, usage)

    async def aplan(self, state: GoalState) -> dict[str, Any]:
        plan, usage = await amake_plan_with_usage(**self._request(state))
        return self._planned(plan, usage)

    # -- run_plan ------------------------------------------------------------------------

    def _graph(self, state: GoalState) -> tuple[CompiledPlanGraph, dict[str, Any]]:
        data = state.get("plan")
        if data is None:
            raise PlanValidationError(
                "the state holds no plan to run; the planner node writes it before run_plan"
            )
        graph = compile_plan(
            TaskPlan.model_validate(data),
            model=self.model,
            checkpointer=False,  # the plan runs within one node: its steps need no checkpoints
            **self.compile_options,
        )
        return graph, {"inputs": dict(state.get("inputs") or {})}

    @staticmethod
    def _finished(graph: CompiledPlanGraph, final: Mapping[str, Any]) -> dict[str, Any]:
        results: dict[str, SubtaskResult] = final.get("results") or {}
        assert graph.fanfold_runtime is not None
        return {
            "results": Overwrite({sid: r.to_state() for sid, r in results.items()}),
            "output": graph.fanfold_runtime.output_state(final.get("output")),
            "totals": final.get("totals"),
            "aggregate_error": final.get("aggregate_error"),
        }

    def run(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        graph, payload = self._graph(state)
        final = graph.invoke(payload, config, context=_caller_context())
        return self._finished(graph, final)

    async def arun(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        graph, payload = self._graph(state)
        final = await graph.ainvoke(payload, config, context=_caller_context())
        return self._finished(graph, final)


def _caller_context() -> Any:
    """The context the caller gave the goal graph, passed on to the plan's node kinds."""
    try:
        return get_runtime().context
    except (RuntimeError, KeyError):  # pragma: no cover - always inside a node here
        return None
