"""The planner as a step of a goal run: events, price, budget, cache, and streamed dispatch.

`PlannerStep.run` asks the planner model for a plan (`fanfold.planning.stream`) and,
while the reply streams, hands each subtask whose object is complete, and whose
dependencies are all known, to a run-scoped `Dispatcher`: its call starts at once,
under the same limits, priorities, retries, cache and budget as any subtask. The goal
graph's `run_plan` node then hands that dispatcher to the plan's own graph, whose nodes
commit the results it already has.

A rejected plan is sent back as before; a subtask the next reply repeats unchanged
keeps its call, and the calls of subtasks that vanish or change are cancelled and
announced as "discarded".
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

from fanfold.errors import PlanError
from fanfold.models.resolve import model_label
from fanfold.nodes.run_scope import subtask_config
from fanfold.plan.models import SubTask, TaskPlan
from fanfold.planning.planner import FanfoldPlan, PlannerSession, plan_from_data
from fanfold.planning.stream import astream_plan_with_usage
from fanfold.scheduling.cache import CallJournal, ResultCache, call_key
from fanfold.scheduling.costs import Budget, BudgetError, PriceTable, format_usd, messages_tokens
from fanfold.scheduling.dispatcher import EVENT_TYPE, Dispatcher, EventSink
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult, TokenUsage

__all__ = [
    "PLANNER_EVENT_ID",
    "PlannerBudgetError",
    "PlannerOutcome",
    "PlannerStep",
    "step_event",
]

PLANNER_EVENT_ID = "planner"
"""The `subtask` of the planner's lifecycle events."""
PLAN_TOKENS_PER_SUBTASK = 80
"""Expected reply tokens per subtask the plan may have (the planner call's estimate)."""

RuntimeFactory = Callable[[TaskPlan], PlanRuntime]
Reuse = Callable[[TaskPlan], Mapping[str, SubtaskResult]]
"""A (partial) plan -> the earlier results it keeps (a replanned round's)."""


class PlannerBudgetError(BudgetError):
    """The budget does not cover the planner's call, so nothing can run.

    Attributes:
        estimate: the planner call's estimated cost in USD.
    """

    def __init__(self, budget: float, estimate: float) -> None:
        super().__init__(
            f"the {format_usd(budget)} budget does not cover the planner's call (estimated "
            f"at {format_usd(estimate)}); raise the budget (--budget USD) or write the plan "
            "with `fanfold plan` and run it"
        )
        self.estimate = estimate


@dataclass
class PlannerOutcome:
    """What the planner step produced, and what it cost."""

    plan: TaskPlan
    usage: TokenUsage
    cost: float | None
    model: str
    started_at: float
    finished_at: float
    cached_usage: TokenUsage | None = None
    """The usage of the call the cache answered, when it did (usage is then 0)."""
    dispatcher: Dispatcher | None = None
    """The dispatcher that started subtasks while the plan streamed, if any."""
    discarded: list[str] = field(default_factory=list)
    budget: Budget | None = None
    """The run's budget with the planner's cost spent, when the run has a budget."""

    @property
    def seconds(self) -> float:
        return 0.0 if self.cached_usage is not None else self.finished_at - self.started_at


def _same(a: SubTask, b: SubTask) -> bool:
    return a.model_dump() == b.model_dump()


