"""Build a RunRecord from a run's final state and its lifecycle events.

The run's clock (sessions, gaps) is `record.clock`; each call's segments are read by
`record.calls`; this module adds up subtasks, the aggregate and the totals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from fanfold.plan.graph import critical_path, remaining_paths
from fanfold.plan.models import SubTask, TaskPlan
from fanfold.plan.prompts import as_text
from fanfold.plan.template import render
from fanfold.record.calls import CallReader
from fanfold.record.clock import RunClock
from fanfold.record.model import (
    AggregateRecord,
    BatchRecord,
    RecordStatus,
    RecordTotals,
    RunRecord,
    SubtaskRecord,
)
from fanfold.scheduling.events import AGGREGATE, LifecycleEvent, parse_events
from fanfold.scheduling.prices import PriceTable
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import RunTotals, SubtaskResult, TokenUsage, summarize

if TYPE_CHECKING:
    from fanfold.record.growing import RecordBuilder

__all__ = ["assemble", "build_record"]

_DIGITS = 6


def build_record(
    state: Mapping[str, Any] | BaseModel,
    *,
    events: Sequence[Any] = (),
    runtime: PlanRuntime | None = None,
    max_concurrency: int | None = None,
    prices: Any = None,
    inputs: Mapping[str, Any] | None = None,
) -> RunRecord:
    """The record of a run, from its final (or last saved) state and its events.

    It is a `RecordBuilder` (the record as it grows, which the live view reads) given
    every event at once: one code path for both.

    Args:
        state: the run's state values (`results`, `totals`, `inputs`, `output`, ...).
        events: the run's lifecycle events (dicts, `("custom", dict)` pairs or models).
        runtime: the compiled plan, for dependencies, models and the task's text;
            without it the plan in `state["run"]["plan"]` (or `state["plan"]`) is used.
        max_concurrency: the run's concurrency limit, for the lower bound.
        prices: extra prices, only for results that carry no cost of their own.
        inputs: the run's inputs, when the state does not hold them (`invoke`'s result).
    """
    from fanfold.record.growing import RecordBuilder

    log = RecordBuilder(runtime, prices=prices)
    for event in parse_events(events):
        log.add_event(event)
    return log.record(state, runtime=runtime, max_concurrency=max_concurrency, inputs=inputs)


def assemble(
    state: Mapping[str, Any],
    log: RecordBuilder,
    *,
    runtime: PlanRuntime | None,
    max_concurrency: int | None,
    prices: Any,
    running: bool,
) -> RunRecord:
    """The record of `state` and the events `log` holds (see `RecordBuilder.record`)."""
    return _Builder(state, log, runtime, max_concurrency, prices, running).record()


def _r(value: float) -> float:
    return round(value, _DIGITS)


class _Builder:
    def __init__(
        self,
        state: Mapping[str, Any],
        log: RecordBuilder,
        runtime: PlanRuntime | None,
        max_concurrency: int | None,
        prices: Any,
        running: bool,
    ) -> None:
        self.state = state
        self.runtime = runtime
        self.max_concurrency = max_concurrency
        table = runtime.prices if runtime is not None else PriceTable()
        self.prices = table.merged(prices) if prices else table
        self.results = {
            str(sid): v if isinstance(v, SubtaskResult) else SubtaskResult.model_validate(v)
            for sid, v in (state.get("results") or {}).items()
        }
        self.plan = runtime.plan if runtime is not None else _plan_from_state(state)
        plan = self.plan
        self.order = list(plan.topological_order()) if plan is not None else []
        self.deps = {s: tuple(d) for s, d in plan.dependencies().items()} if plan else {}
        self.subtasks: dict[str, SubTask] = {s.id: s for s in plan.subtasks} if plan else {}
        named = list(self.results)
        if running:  # a run going on: the subtasks its events name, before its plan is known
            named += [sid for sid in log.subtasks if sid not in self.results]
        for sid in named:
            if sid not in self.deps and not (sid == AGGREGATE and running):
                self.order.append(sid)
                self.deps[sid] = ()
        self.maps = {
            sid
            for sid in self.order
            if (sid in self.subtasks and self.subtasks[sid].map is not None)
            or (sid in self.results and self.results[sid].items is not None)
        }
        parsed = log.sorted_events()
        step = AGGREGATE not in self.deps  # the aggregate is a step, not a subtask
        self.aggregate_events = [e for e in parsed if step and e.subtask == AGGREGATE]
        self.events = [e for e in parsed if not (step and e.subtask == AGGREGATE)]
        self.by_call: dict[tuple[str, int | None], list[LifecycleEvent]] = log.by_call
        if not log.in_order:
            self.by_call = {}
            for e in parsed:
                self.by_call.setdefault((e.subtask, e.item), []).append(e)
        # A call over whose subtask has no result yet: its finishing event's account of it
        # (a map's own: only its status; its items count one by one).
        self.call_results = {
            key: res
            for key, res in log.finished_calls().items()
            if key[0] not in self.results and not (step and key[0] == AGGREGATE)
        }
        self.totals_in = _totals(state.get("totals"))
        self.clock = RunClock(self.results, self.events, self.aggregate_events, self.totals_in)
        self.t0, self.end = self.clock.t0, self.clock.end
        self.sessions, self.gaps = self.clock.sessions, self.clock.gaps
        self.calls = CallReader(
            results=self.results,
            subtasks=self.subtasks,
            deps=self.deps,
            maps=self.maps,
            by_call=self.by_call,
            runtime=runtime,
            prices=self.prices,
            clock=self.clock,
            call_results=self.call_results,
            running=running,
        )
        self.running = running

    # -- subtasks ---------------------------------------------------------------------------

    def _batch(self, sid: str) -> BatchRecord | None:
        """The provider batch of map `sid`, from its `batch` events (None: not batched)."""
        reports = [
            (e.time, e.batch)
            for e in self.by_call.get((sid, None), [])
            if e.status == "batch" and isinstance(e.batch, dict)
        ]
        if not reports:
            return None
        last = reports[-1][1]
        batch = BatchRecord(
            id=last.get("id"),
            status=str(last.get("status") or "unknown"),
            total=int(last.get("total") or 0),
            completed=int(last.get("completed") or 0),
            failed=int(last.get("failed") or 0),
            start=reports[0][0],
        )
        for when, state in reports:
            status = str(state.get("status"))
            if not batch.states or batch.states[-1][0] != status:
                batch.states.append((status, when))
            if status in ("completed", "expired", "cancelled", "failed") and batch.end is None:
                batch.end = when
        return batch

    def _subtask(self, sid: str) -> SubtaskRecord:
        res = self.results.get(sid)
        told = self.call_results.get((sid, None))  # its finishing event, before its result
        if res is None and sid not in self.maps:
            res = told
        sub = self.subtasks.get(sid)
        ready = self.calls.ready(sid)
        record = SubtaskRecord(
            id=sid,
            kind=(res.kind if res is not None and res.kind else None)
            or (sub.kind if sub else "llm"),
            model=self.calls.model(sid, res),
            depends_on=list(self.deps.get(sid, ())),
            map=sub.map if sub is not None else None,
            status=res.status if res is not None else "not run",
            error=res.error if res is not None else None,
        )
        if sid not in self.maps:
            call = self.calls.call(sid, sid, None, res, ready)
            record.calls = [call]
            record.status = call.status
        else:
            record.calls = self.calls.items(sid, res, ready)
            going: RecordStatus = "running" if self.running else "unfinished"
            if res is None and told is not None:
                record.status, record.error = told.status, told.error
            elif res is None and any((sid, c.item) in self.by_call for c in record.calls):
                record.status = going  # items of it ran in this run (not only earlier ones)
            elif res is None and self.by_call.get((sid, None)):
                record.status = going
        record.batch = self._batch(sid)
        calls = record.calls
        record.usage = sum((c.usage for c in calls), TokenUsage())
        costs = [c.cost for c in calls if c.status != "not run"]
        record.cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
        if res is not None and res.cost is not None:
            record.cost = res.cost
        sources = {c.cost_source for c in calls if c.cost_source}
        record.cost_source = sources.pop() if len(sources) == 1 else ("mixed" if sources else None)
        record.cached = sum(c.cached for c in calls)
        record.attempts = sum(c.attempts for c in calls)
        record.retries = sum(c.retries for c in calls)
        record.queued = sum(c.queued for c in calls)
        record.backoff = sum(c.backoff for c in calls)
        record.call_time = sum(c.call_time for c in calls)
        starts = [c.start for c in calls if c.start is not None]
        ends = [c.end for c in calls if c.end is not None]
        record.start = (
            res.started_at if res is not None and res.started_at else min(starts, default=None)
        )
        record.end = (
            res.finished_at if res is not None and res.finished_at else max(ends, default=None)
        )
        return record

    # -- the whole run ----------------------------------------------------------------------

    def record(self) -> RunRecord:
        subtasks = [self._subtask(sid) for sid in self.order]
        by_id = {s.id: s for s in subtasks}
        weights = {
            s.id: max(((c.call_time + c.backoff) for c in s.calls), default=0.0) for s in subtasks
        }
        path: list[str] = []
        if self.order:
            remaining = remaining_paths(self.order, self.deps, weights)
            path = critical_path(self.order, self.deps, remaining)
            if not path or remaining[path[0]] <= 0:
                path = []
        for sid in path:
            by_id[sid].critical = True
        length = sum(weights[s] for s in path)
        aggregate = self._aggregate(subtasks)
        if aggregate is not None and aggregate.call_time > 0:
            path, length = [*path, AGGREGATE], length + aggregate.call_time  # it runs last
        totals = self._totals(subtasks, aggregate, length)
        record = RunRecord(
            title=self._title(),
            started_at=self.t0 if self.t0 else None,
            inputs=_plain(self.state.get("inputs") or {}),
            sessions=self.sessions,
            critical_path=path,
            subtasks=subtasks,
            aggregate=aggregate,
            totals=totals,
            results={
                sid: _result_data(self.results[sid]) for sid in self.order if sid in self.results
            },
            output=_plain(self.state.get("output")),
            aggregate_error=self.state.get("aggregate_error"),
        )
        return _relative(record, self.t0)

    def _title(self) -> str:
        if self.plan is None:
            return ""
        inputs = dict(self.state.get("inputs") or {})
        if self.runtime is not None:
            try:
                return self.runtime.task_text(self.runtime.run_inputs(inputs))
            except Exception:  # noqa: BLE001 - a missing input: fill in what there is
                pass
        values = {n: s.default for n, s in self.plan.inputs.items() if s.default is not None}
        values.update(inputs)
        return render(self.plan.task, _Lenient(values), to_text=as_text)

    def _aggregates(self) -> bool:
        if self.runtime is not None:
            return self.runtime.aggregates
        return self.plan is not None and self.plan.aggregation.enabled

    def _aggregate(self, subtasks: list[SubtaskRecord]) -> AggregateRecord | None:
        if not self._aggregates():
            return None
        t = self.totals_in
        label = self.runtime.aggregate_label if self.runtime is not None else None
        record = AggregateRecord(status="not run", model=label)
        if t is not None:
            record.usage = t.aggregate_usage
            record.cost = t.aggregate_cost
        error = self.state.get("aggregate_error")
        evs = self.aggregate_events
        if evs:
            starts = [e.begin for e in evs if e.status == "started"]
            record.start = min(starts, default=None)
            ends = [e for e in evs if e.finished]
            final = ends[-1].status if ends else "running"
            record.status = "running" if final in ("started", "retrying") else final  # type: ignore[assignment]
            record.end = ends[-1].time if ends else None
            record.cached = any(e.cached for e in ends)
        elif t is not None:
            last = max((s.end or s.start or self.t0 for s in subtasks), default=self.t0)
            record.start, record.end, record.estimated = last, self.end, True
            record.status = "failed" if error else "succeeded"
            record.cached = bool(t.cached_usage.total_tokens) and not t.aggregate_usage.total_tokens
        if error:
            record.status, record.error = "failed", str(error)
        if record.start is not None and record.end is not None and not record.cached:
            record.call_time = self.clock.running(record.start, record.end)
        return record

    def _totals(
        self, subtasks: list[SubtaskRecord], aggregate: AggregateRecord | None, path: float
    ) -> RecordTotals:
        t = self.totals_in or summarize(
            {sid: r for sid, r in self.results.items()},
            planned=len(self.order),
            aggregate_usage=TokenUsage(),
            wall_time=max(0.0, self.end - self.t0),
        )
        told = [s.usage for s in subtasks if s.id not in self.results]
        if self.totals_in is None and told:  # calls over whose subtask's result is not in
            t = t.model_copy(update={"usage": sum(told, t.usage)})
        calls = [c for s in subtasks for c in s.calls]
        made = [c for c in calls if c.call_time > 0 or (c.attempts and not c.cached)]
        call_time = sum(c.call_time for c in calls)
        if aggregate is not None and not aggregate.cached:
            call_time += aggregate.call_time
        by_model: dict[str, float | None] = {}
        for c in calls:
            if c.model is not None and (c.attempts or c.cached):
                _spend(by_model, c.model, c.cost)
        aggregate_cost = t.aggregate_cost
        if aggregate is not None:
            used = aggregate.usage.total_tokens or aggregate.usage.input_tokens
            if aggregate_cost is None and aggregate.model is not None:
                aggregate_cost = self.prices.cost(aggregate.model, aggregate.usage)
            aggregate.cost = aggregate_cost
            if used or aggregate.model is not None:
                _spend(by_model, aggregate.model or "(aggregate's model)", aggregate_cost)
        unknown = sorted(m for m, c in by_model.items() if c is None)
        known = sum(c for c in by_model.values() if c is not None)
        sources: dict[str, int] = {}
        for c in calls:
            if c.cost_source:
                sources[c.cost_source] = sources.get(c.cost_source, 0) + 1
        wall = sum(b - a for a, b in self.sessions)
        bound = max(path, call_time / self.max_concurrency) if self.max_concurrency else path
        speedup = call_time / wall if made and wall > 0 else None
        return RecordTotals(
            tasks=t.tasks or len(self.order),
            succeeded=sum(s.status == "succeeded" for s in subtasks),
            failed=sum(s.status == "failed" for s in subtasks),
            skipped=sum(s.status == "skipped" for s in subtasks),
            not_run=sum(s.status in ("not run", "unfinished") for s in subtasks),
            items=t.items,
            calls=len(calls),
            attempts=sum(c.attempts for c in calls),
            retries=sum(c.retries for c in calls),
            cached=sum(c.cached for c in calls) + int(aggregate is not None and aggregate.cached),
            usage=t.usage,
            aggregate_usage=t.aggregate_usage,
            cached_usage=t.cached_usage,
            total_tokens=t.total_tokens,
            cost=None if unknown else known,
            known_cost=known,
            cost_by_model=by_model,
            unknown_cost_models=unknown,
            cost_sources=sources,
            aggregate_cost=aggregate_cost,
            wall_time=wall,
            not_running=sum(b - a for a, b in self.gaps),
            call_time=call_time,
            queued=sum(c.queued for c in calls),
            backoff=sum(c.backoff for c in calls),
            speedup=speedup,
            critical_path_seconds=path,
            lower_bound=bound,
            bound_ratio=wall / bound if bound > 0 else None,
            max_concurrency=self.max_concurrency,
        )


# -- helpers --------------------------------------------------------------------------------


def _spend(by_model: dict[str, float | None], model: str, cost: float | None) -> None:
    if model in by_model and by_model[model] is None:
        return
    by_model[model] = None if cost is None else (by_model.get(model) or 0.0) + cost


class _Lenient(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _totals(raw: Any) -> RunTotals | None:
    if isinstance(raw, RunTotals):
        return raw
    if isinstance(raw, Mapping):
        return RunTotals.model_validate(dict(raw))
    return None


def _plan_from_state(state: Mapping[str, Any]) -> TaskPlan | None:
    run = state.get("run")
    plan = run.get("plan") if isinstance(run, Mapping) else None
    if plan is None:
        plan = state.get("plan")
    if isinstance(plan, TaskPlan):
        return plan
    if not isinstance(plan, Mapping):
        return None
    try:
        return TaskPlan.model_validate(dict(plan))
    except Exception:  # noqa: BLE001 - a record without edges beats no record
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _result_data(result: SubtaskResult) -> dict[str, Any]:
    data: dict[str, Any] = result.model_dump(mode="json")
    return data


def _relative(record: RunRecord, t0: float) -> RunRecord:
    """Times made relative to `t0` and rounded, so the record reads and compares well."""

    def rel(t: float | None) -> float | None:
        return None if t is None else _r(t - t0)

    for sub in record.subtasks:
        sub.start, sub.end = rel(sub.start), rel(sub.end)
        if sub.batch is not None:
            sub.batch.start, sub.batch.end = rel(sub.batch.start), rel(sub.batch.end)
            sub.batch.states = [(s, _r(t - t0)) for s, t in sub.batch.states]
        sub.queued, sub.backoff, sub.call_time = _r(sub.queued), _r(sub.backoff), _r(sub.call_time)
        for call in sub.calls:
            call.ready, call.start, call.end = rel(call.ready), rel(call.start), rel(call.end)
            call.queued, call.backoff = _r(call.queued), _r(call.backoff)
            call.call_time = _r(call.call_time)
            for seg in call.segments:
                seg.start, seg.end = _r(seg.start - t0), _r(seg.end - t0)
    if record.aggregate is not None:
        agg = record.aggregate
        agg.start, agg.end, agg.call_time = rel(agg.start), rel(agg.end), _r(agg.call_time)
    record.sessions = [(_r(a - t0), _r(b - t0)) for a, b in record.sessions]
    t = record.totals
    for name in ("wall_time", "not_running", "call_time", "queued", "backoff"):
        setattr(t, name, _r(getattr(t, name)))
    t.critical_path_seconds, t.lower_bound = _r(t.critical_path_seconds), _r(t.lower_bound)
    if t.speedup is not None:
        t.speedup = _r(t.speedup)
    if t.bound_ratio is not None:
        t.bound_ratio = _r(t.bound_ratio)
    return record
