"""The run report: one self-contained HTML page about a finished (or stopped) run.

`run_report(state, events=...)` turns a run's final state, and the lifecycle events the
dispatcher streamed to `stream_mode="custom"`, into one HTML document with inline CSS
and SVG (and a few lines of optional JavaScript for filtering), so it opens offline:

- the plan's graph, boxes coloured by status (a pre-rendered SVG when one is given);
- a timeline (Gantt) of every call, map items grouped under their map, with the
  critical path marked and the waits shown: a wait for a slot or a rate limit, and
  the backoff before a retry;
- a table per subtask: tokens, cost, attempts, cache hits, waits, errors, output;
- totals: counts, tokens, cost per model, wall time, the speedup over running the
  calls one after another, and the wall time over its lower bound.

How the waits are read off the events:

- each `started` event of a call is one attempt; an attempt that a `retrying` event
  follows ended at that event, and the event's `delay` is the backoff that came next;
- a call becomes ready when its last dependency finished (the run's start for a
  subtask without dependencies, the map's own `started` event for a map item, or the
  upstream item's finish for a map over another map's items); the time from ready, or
  from the end of a backoff, to the next `started` is time spent waiting for a
  concurrency slot or a rate limit.

Without events, each call is one bar from its `started_at` to its `finished_at`.

Every string that comes from the run (ids, prompts' echoes, outputs, errors, inputs) is
HTML-escaped; a given `graph_svg` is parsed and rebuilt from an allow-list of drawing
elements and attributes (`fanfold._svg.clean_svg`).
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fanfold._svg import clean_svg
from fanfold.models.resolve import model_label
from fanfold.plan.models import SubTask, TaskPlan
from fanfold.scheduling.dispatcher import EVENT_TYPE
from fanfold.scheduling.priorities import critical_path, remaining_paths
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import RunTotals, SubtaskResult, TokenUsage, summarize

__all__ = ["run_report", "write_run_report"]

_TEXT_LIMIT = 2000
"""Characters of an output, error or input shown; the rest is cut with a note."""
_OPEN_ITEMS = 12
"""A map with at most this many items shows them expanded in the timeline."""
_GRAPH_ROWS = 24
"""Most boxes stacked in one column of the built-in graph; a wider layer wraps."""
_EPS = 1e-3
"""Slack (seconds) when matching events to a result's time window."""
_MIN_GAP = 5e-4
"""Waits shorter than this are not drawn."""

STATUSES = ("succeeded", "failed", "skipped", "unfinished", "not run")


# -- public API -----------------------------------------------------------------------------


def run_report(
    state: Mapping[str, Any],
    *,
    events: Sequence[Mapping[str, Any]] = (),
    runtime: PlanRuntime | None = None,
    graph_svg: str | None = None,
    prices: Mapping[str, Any] | None = None,
    title: str | None = None,
    max_concurrency: int | None = None,
) -> str:
    """One self-contained HTML document about a run.

    Args:
        state: the run's final state values (`results`, `totals`, `inputs`, `output`,
            `aggregate_error`, `run`), e.g. the last `values` chunk or `invoke`'s result.
        events: the `fanfold.subtask` lifecycle events of the run (what
            `stream_mode="custom"` yielded; other custom events and `(mode, chunk)`
            pairs from a multi-mode stream are accepted and sorted out).
        runtime: the compiled plan (`graph.fanfold_runtime`), for dependencies, the
            aggregate's model and the subtasks that did not run; without it the plan
            kept in `state["run"]["plan"]` is used when there is one.
        graph_svg: a pre-rendered SVG of the graph to show instead of the built-in one.
        prices: model -> {"input": USD per 1M tokens, "output": USD per 1M tokens}; a
            model without a price has cost "unknown".
        title: the page title (default: from the plan's task).
        max_concurrency: the run's concurrency limit (None: unlimited), for the lower
            bound on the wall time.

    Returns:
        The HTML text.
    """
    return _Report(
        state,
        events=events,
        runtime=runtime,
        prices=prices,
        max_concurrency=max_concurrency,
    ).html(graph_svg=graph_svg, title=title)


def write_run_report(
    path: str | os.PathLike[str],
    state: Mapping[str, Any],
    *,
    events: Sequence[Mapping[str, Any]] = (),
    runtime: PlanRuntime | None = None,
    graph_svg: str | None = None,
    prices: Mapping[str, Any] | None = None,
    title: str | None = None,
    max_concurrency: int | None = None,
) -> Path:
    """Write `run_report(state, ...)` to `path` (UTF-8) and return the path.

    The options are `run_report`'s: `events` (the run's lifecycle events), `runtime`
    (`graph.fanfold_runtime`), `graph_svg`, `prices`, `title` and `max_concurrency`.
    """
    target = Path(path)
    if target.parent != Path(""):
        target.parent.mkdir(parents=True, exist_ok=True)
    report = run_report(
        state,
        events=events,
        runtime=runtime,
        graph_svg=graph_svg,
        prices=prices,
        title=title,
        max_concurrency=max_concurrency,
    )
    target.write_text(report, encoding="utf-8")
    return target


# -- the model of the report ----------------------------------------------------------------


@dataclass
class _Segment:
    kind: str
    """"wait", "run", "retry" (a failed attempt that was retried), "backoff", "skip",
    "span" (a map's extent), "busy" (a map's items at work), "open" (unfinished),
    "aggregate"."""
    start: float
    end: float
    note: str


@dataclass
class _Row:
    """One call in the timeline and the table: a subtask, or one item of a map."""

    id: str
    sid: str
    index: int | None
    status: str
    result: SubtaskResult | None
    model: str | None = None
    segments: list[_Segment] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0
    queued: float = 0.0
    backoff: float = 0.0
    busy: float = 0.0
    """Seconds the call's attempts ran (held a slot)."""
    ready: float | None = None
    start: float | None = None
    end: float | None = None
    cached: bool = False
    cost: float | None = None
    cost_state: str = "none"
    """"known" (cost holds USD), "unknown" (no price for the model), "none" (no call)."""
    critical: bool = False
    items: list[_Row] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        if self.result is not None and self.result.duration is not None:
            return self.result.duration
        return None

    @property
    def usage(self) -> TokenUsage:
        return self.result.usage if self.result is not None else TokenUsage()

    @property
    def first_mark(self) -> float:
        """When the row first shows on the timeline (for sorting)."""
        times = [s.start for s in self.segments if s.kind != "wait"]
        return min(times, default=math.inf)


@dataclass
class _ModelCost:
    model: str
    calls: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: float | None = 0.0
    cached: int = 0