class _Streamed:
    """The subtasks a streaming reply has handed to the dispatcher."""

    def __init__(
        self,
        step: PlannerStep,
        *,
        offered: Mapping[str, str],
        values: Mapping[str, Any],
        config: RunnableConfig,
        emit: EventSink | None,
        budget: Budget | None,
        journal: CallJournal | None = None,
        reuse: Reuse | None = None,
    ) -> None:
        self.step = step
        self.journal = journal
        self.reuse = reuse
        self.offered = dict(offered)
        self.values = dict(values)
        self.config = config
        self.emit = emit
        self.budget = budget
        self.dispatcher: Dispatcher | None = None
        self.run_id = uuid.uuid4()
        self.task: str | None = None
        self.live: dict[str, SubTask] = {}
        """Subtasks the dispatcher runs, by id, in the order they came."""
        self.attempt = 0
        self.admitted: list[dict[str, Any]] = []
        """This reply's subtask objects whose dependencies are known."""
        self.pending: list[dict[str, Any]] = []
        self.discarded: list[str] = []
        self.stopped = False

    def _plan(self, task: str, subtasks: list[Any]) -> TaskPlan:
        data = {"task": task, "subtasks": subtasks}
        return plan_from_data(data, inputs=self.offered, max_subtasks=len(subtasks))

    async def on_subtask(self, attempt: int, task: str, obj: dict[str, Any]) -> None:
        if self.stopped:
            return
        if attempt != self.attempt:
            self.attempt, self.admitted, self.pending = attempt, [], []
        if task != self.task:
            self._discard(list(self.live))
            self.task = task
        self.pending.append(obj)
        added: list[SubTask] = []
        progress = True
        while progress:
            progress = False
            for candidate in list(self.pending):
                try:
                    plan = self._plan(task, [*self.admitted, candidate])
                except PlanError:
                    continue  # a dependency not listed yet: wait for it
                self.pending.remove(candidate)
                self.admitted.append(candidate)
                added.append(plan.subtasks[-1])
                progress = True
        if added:
            self._run(added)

    def _run(self, added: list[SubTask]) -> None:
        changed = [s.id for s in added if s.id in self.live and not _same(self.live[s.id], s)]
        self._discard(changed)
        for sub in added:
            self.live.setdefault(sub.id, sub)
        assert self.task is not None
        subtasks = [s.model_dump(exclude_defaults=True) for s in self.live.values()]
        try:
            partial = self._plan(self.task, subtasks)
            runtime = self.step.runtime_for(partial)
            inputs = runtime.run_inputs(self.values)
        except PlanError:
            # The run lacks an input the plan needs: run_plan will say so; start nothing.
            self.stopped = True
            self._discard(list(self.live))
            return
        kept = self.reuse(partial) if self.reuse is not None else {}
        if self.dispatcher is None:
            loop = asyncio.get_running_loop()
            self.dispatcher = Dispatcher(
                runtime,
                run_id=self.run_id,
                inputs=inputs,
                done=kept,
                loop=loop,
                call_config=functools.partial(subtask_config, self.config, self.run_id),
                emit=self.emit,
                budget=self.budget,
                journal=self.journal,
            )
            self.dispatcher.start()
        else:
            for sid, result in kept.items():
                self.dispatcher.done.setdefault(sid, result)
            self.dispatcher.extend(runtime, inputs)

    def _discard(self, sids: list[str]) -> None:
        """Forget `sids` and every live subtask that depends on them, cancelling calls."""
        gone = set(sids) & set(self.live)
        grew = True
        while grew:
            grew = False
            for sid, sub in self.live.items():
                if sid not in gone and (set(sub.depends_on) | {sub.map}) & gone:
                    gone.add(sid)
                    grew = True
        ordered = [sid for sid in self.live if sid in gone]
        for sid in ordered:
            del self.live[sid]
        if self.dispatcher is not None and ordered:
            self.discarded.extend(self.dispatcher.discard(ordered))

    def finish(self, plan: TaskPlan) -> None:
        """Keep only the live subtasks the finished plan has unchanged."""
        final = {s.id: s for s in plan.subtasks}
        if self.task != plan.task:
            self._discard(list(self.live))
            return
        self._discard([sid for sid, s in self.live.items() if not _same(final.get(sid, s), s)])
        self._discard([sid for sid in self.live if sid not in final])

    async def close(self) -> None:
        if self.dispatcher is not None:
            self._discard(list(self.live))
            await self.dispatcher.aclose()


