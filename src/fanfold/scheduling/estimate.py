"""Estimates before a run: calls, tokens, cost and wall time, without calling any model."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from fanfold.errors import UnknownKindError
from fanfold.models.resolve import DEFAULT_MODEL, SIMULATED, check_model_settings, model_label
from fanfold.plan.graph import critical_path, remaining_paths
from fanfold.plan.model_spec import ModelSpec, check_model_choice
from fanfold.plan.models import SubTask, TaskPlan, list_input
from fanfold.plan.prompts import DEFAULT_SYSTEM, as_text, subtask_prompt
from fanfold.plan.template import render
from fanfold.scheduling.calls import SubtaskCall
from fanfold.scheduling.estimate_models import CallEstimate, PlanEstimate, SecondsSource
from fanfold.scheduling.play_out import play_out as _play_out
from fanfold.scheduling.prices import PriceTable, price_table
from fanfold.scheduling.priorities import DEFAULT_CALL_SECONDS, duration_sources
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.scheduling.tokens import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    aggregate_input_tokens,
    output_tokens,
    reply_tokens,
    text_tokens,
)

__all__ = ["CallEstimate", "PlanEstimate", "estimate_plan"]


def model_spec_label(spec: Any) -> str:
    """The label a model choice will have once resolved, without resolving it (no key).

    A ModelSpec's settings are checked against its class where that needs no key.
    """
    if isinstance(spec, BaseChatModel):
        return model_label(spec)
    spec = check_model_choice(spec)
    if isinstance(spec, ModelSpec):
        check_model_settings(spec)
        spec = spec.name
    text = (spec or DEFAULT_MODEL).strip()
    if text == SIMULATED:
        return SIMULATED
    return text.split(":", 1)[1].strip() if ":" in text else text


def _needs_model(kinds: Any, sub: SubTask) -> bool:
    if kinds is None:
        return True  # no registry known: count a call, the cautious guess for a cost
    if isinstance(kinds, Mapping):
        value = kinds.get(sub.kind, True)
        return bool(getattr(value, "needs_model", value))
    try:
        return bool(kinds.get(sub.kind).needs_model)
    except KeyError:
        names = kinds.names() if hasattr(kinds, "names") else []
        raise UnknownKindError(sub.id, sub.kind, names) from None


def _local_function(kinds: Any, sub: SubTask) -> Any:
    """The function of `sub`'s kind when the kind is local (sync, cheap, no network)."""
    if kinds is None:
        return None
    try:
        kind = kinds.get(sub.kind)
    except KeyError:
        return None
    function = getattr(kind, "function", None)
    if not getattr(kind, "local", False) or function is None:
        return None
    return None if inspect.iscoroutinefunction(function) else function


def _local_outputs(
    task_plan: TaskPlan,
    order: list[str],
    kinds: Any,
    *,
    task: str,
    values: Mapping[str, Any],
    maps: frozenset[str],
) -> dict[str, Any]:
    """Outputs of the local subtasks (splitters) whose prompt's values are all known,
    computed as the run computes them: subtask id -> output."""
    known: dict[str, Any] = {}
    for sid in order:
        sub = task_plan.subtask(sid)
        function = _local_function(kinds, sub)
        if function is None or sub.map is not None or not set(sub.depends_on) <= set(known):
            continue
        dependencies = {dep: known[dep] for dep in sub.depends_on}
        if any(
            name not in values and name not in dependencies and name != "task"
            for name in sub.placeholders
        ):
            continue
        try:
            prompt = subtask_prompt(
                sub, task=task, inputs=values, dependencies=dependencies, maps=maps
            )
            call = SubtaskCall(
                subtask=sub,
                task=task,
                prompt=prompt,
                messages=[],
                dependencies={},
                inputs=values,
                model=None,
                config={},
            )
            output = function(call)
        except Exception:  # noqa: BLE001 - the run reports it; the estimate stays unknown
            continue
        known[sid] = getattr(output, "output", output)  # a KindOutput or a bare value
    return known