class _Report:
    def __init__(
        self,
        state: Mapping[str, Any],
        *,
        events: Sequence[Any],
        runtime: PlanRuntime | None,
        prices: Mapping[str, Any] | None,
        max_concurrency: int | None,
    ) -> None:
        if isinstance(state, BaseModel):  # a PlanState, not its values
            state = {name: getattr(state, name) for name in type(state).model_fields}
        self.state = state
        self.runtime = runtime
        self.prices = _price_table(prices)
        self.max_concurrency = max_concurrency
        self.cached_ids: set[str] = set()
        self.results = self._results(state.get("results") or {})
        self.plan = runtime.plan if runtime is not None else _plan_from_state(state)
        self._structure()
        self.events = _lifecycle_events(events)
        self._clock()
        self.rows: dict[str, _Row] = {}
        for sid in self.order:
            self.rows[sid] = self._row(sid)
        self._critical()
        self._costs()
        self.totals = self._totals(state.get("totals"))

    # -- reading the state ----------------------------------------------------------------

    def _results(self, raw: Mapping[str, Any]) -> dict[str, SubtaskResult]:
        results: dict[str, SubtaskResult] = {}
        for sid, value in raw.items():
            result = (
                value if isinstance(value, SubtaskResult) else SubtaskResult.model_validate(value)
            )
            results[str(sid)] = result
            self._note_cached(value, result)
        return results

    def _note_cached(self, raw: Any, result: SubtaskResult) -> None:
        """Remember cache hits: a result's `cached` field, or the key of its raw data."""
        if _flag(raw, "cached") or _flag(result, "cached"):
            self.cached_ids.add(result.id)
        raw_items = raw.get("items") if isinstance(raw, Mapping) else None
        for position, item in enumerate(result.items or []):
            raw_item = (
                raw_items[position]
                if isinstance(raw_items, list) and len(raw_items) > position
                else item
            )
            if _flag(raw_item, "cached") or _flag(item, "cached"):
                self.cached_ids.add(item.id)

    def _structure(self) -> None:
        plan = self.plan
        if plan is not None:
            self.order = list(plan.topological_order())
            self.deps = {sid: tuple(d) for sid, d in plan.dependencies().items()}
            self.subtasks: dict[str, SubTask] = {s.id: s for s in plan.subtasks}
            self.task = plan.task
        else:
            self.order, self.deps, self.subtasks, self.task = [], {}, {}, ""
        for sid in self.results:  # a result the plan does not know still shows
            if sid not in self.deps:
                self.order.append(sid)
                self.deps[sid] = ()
        self.maps = {
            sid
            for sid in self.order
            if (sid in self.subtasks and self.subtasks[sid].map is not None)
            or self.results.get(sid, _NO_RESULT).items is not None
        }

    def _clock(self) -> None:
        times: list[float] = []
        for res in self.results.values():
            for r in [res, *(res.items or [])]:
                times += [t for t in (r.started_at, r.finished_at) if t is not None]
        times += [e["time"] for e in self.events]
        self.t0 = min(times, default=0.0)
        self.t_last = max(times, default=self.t0)

    # -- one row per call -------------------------------------------------------------------

    def _calls_events(self, sid: str, index: int | None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["subtask"] == sid and e.get("item") == index]

    def _finish_time(self, sid: str) -> float | None:
        res = self.results.get(sid)
        if res is None:
            return None
        if res.finished_at is not None:
            return res.finished_at
        done = [e["time"] for e in self._calls_events(sid, None) if e["status"] == res.status]
        return max(done, default=None)

    def _ready(self, sid: str) -> float | None:
        if sid not in self.subtasks:
            return None  # no plan: when it became ready is not known
        deps = self.deps.get(sid, ())
        if not deps:
            return self.t0
        finished = [self._finish_time(dep) for dep in deps]
        if any(t is None for t in finished):
            return None
        return max(t for t in finished if t is not None)

    def _row(self, sid: str) -> _Row:
        res = self.results.get(sid)
        ready = self._ready(sid)
        if sid not in self.maps:
            return self._call(sid, sid, None, res, ready)
        row = self._call(sid, sid, None, res, ready, is_map=True)
        starts = [
            e
            for e in self._calls_events(sid, None)
            if e["status"] == "started" and "attempt" not in e
        ]
        if res is not None and res.started_at is not None:
            starts = [e for e in starts if e["time"] <= res.started_at + _EPS]
        map_start = max((e["time"] for e in starts), default=ready)
        source = self._item_source(sid)
        upstream = self.results.get(source) if source is not None else None
        for item in res.items or [] if res is not None else []:
            index = item.index if item.index is not None else len(row.items)
            item_ready = map_start
            if upstream is not None and upstream.items is not None and index < len(upstream.items):
                before = upstream.items[index].finished_at
                if before is not None:
                    item_ready = max(item_ready or before, before)
            row.items.append(self._call(item.id, sid, index, item, item_ready))
        row.attempts = sum(i.attempts for i in row.items) or row.attempts
        row.retries = sum(i.retries for i in row.items)
        row.queued = sum(i.queued for i in row.items)
        row.backoff = sum(i.backoff for i in row.items)
        if row.items and all(i.cached for i in row.items):
            row.cached = True
        return row

    def _item_source(self, sid: str) -> str | None:
        """The map whose items this map follows item by item, if it does."""
        sub = self.subtasks.get(sid)
        if sub is None or sub.map is None or sub.map not in self.maps:
            return None
        return None if sub.map in sub.placeholders else sub.map

    def _call(
        self,
        rid: str,
        sid: str,
        index: int | None,
        res: SubtaskResult | None,
        ready: float | None,
        *,
        is_map: bool = False,
    ) -> _Row:
        evs = self._calls_events(sid, index)
        status = res.status if res is not None else ("unfinished" if evs else "not run")
        row = _Row(
            id=rid,
            sid=sid,
            index=index,
            status=status,
            result=res,
            model=res.model if res is not None else None,
            ready=ready,
            cached=rid in self.cached_ids,
        )
        if res is None and sid in self.subtasks and self.runtime is not None:
            model = self.runtime.models.get(sid)
            row.model = model_label(model) if model is not None else None
        if status == "skipped" or (res is not None and res.started_at is None and not is_map):
            when = [e["time"] for e in evs if e["status"] == status]
            at = max(when, default=None) or (res.finished_at if res else None) or ready
            if at is not None:
                row.segments.append(_Segment("skip", at, at, _reason(res)))
                row.start = row.end = at
            return row
        if is_map:
            lo = res.started_at if res is not None else None
            hi = res.finished_at if res is not None else None
            if lo is not None:
                row.segments.append(
                    _Segment("span", lo, hi if hi is not None else self.t_last, "map")
                )
            row.start, row.end = lo, hi
            row.attempts = res.attempts if res is not None else 0
            return row
        self._attempts(row, evs, res)
        return row

    def _attempts(self, row: _Row, evs: list[dict[str, Any]], res: SubtaskResult | None) -> None:
        lo = res.started_at if res is not None else None
        hi = res.finished_at if res is not None else None

        def inside(t: float) -> bool:
            if lo is not None and t < lo - _EPS:
                return False
            return not (hi is not None and t > hi + _EPS)

        starts = sorted(
            (e for e in evs if e["status"] == "started" and inside(_started(e))), key=_started
        )
        retries = sorted(
            (e for e in evs if e["status"] == "retrying" and inside(e["time"])),
            key=lambda e: e["time"],
        )
        end_of_run = hi if hi is not None else self.t_last
        if not starts and lo is not None:  # no events: one bar for the whole call
            starts = [{"started_at": lo, "time": lo, "attempt": res.attempts if res else 1}]
            retries = []
        row.start = _started(starts[0]) if starts else lo
        row.end = hi
        if row.start is not None and row.ready is not None and row.start - row.ready > _MIN_GAP:
            row.queued += row.start - row.ready
            row.segments.append(
                _Segment("wait", row.ready, row.start, "waited for a slot or limit")
            )
        for position, event in enumerate(starts):
            begin = _started(event)
            number = event.get("attempt") if isinstance(event.get("attempt"), int) else position + 1
            following = _started(starts[position + 1]) if position + 1 < len(starts) else None
            retry = next(
                (
                    r
                    for r in retries
                    if r["time"] >= begin - _EPS
                    and (following is None or r["time"] <= following + _EPS)
                    and r.get("attempt", number) == number
                ),
                None,
            )
            if retry is not None:
                failed_at = retry["time"]
                row.retries += 1
                error = str(retry.get("error") or "error")
                row.segments.append(
                    _Segment("retry", begin, failed_at, f"attempt {number}: {error}")
                )
                delay = _number(retry.get("delay"))
                stop = following if following is not None else end_of_run
                waited_until = min(failed_at + delay, max(stop, failed_at))
                if waited_until > failed_at:
                    row.backoff += waited_until - failed_at
                    row.segments.append(
                        _Segment("backoff", failed_at, waited_until, f"backoff {_secs(delay)}")
                    )
                if following is not None and following - waited_until > _MIN_GAP:
                    row.queued += following - waited_until
                    row.segments.append(
                        _Segment("wait", waited_until, following, "waited for a slot or limit")
                    )
                continue
            stop = following if following is not None else end_of_run
            kind = "run" if res is not None else "open"
            row.segments.append(_Segment(kind, begin, stop, f"attempt {number}"))
        row.attempts = max(len(starts), res.attempts if res is not None else 0)
        row.busy = sum(g.end - g.start for g in row.segments if g.kind in ("run", "retry", "open"))

    # -- the critical path ------------------------------------------------------------------

    def _weight(self, row: _Row) -> float:
        """A subtask's share of the critical path: its attempts and the backoffs between
        them (not its waits for a slot); for a map, its longest item (with unlimited
        slots the items run side by side)."""
        if row.items:
            return max((i.busy + i.backoff for i in row.items), default=0.0)
        return row.busy + row.backoff

    def _critical(self) -> None:
        weights = {sid: self._weight(self.rows[sid]) for sid in self.order}
        remaining = remaining_paths(self.order, self.deps, weights)
        path = critical_path(self.order, self.deps, remaining, weights)
        self.critical = path if path and remaining[path[0]] > 0 else []
        self.critical_length = remaining[path[0]] if self.critical else 0.0
        for sid in self.critical:
            self.rows[sid].critical = True
        self.critical_edges = set(zip(self.critical, self.critical[1:], strict=False))

    # -- money ------------------------------------------------------------------------------

    def _price(self, model: str | None) -> tuple[float, float] | None:
        if model is None:
            return None
        return self.prices.get(model) or self.prices.get(model.split(":", 1)[-1])

    def _cost(self, model: str | None, usage: TokenUsage, cached: bool) -> tuple[str, float | None]:
        if cached:
            return "known", 0.0  # served from the cache: no call was paid for
        if usage.total_tokens == 0 and usage.input_tokens == 0 and usage.output_tokens == 0:
            if model is None:
                return "none", None
        price = self._price(model)
        if price is None:
            return "unknown", None
        if usage.total_tokens and not (usage.input_tokens or usage.output_tokens):
            return "unknown", None  # a total without a split cannot be priced
        cost = (usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1e6
        return "known", cost

    def _costs(self) -> None:
        self.by_model: dict[str, _ModelCost] = {}
        for row in self.rows.values():
            calls = row.items if row.items else [row]
            known = 0.0
            states: set[str] = set()
            for call in calls:
                if call.result is None or (call.status == "skipped" and call.attempts == 0):
                    call.cost_state = "none"
                    continue
                call.cost_state, call.cost = self._cost(call.model, call.usage, call.cached)
                states.add(call.cost_state)
                if call.cost is not None:
                    known += call.cost
                self._add_model(call.model, call.usage, call.cost_state, call.cost, call.cached)
            if row.items:
                if "unknown" in states:
                    row.cost_state, row.cost = "unknown", None
                elif "known" in states:
                    row.cost_state, row.cost = "known", known
                else:
                    row.cost_state, row.cost = "none", None

    def _add_model(
        self, model: str | None, usage: TokenUsage, state: str, cost: float | None, cached: bool
    ) -> None:
        if state == "none":
            return
        label = model or "(no model)"
        entry = self.by_model.setdefault(label, _ModelCost(label))
        entry.calls += 1
        entry.cached += int(cached)
        if not cached:
            entry.usage = entry.usage + usage
        if entry.cost is not None:
            entry.cost = entry.cost + cost if cost is not None else None

    def _totals(self, raw: Any) -> RunTotals:
        if isinstance(raw, RunTotals):
            totals = raw
        elif isinstance(raw, Mapping):
            totals = RunTotals.model_validate(dict(raw))
        else:  # a run that did not reach its aggregate: fold what is there
            totals = summarize(
                self.results,
                planned=len(self.order),
                aggregate_usage=TokenUsage(),
                wall_time=max(0.0, self.t_last - self.t0),
            )
        usage = totals.aggregate_usage
        if usage.total_tokens or usage.input_tokens or usage.output_tokens:
            model = None
            if self.runtime is not None and self.runtime.aggregate_model is not None:
                model = model_label(self.runtime.aggregate_model)
            state, cost = self._cost(model, usage, False)
            if state == "none":
                state = "unknown"
            self.aggregate_cost: tuple[str, float | None] = (state, cost)
            self._add_model(model or "(aggregate's model)", usage, state, cost, False)
        else:
            self.aggregate_cost = ("none", None)
        return totals

    # -- figures ----------------------------------------------------------------------------

    @property
    def calls(self) -> list[_Row]:
        """Every call row: subtasks that are not maps, and map items."""
        out: list[_Row] = []
        for row in self.rows.values():
            out += row.items if row.sid in self.maps else [row]
        return out

    @property
    def total_cost(self) -> tuple[float, list[str]]:
        known = sum(m.cost for m in self.by_model.values() if m.cost is not None)
        unknown = sorted(m.model for m in self.by_model.values() if m.cost is None)
        return known, unknown

    @property
    def work(self) -> float:
        """Seconds the calls held a slot: their attempts, not their backoffs or waits."""
        return sum(r.busy for r in self.calls)

    @property
    def lower_bound(self) -> float:
        if self.max_concurrency:
            return max(self.critical_length, self.work / self.max_concurrency)
        return self.critical_length

    @property
    def run_end(self) -> float:
        return max(self.t_last, self.t0 + self.totals.wall_time)

    # -- rendering --------------------------------------------------------------------------

    def html(self, *, graph_svg: str | None, title: str | None) -> str:
        heading = title or (
            f"fanfold run: {_short(self.task, 90)}" if self.task else "fanfold run report"
        )
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.t0)) if self.t0 else "unknown"
        )
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(heading)}</title>",
            f"<style>{_CSS}</style></head><body>",
            _DEFS,
            '<header><h1 id="report-title">',
            _e(heading),
            "</h1>",
            f'<p class="meta">started {_e(started)} · {len(self.order)} subtasks'
            f" · {len(self.calls)} calls</p>",
            f'<p class="task">{_e(_short(self.task, _TEXT_LIMIT))}</p>' if self.task else "",
            "</header><main>",
            self._summary(),
            self._graph_section(graph_svg),
            self._timeline(),
            self._table(),
            self._totals_section(),
            self._io_section(),
            "</main>",
            f"<script>{_JS}</script>",
            "</body></html>",
        ]
        return "\n".join(p for p in parts if p)

    def _summary(self) -> str:
        t = self.totals
        known, unknown = self.total_cost
        speedup = t.speedup
        bound = self.lower_bound
        ratio = t.wall_time / bound if bound > 0 else None
        cards = [
            (
                "subtasks",
                f"{t.succeeded} ok · {t.failed} failed · {t.skipped} skipped",
                f"of {t.tasks} planned" + (f", {t.items} map items" if t.items else ""),
            ),
            (
                "tokens",
                f"{t.total_tokens:,}",
                f"{t.aggregate_usage.total_tokens:,} in the aggregate",
            ),
            (
                "cost",
                _money_total(known, unknown),
                "unknown: " + ", ".join(unknown) if unknown else "",
            ),
            ("wall time", _secs(t.wall_time), f"calls one after another: {_secs(t.call_time)}"),
            (
                "speedup",
                f"{speedup:.2f}×" if speedup is not None else "n/a",
                "call time / wall time",
            ),
            (
                "vs lower bound",
                f"{ratio:.2f}×" if ratio is not None else "n/a",
                f"bound {_secs(bound)} = " + self._bound_text(),
            ),
        ]
        body = "".join(
            f'<div class="card" id="card-{_slug(key)}"><div class="k">{_e(key)}</div>'
            f'<div class="v">{_e(value)}</div><div class="s">{_e(sub)}</div></div>'
            for key, value, sub in cards
        )
        return f'<section id="summary" class="cards">{body}</section>'

    def _bound_text(self) -> str:
        cp = f"critical path {_secs(self.critical_length)}"
        if not self.max_concurrency:
            return f"{cp} (unlimited concurrency)"
        return f"max({cp}, work {_secs(self.work)} / {self.max_concurrency} slots)"

    # graph

    def _graph_section(self, graph_svg: str | None) -> str:
        note = ""
        svg = clean_svg(graph_svg) if graph_svg is not None else None
        if graph_svg is not None and svg is None:
            note = '<p class="note">The given graph is not an SVG; drawn here instead.</p>'
        if svg is None:
            svg = self._graph_svg()
        legend = "".join(f'<span class="chip st-{_slug(s)}"></span>{_e(s)} ' for s in STATUSES)
        return (
            '<section id="graph"><h2>Graph</h2>'
            f'<p class="legend">{legend}<span class="chip crit"></span>critical path</p>{note}'
            f'<div class="graph-box">{svg}</div></section>'
        )

    def _graph_svg(self) -> str:
        order = self.order
        if not order:
            return '<svg class="graph-svg" width="10" height="10"></svg>'
        layer: dict[str, int] = {}
        for sid in order:
            layer[sid] = 1 + max((layer[d] for d in self.deps[sid] if d in layer), default=-1)
        layers: dict[int, list[str]] = {}
        for sid in order:
            layers.setdefault(layer[sid], []).append(sid)
        # One barycentre pass: each box near the boxes it depends on.
        rank: dict[str, float] = {}
        for level in sorted(layers):
            members = layers[level]
            if level:
                members.sort(
                    key=lambda s: sum(rank[d] for d in self.deps[s]) / max(1, len(self.deps[s]))
                )
            for position, sid in enumerate(members):
                rank[sid] = position
        box_w, box_h, gap_x, gap_y, sub_gap, pad = 168, 38, 56, 10, 14, 12
        pos: dict[str, tuple[float, float]] = {}
        x = pad
        height = 0.0
        for level in sorted(layers):
            members = layers[level]
            columns = max(1, math.ceil(len(members) / _GRAPH_ROWS))
            per_column = math.ceil(len(members) / columns)
            for position, sid in enumerate(members):
                column, line = divmod(position, per_column)
                pos[sid] = (x + column * (box_w + sub_gap), pad + line * (box_h + gap_y))
                height = max(height, pos[sid][1] + box_h)
            x += columns * (box_w + sub_gap) - sub_gap + gap_x
        width = x - gap_x + pad
        height += pad
        edges: list[str] = []
        for sid in order:
            for dep in self.deps[sid]:
                if dep not in pos:
                    continue
                x1, y1 = pos[dep][0] + box_w, pos[dep][1] + box_h / 2
                x2, y2 = pos[sid][0], pos[sid][1] + box_h / 2
                bend = max(20.0, (x2 - x1) / 2)
                cls = "edge crit" if (dep, sid) in self.critical_edges else "edge"
                edges.append(
                    f'<path class="{cls}" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} '
                    f'{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" marker-end="url(#ff-arrow)">'
                    f"<title>{_e(dep)} → {_e(sid)}</title></path>"
                )
        nodes: list[str] = []
        for sid in order:
            row = self.rows[sid]
            nx, ny = pos[sid]
            classes = f"node st-{_slug(row.status)}" + (" crit" if row.critical else "")
            detail = row.status
            if row.duration is not None:
                detail += f" · {_secs(row.duration)}"
            if sid in self.maps:
                detail = f"map ×{len(row.items)} · " + detail
            tip = f"{sid}: {row.status}"
            if row.result is not None and row.result.error:
                tip += f"\n{_short(row.result.error, 300)}"
            stack = (
                f'<rect class="stack" x="{nx + 4:.1f}" y="{ny + 4:.1f}" width="{box_w}" '
                f'height="{box_h}" rx="5"/>'
                if sid in self.maps
                else ""
            )
            nodes.append(
                f'<g class="{classes}" data-subtask="{_e(sid)}"><title>{_e(tip)}</title>{stack}'
                f'<rect x="{nx:.1f}" y="{ny:.1f}" width="{box_w}" height="{box_h}" rx="5"/>'
                f'<text x="{nx + 8:.1f}" y="{ny + 16:.1f}" class="id">{_e(_short(sid, 22))}</text>'
                f'<text x="{nx + 8:.1f}" y="{ny + 30:.1f}" class="sub">{_e(_short(detail, 30))}'
                "</text></g>"
            )
        return (
            f'<svg class="graph-svg" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            f'aria-label="the plan graph">{"".join(edges)}{"".join(nodes)}</svg>'
        )

    # timeline

    def _timeline(self) -> str:
        t0 = self.t0
        span = max(self.run_end - t0, 1e-6)
        ticks = _ticks(span)

        def x(t: float) -> float:
            return max(0.0, min(1000.0, (t - t0) / span * 1000.0))

        def bars(row: _Row, group: str) -> str:
            out = [
                f'<line class="grid" x1="{x(t0 + tick):.2f}" x2="{x(t0 + tick):.2f}" '
                'y1="0" y2="16"/>'
                for tick in ticks
            ]
            for seg in row.segments:
                x1, x2 = x(seg.start), x(seg.end)
                w = max(x2 - x1, 1.5)
                if seg.kind in ("run", "span", "open"):
                    cls = f"bar {seg.kind} st-{_slug(row.status)}"
                elif seg.kind in ("retry", "skip", "aggregate"):
                    cls = f"bar {seg.kind}"
                else:
                    cls = seg.kind
                if row.critical and seg.kind in ("run", "retry", "span"):
                    cls += " crit"
                y, h = (4, 8) if seg.kind in ("wait", "backoff", "span") else (2, 12)
                tip = (
                    f"{row.id} · {seg.note} · +{_secs(seg.start - t0)} → "
                    f"+{_secs(seg.end - t0)} ({_secs(seg.end - seg.start)})"
                )
                out.append(
                    f'<rect class="{cls}" data-subtask="{_e(group)}" data-call="{_e(row.id)}" '
                    f'x="{x1:.2f}" y="{y}" width="{w:.2f}" height="{h}"><title>{_e(tip)}</title>'
                    "</rect>"
                )
            if row.items:  # where the map's items were at work, on the map's own line
                for start, end in _union(
                    (s.start, s.end)
                    for i in row.items
                    for s in i.segments
                    if s.kind in ("run", "retry")
                ):
                    out.append(
                        f'<rect class="busy" x="{x(start):.2f}" y="6" '
                        f'width="{max(x(end) - x(start), 1.0):.2f}" height="4"/>'
                    )
            return (
                '<svg class="track" viewBox="0 0 1000 16" preserveAspectRatio="none" '
                f'width="100%" height="16" aria-hidden="true">{"".join(out)}</svg>'
            )

        def info(row: _Row) -> str:
            bits = [_secs(row.duration)] if row.duration is not None else [row.status]
            if row.attempts > 1 and not row.items:
                bits.append(f"{row.attempts} tries")
            if row.items:
                bits.append(f"{len(row.items)} items")
            return " · ".join(bits)

        def line(row: _Row, group: str, label: str, *, tag: str = "div") -> str:
            crit = _DIAMOND if row.critical else ""
            cls = "g-row" + (" crit" if row.critical else "")
            cls += " item" if row.index is not None else ""
            return (
                f'<{tag} class="{cls}" data-id="{_e(row.id)}" data-status="{_e(row.status)}">'
                f'<span class="g-label">{crit}{label}</span>{bars(row, group)}'
                f'<span class="g-info">{_e(info(row))}</span></{tag}>'
            )

        rows = sorted(self.rows.values(), key=lambda r: (r.first_mark, self.order.index(r.sid)))
        body: list[str] = []
        for row in rows:
            badge = f'<span class="dot st-{_slug(row.status)}"></span>'
            label = f"{badge}{_e(row.id)}"
            if row.sid not in self.maps or not row.items:
                body.append(line(row, row.sid, label))
                continue
            opened = " open" if len(row.items) <= _OPEN_ITEMS else ""
            items = sorted(row.items, key=lambda r: r.index or 0)
            body.append(
                f'<details class="g-group" data-id="{_e(row.id)}" data-status="{_e(row.status)}"'
                f"{opened}>"
                + line(row, row.sid, f'<span class="caret"></span>{label}', tag="summary")
                + "".join(
                    line(i, row.sid, f'<span class="dot st-{_slug(i.status)}"></span>{_e(i.id)}')
                    for i in items
                )
                + "</details>"
            )
        last = max((r.end or r.start or t0 for r in self.rows.values()), default=t0)
        if self.run_end - last > _MIN_GAP and self.totals.wall_time > 0:
            agg = _Row(
                id="(aggregate)", sid="(aggregate)", index=None, status="aggregate", result=None
            )
            agg.segments.append(
                _Segment("aggregate", last, self.run_end, "aggregate and bookkeeping (estimated)")
            )
            body.append(line(agg, "(aggregate)", '<span class="muted">(aggregate)</span>'))
        axis = "".join(
            f'<span style="left:{tick / span * 100:.3f}%">{_e(_secs(tick))}</span>'
            for tick in ticks
        )
        legend = (
            '<span class="chip st-succeeded"></span>call '
            '<span class="chip retry"></span>failed attempt (retried) '
            '<span class="chip backoff"></span>retry backoff '
            '<span class="chip wait"></span>waiting for a slot / rate limit '
            '<span class="chip st-skipped"></span>skipped '
            '<span class="chip crit"></span>critical path ◆'
        )
        totals_wait = sum(r.queued for r in self.calls)
        totals_backoff = sum(r.backoff for r in self.calls)
        retries = sum(r.retries for r in self.calls)
        return (
            '<section id="timeline"><h2>Timeline</h2>'
            f'<p class="legend">{legend}</p>'
            '<p class="note">Waiting for slots or limits: '
            f"{_e(_secs(totals_wait))} summed over calls; "
            f"backoff before {retries} retr{'y' if retries == 1 else 'ies'}: "
            f"{_e(_secs(totals_backoff))}. Critical path ({_e(_secs(self.critical_length))}): "
            f"{_e(' → '.join(self.critical) or 'none')}.</p>"
            '<div class="gantt"><div class="g-row g-axis"><span class="g-label">subtask</span>'
            f'<div class="axis">{axis}</div><span class="g-info">time</span></div>'
            f"{''.join(body)}</div></section>"
        )

    # table

    def _table(self) -> str:
        head = (
            "<tr><th>subtask</th><th>status</th><th>kind</th><th>model</th><th>attempts</th>"
            "<th>tokens in</th><th>tokens out</th><th>tokens</th><th>cost</th><th>cache</th>"
            "<th>waited</th><th>backoff</th><th>duration</th><th>error · output</th></tr>"
        )
        body = "".join(self._table_row(self.rows[sid]) for sid in self.order)
        options = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in STATUSES)
        return (
            '<section id="subtasks"><h2>Subtasks</h2>'
            '<p class="filter"><label>filter <input id="ff-filter" type="search" '
            'placeholder="subtask id"></label> <label>status <select id="ff-status">'
            f'<option value="">all</option>{options}</select></label></p>'
            '<div class="table-wrap"><table id="ff-table" class="data">'
            f"<thead>{head}</thead><tbody>{body}</tbody></table></div></section>"
        )

    def _cells(self, row: _Row) -> list[str]:
        usage = row.usage
        kind = row.result.kind if row.result is not None and row.result.kind else ""
        if not kind and row.sid in self.subtasks and row.index is None:
            kind = self.subtasks[row.sid].kind
        ran = row.result is not None and row.status != "skipped"
        cache = "hit" if row.cached else ""
        if row.items:
            hits = sum(i.cached for i in row.items)
            cache = f"{hits}/{len(row.items)} hits" if hits else ""
        return [
            f'<td class="status"><span class="dot st-{_slug(row.status)}"></span>'
            f"{_e(row.status)}</td>",
            f"<td>{_e(kind)}</td>",
            f"<td>{_e(row.model or '')}</td>",
            f'<td class="num attempts">{row.attempts}'
            + (f' <span class="muted">({row.retries} retried)</span>' if row.retries else "")
            + "</td>",
            f'<td class="num">{usage.input_tokens:,}</td>' if ran else '<td class="num"></td>',
            f'<td class="num">{usage.output_tokens:,}</td>' if ran else '<td class="num"></td>',
            f'<td class="num tokens">{usage.total_tokens:,}</td>'
            if ran
            else '<td class="num"></td>',
            _cost_cell(row.cost_state, row.cost),
            f'<td class="cache">{_e(cache)}</td>',
            f'<td class="num">{_e(_secs(row.queued)) if row.queued else ""}</td>',
            f'<td class="num">{_e(_secs(row.backoff)) if row.backoff else ""}</td>',
            f'<td class="num">{_e(_secs(row.duration)) if row.duration is not None else ""}</td>',
        ]

    def _detail(self, row: _Row) -> str:
        out = []
        res = row.result
        if res is not None and res.error:
            out.append(f'<div class="error">{_e(_short(res.error, _TEXT_LIMIT))}</div>')
        if res is not None and res.output is not None and not row.items:
            text = _as_text(res.output)
            out.append(
                f"<details><summary>output ({len(text):,} chars)</summary>"
                f"<pre>{_e(_short(text, _TEXT_LIMIT))}</pre></details>"
            )
        return "".join(out)

    def _table_row(self, row: _Row) -> str:
        crit = f" {_DIAMOND}" if row.critical else ""
        detail = self._detail(row)
        if row.items:
            items = "".join(
                f'<tr><td class="id">{_e(i.id)}</td>{"".join(self._cells(i))}'
                f"<td>{self._detail(i)}</td></tr>"
                for i in sorted(row.items, key=lambda r: r.index or 0)
            )
            detail += (
                f"<details><summary>{len(row.items)} items</summary>"
                '<table class="data items"><thead><tr><th>item</th><th>status</th><th>kind</th>'
                "<th>model</th><th>attempts</th><th>in</th><th>out</th><th>tokens</th>"
                "<th>cost</th><th>cache</th><th>waited</th><th>backoff</th><th>duration</th>"
                f"<th>error · output</th></tr></thead><tbody>{items}</tbody></table></details>"
            )
        return (
            f'<tr class="row" data-id="{_e(row.id)}" data-status="{_e(row.status)}">'
            f'<td class="id">{_e(row.id)}{crit}</td>{"".join(self._cells(row))}'
            f'<td class="detail">{detail}</td></tr>'
        )

    # totals

    def _totals_section(self) -> str:
        t = self.totals
        calls = self.calls
        rows = self.rows.values()
        cached = sum(r.cached for r in calls)
        attempts = sum(r.attempts for r in calls)
        retries = sum(r.retries for r in calls)
        known, unknown = self.total_cost
        speedup = t.speedup
        bound = self.lower_bound
        ratio = t.wall_time / bound if bound > 0 else None
        last = max((r.end or r.start or self.t0 for r in self.rows.values()), default=self.t0)
        counts = [
            ("planned subtasks", f"{t.tasks}"),
            ("succeeded", f"{t.succeeded}"),
            ("failed", f"{t.failed}"),
            ("skipped", f"{t.skipped}"),
            ("not run", f"{sum(r.status in ('not run', 'unfinished') for r in rows)}"),
            ("map items", f"{t.items}"),
            ("calls", f"{len(calls)}"),
            ("attempts", f"{attempts}"),
            ("retries", f"{retries}"),
            ("cache hits", f"{cached}"),
        ]
        tokens = [
            ("input tokens", f"{t.usage.input_tokens + t.aggregate_usage.input_tokens:,}"),
            ("output tokens", f"{t.usage.output_tokens + t.aggregate_usage.output_tokens:,}"),
            ("subtask tokens", f"{t.usage.total_tokens:,}"),
            ("aggregate tokens", f"{t.aggregate_usage.total_tokens:,}"),
            ("total tokens", f"{t.total_tokens:,}"),
        ]
        times = [
            ("wall time", _secs(t.wall_time), "wall-time"),
            ("subtasks' span", _secs(max(0.0, last - self.t0)), "span"),
            ("call time (one after another)", _secs(t.call_time), "call-time"),
            ("work (time calls held a slot)", _secs(self.work), "work"),
            ("speedup (call time / wall time)", f"{speedup:.2f}×" if speedup else "n/a", "speedup"),
            ("critical path", _secs(self.critical_length), "critical-path"),
            (
                "concurrency",
                str(self.max_concurrency) if self.max_concurrency else "unlimited",
                "concurrency",
            ),
            ("lower bound", _secs(bound), "lower-bound"),
            ("bound from", self._bound_text(), "bound-from"),
            ("wall time / lower bound", f"{ratio:.2f}×" if ratio else "n/a", "bound-ratio"),
        ]
        values = {"speedup": speedup, "bound-ratio": ratio, "wall-time": t.wall_time}
        model_rows = "".join(
            f'<tr data-model="{_e(m.model)}"><td>{_e(m.model)}</td><td class="num">{m.calls}</td>'
            f'<td class="num">{m.usage.input_tokens:,}</td>'
            f'<td class="num">{m.usage.output_tokens:,}</td>'
            f'<td class="num">{m.usage.total_tokens:,}</td><td class="num">{m.cached}</td>'
            f"{_cost_cell('known' if m.cost is not None else 'unknown', m.cost)}</tr>"
            for m in sorted(self.by_model.values(), key=lambda m: m.model)
        )
        total_cell = (
            f'<td class="num cost" data-cost="{known:.8f}">{_e(_money_total(known, unknown))}</td>'
        )

        def kv(rows: Iterable[tuple[str, str]]) -> str:
            return "".join(
                f"<tr><th>{_e(k)}</th><td class='num'>{_e(v)}</td></tr>" for k, v in rows
            )

        time_rows = "".join(
            f'<tr id="total-{key}"'
            + (f' data-value="{values[key]:.6f}"' if values.get(key) is not None else "")
            + f"><th>{_e(k)}</th><td class='num'>{_e(v)}</td></tr>"
            for k, v, key in times
        )
        return (
            '<section id="totals"><h2>Totals</h2><div class="totals">'
            f'<table class="kv" id="totals-counts"><caption>counts</caption>{kv(counts)}</table>'
            f'<table class="kv" id="totals-tokens"><caption>tokens</caption>{kv(tokens)}</table>'
            f'<table class="kv" id="totals-time"><caption>time</caption>{time_rows}</table>'
            '<div class="cost-wrap"><table class="data" id="totals-cost">'
            "<caption>cost per model</caption><thead><tr>"
            "<th>model</th>"
            + "".join(f"<th class='num'>{h}</th>" for h in ("calls", "in", "out", "tokens"))
            + "<th class='num'>cached</th><th class='num'>cost</th></tr></thead>"
            f"<tbody>{model_rows}</tbody><tfoot><tr><th>total</th>"
            f"<td></td><td></td><td></td><td></td><td></td>{total_cell}</tr></tfoot></table>"
            "</div></div></section>"
        )

    def _io_section(self) -> str:
        parts = []
        inputs = self.state.get("inputs")
        if inputs:
            parts.append(
                f"<details><summary>run inputs</summary><pre>"
                f"{_e(_short(_as_text(inputs), _TEXT_LIMIT * 2))}</pre></details>"
            )
        error = self.state.get("aggregate_error")
        if error:
            text = _e(_short(str(error), _TEXT_LIMIT))
            parts.append(f'<div class="error">aggregate failed: {text}</div>')
        output = self.state.get("output")
        if output is not None:
            parts.append(
                "<details open><summary>output</summary>"
                f"<pre>{_e(_short(_as_text(output), _TEXT_LIMIT * 2))}</pre></details>"
            )
        if not parts:
            return ""
        return f'<section id="output"><h2>Run output</h2>{"".join(parts)}</section>'


