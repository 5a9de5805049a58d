"""The terminal node: fold every subtask result into `output` and run totals.

The aggregate step is a step like a subtask: it sends lifecycle events (`"subtask":
"aggregate"`: started, retrying, succeeded, failed, skipped), its model call is retried
by the run's retry policy, counts against the budget (capped at its reservation), and
is looked up in and stored to the cache.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from pydantic import BaseModel

from fanfold._secrets import describe_error
from fanfold.models.caps import output_cap, with_output_cap
from fanfold.nodes.replies import ask_model
from fanfold.nodes.run_scope import RunScope, background_loop, current_scope
from fanfold.plan.graph_checks import AGGREGATE_NODE
from fanfold.plan.prompts import aggregate_messages
from fanfold.plan.schemas import OutputMismatchError, validate_data
from fanfold.scheduling.budget import Budget
from fanfold.scheduling.cache import call_key, revive
from fanfold.scheduling.calls import attempt_config, bill, billed_usage
from fanfold.scheduling.dispatcher import Dispatcher
from fanfold.scheduling.gateway import ReplyReport
from fanfold.scheduling.limits import minute_left
from fanfold.scheduling.retry import classify
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.scheduling.tokens import messages_tokens, reply_tokens
from fanfold.state.results import Status, SubtaskResult, TokenUsage, summarize

Emit = Callable[..., None]
"""(status, **fields): sends one lifecycle event of the aggregate step."""


class AggregateOutputError(OutputMismatchError):
    """The aggregate's output does not match `aggregation.output_schema`."""


@dataclass(frozen=True)
class AggregateOutcome:
    """What the aggregate step produced.

    Attributes:
        usage: tokens the provider billed, failed attempts included.
        cost: USD of those tokens (None: unknown).
        cached_usage: when the reply came from the cache (usage is then 0), the usage of
            the call that first made it; None for a reply made now.
        status: "succeeded", "failed", or "skipped" (the budget).
        seconds: time spent in calls.
    """

    output: Any
    usage: TokenUsage
    cost: float | None = 0.0
    cached_usage: TokenUsage | None = None
    status: Status = "succeeded"
    error: str | None = None
    seconds: float = 0.0

    @property
    def cached(self) -> bool:
        """Whether the reply came from the persistent cache."""
        return self.cached_usage is not None


def validate_output(schema: type[BaseModel] | dict[str, Any], value: Any) -> Any:
    """The aggregate's `value` as validated data of `schema`.

    Raises:
        AggregateOutputError: the value does not match.
    """
    try:
        return validate_data(schema, value, what="the aggregate's output")
    except OutputMismatchError as exc:
        raise AggregateOutputError(str(exc)) from exc


async def run_aggregate(
    runtime: PlanRuntime,
    results: Mapping[str, SubtaskResult],
    inputs: Mapping[str, Any],
    config: RunnableConfig,
    *,
    budget: Budget | None = None,
    emit: Emit | None = None,
) -> AggregateOutcome:
    """Combine `results` into the run's output with the configured aggregator; never raises."""
    say: Emit = emit or (lambda status, **fields: None)
    if runtime.aggregate_function is not None:
        started = time.time()
        say("started", started_at=started, attempt=1)
        try:
            value = runtime.aggregate_function(dict(results))
            if inspect.isawaitable(value):
                value = await value
            schema = runtime.plan.aggregation.output_schema
            output = validate_output(schema, value) if schema is not None else value
        except Exception as exc:
            error = describe_error(exc)
            say("failed", started_at=started, finished_at=time.time(), error=error, attempts=1)
            return AggregateOutcome(None, TokenUsage(), status="failed", error=error)
        seconds = time.time() - started
        say("succeeded", started_at=started, finished_at=time.time(), attempts=1, cost=0.0)
        return AggregateOutcome(output, TokenUsage(), seconds=seconds)
    if runtime.aggregate_model is None:
        return AggregateOutcome(None, TokenUsage())
    try:
        return await _model_aggregate(runtime, results, inputs, config, budget, say)
    except Exception as exc:  # building the messages failed, say: no call was made
        error = describe_error(exc)
        say("failed", error=error, attempts=0)
        return AggregateOutcome(None, TokenUsage(), status="failed", error=error)


