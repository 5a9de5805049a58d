"""compile_goal: one LangGraph graph that plans a goal (or takes a plan), then runs the plan.

    START -> planner -> run_plan -> END

`planner` asks a chat model for a TaskPlan (`fanfold.planning`), or, when the input
carries a `plan` instead of a `goal`, validates that plan and makes no model call;
`run_plan` compiles the plan with `compile_plan` and invokes it inside the node, so with
`subgraphs=True` the plan's own nodes, tokens and lifecycle events stream nested under
`run_plan`.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Checkpointer, Overwrite
from pydantic import Field, WithJsonSchema
from typing_extensions import TypedDict

from fanfold._langgraph import adopt, stored_once
from fanfold.errors import ModelNotAllowedError, PlanValidationError
from fanfold.graphs.channels import ModelValueChannel, ResultsChannel
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.compiled import _BUDGET_KWARG, _DISPATCHER_KWARG, CompiledPlanGraph
from fanfold.graphs.planner_step import PlannerOutcome, PlannerStep
from fanfold.models.resolve import model_label, resolve_model
from fanfold.nodes.run_scope import background_loop
from fanfold.plan.model_spec import ModelSpec
from fanfold.plan.models import TaskPlan
from fanfold.scheduling.costs import UnknownPriceError
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import RunTotals, SubtaskResult, TokenUsage

__all__ = ["CompiledGoalGraph", "GoalInput", "GoalOutput", "GoalState", "compile_goal"]

PLANNER_NODE = "planner"
RUN_PLAN_NODE = "run_plan"

_PROBE_PLAN = {"task": "-", "subtasks": [{"id": "probe", "prompt": "-"}]}


_PLAN_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Plan",
    "description": "A plan as JSON data (a plan file's fields: task, inputs, subtasks, "
    "aggregation), run as given without planning; give it instead of a goal.",
    "additionalProperties": True,
}


class GoalInput(TypedDict, total=False):
    """What a goal graph is invoked with: a `goal` or a `plan` (not both), and `inputs`."""

    goal: Annotated[str, Field(description="The job to plan and run, in plain words.")]
    """The job to plan and run, in plain words."""
    plan: Annotated[dict[str, Any], WithJsonSchema(_PLAN_JSON_SCHEMA)]
    """A plan as JSON data (what `TaskPlan.model_validate` takes): run without planning."""
    inputs: Annotated[
        dict[str, Any], Field(description="The run inputs, name -> value, as the plan names them.")
    ]
    """Run inputs, name -> value. The planner is offered every name given here."""


class GoalOutput(TypedDict, total=False):
    """What a goal graph returns; checkpoints hold all of it as plain data."""

    goal: str | None
    """The goal that was planned; None when the run was given a plan."""
    plan: dict[str, Any] | None
    """The plan that ran, as JSON data (`TaskPlan.model_validate` rebuilds it): the one
    the planner made, or the one the input gave."""
    results: Annotated[dict[str, SubtaskResult], ResultsChannel()]
    """Subtask id -> SubtaskResult, as `compile_plan`'s graph returns them."""
    output: Any
    """The aggregate of the results (None without aggregation or when it failed)."""
    totals: Annotated[RunTotals | None, ModelValueChannel(RunTotals)]
    """Counts, tokens, cost and wall time of the run, the planner's calls included."""
    aggregate_error: str | None
    planner_usage: Annotated[TokenUsage | None, ModelValueChannel(TokenUsage)]
    """Tokens of every planner call, rejected plans included; None when the run was given
    a plan."""