# -- helpers --------------------------------------------------------------------------------

_NO_RESULT = SubtaskResult(id="", status="skipped")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _slug(status: str) -> str:
    return status.replace(" ", "-")


def _flag(obj: Any, name: str) -> bool:
    if isinstance(obj, Mapping):
        return bool(obj.get(name, False))
    return bool(getattr(obj, name, False))


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _started(event: Mapping[str, Any]) -> float:
    value = event.get("started_at")
    return float(value) if isinstance(value, int | float) else float(event["time"])


def _reason(res: SubtaskResult | None) -> str:
    if res is None:
        return "skipped"
    return f"{res.status}: {res.error}" if res.error else res.status


def _lifecycle_events(events: Iterable[Any]) -> list[dict[str, Any]]:
    """The dispatcher's events, from bare events or `(mode, chunk)` pairs."""
    out: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, tuple | list) and len(event) == 2 and event[0] == "custom":
            event = event[1]
        if not isinstance(event, Mapping) or event.get("type") != EVENT_TYPE:
            continue
        if not isinstance(event.get("time"), int | float) or not isinstance(
            event.get("subtask"), str
        ):
            continue
        out.append(dict(event))
    out.sort(key=lambda e: e["time"])
    return out


def _plan_from_state(state: Mapping[str, Any]) -> TaskPlan | None:
    """The plan `fanfold run --checkpoint` keeps in `state["run"]["plan"]`, if any."""
    run = state.get("run")
    plan = run.get("plan") if isinstance(run, Mapping) else None
    if isinstance(plan, TaskPlan):
        return plan
    if not isinstance(plan, Mapping):
        return None
    try:
        result: TaskPlan = TaskPlan.model_validate(dict(plan))
    except Exception:  # noqa: BLE001 - a report without edges beats no report
        return None
    return result