class _Lenient(dict[str, Any]):
    """Prompt values where a missing one renders as its own placeholder."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _prompt_chars(
    sub: SubTask,
    *,
    task: str,
    inputs: Mapping[str, Any],
    stand_ins: Mapping[str, Any],
    maps: frozenset[str],
    item: Any,
    index: int | None,
) -> int:
    """Characters of a subtask's messages, dependency outputs replaced by stand-ins."""
    system = sub.system or f"{DEFAULT_SYSTEM}\nOverall task: {task}"
    local = {"task", "item", "index", *inputs, *stand_ins}
    # An input the estimate was not given renders as its own placeholder.
    given = {**inputs, **{name: f"{{{name}}}" for name in sub.placeholders if name not in local}}
    try:
        prompt = subtask_prompt(
            sub,
            task=task,
            inputs=given,
            dependencies=stand_ins,
            maps=maps,
            item=item,
            index=index,
        )
    except Exception:  # noqa: BLE001 - a `{dep.key}` into a stand-in: count the parts
        prompt = sub.prompt + "".join(as_text(v) for v in stand_ins.values())
        if index is not None:
            prompt += as_text(item)
    return len(system) + len(prompt)


def estimate_plan(
    plan: Any,
    inputs: Mapping[str, Any] | None = None,
    *,
    model: BaseChatModel | str | None = None,
    aggregator: Any = True,
    prices: PriceTable | Mapping[str, Any] | str | Path | None = None,
    durations: Any = None,
    max_concurrency: int | None = None,
    kinds: Any = None,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    default_seconds: float = DEFAULT_CALL_SECONDS,
) -> PlanEstimate:
    """Estimate a run of `plan` before it runs: calls, tokens, cost and wall time.

    No model is called and none is resolved, so no API key is needed. Prompts are
    rendered with the given inputs and, for each dependency, a stand-in as long as its
    expected reply; tokens are characters over CHARS_PER_TOKEN; a reply is the subtask's
    `expected_output_tokens`, else `default_output_tokens`. A map over a run input counts
    one call per item; a map over a subtask's list is "unknown" (its per-item figures are
    given). A call takes the seconds the scheduler expects
    (`priorities.duration_sources`: the subtask's hint, else what earlier runs recorded
    in `durations` (a DurationStore), else their median, else `default_seconds`); the
    wall time plays the calls out in dependency order, at most `max_concurrency` at once,
    longest remaining path first (a map whose list is unknown counts as one item).

    Args:
        plan: a TaskPlan, a mapping, a plan file's path, or a compiled plan's
            `PlanRuntime` (its resolved models are then used).
        inputs: the run's inputs (missing ones are noted, not an error).
        model: the model for subtasks that name none (as in `compile_plan`).
        aggregator: True (default) counts the aggregate's call when the plan aggregates
            with a model; None or False counts none; a model or model string counts it
            with that model; a callable counts none.
        prices: overrides of the default price table (a mapping or a prices file).
        durations: a DurationStore with earlier runs' durations, or None.
        max_concurrency: most calls in flight at once (None: no limit).
        kinds: the node-kind registry, which says which kinds call a model
            (`fanfold.estimate_plan` passes `fanfold.node_kinds` by default; None counts
            a call for every subtask, the cautious guess).

    Raises:
        PlanError: the plan is invalid, a kind unknown, or a price entry invalid.
    """
    runtime = plan if isinstance(plan, PlanRuntime) else None
    task_plan = runtime.plan if runtime is not None else TaskPlan.coerce(plan)
    table = price_table(prices) if runtime is None or prices is not None else runtime.prices
    registry = kinds
    subtasks = {s.id: s for s in task_plan.subtasks}
    order = task_plan.topological_order()
    deps = task_plan.dependencies()

    labels: dict[str, str | None] = {}
    for sub in task_plan.subtasks:
        if runtime is not None:
            resolved = runtime.models.get(sub.id)
            labels[sub.id] = model_label(resolved) if resolved is not None else None
        elif _needs_model(registry, sub):
            labels[sub.id] = model_spec_label(sub.model if sub.model is not None else model)
        else:
            labels[sub.id] = None
    aggregate_label: str | None = None
    aggregate_choice: Any = None  # the aggregate's model (or its spec): its max_tokens
    if runtime is not None:
        if runtime.aggregate_model is not None:
            aggregate_choice = runtime.aggregate_model
            aggregate_label = model_label(runtime.aggregate_model)
    elif aggregator is True:
        if task_plan.aggregation.enabled:
            aggregate_choice = task_plan.aggregation.model or model
            aggregate_label = model_spec_label(aggregate_choice)
    elif isinstance(aggregator, BaseChatModel | str | ModelSpec | Mapping):
        aggregate_choice = aggregator
        aggregate_label = model_spec_label(aggregator)

    values: dict[str, Any] = {
        name: spec.default for name, spec in task_plan.inputs.items() if spec.default is not None
    }
    values.update(inputs or {})
    missing = sorted(name for name in task_plan.required_inputs() if name not in values)
    task = render(task_plan.task, _Lenient({**values, "task": task_plan.task}), to_text=as_text)
    maps = frozenset(s.id for s in task_plan.subtasks if s.map is not None)

    used = sorted({label for label in labels.values() if label is not None})
    learned: dict[str, float] = {}
    if durations is not None:
        learned = durations.load(task_plan.fingerprint(), "+".join(used) or "none")

    # Splitters over given inputs are split now, as the run would split them.
    local = _local_outputs(task_plan, order, registry, task=task, values=values, maps=maps)

    # Items per map (None: known only during the run), in dependency order.
    items: dict[str, int | None] = {}
    for sid in order:
        sub = subtasks[sid]
        if sub.map is None:
            continue
        if sub.map in subtasks:
            pieces = list_input(local.get(sub.map)) if sub.map in local else None
            items[sid] = items.get(sub.map) if sub.map in maps else None
            if pieces is not None:
                items[sid] = len(pieces)
        else:
            given = list_input(values.get(sub.map))
            items[sid] = len(given) if given is not None else None

    # The scheduler's own rule: hint, learned, the learned median, the default.
    expected = duration_sources(task_plan.subtasks, learned, default=default_seconds)

    def reply(sid: str) -> int:
        chosen = runtime.models.get(sid) if runtime is not None else model
        return output_tokens(subtasks[sid], chosen, default=default_output_tokens)

    estimates: dict[str, CallEstimate] = {}
    sources: set[str] = set()
    for sid in order:
        sub = subtasks[sid]
        label = labels[sid]
        out_tokens = reply(sid)
        stand_ins: dict[str, Any] = {}
        for dep in deps[sid]:
            dep_tokens = reply(dep)
            text = "x" * (dep_tokens * CHARS_PER_TOKEN)
            if dep in local:
                stand_ins[dep] = local[dep]  # the output itself
            elif dep in maps:
                stand_ins[dep] = [text] * (items.get(dep) or 1)
            else:
                stand_ins[dep] = text
        listed: list[Any] | None = None
        sample: Any = None
        if sub.map is not None and sub.map in local:
            listed = list_input(local[sub.map])
        elif sub.map is not None and sub.map in subtasks:
            # An item of another subtask's list: a stand-in as long as its expected reply.
            tokens = reply(sub.map)
            sample = "x" * (tokens * CHARS_PER_TOKEN)
        elif sub.map is not None:
            listed = list_input(values.get(sub.map))
        count = items.get(sid) if sub.map is not None else 1
        if label is None:
            chars_total, chars_one = 0, 0
        elif sub.map is None:
            chars_total = chars_one = _prompt_chars(
                sub,
                task=task,
                inputs=values,
                stand_ins=stand_ins,
                maps=maps,
                item=None,
                index=None,
            )
        elif listed is not None:
            chars_total = sum(
                _prompt_chars(
                    sub,
                    task=task,
                    inputs=values,
                    stand_ins=stand_ins,
                    maps=maps,
                    item=value,
                    index=i,
                )
                for i, value in enumerate(listed)
            )
            chars_one = chars_total // max(1, len(listed))
        else:
            chars_one = _prompt_chars(
                sub,
                task=task,
                inputs=values,
                stand_ins=stand_ins,
                maps=maps,
                item=sample,
                index=0,
            )
            chars_total = chars_one * (count or 0)
        in_one = -(-chars_one // CHARS_PER_TOKEN)
        source: SecondsSource
        if label is None:
            seconds, source = 0.0, "none"
        else:
            seconds, source = expected[sid]
        if label is not None:
            sources.add(source)
        batched = sub.batch and sub.map is not None
        per_call_cost = (
            table.estimate(label, in_one, out_tokens, batch=batched) if label is not None else 0.0
        )
        in_all: int | None
        out_all: int | None
        live_cost: float | None = None
        batch_cost: float | None = None
        if label is None:
            in_all, out_all, cost = 0, 0, 0.0
        elif count is None:
            in_all, out_all, cost = None, None, None
        else:
            in_all = -(-chars_total // CHARS_PER_TOKEN)
            out_all = out_tokens * count
            if sub.map is not None:
                live_cost = table.estimate(label, in_all, out_all)
                batch_cost = table.estimate(label, in_all, out_all, batch=True)
            cost = batch_cost if batched else table.estimate(label, in_all, out_all)
        estimates[sid] = CallEstimate(
            id=sid,
            kind=sub.kind,
            model=label,
            calls=(0 if label is None else count),
            input_tokens_per_call=in_one if label is not None else 0,
            output_tokens_per_call=out_tokens if label is not None else 0,
            input_tokens=in_all,
            output_tokens=out_all,
            cost_per_call=per_call_cost,
            cost=cost,
            batch=batched,
            live_cost=live_cost,
            batch_cost=batch_cost,
            seconds_per_call=seconds,
            seconds_source=source,
            items=items.get(sid),
        )

    aggregate: CallEstimate | None = None
    if aggregate_label is not None:
        outputs = {
            sid: (
                (items.get(sid) or 1) if sid in maps else 0,
                text_tokens(as_text(local[sid])) if sid in local else reply(sid),
            )
            for sid in order
        }
        settings = task_plan.aggregation
        agg_in = aggregate_input_tokens(
            task, outputs, instructions=settings.instructions, system=settings.system
        )
        agg_out = reply_tokens(aggregate_choice, default=default_output_tokens)
        agg_cost = table.estimate(aggregate_label, agg_in, agg_out)
        aggregate = CallEstimate(
            id="aggregate",
            kind="aggregate",
            model=aggregate_label,
            calls=1,
            input_tokens_per_call=agg_in,
            output_tokens_per_call=agg_out,
            input_tokens=agg_in,
            output_tokens=agg_out,
            cost_per_call=agg_cost,
            cost=agg_cost,
            seconds_per_call=default_seconds,
            seconds_source="default",
        )
        sources.add("default")

    every = [*estimates.values(), *([aggregate] if aggregate is not None else [])]
    by_model: dict[str, float | None] = {}
    unknown_price: set[str] = set()
    for call in every:
        if call.model is None or call.calls == 0:
            continue
        if table.price(call.model) is None:
            unknown_price.add(call.model)
            by_model[call.model] = None
        elif call.cost is not None and by_model.get(call.model, 0.0) is not None:
            by_model[call.model] = (by_model.get(call.model) or 0.0) + call.cost
        elif call.model not in by_model:
            by_model[call.model] = 0.0
    known = sum(c for c in by_model.values() if c is not None)
    all_batched = None
    if not unknown_price:
        all_batched = sum(
            (c.batch_cost if c.batch_cost is not None else c.cost) or 0.0 for c in every
        )

    jobs = {
        sid: ((1 if e.calls is None else e.calls) if e.model is not None else 0, e.seconds_per_call)
        for sid, e in estimates.items()
    }
    weights = {sid: (seconds if count else 0.0) for sid, (count, seconds) in jobs.items()}
    remaining = remaining_paths(order, deps, weights)
    wall = _play_out(order, deps, jobs, remaining, max_concurrency)
    path = critical_path(order, deps, remaining, weights)
    path_seconds = sum(weights[s] for s in path)
    if aggregate is not None:
        wall += aggregate.seconds_per_call
        path_seconds += aggregate.seconds_per_call
        path = [*path, "aggregate"]

    return PlanEstimate(
        task=task,
        subtasks=[estimates[s.id] for s in task_plan.subtasks],
        aggregate=aggregate,
        calls=sum(c.calls or 0 for c in every if c.model is not None),
        unknown_maps=[
            sid for sid in order if labels[sid] is not None and estimates[sid].calls is None
        ],
        input_tokens=sum(c.input_tokens or 0 for c in every),
        output_tokens=sum(c.output_tokens or 0 for c in every),
        cost=None if unknown_price else known,
        known_cost=known,
        batch_cost=all_batched,
        cost_by_model=by_model,
        unknown_price_models=sorted(unknown_price),
        wall_time=wall,
        critical_path=path,
        critical_path_seconds=path_seconds,
        max_concurrency=max_concurrency,
        durations=(sources.pop() if len(sources) == 1 else "mixed") if sources else "none",
        missing_inputs=missing,
        default_output_tokens=default_output_tokens,
        default_seconds=default_seconds,
    )