async def _model_aggregate(
    runtime: PlanRuntime,
    results: Mapping[str, SubtaskResult],
    inputs: Mapping[str, Any],
    config: RunnableConfig,
    budget: Budget | None,
    say: Emit,
) -> AggregateOutcome:
    model = runtime.aggregate_model
    assert model is not None
    label = runtime.aggregate_label
    settings = runtime.plan.aggregation
    schema = settings.output_schema
    order = [sid for sid in runtime.order if sid in results]
    messages = aggregate_messages(
        task=runtime.task_text(inputs),
        done=[(sid, runtime.output_text(sid, results[sid])) for sid in order if results[sid].ok],
        missing=[
            (sid, results[sid].status, results[sid].error) for sid in order if not results[sid].ok
        ],
        instructions=settings.instructions,
        system=settings.system,
    )
    key: str | None = None
    if runtime.cache is not None:
        key = call_key(model=model, messages=messages, kind="aggregate", output_schema=schema)
        hit = runtime.cache.get(key)
        if hit is not None:
            output = revive(hit.output, schema)
            if schema is not None:
                output = validate_output(schema, output)
            now = time.time()
            say("succeeded", started_at=now, finished_at=now, attempts=0, cost=0.0, cached=True)
            return AggregateOutcome(output, TokenUsage(), cached_usage=hit.usage)
    cap = reply_tokens(model)
    input_tokens = messages_tokens(messages)
    if budget is not None and output_cap(model) is None:
        model = with_output_cap(model, cap) or model
    policy = runtime.retry
    attempt = 0
    billed = TokenUsage()
    spent: float | None = 0.0
    seconds = 0.0
    first_start: float | None = None

    def outcome(status: Status, output: Any = None, error: str | None = None) -> AggregateOutcome:
        fields = {"attempts": attempt, "cost": spent, "total_tokens": billed.total_tokens}
        say(status, started_at=first_start, finished_at=time.time(), error=error, **fields)
        return AggregateOutcome(output, billed, spent, None, status, error, seconds)

    while True:
        attempt += 1
        reserved: float | None = None
        if budget is not None and label is not None:
            expected = runtime.prices.estimate(label, input_tokens, cap) or 0.0
            refusal = budget.reserve_aggregate(expected)
            if refusal is None and budget.stopped and not any(r.ok for r in results.values()):
                budget.settle(expected, 0.0)
                refusal = "budget: no subtask ran within the budget, so nothing is aggregated"
            if refusal is not None:
                attempt -= 1
                return outcome("skipped" if attempt == 0 else "failed", error=refusal)
            reserved = expected
        started = time.time()
        first_start = first_start or started
        say("started", started_at=started, attempt=attempt)
        try:
            output, usage, said = await _ask(
                model, messages, schema, attempt_config(config, attempt), cap
            )
        except Exception as exc:
            seconds += time.time() - started
            usage = billed_usage(exc) or TokenUsage()
            billed, spent = _count(runtime, label, budget, reserved, usage, billed, spent)
            failure = classify(exc)
            error = describe_error(exc)
            delay = policy.wait(attempt, failure.retry_after, minute_left=minute_left())
            if failure.transient and attempt < policy.max_attempts and delay is not None:
                say("retrying", attempt=attempt, error=error, delay=delay)
                await asyncio.sleep(delay)
                continue
            return outcome("failed", error=error)
        seconds += time.time() - started
        billed, spent = _count(runtime, label, budget, reserved, usage, billed, spent, said.cost)
        if key is not None and runtime.cache is not None:
            runtime.cache.put(
                key,
                output,
                usage=usage,
                model=label,
                kind="aggregate",
                subtask=AGGREGATE_NODE,
                seconds=time.time() - started,
            )
        return outcome("succeeded", output)


def _count(
    runtime: PlanRuntime,
    label: str | None,
    budget: Budget | None,
    reserved: float | None,
    usage: TokenUsage,
    billed: TokenUsage,
    spent: float | None,
    said: float | None = None,
) -> tuple[TokenUsage, float | None]:
    """Add one attempt's billed usage and swap its reservation for what it cost (what the
    gateway `said`, else the price table's figure)."""
    cost = said
    if cost is None and not (usage.input_tokens or usage.output_tokens or usage.total_tokens):
        cost = 0.0  # nothing billed (a 429, a timeout)
    if cost is None:
        cost = 0.0 if label is None else runtime.prices.cost(label, usage)
    if budget is not None and reserved is not None:
        budget.settle(reserved, cost)
    return billed + usage, None if spent is None or cost is None else spent + cost