class GoalState(GoalOutput, total=False):
    """The state of a goal graph: its output plus the run inputs (stored once)."""

    inputs: Annotated[dict[str, Any], stored_once()]


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
            node, so a resumed `run_plan` runs all of the plan's subtasks again.
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
    nodes = _GoalNodes(
        step=step,
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
    builder.add_edge(RUN_PLAN_NODE, END)
    served = compile_options.get("input_interface") == "server"
    compiled = builder.compile(checkpointer=checkpointer, name=name)
    return adopt(compiled, CompiledGoalGraph, fanfold_served=served)


class CompiledGoalGraph(CompiledStateGraph[GoalState, None, GoalInput, GoalOutput]):
    """The compiled goal graph; an ordinary LangGraph Runnable.

    Every entry point goes through `stream` or `astream`, which settle what a new run's
    input asks for before LangGraph writes it to the thread: a goal clears the thread's
    earlier plan, and a plan (validated here, stored as plain JSON data) clears its
    earlier goal, so the `planner` node knows which of the two this run was given.
    A served graph (`input_interface="server"`) refuses any other input key.
    """

    def __init__(self, *args: Any, fanfold_served: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fanfold_served = fanfold_served

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
        input = _goal_or_plan_input(input, served=self.fanfold_served)
        context = self._context(kwargs)
        try:
            yield from super().stream(input, config, **kwargs)
        finally:
            context.close()

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        input = _goal_or_plan_input(input, served=self.fanfold_served)
        context = self._context(kwargs)
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        finally:
            context.close()


@dataclass
class GoalContext:
    """LangGraph's per-run context for a goal graph.

    Attributes:
        user: the context the caller passed to invoke/stream, if any (the plan's node
            kinds get it).
        dispatch: whether the planner may start subtasks while the plan streams.
        planned: what this run's planner step produced (its dispatcher and budget).
    """

    user: Any = None
    dispatch: bool = True
    planned: PlannerOutcome | None = None

    def close(self) -> None:
        """Cancel calls the planner started that no plan run took over."""
        dispatcher = self.planned.dispatcher if self.planned is not None else None
        if dispatcher is not None and not dispatcher.loop.is_closed():
            dispatcher.loop.call_soon_threadsafe(dispatcher.cancel)


def _given_goal(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _goal_or_plan_input(input: Any, *, served: bool = False) -> Any:
    """A goal graph's input with the goal or the plan it gives made explicit.

    An input that resumes (None, a `Command`) is returned as it is, and so is one with
    neither a goal nor a plan (it runs again what the thread holds). A blank goal next
    to a plan counts as no goal, so a form that sends empty fields still works.

    Raises:
        PlanValidationError: the input gives both a goal and a plan, or its plan is not
            a mapping or does not validate as a TaskPlan.
    """
    if not isinstance(input, Mapping):
        return input
    extra = sorted(set(input) - set(GoalInput.__annotations__))
    if served and extra:
        raise PlanValidationError(
            f"a run's input holds only 'goal' or 'plan', and 'inputs', not "
            f"{', '.join(repr(k) for k in extra)}; fanfold writes results, output and "
            'totals itself. Send {"goal": "...", "inputs": {...}} or {"plan": {...}, '
            '"inputs": {...}}'
        )
    if input.get("inputs") is not None and not isinstance(input["inputs"], Mapping):
        raise PlanValidationError(
            f"a run's inputs must be a mapping of input name -> value, not "
            f"{type(input['inputs']).__name__}; pass {{'inputs': {{'topic': ...}}}}"
        )
    goal, plan = input.get("goal"), input.get("plan")
    if plan is None or (isinstance(plan, Mapping) and not plan):
        given = dict(input)
        if "goal" in given or "plan" in given:
            given["plan"] = None
        return given
    if _given_goal(goal):
        raise PlanValidationError(
            "the input gives both a goal and a plan; give either a 'goal' to plan or a "
            "'plan' to run as it is, not both"
        )
    if not isinstance(plan, Mapping):
        raise PlanValidationError(
            f"the input's plan must be a plan as JSON data (a mapping with a plan file's "
            f"fields: task, subtasks, ...), not {type(plan).__name__}"
        )
    checked = TaskPlan.model_validate(dict(plan)).model_dump(mode="json")
    return {**input, "goal": None, "plan": checked}


class _GoalNodes:
    """The two nodes' work; the sync and async variants differ only in how they call."""

    def __init__(
        self,
        *,
        step: PlannerStep,
        model: BaseChatModel,
        descriptions: dict[str, str],
        compile_options: dict[str, Any],
        allowed_models: frozenset[str] | None,
        streamed: bool,
    ) -> None:
        self.step = step
        self.model = model
        self.descriptions = descriptions
        self.compile_options = compile_options
        self.streamed = streamed
        self.allowed_models = allowed_models

    # -- planner -------------------------------------------------------------------------

    def _goal(self, state: GoalState) -> str:
        goal = state.get("goal")
        if goal is None and state.get("plan") is None:
            raise PlanValidationError(
                "the input has neither a goal nor a plan; invoke the graph with "
                "{'goal': '...', 'inputs': {...}} or {'plan': {...}, 'inputs': {...}}"
            )
        if goal is not None and not isinstance(goal, str):
            raise PlanValidationError(
                f"the goal must be a string, not {type(goal).__name__}; invoke the graph "
                "with {'goal': '...', 'inputs': {...}}"
            )
        return goal or ""

    def _planning(self, state: GoalState, config: RunnableConfig) -> Any:
        """The planner step's coroutine for this run; it records its outcome in the context."""
        goal = self._goal(state)
        offered = dict(self.descriptions)
        for input_name in state.get("inputs") or {}:
            offered.setdefault(input_name, "")
        context = _goal_context()
        try:
            writer: Any = get_stream_writer()
        except RuntimeError:  # pragma: no cover - always inside a node here
            writer = None
        dispatch = self.streamed and context is not None and context.dispatch

        async def planning() -> dict[str, Any]:
            outcome = await self.step.run(
                goal,
                offered=offered,
                values=dict(state.get("inputs") or {}),
                config=config,
                emit=writer,
                dispatch=dispatch,
            )
            if context is not None:
                context.planned = outcome
            return self._planned(outcome.plan, outcome.usage)

        return planning()

    def _planned(self, plan: TaskPlan, usage: TokenUsage | None) -> dict[str, Any]:
        if self.allowed_models is not None:
            _check_models(plan, self.allowed_models)  # before the thread keeps the plan
        # A new plan clears what an earlier run on the same thread left behind.
        return {
            "plan": plan.model_dump(mode="json"),
            "planner_usage": usage,
            "results": Overwrite({}),
            "output": None,
            "totals": None,
            "aggregate_error": None,
        }

    @staticmethod
    def _given(state: GoalState) -> TaskPlan | None:
        """The plan this run was given, if any: the state's plan when it holds no goal."""
        data = state.get("plan")
        if state.get("goal") is not None or data is None:
            return None
        plan: TaskPlan = TaskPlan.model_validate(data)
        return plan

    def plan(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        given = self._given(state)
        if given is not None:
            return self._planned(given, None)
        # The planner streams on the loop that runs synchronous runs' calls.
        future = asyncio.run_coroutine_threadsafe(
            _in_context(contextvars.copy_context(), self._planning(state, config)),
            background_loop(),
        )
        result: dict[str, Any] = future.result()
        return result

    async def aplan(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        given = self._given(state)
        if given is not None:
            return self._planned(given, None)
        result: dict[str, Any] = await self._planning(state, config)
        return result

    # -- run_plan ------------------------------------------------------------------------

    def _graph(self, state: GoalState) -> tuple[CompiledPlanGraph, dict[str, Any], dict[str, Any]]:
        """The plan's graph, its input, and the keyword arguments that hand it the
        planner's dispatcher and budget."""
        data = state.get("plan")
        if data is None:
            raise PlanValidationError(
                "the state holds no plan to run; the planner node writes it before run_plan"
            )
        plan = TaskPlan.model_validate(data)
        if self.allowed_models is not None:
            _check_models(plan, self.allowed_models)
        graph = compile_plan(
            plan,
            model=self.model,
            checkpointer=False,  # the plan runs within one node: its steps need no checkpoints
            **self.compile_options,
        )
        handover: dict[str, Any] = {}
        context = _goal_context()
        planned = context.planned if context is not None else None
        if planned is not None and planned.plan.model_dump(mode="json") == data:
            handover = {_DISPATCHER_KWARG: planned.dispatcher, _BUDGET_KWARG: planned.budget}
        elif planned is not None and planned.dispatcher is not None:
            # The plan was edited since (a review): the calls started for it are stale.
            context.close()  # type: ignore[union-attr]
        return graph, {"inputs": dict(state.get("inputs") or {})}, handover

    def _finished(
        self, graph: CompiledPlanGraph, final: Mapping[str, Any], state: GoalState
    ) -> dict[str, Any]:
        results: dict[str, SubtaskResult] = final.get("results") or {}
        runtime = graph.fanfold_runtime
        assert runtime is not None
        # In plan order, whatever order the nested run finished them in.
        ordered = [sid for sid in runtime.plan.ids if sid in results]
        totals = final.get("totals")
        usage = state.get("planner_usage")
        if isinstance(totals, RunTotals) and usage is not None:
            context = _goal_context()
            planned = context.planned if context is not None else None
            label = self.step.label
            if planned is not None:
                totals = totals.with_planner(
                    usage=planned.usage,
                    cost=planned.cost,
                    model=label,
                    seconds=planned.seconds,
                    started_at=planned.started_at,
                    finished_at=time.time(),
                    cached_usage=planned.cached_usage,
                )
            else:  # a resumed thread: the planner ran in an earlier process
                cost = self.step.prices.cost(label, usage)
                totals = totals.with_planner(usage=usage, cost=cost, model=label, seconds=0.0)
        return {
            "results": Overwrite({sid: results[sid].to_state() for sid in ordered}),
            "output": runtime.output_state(final.get("output")),
            "totals": totals,
            "aggregate_error": final.get("aggregate_error"),
        }

    def run(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        graph, payload, handover = self._graph(state)
        final = graph.invoke(payload, config, context=_caller_context(), **handover)
        return self._finished(graph, final, state)

    async def arun(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        graph, payload, handover = self._graph(state)
        final = await graph.ainvoke(payload, config, context=_caller_context(), **handover)
        return self._finished(graph, final, state)


def _check_models(plan: TaskPlan, allowed: Collection[str]) -> None:
    """Refuse a plan whose subtasks or aggregation choose a model not in `allowed`.

    Raises:
        ModelNotAllowedError: naming the first such subtask and model.
    """
    choices = [(f"subtask {s.id!r}", s.model) for s in plan.subtasks]
    choices.append(("the aggregation", plan.aggregation.model))
    for who, choice in choices:
        if choice is None:
            continue
        if isinstance(choice, ModelSpec):
            name = choice.name
            if choice.settings:
                raise ModelNotAllowedError(
                    f"{who} gives model settings ({', '.join(sorted(choice.settings))}); "
                    f"this server's operator chooses them: remove them, or remove 'model'",
                    model=name,
                )
        else:
            name = choice if isinstance(choice, str) else type(choice).__name__
        if name not in allowed:
            listed = ", ".join(repr(m) for m in sorted(allowed))
            raise ModelNotAllowedError(
                f"{who} asks for model {name!r}, which this server does not allow (allowed: "
                f"{listed}); remove its 'model' to use the server's model",
                model=name,
            )


def _goal_context() -> GoalContext | None:
    """This goal run's context, or None outside `CompiledGoalGraph.stream`."""
    try:
        context = get_runtime().context
    except (RuntimeError, KeyError):  # pragma: no cover - always inside a node here
        return None
    return context if isinstance(context, GoalContext) else None


def _caller_context() -> Any:
    """The context the caller gave the goal graph, passed on to the plan's node kinds."""
    try:
        context = get_runtime().context
    except (RuntimeError, KeyError):  # pragma: no cover - always inside a node here
        return None
    return context.user if isinstance(context, GoalContext) else context


async def _in_context(context: contextvars.Context, coro: Any) -> Any:
    """Run `coro` as a task inside `context` (callbacks and config contextvars)."""
    loop = asyncio.get_running_loop()
    return await loop.create_task(coro, context=context)
