"""compile_goal: one LangGraph graph that plans a goal (or takes a plan), then runs the plan.

    START -> planner -> run_plan -> END
    START -> planner -> run_plan -> judge -> (planner again, or END)    (replan=N)

`planner` asks a chat model for a TaskPlan (`fanfold.planning`), or, when the input
carries a `plan` instead of a `goal`, validates that plan and makes no model call;
`run_plan` compiles the plan with `compile_plan` and invokes it inside the node, so with
`subgraphs=True` the plan's own nodes, tokens and lifecycle events stream nested under
`run_plan`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from fanfold._langgraph import adopt
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.goal_nodes import GoalContext, GoalNodes
from fanfold.graphs.goal_rounds import JudgeStep
from fanfold.graphs.goal_schema import GoalInput, GoalOutput, GoalState, goal_or_plan_input
from fanfold.graphs.planner_step import PlannerStep
from fanfold.models.resolve import model_label, resolve_model
from fanfold.plan.models import TaskPlan
from fanfold.scheduling.costs import UnknownPriceError
from fanfold.scheduling.runtime import PlanRuntime

__all__ = ["CompiledGoalGraph", "GoalInput", "GoalOutput", "GoalState", "compile_goal"]

PLANNER_NODE = "planner"
RUN_PLAN_NODE = "run_plan"
JUDGE_NODE = "judge"

_PROBE_PLAN = {"task": "-", "subtasks": [{"id": "probe", "prompt": "-"}]}


def compile_goal(
    *,
    model: BaseChatModel | str | None = None,
    planner_model: BaseChatModel | str | None = None,
    attempts: int = 3,
    inputs: Mapping[str, str] | None = None,
    max_subtasks: int = 12,
    checkpointer: Checkpointer = None,
    name: str = "fanfold-goal",
    allowed_models: Collection[str] | None = None,
    streamed: bool = True,
    replan: int = 0,
    **compile_options: Any,
) -> CompiledGoalGraph:
    """Compile a graph that plans a goal with a chat model (or takes a plan), then runs it.

    Invoke it with `{"goal": "...", "inputs": {...}}`, or with `{"plan": {...}, "inputs":
    {...}}` to run a plan given as JSON data (a plan file's fields) without planning; an
    input with both raises a `PlanValidationError`, and so does a plan that does not
    validate, before anything runs. The `planner` node makes the plan
    (`make_plan_with_usage`, or `amake_plan_with_usage` when run asynchronously) or keeps
    the given one; the `run_plan` node compiles it with `compile_plan(plan, model=model,
    **compile_options)` and invokes that graph inside the node, so `stream(...,
    subgraphs=True)` shows the plan's nodes, tokens ("messages") and `fanfold.subtask`
    events ("custom") in a namespace under `run_plan`. The result has the keys of
    `GoalOutput`: `goal` (None for a given plan), `plan` (plain JSON data), `results`,
    `output`, `totals`, `aggregate_error` and `planner_usage` (None for a given plan).
    Each run replaces the thread's results: in the "updates" stream, `results` is a
    LangGraph `Overwrite` of plain result data. An input with neither a goal nor a plan
    runs again what the thread holds: its goal, planned afresh, or else its given plan.

    Args:
        model: chat model for the plan's subtasks and aggregation: a chat model, a
            "provider:model" string, "simulated", or None for `openai:gpt-4o-mini`.
        planner_model: chat model for the planner; None uses `model`.
        attempts: planner calls allowed per run; each rejected plan is sent back with
            the reason.
        inputs: run inputs the planner may use, name -> description. Names given in a
            run's `inputs` are offered to the planner too (without a description).
        max_subtasks: the most subtasks a planned plan may have (a given plan is not
            limited).
        checkpointer: a LangGraph checkpointer for the goal graph. It keeps the plan
            once made, so a thread resumed after `run_plan` failed, or after an
            `interrupt_before=["run_plan"]` review (`update_state` may edit `plan`),
            runs the saved plan without planning again. The plan runs inside one
            node, so a resumed `run_plan` runs the plan again; with a LangGraph store
            (`compile(store=...)`, the server's, or `fanfold.runs`'s), its calls that
            had finished are journaled there and not requested again.
        name: the graph's name in traces.
        allowed_models: the model names a plan's subtasks and aggregation may choose
            (`model:`), besides none; a plan naming another model, or giving model
            settings, fails with `ModelNotAllowedError` before any call. None allows
            any. Served graphs allow only the operator's models.
        streamed: start each subtask while the plan streams, as soon as its object is
            complete and every dependency it names is known (it runs under the same
            limits, retries, cache and budget as any subtask; a subtask the finished
            plan drops or changes is cancelled and announced as "discarded"). False
            waits for the whole plan. A run with `interrupt_before=["run_plan"]` (a
            review) always waits.
        replan: the most times the run may plan again. With N > 0, a `judge` node
            follows `run_plan`: a call to the planner's model sees the goal, the plan
            and the results and decides "done" or "replan" (priced, counted against the
            budget and in the totals, with `"subtask": "judge"` events). A replan's
            planner is told why and offered the earlier results as run inputs
            (`r1_<id>`, `r1_output`, ...); a subtask it repeats unchanged keeps its
            result (no request). The state's `rounds` records each round.
        compile_options: the other keyword arguments of `compile_plan` (aggregator,
            max_concurrency, requests_per_second, tokens_per_minute, rate_limiter,
            retry, durations, kinds); they are checked here, before anything runs.

    Returns:
        A CompiledGoalGraph (a CompiledStateGraph): invoke, ainvoke, stream, astream or
        batch it as usual, or serve it on LangGraph Server.

    Raises:
        PlanError: a model or aggregator choice is invalid (here); at run time, from invoke
            and stream: `PlanValidationError` when the input has both a goal and a plan,
            a plan that does not validate, neither on a new thread, or an empty goal;
            `PlannerError` when no planner reply was a valid plan within `attempts`; and
            the plan's own errors (a missing run input, say) from `run_plan`.
        ValueError: `attempts`, `max_subtasks` or a rate limit is below its minimum.
        TypeError: `compile_options` holds a name `compile_plan` does not take.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    if max_subtasks < 1:
        raise ValueError(f"max_subtasks must be at least 1, not {max_subtasks}")
    if replan < 0:
        raise ValueError(f"replan must be at least 0, not {replan}")
    subtask_model = resolve_model(model)
    planner = subtask_model if planner_model is None else resolve_model(planner_model)
    # Check the options now, on a one-subtask plan, rather than after a planner call.
    probe = compile_plan(
        TaskPlan.model_validate(_PROBE_PLAN),
        model=subtask_model,
        checkpointer=False,
        **compile_options,
    ).fanfold_runtime
    assert probe is not None
    # One cache for the planner and every plan this graph compiles.
    compile_options = {**compile_options, "cache": probe.cache}
    if probe.budget is not None and model_label(planner) not in probe.prices:
        raise UnknownPriceError({model_label(planner): ["planner"]})

    def runtime_for(plan: TaskPlan) -> PlanRuntime:
        runtime = compile_plan(
            plan, model=subtask_model, checkpointer=False, **compile_options
        ).fanfold_runtime
        assert runtime is not None
        return runtime

    step = PlannerStep(
        model=planner,
        attempts=attempts,
        max_subtasks=max_subtasks,
        runtime_for=runtime_for,
        prices=probe.prices,
        cache=probe.cache,
        budget=probe.budget,
    )
    judge = (
        JudgeStep(model=planner, prices=probe.prices, budget=probe.budget, cache=probe.cache)
        if replan
        else None
    )
    nodes = GoalNodes(
        step=step,
        judge=judge,
        replan=replan,
        model=subtask_model,
        descriptions=dict(inputs or {}),
        compile_options=compile_options,
        allowed_models=None if allowed_models is None else frozenset(allowed_models),
        streamed=streamed,
    )
    builder: StateGraph[GoalState, None, GoalInput, GoalOutput] = StateGraph(
        GoalState, input_schema=GoalInput, output_schema=GoalOutput
    )
    builder.add_node(PLANNER_NODE, RunnableLambda(nodes.plan, afunc=nodes.aplan, name=PLANNER_NODE))
    builder.add_node(RUN_PLAN_NODE, RunnableLambda(nodes.run, afunc=nodes.arun, name=RUN_PLAN_NODE))
    builder.add_edge(START, PLANNER_NODE)
    builder.add_edge(PLANNER_NODE, RUN_PLAN_NODE)
    if replan:
        builder.add_node(
            JUDGE_NODE, RunnableLambda(nodes.judge, afunc=nodes.ajudge, name=JUDGE_NODE)
        )
        builder.add_edge(RUN_PLAN_NODE, JUDGE_NODE)
        builder.add_conditional_edges(
            JUDGE_NODE, nodes.after_judge, {"replan": PLANNER_NODE, "done": END}
        )
    else:
        builder.add_edge(RUN_PLAN_NODE, END)
    served = compile_options.get("input_interface") == "server"
    compiled = builder.compile(checkpointer=checkpointer, name=name)
    return adopt(compiled, CompiledGoalGraph, fanfold_served=served, fanfold_replans=replan > 0)


class CompiledGoalGraph(CompiledStateGraph[GoalState, None, GoalInput, GoalOutput]):
    """The compiled goal graph; an ordinary LangGraph Runnable.

    Every entry point goes through `stream` or `astream`, which settle what a new run's
    input asks for before LangGraph writes it to the thread: a goal clears the thread's
    earlier plan, and a plan (validated here, stored as plain JSON data) clears its
    earlier goal, so the `planner` node knows which of the two this run was given.
    A served graph (`input_interface="server"`) refuses any other input key.
    """

    def __init__(
        self,
        *args: Any,
        fanfold_served: bool = False,
        fanfold_replans: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fanfold_served = fanfold_served
        self.fanfold_replans = fanfold_replans

    def _context(self, kwargs: dict[str, Any]) -> GoalContext:
        review = kwargs.get("interrupt_before") or self.interrupt_before_nodes or ()
        context = GoalContext(
            user=kwargs.get("context"),
            dispatch=review != "*" and RUN_PLAN_NODE not in review,
        )
        kwargs["context"] = context
        return context

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        input = goal_or_plan_input(input, served=self.fanfold_served, replans=self.fanfold_replans)
        context = self._context(kwargs)
        try:
            yield from super().stream(input, config, **kwargs)
        finally:
            context.close()

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        input = goal_or_plan_input(input, served=self.fanfold_served, replans=self.fanfold_replans)
        context = self._context(kwargs)
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        finally:
            context.close()
