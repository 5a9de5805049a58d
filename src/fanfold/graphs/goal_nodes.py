"""The goal graph's nodes: the planner step, then the plan's run inside one node.

`GoalNodes.plan` asks the planner (`PlannerStep`) for a plan, or keeps a given one;
`GoalNodes.run` compiles the plan with `compile_plan` and invokes it inside the node,
handing it the dispatcher that started subtasks while the plan streamed.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.runtime import get_runtime
from langgraph.types import Overwrite

from fanfold.errors import PlanValidationError
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.compiled import _BUDGET_KWARG, _DISPATCHER_KWARG, CompiledPlanGraph
from fanfold.graphs.goal_rounds import JudgeStep, last_round, replanning, round_entry
from fanfold.graphs.goal_schema import GoalState, check_models
from fanfold.graphs.planner_step import PlannerOutcome, PlannerStep
from fanfold.nodes.run_scope import background_loop, run_journal
from fanfold.plan.models import TaskPlan
from fanfold.planning import prompts
from fanfold.state.results import RunTotals, SubtaskResult, TokenUsage

__all__ = ["GoalContext", "GoalNodes"]


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


class GoalNodes:
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
        judge: JudgeStep | None = None,
        replan: int = 0,
    ) -> None:
        self.step = step
        self.judge_step = judge
        self.replan = replan
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
        """The planner step's coroutine for this run; it records its outcome in the context.

        In a replanned round the planner also reads why, and is offered the earlier
        results as run inputs; a subtask it repeats unchanged keeps its result.
        """
        goal = self._goal(state)
        offered = dict(self.descriptions)
        for input_name in state.get("inputs") or {}:
            offered.setdefault(input_name, "")
        values = dict(state.get("inputs") or {})
        again = replanning(state.get("rounds"))
        if again is not None:
            note = prompts.replan_note(again.round_number, again.reason, again.offered)
            goal = f"{goal}\n\n{note}"
            offered.update(again.offered)
            values.update(again.values)
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
                values=values,
                config=config,
                emit=writer,
                dispatch=dispatch,
                journal=run_journal(config),
                reuse=again.reused if again is not None else None,
                spent=again.earlier.cost or 0.0 if again is not None else 0.0,
                round_number=again.round_number if again is not None else 1,
            )
            if context is not None:
                context.planned = outcome
            return self._planned(outcome.plan, outcome.usage)

        return planning()

    def _planned(self, plan: TaskPlan, usage: TokenUsage | None) -> dict[str, Any]:
        if self.allowed_models is not None:
            check_models(plan, self.allowed_models)  # before the thread keeps the plan
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
            check_models(plan, self.allowed_models)
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
        payload: dict[str, Any] = {"inputs": dict(state.get("inputs") or {})}
        again = replanning(state.get("rounds"))
        if again is not None:
            payload["inputs"].update(again.values)
            payload["results"] = {sid: r.to_state() for sid, r in again.reused(plan).items()}
        return graph, payload, handover

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
        again = replanning(state.get("rounds"))
        if isinstance(totals, RunTotals) and again is not None:
            totals = totals.with_earlier(again.earlier)
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

    # -- judge ---------------------------------------------------------------------------

    async def _judging(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        """Judge this round (or close it without a call, after the last allowed one)."""
        rounds = list(state.get("rounds") or [])
        round_number = len(rounds) + 1
        plan = TaskPlan.model_validate(state.get("plan"))
        results: dict[str, SubtaskResult] = dict(state.get("results") or {})
        totals = state.get("totals")
        if not isinstance(totals, RunTotals):
            totals = RunTotals()
        if round_number > self.replan or self.judge_step is None:
            outcome = last_round(round_number)
        else:
            try:
                writer: Any = get_stream_writer()
            except RuntimeError:  # pragma: no cover - always inside a node here
                writer = None
            outcome = await self.judge_step.run(
                state.get("goal") or plan.task,
                round_number=round_number,
                plan=plan,
                results=results,
                output=state.get("output"),
                spent=totals.cost or 0.0,
                config=config,
                emit=writer,
            )
            totals = totals.with_judge(
                usage=outcome.usage,
                cost=outcome.cost,
                model=self.judge_step.label,
                seconds=outcome.finished_at - outcome.started_at if outcome.called else 0.0,
                cached_usage=outcome.cached_usage,
            )
        entry = round_entry(
            outcome,
            round_number,
            plan=state.get("plan"),
            results=results,
            output=state.get("output"),
            totals=totals,
        )
        return {"rounds": [*rounds, entry], "totals": totals}

    def judge(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        future = asyncio.run_coroutine_threadsafe(
            _in_context(contextvars.copy_context(), self._judging(state, config)),
            background_loop(),
        )
        result: dict[str, Any] = future.result()
        return result

    async def ajudge(self, state: GoalState, config: RunnableConfig) -> dict[str, Any]:
        return await self._judging(state, config)

    @staticmethod
    def after_judge(state: GoalState) -> str:
        """Where a judged round goes: back to the planner on "replan", else the end."""
        rounds = state.get("rounds") or []
        return "replan" if rounds and rounds[-1].get("decision") == "replan" else "done"


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
