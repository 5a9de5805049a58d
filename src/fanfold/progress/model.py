"""`Progress`: where a run stands, folded from its lifecycle events."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from fanfold.plan.graph import remaining_paths
from fanfold.progress.snapshot import (
    FINISHED_STATES,
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
from fanfold.scheduling.events import AGGREGATE, LifecycleEvent
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult

__all__ = ["Progress"]


class Progress:
    """Where a run stands, folded from its lifecycle events.

    Args:
        runtime: the compiled plan (`graph.fanfold_runtime`); it lists the subtasks up
            front and gives the expected durations. Without it (a goal not planned
            yet: see `set_runtime`) subtasks are known as their events arrive.
        inputs: the run's inputs, so a map over a run input knows its item count
            before it starts.
        started_at: when the run started (Unix time); by default the first event's time.
    """

    def __init__(
        self,
        runtime: PlanRuntime | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        started_at: float | None = None,
    ) -> None:
        self.runtime: PlanRuntime | None = None
        self.subtasks: dict[str, SubtaskProgress] = {}
        self.started_at = started_at
        self.first_event_at: float | None = None
        """When the first event of this run arrived: throughput is measured from here."""
        self.events = 0
        self.retries = 0
        self.rate_limited = 0
        """Retries after a 429."""
        self.finishes: list[float] = []
        """When each call (a subtask, a map item) finished, for the pace."""
        self.aggregate: State | None = None
        """The aggregate step, once its events arrive."""
        self.maps: set[str] = set()
        if runtime is not None:
            self.set_runtime(runtime, inputs=inputs)

    # -- feeding ------------------------------------------------------------------------

    def set_runtime(self, runtime: PlanRuntime, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Know the plan: every subtask starts out waiting (entries already seen stay)."""
        self.runtime = runtime
        self.maps = set(runtime.maps)
        known = self.subtasks
        self.subtasks = {}
        for sid in runtime.order:
            entry = known.pop(sid, None) or SubtaskProgress(id=sid)
            entry.is_map = entry.is_map or sid in runtime.maps
            listed = (inputs or {}).get(runtime.subtasks[sid].map or "")
            if entry.is_map and entry.items_total is None and isinstance(listed, list | tuple):
                entry.items_total = len(listed)
            self.subtasks[sid] = entry
        self.subtasks.update(known)  # events for ids the plan does not have, kept last

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
        for sid, result in results.items():
            entry = self._entry(sid)
            entry.state = FINISHED_STATES[result.status]
            entry.preloaded = True
            entry.error = result.error
            entry.tokens = result.usage.total_tokens
            entry.add_cost(getattr(result, "cost", None), entry.tokens)
            if result.items is not None:
                entry.is_map = True
                entry.items_total = len(result.items)
                entry.items_reused = len(result.items)
        for sid, items in (reused_items or {}).items():
            self._entry(sid).items_reused = len(list(items))

    def feed(self, event: Mapping[str, Any]) -> SubtaskProgress | None:
        """Fold in one lifecycle event (others are ignored).

        Returns:
            The subtask's entry when the event finished a subtask or a whole map (not
            an item), else None.
        """
        parsed = LifecycleEvent.parse(event)
        if parsed is None:
            return None
        return self.feed_event(parsed)

    def feed_event(self, event: LifecycleEvent) -> SubtaskProgress | None:
        """Fold in one typed lifecycle event (see `feed`)."""
        self.events += 1
        when = event.time
        if self.started_at is None:
            self.started_at = when
        if self.first_event_at is None:
            self.first_event_at = when
        if event.status == "retrying":
            self.retries += 1
            if (event.reason or "").startswith("429"):
                self.rate_limited += 1
        if event.finished and (event.item is not None or event.subtask not in self.maps):
            self.finishes.append(when)
        if event.subtask == AGGREGATE and (
            self.runtime is None or AGGREGATE not in self.runtime.subtasks
        ):
            self.aggregate = "running" if not event.finished else FINISHED_STATES[event.status]
            return None
        entry = self._entry(event.subtask)
        status = event.status
        if event.item is not None:
            self._feed_item(entry, event.item, status, event)
            return None
        if status == "started":
            entry.state = "running"
            entry.retrying = False
            if entry.started_at is None:
                entry.started_at = event.started_at or when
            if event.items is not None:
                entry.is_map = True
                entry.items_total = event.items
            if event.attempt is not None:
                entry.attempt = event.attempt
        elif status == "retrying":
            entry.retrying = True
            entry.error = event.reason or event.error
        elif status == "batch" and isinstance(event.batch, dict):
            entry.batch = event.batch
        elif status in FINISHED_STATES:
            entry.state = FINISHED_STATES[status]
            entry.retrying = False
            entry.finished_at = event.finished_at or when
            entry.error = event.error
            tokens = event.total_tokens
            if entry.is_map:
                if tokens is not None:
                    entry.tokens = tokens
                if event.cost is not None:
                    entry.cost, entry.cost_unknown = event.cost, 0
                for i, state in entry.item_states.items():
                    if state in ("running", "backoff"):  # cancelled: its map has finished
                        entry.item_states[i] = "failed"
            else:
                entry.tokens = tokens or 0
                entry.add_cost(event.cost, entry.tokens)
            return entry
        return None

    def _feed_item(
        self, entry: SubtaskProgress, index: int, status: str, event: LifecycleEvent
    ) -> None:
        entry.is_map = True
        if status == "started":
            entry.item_states[index] = "running"
            if entry.state == "waiting":  # the map's own event should have come first
                entry.state = "running"
                entry.started_at = event.started_at or event.time
        elif status == "retrying":
            entry.item_states[index] = "backoff"  # not in flight: it holds no slot
        elif status in FINISHED_STATES:
            entry.item_states[index] = FINISHED_STATES[status]
            tokens = event.total_tokens or 0
            entry.tokens += tokens
            entry.add_cost(event.cost, tokens)

    def _entry(self, sid: str) -> SubtaskProgress:
        entry = self.subtasks.get(sid)
        if entry is None:
            entry = self.subtasks[sid] = SubtaskProgress(id=sid)
        return entry

    # -- reading ------------------------------------------------------------------------

    def counts(self) -> Counts:
        """Subtasks per state."""
        states = [entry.state for entry in self.subtasks.values()]
        return Counts(
            done=states.count("done"),
            failed=states.count("failed"),
            skipped=states.count("skipped"),
            running=sum(e.state == "running" and not e.retrying for e in self.subtasks.values()),
            waiting=states.count("waiting"),
            backoff=sum(e.state == "running" and e.retrying for e in self.subtasks.values()),
        )

    def items(self) -> ItemCounts | None:
        """Every map's items added up, or None when no map is known."""
        maps = [e.items for e in self.subtasks.values() if e.items is not None]
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
                id=entry.id,
                elapsed=max(now - (entry.started_at or now), 0.0),
                attempt=entry.attempt,
                retrying=entry.retrying,
                error=entry.error if entry.retrying else None,
                items=entry.items,
                batch=entry.batch,
            )
            for entry in self.subtasks.values()
            if entry.state == "running"
        ]
        return sorted(rows, key=lambda row: -row.elapsed)

    @property
    def tokens(self) -> int:
        """Tokens used so far, over every subtask and map item."""
        return sum(entry.tokens for entry in self.subtasks.values())

    @property
    def cost(self) -> float | None:
        """USD so far over the calls whose events carried a cost; None when none did."""
        costs = [e.cost for e in self.subtasks.values() if e.cost is not None]
        return sum(costs) if costs else None

    @property
    def cost_unknown(self) -> int:
        """Finished calls that used tokens but carried no cost."""
        return sum(entry.cost_unknown for entry in self.subtasks.values())

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
        if self.subtasks and all(entry.finished for entry in self.subtasks.values()):
            return Eta(0.0, source)
        if source == "learned durations":
            return Eta(self._critical_path_left(now), source)
        return Eta(self._throughput_left(now), source)

    def _critical_path_left(self, now: float) -> float:
        runtime = self.runtime
        assert runtime is not None
        left: dict[str, float] = {}
        for sid in runtime.order:
            entry = self.subtasks[sid]
            expected = runtime.expected.get(sid, 0.0)
            if entry.finished:
                left[sid] = 0.0
            elif entry.state == "running":
                left[sid] = max(expected - (now - (entry.started_at or now)), 0.0)
            else:
                left[sid] = expected
        paths = remaining_paths(runtime.order, runtime.dependencies, left)
        return max(paths.values(), default=0.0)

    def _throughput_left(self, now: float) -> float | None:
        finished = 0
        left = 0
        for entry in self.subtasks.values():
            if entry.preloaded:
                continue
            if entry.is_map:
                states = list(entry.item_states.values())
                ran = states.count("done") + states.count("failed")
                finished += ran
                if not entry.finished:
                    total = entry.items_total
                    left += 1 if total is None else max(total - entry.items_reused - ran, 0)
            elif entry.state in ("done", "failed") and entry.started_at is not None:
                finished += 1
            elif not entry.finished:
                left += 1
        since = self.first_event_at
        elapsed = now - since if since is not None else 0.0
        if finished == 0 or elapsed <= 0:
            return None
        return left / (finished / elapsed)

    def snapshot(self, now: float | None = None) -> ProgressSnapshot:
        """Everything the live view shows, at `now` (Unix time; default: now)."""
        now = time.time() if now is None else now
        return ProgressSnapshot(
            elapsed=max(now - self.started_at, 0.0) if self.started_at is not None else 0.0,
            counts=self.counts(),
            running=self.running(now),
            tokens=self.tokens,
            cost=self.cost,
            cost_unknown=self.cost_unknown,
            eta=self.eta(now),
            items=self.items(),
            planning=not self.subtasks,
            calls_total=self.calls_total(),
            calls_finished=self.calls_finished(),
            rate_limited=self.rate_limited,
            pace=self.pace(now),
            aggregating=self.aggregating(),
        )

    def calls_total(self) -> int:
        """Calls of the run: 1 per subtask, a map's items once its list is known."""
        return sum((e.items_total or 1) if e.is_map else 1 for e in self.subtasks.values())

    def calls_finished(self) -> int:
        """Calls over: the bar moves per finished map item, not per finished map."""
        done = 0
        for e in self.subtasks.values():
            if e.is_map and not e.finished:
                items = e.items
                done += items.finished if items is not None else 0
            elif e.is_map:
                done += e.items_total or 1
            else:
                done += int(e.finished)
        return done

    def pace(self, now: float) -> float | None:
        """Calls finished a second over the last PACE_WINDOW seconds (None before any)."""
        recent = [t for t in self.finishes[-4096:] if now - t <= PACE_WINDOW]
        if not recent:
            return None
        since = max(min(recent), self.first_event_at or min(recent))
        return len(recent) / max(now - since, PACE_WINDOW if now - since > PACE_WINDOW else 1.0)

    def aggregating(self) -> bool:
        """Whether the aggregate step is running (from its own lifecycle events)."""
        return self.aggregate == "running"