def _price_table(prices: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """model -> (USD per 1M input tokens, USD per 1M output tokens), for valid entries."""
    table: dict[str, tuple[float, float]] = {}
    for model, price in (prices or {}).items():
        pair = [
            price.get(key) if isinstance(price, Mapping) else getattr(price, key, None)
            for key in ("input", "output")
        ]
        try:
            values = (float(pair[0]), float(pair[1]))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue  # an incomplete price: the model's cost stays unknown
        if all(math.isfinite(v) and v >= 0 for v in values):
            table[str(model)] = values
            table.setdefault(str(model).split(":", 1)[-1], values)
    return table


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f} min {rest:04.1f} s"


def _money(usd: float) -> str:
    return f"${usd:.6f}" if usd < 0.01 else f"${usd:.4f}"


def _money_total(known: float, unknown: list[str]) -> str:
    if not unknown:
        return _money(known)
    return f"{_money(known)} + unknown" if known else "unknown"


def _cost_cell(state: str, cost: float | None) -> str:
    if state == "known" and cost is not None:
        return f'<td class="num cost" data-cost="{cost:.8f}">{_e(_money(cost))}</td>'
    if state == "unknown":
        return '<td class="num cost unknown" data-cost="unknown">unknown</td>'
    return '<td class="num cost none">—</td>'


