"""compile_plan: turn a TaskPlan into a LangGraph StateGraph and compile it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from langgraph.types import Checkpointer

from fanfold._langgraph import adopt
from fanfold.errors import BatchNotSupportedError, InputInterface, UnknownKindError
from fanfold.graphs.compiled import CompiledPlanGraph
from fanfold.graphs.schema import (
    PlanOutput,
    PlanState,
    SubtaskNodeInput,
    plan_input_schema,
    plan_state_schema,
)
from fanfold.models.resolve import model_label, resolve_model
from fanfold.models.simulated import SimulatedChatModel
from fanfold.nodes.aggregate import AggregateNode
from fanfold.nodes.registry import NodeKind, NodeKindRegistry, node_kinds
from fanfold.nodes.subtask import SubtaskNode
from fanfold.plan.graph_checks import AGGREGATE_NODE, check_graph
from fanfold.plan.model_spec import ModelSpec, check_model_choice
from fanfold.plan.models import SubTask, TaskPlan
from fanfold.scheduling.batch_client import batch_support
from fanfold.scheduling.batches import BatchOptions
from fanfold.scheduling.budget import UnknownPriceError, check_budget
from fanfold.scheduling.cache import ResultCache
from fanfold.scheduling.calls import KindRunner
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.limits import Limiter, RateLimiter
from fanfold.scheduling.prices import PriceTable, price_table
from fanfold.scheduling.priorities import expected_durations
from fanfold.scheduling.retry import RetryPolicy
from fanfold.scheduling.runtime import Aggregator, PlanRuntime
from fanfold.scheduling.shared_limits import SharedRateLimiter


class _DefaultAggregator:
    def __repr__(self) -> str:
        return "<the plan's model with a combine-the-results prompt>"


DEFAULT_AGGREGATOR: Any = _DefaultAggregator()


def compile_plan(
    plan: TaskPlan | Mapping[str, Any] | str | Path,
    *,
    model: BaseChatModel | str | ModelSpec | Mapping[str, Any] | None = None,
    aggregator: BaseChatModel | str | ModelSpec | Aggregator | None = DEFAULT_AGGREGATOR,
    max_concurrency: int | None = None,
    requests_per_second: float | None = None,
    tokens_per_minute: float | None = None,
    rate_limiter: Limiter | None = None,
    shared_limits: str | Path | None = None,
    retry: RetryPolicy | None = None,
    checkpointer: Checkpointer = None,
    store: BaseStore | None = None,
    durations: DurationStore | None = None,
    kinds: NodeKindRegistry | None = None,
    name: str = "fanfold",
    prices: PriceTable | Mapping[str, Any] | str | Path | None = None,
    budget: float | None = None,
    cache: ResultCache | bool | str | Path | None = None,
    batch: BatchOptions | bool | None = None,
    input_interface: InputInterface = "python",
) -> CompiledPlanGraph:
    """Compile a plan into a LangGraph graph whose model calls start greedily.

    The graph has one node per subtask, START -> each subtask without dependencies,
    a join edge `[deps...] -> node` per dependent subtask, every sink -> `aggregate`
    -> END.

    Args:
        plan: a TaskPlan, a mapping that validates as one, or a path to a plan file.
        model: chat model for subtasks that name none: a chat model, a "provider:model"
            string, "simulated", a mapping `{name: ..., temperature: 0, ...}` (a
            ModelSpec) whose settings go to the model's constructor, or None for
            `openai:gpt-4o-mini`.
        aggregator: combines the results into `output`: a chat model or model string,
            a callable over `{id: SubtaskResult}` (may be async), None for no
            aggregation, or by default the plan's model with a combine prompt.
        max_concurrency: most subtask calls in flight at once (None: no limit).
        requests_per_second: the provider's request-rate limit, if known.
        tokens_per_minute: the provider's token-rate limit, if known.
        rate_limiter: a RateLimiter to use instead of the process-wide one that runs
            with the same model and limits share.
        shared_limits: a SQLite file or a postgresql:// URL: the limits (and the
            adaptive pace) are then shared by every process that uses the same
            endpoint and store (`SharedRateLimiter`), not only by this process.
        retry: attempts and backoff for transient errors (429, 5xx, timeouts).
        checkpointer: a LangGraph checkpointer; makes runs resumable by thread id.
        store: a LangGraph store where a checkpointed run journals each finished call,
            so that its resume requests none again (default: the server's store, or an
            InMemoryStore beside an InMemorySaver).
        durations: a DurationStore; earlier runs' durations set the start order under
            a limit (longest expected remaining path first), and this run's are recorded.
        kinds: the node-kind registry (default: the process-wide one).
        name: the graph's name in traces.
        prices: model label -> {"input": USD per 1M tokens, "output": USD per 1M tokens}
            (or a prices file's path, or a PriceTable) on top of the default table
            (`fanfold.DEFAULT_PRICES`). Results then carry `cost`, totals cost per model;
            a model without a price has cost None (unknown).
        budget: USD a run may spend: once the spent cost plus the estimates of the calls
            in flight would pass it, no further call is sent and the rest are skipped with
            the reason "budget". The aggregate's estimated cost is set aside from the start,
            so the aggregate always runs. Needs a price for every model the run calls.
        cache: a persistent cache of model calls: True for the default file
            (`$FANFOLD_CACHE`, else `$XDG_CACHE_HOME/fanfold/cache.db`), a path, or a
            ResultCache; None or False (the default) for none. A call with the same model
            and settings, messages, output schema and kind is then served from it (usage
            0, `cached=True`), and every successful call is stored as soon as it ends.
        batch: send maps' item calls through the provider's Batch API: True (or
            `BatchOptions(every_map=True)`) for every llm map of at least `min_items`
            items (default 100); maps with `batch: true` go as a batch whatever this says.
            Batched calls cost the batch price (`Price.batch`, default half).
        input_interface: where run inputs come from ("python", "cli" or "server"), so
            that a missing or malformed input's error names that interface's option.

    Returns:
        A CompiledPlanGraph (a CompiledStateGraph): invoke, stream, batch it as usual.

    Raises:
        PlanError: the plan, a kind or a model choice is invalid, a price entry is
            invalid, or a budget is set and a model has no price. Nothing has run.
    """
    plan = TaskPlan.coerce(plan)
    table = price_table(prices)
    limit = check_budget(budget)
    check_graph(plan.subtasks, plan.inputs)  # plans are mutable; check again what runs
    registry = kinds or node_kinds
    limits: dict[str, Any] = {
        "max_concurrency": max_concurrency,
        "requests_per_second": requests_per_second,
        "tokens_per_minute": tokens_per_minute,
    }
    RateLimiter(**limits)  # validates the values before anything is built

    resolved: dict[Any, BaseChatModel] = {}

    def model_for(spec: Any) -> BaseChatModel:
        spec = check_model_choice(spec)
        key: Any  # a chat model by identity: its str() lists every field, once per subtask
        if isinstance(spec, BaseChatModel):
            key = id(spec)
        else:
            key = spec if isinstance(spec, str | None) else str(spec)
        if key not in resolved:
            resolved[key] = resolve_model(spec)
        return resolved[key]

    kind_of: dict[str, KindRunner] = {}
    models: dict[str, BaseChatModel | None] = {}
    for sub in plan.subtasks:
        kind = kind_of[sub.id] = _kind(registry, sub)
        needs = kind.needs_model
        models[sub.id] = model_for(sub.model if sub.model is not None else model) if needs else None

    by_model: dict[int, Limiter] = {}

    def limiter_for(chat_model: BaseChatModel | None) -> Limiter:
        if rate_limiter is not None:
            return rate_limiter
        if id(chat_model) not in by_model:
            key, adaptive = endpoint_key(chat_model), _is_remote(chat_model)
            by_model[id(chat_model)] = (
                SharedRateLimiter.shared(
                    key, target=str(shared_limits), adaptive=adaptive, **limits
                )
                if shared_limits is not None
                else RateLimiter.shared(key, adaptive=adaptive, **limits)
            )
        return by_model[id(chat_model)]

    limiters = {sid: limiter_for(models[sid]) for sid in plan.ids}
    batching = batch if isinstance(batch, BatchOptions) else BatchOptions(every_map=bool(batch))
    batch_maps = _batch_maps(plan, models, batching)
    used = sorted({model_label(m) for m in models.values() if m is not None})
    model_key = "+".join(used) or "none"
    fingerprint = plan.fingerprint()
    learned = durations.load(fingerprint, model_key) if durations is not None else {}
    expected, source = expected_durations(plan.subtasks, learned)
    runtime = PlanRuntime(
        plan=plan,
        kinds=kind_of,
        models=models,
        limiters=limiters,
        retry=retry or RetryPolicy(),
        expected=expected,
        expected_source=source,
        durations=durations,
        durations_key=(fingerprint, model_key),
        prices=table,
        budget=limit,
        batch=batching,
        batch_maps=batch_maps,
        input_interface=input_interface,
    )
    if callable(aggregator) and not isinstance(aggregator, BaseChatModel | _DefaultAggregator):
        runtime.aggregate_function = aggregator
    elif aggregator is DEFAULT_AGGREGATOR:
        if plan.aggregation.enabled:
            runtime.aggregate_model = model_for(plan.aggregation.model or model)
    elif aggregator is not None:
        runtime.aggregate_model = model_for(aggregator)

    if limit is not None:
        _check_prices(runtime, table)
    runtime.cache = _as_cache(cache)

    output_types = {
        s.id: s.output_schema for s in plan.subtasks if isinstance(s.output_schema, type)
    }
    schema = plan_state_schema(output_types, runtime.output_model)
    # No context_schema: fanfold passes its own RunContext to every run, and a declared
    # schema would make LangGraph (and the server) try to describe it as JSON.
    builder: StateGraph[PlanState, Any, Any, Any] = StateGraph(
        schema,
        input_schema=plan_input_schema(_input_json_schemas(plan), list(plan.required_inputs())),
        output_schema=PlanOutput,
    )
    has_dependents: set[str] = set()
    for sub in plan.subtasks:
        node: Runnable[Any, Any] = SubtaskNode(runtime, sub.id)
        builder.add_node(sub.id, node, input_schema=SubtaskNodeInput)
    for sub in plan.subtasks:
        deps = list(runtime.dependencies[sub.id])
        has_dependents.update(deps)
        if not deps:
            builder.add_edge(START, sub.id)
        elif len(deps) == 1:
            builder.add_edge(deps[0], sub.id)
        else:
            builder.add_edge(deps, sub.id)
    sinks = [s.id for s in plan.subtasks if s.id not in has_dependents]
    builder.add_node(AGGREGATE_NODE, AggregateNode(runtime))
    builder.add_edge(sinks[0] if len(sinks) == 1 else sinks, AGGREGATE_NODE)
    builder.add_edge(AGGREGATE_NODE, END)

    compiled = builder.compile(checkpointer=checkpointer, store=store, name=name)
    return adopt(compiled, CompiledPlanGraph, fanfold_runtime=runtime)


def _as_cache(cache: ResultCache | bool | str | Path | None) -> ResultCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return ResultCache()
    if isinstance(cache, ResultCache):
        return cache
    return ResultCache(cache)


def _batch_maps(
    plan: TaskPlan, models: Mapping[str, BaseChatModel | None], options: BatchOptions
) -> dict[str, bool]:
    """The maps that may go as a batch -> whether the plan asks (`batch: true`).

    Raises:
        BatchNotSupportedError: such a map's model has no Batch API fanfold can use.
    """
    maps: dict[str, bool] = {}
    for sub in plan.subtasks:
        if sub.map is None or sub.kind != "llm" or not (sub.batch or options.every_map):
            continue
        reason = batch_support(models.get(sub.id))
        if reason is not None:
            raise BatchNotSupportedError(sub.id, reason)
        maps[sub.id] = sub.batch
    return maps


def _check_prices(runtime: PlanRuntime, table: PriceTable) -> None:
    """A budget needs every model's price: name those without one, and who uses them."""
    unpriced: dict[str, list[str]] = {}
    for sid in runtime.order:
        model = runtime.models.get(sid)
        if model is not None and model_label(model) not in table:
            unpriced.setdefault(model_label(model), []).append(sid)
    if runtime.aggregate_model is not None:
        label = model_label(runtime.aggregate_model)
        if label not in table:
            unpriced.setdefault(label, []).append("aggregate")
    if unpriced:
        raise UnknownPriceError(unpriced)


def _input_json_schemas(plan: TaskPlan) -> dict[str, dict[str, Any]]:
    """Each run input's JSON schema, as Studio's form and the server describe it."""
    lists = {s.map for s in plan.subtasks if s.map is not None}
    described: dict[str, dict[str, Any]] = {}
    for name in plan.input_names():
        spec = plan.inputs.get(name)
        entry: dict[str, Any] = {"type": "array"} if name in lists else {"type": "string"}
        if spec is not None:
            if spec.description:
                entry["description"] = spec.description
            if spec.default is not None:
                entry["default"] = spec.default
                if not isinstance(spec.default, str) and name not in lists:
                    entry.pop("type")
        described[name] = entry
    return described


def endpoint_key(model: BaseChatModel | None) -> tuple[str, str, str]:
    """What identifies a provider endpoint for sharing rate limits between runs."""
    if model is None:
        return ("local", "", "")
    base = getattr(model, "openai_api_base", None) or getattr(model, "base_url", None) or ""
    return (type(model).__name__, str(base), model_label(model))


def _is_remote(model: BaseChatModel | None) -> bool:
    """Whether calls may meet a provider's hidden rate limit (and so need adaptive pacing)."""
    return model is not None and not isinstance(model, SimulatedChatModel)


def _kind(registry: NodeKindRegistry, sub: SubTask) -> NodeKind:
    try:
        kind = registry.get(sub.kind)
    except KeyError:
        raise UnknownKindError(sub.id, sub.kind, registry.names()) from None
    if kind.validate is not None:
        kind.validate(sub)
    return kind