class PlannerStep:
    """Plans a goal as one step of a goal run.

    Args:
        model: the planner's chat model.
        attempts: planner calls allowed for a valid plan.
        max_subtasks: the most subtasks a plan may have.
        runtime_for: compiles a (partial) plan's runtime with the run's options.
        prices: prices the planner's calls.
        cache: answers a repeated planner request without a call, if given.
        budget: USD the whole run may spend, planner included (None: no limit).
    """

    def __init__(
        self,
        *,
        model: BaseChatModel,
        attempts: int,
        max_subtasks: int,
        runtime_for: RuntimeFactory,
        prices: PriceTable,
        cache: ResultCache | None,
        budget: float | None,
    ) -> None:
        self.model = model
        self.label = model_label(model)
        self.attempts = attempts
        self.max_subtasks = max_subtasks
        self.runtime_for = runtime_for
        self.prices = prices
        self.cache = cache
        self.budget = budget

    async def run(
        self,
        goal: str,
        *,
        offered: Mapping[str, str],
        values: Mapping[str, Any],
        config: RunnableConfig,
        emit: EventSink | None,
        dispatch: bool = True,
        journal: CallJournal | None = None,
        reuse: Reuse | None = None,
        spent: float = 0.0,
        round_number: int = 1,
    ) -> PlannerOutcome:
        """Plan `goal`; with `dispatch`, start subtasks as the plan streams.

        Args:
            offered: run inputs the planner may use, name -> description.
            values: the run's input values.
            config: the planner node's config (calls started here are parented to it).
            emit: receives lifecycle events, or None.
            journal: where a checkpointed run journals the calls started while the
                plan streams (a resumed run requests none of them again).
            reuse: for a replanned round, gives the earlier results a (partial) plan
                keeps; those subtasks are not called again.
            spent: USD the run spent before this call (earlier rounds).
            round_number: the round this plan is for (in the events from round 2).

        Raises:
            PlannerError: no valid plan within the attempts (started calls are cancelled).
            PlannerBudgetError: the budget does not cover a planner call.
        """
        started = time.time()
        if round_number > 1:
            emit = _with_fields(emit, round=round_number)
        _emit(emit, "started", started_at=started, attempt=1, model=self.label)
        session = PlannerSession(
            goal, self.model, attempts=self.attempts, inputs=offered,
            max_subtasks=self.max_subtasks,
        )  # fmt: skip
        key = self._key(session)
        hit = self.cache.get(key) if self.cache is not None and key is not None else None
        if hit is not None:
            try:
                plan = TaskPlan.model_validate(hit.output)
            except PlanError:
                plan = None
            if plan is not None:
                now = time.time()
                outcome = PlannerOutcome(plan, TokenUsage(), 0.0, self.label, now, now, hit.usage)
                _emit(emit, "succeeded", **_fields(outcome, attempts=0))
                return outcome
        budget = Budget(self.budget, spent=spent) if self.budget is not None else None
        estimate = self.prices.estimate(
            self.label,
            messages_tokens(session.messages),
            PLAN_TOKENS_PER_SUBTASK * self.max_subtasks,
        )
        reserved = 0.0
        calls = 0

        def reserve(attempt: int) -> None:
            nonlocal reserved, calls
            calls = attempt
            if budget is None:
                return
            refusal = budget.reserve(estimate or 0.0)
            if refusal is not None:
                assert self.budget is not None
                raise PlannerBudgetError(self.budget, estimate or 0.0)
            reserved += estimate or 0.0

        streamed = _Streamed(
            self,
            offered=offered,
            values=values,
            config=config,
            emit=emit,
            budget=budget,
            journal=journal,
            reuse=reuse,
        )
        try:
            plan, usage = await astream_plan_with_usage(
                goal,
                model=self.model,
                attempts=self.attempts,
                inputs=offered,
                max_subtasks=self.max_subtasks,
                on_subtask=streamed.on_subtask if dispatch else None,
                on_call=reserve,
            )
        except BaseException as exc:
            await streamed.close()
            if isinstance(exc, Exception):
                _emit(
                    emit, "failed", started_at=started, finished_at=time.time(),
                    error=str(exc), attempts=calls, model=self.label,
                )  # fmt: skip
            raise
        cost = self.prices.cost(self.label, usage)
        if budget is not None:
            budget.settle(reserved, cost)
        streamed.finish(plan)
        if self.cache is not None and key is not None:
            self.cache.put(
                key,
                plan.model_dump(mode="json"),
                usage=usage,
                model=self.label,
                kind="planner",
                subtask=PLANNER_EVENT_ID,
                seconds=time.time() - started,
            )
        outcome = PlannerOutcome(
            plan,
            usage,
            cost,
            self.label,
            started,
            time.time(),
            dispatcher=streamed.dispatcher,
            discarded=streamed.discarded,
        )
        outcome.budget = budget
        _emit(emit, "succeeded", **_fields(outcome, attempts=calls))
        return outcome

    def _key(self, session: PlannerSession) -> str | None:
        if self.cache is None:
            return None
        return call_key(
            model=self.model,
            messages=session.messages,
            kind="planner",
            output_schema=FanfoldPlan,
            options={"attempts": self.attempts, "max_subtasks": self.max_subtasks},
        )


def _fields(outcome: PlannerOutcome, *, attempts: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "duration": outcome.finished_at - outcome.started_at,
        "attempts": attempts,
        "total_tokens": outcome.usage.total_tokens,
        "cost": outcome.cost,
        "model": outcome.model,
        "subtasks": len(outcome.plan.subtasks),
    }
    if outcome.cached_usage is not None:
        fields["cached"] = True
    if outcome.discarded:
        fields["discarded"] = list(outcome.discarded)
    return fields


def step_event(emit: EventSink | None, status: str, *, step: str, **fields: Any) -> None:
    """Send a goal run step's lifecycle event (`"subtask": step`) to `emit`, if any."""
    if emit is None:
        return
    event = {"type": EVENT_TYPE, "subtask": step, "status": status, "time": time.time()}
    event.update(fields)
    try:
        emit(event)
    except Exception:  # noqa: S110 - a closed stream must not fail the run
        pass


_emit = functools.partial(step_event, step=PLANNER_EVENT_ID)


def _with_fields(emit: EventSink | None, **fields: Any) -> EventSink | None:
    """`emit` adding `fields` to each event (the round of a replanned plan's events)."""
    if emit is None:
        return None
    sink = emit

    def emitting(event: dict[str, Any]) -> None:
        sink({**event, **fields})

    return emitting
