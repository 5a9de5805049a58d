"""`Progress`: where a run stands, a view of the run record as it grows.

The events go into a `fanfold.record.RecordBuilder`, the record the CLI's summary,
`--json` and the report are made from; the live view reads its per-subtask stands.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from fanfold.plan.graph import remaining_paths
from fanfold.progress.snapshot import (
    LEARNED_SOURCES,
    PACE_WINDOW,
    Counts,
    Eta,
    EtaSource,
    ItemCounts,
    ProgressSnapshot,
    RunningRow,
    State,
    SubtaskProgress,
)
from fanfold.record.growing import LiveSubtask, RecordBuilder
from fanfold.scheduling.events import LifecycleEvent
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult

__all__ = ["Progress"]

_STATES: dict[str, State] = {
    "not run": "waiting",
    "running": "running",
    "unfinished": "running",
    "succeeded": "done",
    "failed": "failed",
    "skipped": "skipped",
}


def _items(stand: LiveSubtask) -> ItemCounts | None:
    if not stand.is_map:
        return None
    count = stand.count
    return ItemCounts(
        total=stand.items_total,
        done=stand.reused + count("succeeded"),
        failed=count("failed"),
        skipped=count("skipped"),
        running=count("calling"),
        backoff=count("backoff"),
    )


def _view(stand: LiveSubtask) -> SubtaskProgress:
    return SubtaskProgress(
        id=stand.id,
        state=_STATES[stand.status],
        is_map=stand.is_map,
        started_at=stand.started_at,
        finished_at=stand.finished_at,
        attempt=stand.attempt,
        retrying=stand.backoff,
        error=stand.error,
        tokens=stand.tokens,
        cost=stand.cost,
        cost_unknown=stand.cost_unknown,
        items_total=stand.items_total,
        items=_items(stand),
        items_reused=stand.reused,
        preloaded=stand.preloaded,
        batch=stand.batch,
    )


class Progress:
    """Where a run stands: a view of its record as it grows (`record`).

    Args:
        runtime: the compiled plan (`graph.fanfold_runtime`); it lists the subtasks up
            front and gives the expected durations. Without it (a goal not planned
            yet: see `set_runtime`) subtasks are known as their events arrive.
        inputs: the run's inputs, so a map over a run input knows its item count
            before it starts.
        started_at: when the run started (Unix time); by default the first event's time.
        record: the growing record to read (a new one by default); whoever feeds it
            events feeds this view.
    """

    def __init__(
        self,
        runtime: PlanRuntime | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        started_at: float | None = None,
        record: RecordBuilder | None = None,
    ) -> None:
        self.record = record if record is not None else RecordBuilder(started_at=started_at)
        if started_at is not None:
            self.record.started_at = started_at
        self.events = 0
        if runtime is not None:
            self.set_runtime(runtime, inputs=inputs)

    @property
    def runtime(self) -> PlanRuntime | None:
        """The plan, once known."""
        return self.record.runtime

    @property
    def started_at(self) -> float | None:
        """When the run started (Unix time)."""
        return self.record.started_at

    @property
    def first_event_at(self) -> float | None:
        """When the first event of this run arrived: throughput is measured from here."""
        return self.record.first_event_at

    @property
    def retries(self) -> int:
        """Retries so far."""
        return self.record.retries

    @property
    def rate_limited(self) -> int:
        """Retries after a 429."""
        return self.record.rate_limited

    @property
    def subtasks(self) -> dict[str, SubtaskProgress]:
        """Each subtask's view, in plan order (ids the plan does not have last)."""
        return {sid: _view(stand) for sid, stand in self.record.subtasks.items()}

    # -- feeding ------------------------------------------------------------------------

    def set_runtime(self, runtime: PlanRuntime, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Know the plan: every subtask starts out waiting (entries already seen stay)."""
        self.record.set_runtime(runtime, inputs=inputs)

    def preload(
        self,
        results: Mapping[str, SubtaskResult],
        *,
        reused_items: Mapping[str, Iterable[Any]] | None = None,
    ) -> None:
        """Count results an earlier run left as finished before this run's events arrive.

        Args:
            results: subtask id -> result that this run will not run again.
            reused_items: map id -> the items of it that this run reuses.
        """
        self.record.preload(results, reused_items=reused_items)

    def feed(self, event: Mapping[str, Any] | LifecycleEvent) -> SubtaskProgress | None:
        """Add one lifecycle event to the record (others are ignored).

        Returns:
            The subtask's entry when the event finished a subtask or a whole map (not
            an item), else None.
        """
        parsed = LifecycleEvent.parse(event)
        if parsed is None:
            return None
        return self.feed_event(parsed)

    def feed_event(self, event: LifecycleEvent) -> SubtaskProgress | None:
        """Add one typed lifecycle event to the record (see `feed`)."""
        self.events += 1
        stand = self.record.add_event(event)
        return _view(stand) if stand is not None else None

    # -- reading ------------------------------------------------------------------------

    def _stands(self) -> Iterable[LiveSubtask]:
        return self.record.subtasks.values()

    def counts(self) -> Counts:
        """Subtasks per state."""
        tally = {"done": 0, "failed": 0, "skipped": 0, "running": 0, "waiting": 0, "backoff": 0}
        for stand in self._stands():
            state = _STATES[stand.status]
            tally["backoff" if state == "running" and stand.backoff else state] += 1
        return Counts(**tally)

    def items(self) -> ItemCounts | None:
        """Every map's items added up, or None when no map is known."""
        maps = [m for m in (_items(s) for s in self._stands()) if m is not None]
        if not maps:
            return None
        totals = [m.total for m in maps]
        return ItemCounts(
            total=None if None in totals else sum(t or 0 for t in totals),
            done=sum(m.done for m in maps),
            failed=sum(m.failed for m in maps),
            skipped=sum(m.skipped for m in maps),
            running=sum(m.running for m in maps),
            backoff=sum(m.backoff for m in maps),
        )

    def running(self, now: float | None = None) -> list[RunningRow]:
        """The running subtasks, longest-running first."""
        now = time.time() if now is None else now
        rows = [
            RunningRow(
                id=stand.id,
                elapsed=max(now - (stand.started_at or now), 0.0),
                attempt=stand.attempt,
                retrying=stand.backoff,
                error=stand.error if stand.backoff else None,
                items=_items(stand),
                batch=stand.batch,
            )
            for stand in self._stands()
            if _STATES[stand.status] == "running"
        ]
        return sorted(rows, key=lambda row: -row.elapsed)

    @property
    def tokens(self) -> int:
        """Tokens used so far, over every subtask and map item."""
        return sum(stand.tokens for stand in self._stands())

    @property
    def cost(self) -> float | None:
        """USD so far over the finished calls whose cost is known; None when none is."""
        costs = [s.cost for s in self._stands() if s.cost is not None]
        return sum(costs) if costs else None

    @property
    def cost_unknown(self) -> int:
        """Finished calls whose cost is unknown (no price for a call that used tokens)."""
        return sum(stand.cost_unknown for stand in self._stands())

    @property
    def eta_source(self) -> EtaSource:
        """How `eta` estimates: from learned durations when the plan has them."""
        runtime = self.runtime
        if runtime is not None and runtime.expected_source in LEARNED_SOURCES:
            return "learned durations"
        return "observed throughput"

    def eta(self, now: float | None = None) -> Eta:
        """The time left until every subtask has finished."""
        now = time.time() if now is None else now
        source = self.eta_source
        stands = self.record.subtasks
        if stands and all(stand.finished for stand in stands.values()):
            return Eta(0.0, source)
        if source == "learned durations":
            return Eta(self._critical_path_left(now), source)
        return Eta(self._throughput_left(now), source)

    def _critical_path_left(self, now: float) -> float:
        runtime = self.runtime
        assert runtime is not None
        left: dict[str, float] = {}
        for sid in runtime.order:
            stand = self.record.subtasks[sid]
            expected = runtime.expected.get(sid, 0.0)
            if stand.finished:
                left[sid] = 0.0
            elif _STATES[stand.status] == "running":
                left[sid] = max(expected - (now - (stand.started_at or now)), 0.0)
            else:
                left[sid] = expected
        paths = remaining_paths(runtime.order, runtime.dependencies, left)
        return max(paths.values(), default=0.0)

    def _throughput_left(self, now: float) -> float | None:
        finished = 0
        left = 0
        for stand in self._stands():
            if stand.preloaded:
                continue
            if stand.is_map:
                ran = stand.count("succeeded") + stand.count("failed")
                finished += ran
                if not stand.finished:
                    total = stand.items_total
                    left += 1 if total is None else max(total - stand.reused - ran, 0)
            elif stand.status in ("succeeded", "failed") and stand.started_at is not None:
                finished += 1
            elif not stand.finished:
                left += 1
        since = self.first_event_at
        elapsed = now - since if since is not None else 0.0
        if finished == 0 or elapsed <= 0:
            return None
        return left / (finished / elapsed)

    def snapshot(self, now: float | None = None) -> ProgressSnapshot:
        """Everything the live view shows, at `now` (Unix time; default: now)."""
        now = time.time() if now is None else now
        started = self.started_at
        return ProgressSnapshot(
            elapsed=max(now - started, 0.0) if started is not None else 0.0,
            counts=self.counts(),
            running=self.running(now),
            tokens=self.tokens,
            cost=self.cost,
            cost_unknown=self.cost_unknown,
            eta=self.eta(now),
            items=self.items(),
            planning=not self.record.subtasks,
            calls_total=self.calls_total(),
            calls_finished=self.calls_finished(),
            rate_limited=self.rate_limited,
            pace=self.pace(now),
            aggregating=self.aggregating(),
        )

    def calls_total(self) -> int:
        """Calls of the run: 1 per subtask, a map's items once its list is known."""
        return sum((s.items_total or 1) if s.is_map else 1 for s in self._stands())

    def calls_finished(self) -> int:
        """Calls over: the bar moves per finished map item, not per finished map."""
        done = 0
        for stand in self._stands():
            if stand.is_map and not stand.finished:
                items = _items(stand)
                done += items.finished if items is not None else 0
            elif stand.is_map:
                done += stand.items_total or 1
            else:
                done += int(stand.finished)
        return done

    def pace(self, now: float) -> float | None:
        """Calls finished a second over the last PACE_WINDOW seconds (None before any)."""
        finishes = self.record.finishes
        recent = [t for t in finishes[-4096:] if now - t <= PACE_WINDOW]
        if not recent:
            return None
        since = max(min(recent), self.first_event_at or min(recent))
        return len(recent) / max(now - since, PACE_WINDOW if now - since > PACE_WINDOW else 1.0)

    def aggregating(self) -> bool:
        """Whether the aggregate step is running (from its own lifecycle events)."""
        return self.record.aggregate == "running"