def _ticks(span: float) -> list[float]:
    """Round tick positions (seconds from the start), about eight over `span`."""
    raw = span / 8
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    count = int(span / step) + 1
    return [i * step for i in range(count) if i * step <= span + 1e-12]


def _union(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# -- page furniture -------------------------------------------------------------------------

_DIAMOND = '<span class="diamond" title="on the critical path">◆</span>'

_DEFS = (
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
    '<pattern id="ff-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6c27a"/>'
    '<rect width="3" height="6" fill="#e08a1e"/></pattern>'
    '<marker id="ff-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
    'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
    'fill="#8a94a3"/></marker></defs></svg>'
)

_CSS = """
:root{--ok:#2e9d5b;--fail:#d64541;--skip:#a3a9b1;--open:#5b8def;--none:#e3e6ea;
--wait:#f3dc8c;--retry:#f08c4a;--crit:#222;--ink:#1f2328;--muted:#667085;--line:#e4e7ec}
*{box-sizing:border-box}[hidden]{display:none!important}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:#fafbfc}
header{padding:18px 24px 6px;background:#fff;border-bottom:1px solid var(--line)}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}
main{padding:0 24px 40px}.meta,.note,.muted{color:var(--muted)}.note{margin:4px 0 8px}
.task{white-space:pre-wrap;margin:4px 0 8px;max-height:6em;overflow:auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px;margin-top:16px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .k{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.card .v{font-size:19px;font-weight:600;margin:2px 0}.card .s{font-size:12px;color:var(--muted)}
.legend{font-size:12px;color:var(--muted)}
.chip{display:inline-block;width:12px;height:10px;border-radius:2px;margin:0 4px 0 10px;
vertical-align:-1px;background:var(--none)}
.chip.st-succeeded{background:var(--ok)}.chip.st-failed{background:var(--fail)}
.chip.st-skipped{background:var(--skip)}.chip.st-unfinished{background:var(--open)}
.chip.retry{background:var(--retry)}.chip.backoff{
background:repeating-linear-gradient(45deg,#e08a1e 0 3px,#f6c27a 3px 6px)}
.chip.wait{background:var(--wait)}.chip.crit{background:#fff;border:2px solid var(--crit)}
.graph-box{background:#fff;border:1px solid var(--line);border-radius:8px;overflow:auto;
max-height:75vh;padding:6px}
.graph-box svg{max-width:none;height:auto}
.graph-svg .node rect{fill:var(--none);stroke:#98a2b3;stroke-width:1}
.graph-svg .node .stack{fill:#fff}
.graph-svg .node.st-succeeded rect:not(.stack){fill:#d5f0df;stroke:var(--ok)}
.graph-svg .node.st-failed rect:not(.stack){fill:#f9d7d5;stroke:var(--fail)}
.graph-svg .node.st-skipped rect:not(.stack){fill:#eceef1;stroke:var(--skip);stroke-dasharray:4 3}
.graph-svg .node.st-unfinished rect:not(.stack){fill:#dde7fd;stroke:var(--open)}
.graph-svg .node.crit rect:not(.stack){stroke:var(--crit);stroke-width:2.5}
.graph-svg text{font:12px system-ui,sans-serif;fill:var(--ink)}
.graph-svg text.id{font-weight:600}.graph-svg text.sub{font-size:10.5px;fill:var(--muted)}
.graph-svg .edge{fill:none;stroke:#b4bcc8;stroke-width:1.2}
.graph-svg .edge.crit{stroke:var(--crit);stroke-width:2.2}
.gantt{background:#fff;border:1px solid var(--line);border-radius:8px;max-height:80vh;overflow:auto}
.g-row{display:grid;grid-template-columns:minmax(120px,220px) 1fr 150px;align-items:center;
gap:8px;padding:1px 10px;border-bottom:1px solid #f1f3f5;min-height:20px}
.g-row.item .g-label{padding-left:22px}.g-row.crit .g-label{font-weight:600}
.g-axis{position:sticky;top:0;background:#f5f6f8;z-index:2;font-size:11px;color:var(--muted);
min-height:22px}
.axis{position:relative;height:16px}.axis span{position:absolute;transform:translateX(-50%);
white-space:nowrap}.axis span:first-child{transform:none}
.g-label{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-size:12.5px}
.g-info{font-size:11.5px;color:var(--muted);white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
details.g-group>summary{list-style:none;cursor:pointer}
details.g-group>summary::-webkit-details-marker{display:none}
.caret::before{content:"▸";display:inline-block;width:12px;color:var(--muted)}
details[open]>summary .caret::before{content:"▾"}
.track{display:block;overflow:visible}
.track .grid{stroke:#eef0f3;stroke-width:1;vector-effect:non-scaling-stroke}
.track rect{vector-effect:non-scaling-stroke}
.track .bar{fill:var(--ok)}.track .bar.st-failed{fill:var(--fail)}
.track .bar.st-unfinished,.track .bar.open{fill:var(--open)}
.track .bar.retry{fill:var(--retry)}.track .bar.skip{fill:var(--skip)}
.track .bar.span{fill:#cfe9d9}.track .bar.span.st-failed{fill:#f5cdca}
.track .busy{fill:var(--ok);opacity:.7}
.track .bar.aggregate{fill:#b8c4d6}
.track .wait{fill:var(--wait)}.track .backoff{fill:url(#ff-hatch)}
.track .crit{stroke:var(--crit);stroke-width:1.5}
.diamond{color:var(--crit);margin-right:4px;font-size:10px}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px;background:var(--none)}
.dot.st-succeeded{background:var(--ok)}.dot.st-failed{background:var(--fail)}
.dot.st-skipped{background:var(--skip)}.dot.st-unfinished{background:var(--open)}
.filter{margin:4px 0 8px}.filter input,.filter select{font:inherit;padding:2px 6px}
.table-wrap{max-height:75vh;overflow:auto;border:1px solid var(--line);border-radius:8px;
background:#fff}
table.data{border-collapse:collapse;width:100%;font-size:12.5px}
table.data th,table.data td{padding:4px 8px;border-bottom:1px solid #f0f2f4;text-align:left;
vertical-align:top}
table.data thead th{position:sticky;top:0;background:#f5f6f8;z-index:1;white-space:nowrap}
table.data td.id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:nowrap}
.num{text-align:right!important;font-variant-numeric:tabular-nums;white-space:nowrap}
.cost.unknown{color:var(--muted);font-style:italic}
.detail{max-width:520px}.error{color:#a4282b;white-space:pre-wrap;word-break:break-word}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:12px;max-height:320px;
overflow:auto;background:#f6f8fa;padding:6px;border-radius:4px}
table.items{margin-top:4px;font-size:11.5px}
.totals{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:14px;
align-items:start}
table.kv{border-collapse:collapse;background:#fff;border:1px solid var(--line);width:100%}
table.kv th,table.kv td{padding:3px 10px;border-bottom:1px solid #f0f2f4;text-align:left;
font-weight:normal}table.kv th{white-space:nowrap}table.kv td{white-space:normal}
caption{text-align:left;font-weight:600;padding:4px 0}
#totals-cost{background:#fff;border:1px solid var(--line)}.cost-wrap{overflow:auto;grid-column:1/-1}
#totals-cost td:first-child{white-space:nowrap}
#totals-cost tfoot th,#totals-cost tfoot td{font-weight:600;border-top:1px solid var(--line)}
"""

_JS = """
(function(){
  var q=document.getElementById("ff-filter"),s=document.getElementById("ff-status");
  if(!q||!s)return;
  function apply(){
    var text=q.value.toLowerCase(),status=s.value;
    var rows=document.querySelectorAll("#ff-table>tbody>tr.row,.gantt>.g-row[data-id],"+
      ".gantt>details.g-group");
    for(var i=0;i<rows.length;i++){
      var r=rows[i],id=(r.getAttribute("data-id")||"").toLowerCase();
      r.hidden=(text&&id.indexOf(text)<0)||(status&&r.getAttribute("data-status")!==status);
    }
  }
  q.addEventListener("input",apply);s.addEventListener("change",apply);
  document.documentElement.setAttribute("data-report-ready","1");
})();
"""
