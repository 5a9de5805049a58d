"""Each call's segments (queued, call, retry, backoff, skip), read off its events.

How the segments are read off the events:

- each `started` event of a call is one attempt; an attempt that a `retrying` event
  follows ended at that event, and the event's `delay` is the backoff that came next;
- a call becomes ready when its last dependency finished (the run's start for a
  subtask without dependencies, its map's `started` event for a map item, the upstream
  item's finish for a map over another map's items); from ready, or from the end of a
  backoff, to the next `started` it is queued for a slot or a rate limit.

Without events each call is one segment from its `started_at` to its `finished_at`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fanfold.models.resolve import model_label
from fanfold.plan.models import SubTask
from fanfold.record.clock import EPS, MIN_GAP, RunClock
from fanfold.record.model import CallRecord, RecordStatus, Segment
from fanfold.scheduling.events import LifecycleEvent
from fanfold.scheduling.prices import PriceTable
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult, TokenUsage

__all__ = ["CallReader", "call_cost"]


def call_cost(res: SubtaskResult, prices: PriceTable) -> float | None:
    """A call's cost: the one the run computed; a price given afterwards fills in an
    unknown one. A cache hit, or a call never sent, costs nothing."""
    return priced(res.cached, res.cost, res.attempts, res.model, lambda: res.usage, prices)


def priced(
    cached: bool,
    cost: float | None,
    attempts: int,
    model: str | None,
    usage: Callable[[], TokenUsage],
    prices: PriceTable,
) -> float | None:
    """`call_cost`'s rule on a call's fields (`usage` is asked for only when needed)."""
    if cached:
        return 0.0
    if cost is not None:
        return cost
    if not attempts or model is None:
        return 0.0
    return prices.cost(model, usage())


class CallReader:
    """Builds a run's `CallRecord`s from its results and its events, per call."""

    def __init__(
        self,
        *,
        results: Mapping[str, SubtaskResult],
        subtasks: Mapping[str, SubTask],
        deps: Mapping[str, tuple[str, ...]],
        maps: set[str],
        by_call: Mapping[tuple[str, int | None], list[LifecycleEvent]],
        runtime: PlanRuntime | None,
        prices: PriceTable,
        clock: RunClock,
        call_results: Mapping[tuple[str, int | None], SubtaskResult] | None = None,
        running: bool = False,
    ) -> None:
        self.call_results = call_results or {}
        """Calls over whose subtask's result is not in: read off their finishing events."""
        self.running = running
        """The run is going on: a call started and not over is "running", not "unfinished"."""
        self.results = results
        self.subtasks = subtasks
        self.deps = deps
        self.maps = maps
        self.by_call = by_call
        self.runtime = runtime
        self.prices = prices
        self.clock = clock

    def finish_time(self, sid: str) -> float | None:
        res = self.results.get(sid) or self.call_results.get((sid, None))
        if res is None:
            return None
        if res.finished_at is not None:
            return res.finished_at
        done = [e.time for e in self.by_call.get((sid, None), []) if e.status == res.status]
        return max(done, default=None)

    def ready(self, sid: str) -> float | None:
        if sid not in self.subtasks:
            return None
        deps = self.deps.get(sid, ())
        if not deps:
            return self.clock.t0
        finished = [self.finish_time(dep) for dep in deps]
        if any(t is None for t in finished):
            return None
        return max(t for t in finished if t is not None)

    def model(self, sid: str, res: SubtaskResult | None) -> str | None:
        if res is not None and res.model is not None:
            return res.model
        if self.runtime is not None and sid in self.runtime.models:
            model = self.runtime.models.get(sid)
            return model_label(model) if model is not None else None
        return None

    def call(
        self, rid: str, sid: str, index: int | None, res: SubtaskResult | None, ready: float | None
    ) -> CallRecord:
        evs = self.by_call.get((sid, index), [])
        status: RecordStatus
        if res is not None:
            status = res.status
        else:
            status = ("running" if self.running else "unfinished") if evs else "not run"
        call = CallRecord(
            id=rid,
            subtask=sid,
            item=index,
            status=status,
            model=self.model(sid, res),
            ready=ready,
            cached=bool(res is not None and res.cached),
            error=res.error if res is not None else None,
        )
        if res is not None:
            call.usage = res.usage
            call.cost = self.cost(res)
            call.cost_source = getattr(res, "cost_source", None)
            if call.cost is not None and call.cost_source is None and not res.cached:
                call.cost_source = "price table" if res.attempts else None
        if status == "skipped" or (res is not None and res.started_at is None):
            when = [e.time for e in evs if e.status == status]
            at = max(when, default=None) or (res.finished_at if res else None) or ready
            if at is not None:
                call.segments.append(Segment(kind="skip", start=at, end=at, note=call.error or ""))
                call.start = call.end = at
            call.attempts = res.attempts if res is not None else 0
            return call
        self._attempts(call, evs, res)
        return call

    def _attempts(
        self, call: CallRecord, evs: list[LifecycleEvent], res: SubtaskResult | None
    ) -> None:
        lo = res.started_at if res is not None else None
        hi = res.finished_at if res is not None else None

        def inside(t: float) -> bool:
            return not ((lo is not None and t < lo - EPS) or (hi is not None and t > hi + EPS))

        starts = sorted(
            (e for e in evs if e.status == "started" and inside(e.begin)), key=lambda e: e.begin
        )
        retries = [e for e in evs if e.status == "retrying" and inside(e.time)]
        begins = [e.begin for e in starts]
        numbers = [e.attempt or i + 1 for i, e in enumerate(starts)]
        if not starts and lo is not None:  # no events: one segment for the whole call
            begins, numbers, retries = [lo], [res.attempts if res else 1], []
        end_of_run = hi if hi is not None else self.clock.end
        call.start = begins[0] if begins else lo
        call.end = hi
        segments = call.segments
        if call.start is not None and call.ready is not None and call.start - call.ready > MIN_GAP:
            segments.append(Segment(kind="queued", start=call.ready, end=call.start))
        for position, begin in enumerate(begins):
            number = numbers[position]
            following = begins[position + 1] if position + 1 < len(begins) else None
            retry = next(
                (
                    r
                    for r in retries
                    if r.time >= begin - EPS
                    and (following is None or r.time <= following + EPS)
                    and (r.attempt or number) == number
                ),
                None,
            )
            if retry is None:
                stop = following if following is not None else end_of_run
                segments.append(
                    Segment(kind="call", start=begin, end=stop, note=f"attempt {number}")
                )
                continue
            call.retries += 1
            reason = retry.reason or retry.error or "error"
            segments.append(
                Segment(
                    kind="retry", start=begin, end=retry.time, note=f"attempt {number}: {reason}"
                )
            )
            stop = following if following is not None else end_of_run
            waited = min(retry.time + max(0.0, retry.delay or 0.0), max(stop, retry.time))
            if waited > retry.time:
                segments.append(Segment(kind="backoff", start=retry.time, end=waited))
            if following is not None and following - waited > MIN_GAP:
                segments.append(Segment(kind="queued", start=waited, end=following))
        call.attempts = max(len(begins), res.attempts if res is not None else 0)
        for seg in segments:
            length = self.clock.running(seg.start, seg.end)
            if seg.kind == "queued":
                call.queued += length
            elif seg.kind == "backoff":
                call.backoff += length
            elif seg.kind in ("call", "retry") and not call.cached:
                call.call_time += length  # a cache hit reached no provider

    def cost(self, res: SubtaskResult) -> float | None:
        """The cost the run computed (`call_cost`)."""
        return call_cost(res, self.prices)

    def items(self, sid: str, res: SubtaskResult | None, ready: float | None) -> list[CallRecord]:
        starts = [e.time for e in self.by_call.get((sid, None), []) if e.status == "started"]
        if res is not None and res.started_at is not None:
            starts = [t for t in starts if t <= res.started_at + EPS]
        map_start = max(starts, default=ready)
        sub = self.subtasks.get(sid)
        source = None
        if sub is not None and sub.map in self.maps and sub.map not in sub.placeholders:
            source = sub.map
        upstream = self.results.get(source) if source is not None else None
        out: list[CallRecord] = []
        for item in res.items or [] if res is not None else []:
            index = item.index if item.index is not None else len(out)
            item_ready = map_start
            if upstream is not None and upstream.items is not None and index < len(upstream.items):
                before = upstream.items[index].finished_at
                if before is not None:
                    item_ready = max(item_ready or before, before)
            out.append(self.call(item.id, sid, index, item, item_ready))
        if res is None:  # an unfinished map: its items from their events
            known = set(self.by_call) | set(self.call_results)
            indexes = sorted({i for (s, i) in known if s == sid and i is not None})
            out += [
                self.call(f"{sid}[{i}]", sid, i, self.call_results.get((sid, i)), map_start)
                for i in indexes
            ]
        return out