async def _ask(
    model: BaseChatModel,
    messages: list[BaseMessage],
    schema: type[BaseModel] | dict[str, Any] | None,
    config: RunnableConfig,
    cap: int,
) -> tuple[Any, TokenUsage, ReplyReport]:
    """One call of the aggregate model: its checked output, usage and report."""
    output, usage, said = await ask_model(
        model,
        messages,
        config,
        schema,
        what="the aggregate's reply",
        cap=cap,
        mismatch=lambda cause: AggregateOutputError(
            f"the aggregate's reply does not match aggregation.output_schema: {cause}"
        ),
    )
    if schema is None:
        return output, usage, said
    try:
        return validate_output(schema, output), usage, said
    except AggregateOutputError as exc:
        raise bill(exc, usage) from None


class AggregateInput(Protocol):
    """What the aggregate reads of the graph state (`fanfold.graphs.schema.PlanState`)."""

    @property
    def results(self) -> dict[str, SubtaskResult]: ...

    @property
    def inputs(self) -> Mapping[str, Any]: ...


class AggregateNode(Runnable[Any, dict[str, Any]]):
    """Writes `output`, `totals` and `aggregate_error`; a failing aggregator is recorded,
    never raised, so the subtask results are never lost."""

    name = "aggregate"

    def __init__(self, runtime: PlanRuntime) -> None:
        self.runtime = runtime

    async def ainvoke(
        self, input: AggregateInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        runtime = self.runtime
        config = ensure_config(config)
        results = input.results
        scope = current_scope()
        outcome: AggregateOutcome
        dispatcher: Dispatcher | None = None
        try:
            dispatcher = _dispatcher(scope, runtime, input, config)
            inputs = (
                dispatcher.inputs if dispatcher is not None else runtime.run_inputs(input.inputs)
            )
        except Exception as exc:
            outcome = AggregateOutcome(
                None, TokenUsage(), status="failed", error=describe_error(exc)
            )
        else:
            emit: Emit | None = None
            if dispatcher is not None and runtime.aggregates:
                sink = dispatcher

                def emit(status: str, **fields: Any) -> None:
                    sink.emit(AGGREGATE_NODE, status, **fields)

            outcome = await run_aggregate(
                runtime,
                dict(results),
                inputs,
                config,
                budget=dispatcher.budget if dispatcher is not None else None,
                emit=emit,
            )
        if runtime.durations is not None:
            # A cached call took no time: its zero would spoil the learned durations.
            timed = [r for r in results.values() if not _any_cached(r)]
            runtime.durations.record_results(*runtime.durations_key, timed)
        starts = [r.started_at for r in results.values() if r.started_at is not None]
        began = dispatcher.started_at if dispatcher is not None else min(starts, default=None)
        label = runtime.aggregate_label
        totals = summarize(
            results,
            planned=len(runtime.order),
            aggregate_usage=outcome.usage,
            wall_time=(time.time() - began) if began is not None else 0.0,
            aggregate_time=outcome.seconds,
            aggregate_model=label,
            aggregate_cost=0.0 if label is None else outcome.cost,
            aggregate_cached=outcome.cached_usage,
        )
        return {
            "output": runtime.output_state(outcome.output),
            "totals": totals.model_dump(),
            "aggregate_error": outcome.error,
        }

    def invoke(
        self, input: AggregateInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # The aggregator's async clients live on the dispatch loop, like the subtasks'.
        context = contextvars.copy_context()
        future = asyncio.run_coroutine_threadsafe(
            _in_context(context, self.ainvoke(input, config)), background_loop()
        )
        return future.result()


def _dispatcher(
    scope: RunScope, runtime: PlanRuntime, state: AggregateInput, config: RunnableConfig
) -> Dispatcher | None:
    """The run's dispatcher (its budget and events); created when no subtask ran in this
    process, as when a resumed run had only the aggregate left."""
    dispatcher = scope.dispatcher_or_none
    if dispatcher is None and scope.greedy:
        values = {"inputs": state.inputs, "results": state.results}
        dispatcher = scope.dispatcher(runtime, values, config, sync=False)
    return dispatcher


def _any_cached(result: SubtaskResult) -> bool:
    """Whether a result, or any item of a map, was served from the cache."""
    return result.cached or any(item.cached for item in result.items or [])


async def _in_context(context: contextvars.Context, coro: Any) -> Any:
    """Run `coro` as a task inside `context` (callbacks and config contextvars)."""
    loop = asyncio.get_running_loop()
    return await loop.create_task(coro, context=context)
