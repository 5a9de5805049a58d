"""The run record as it grows: lifecycle events and results taken one at a time.

`RecordBuilder` keeps what a run has said so far: every event (the record's segments
are read off them) and, per subtask, where it stands (`LiveSubtask`: its status, its
calls queued, in flight, in backoff or over, its tokens and cost). Taking an event costs
O(1), so a live view can read the stands several times a second during a 5,000-item
map. `record()` turns what it holds into a `RunRecord` with `build_record`'s rules:
`build_record` is a `RecordBuilder` given every event at once.

One rule for a finished call, in both: until the run's state holds its result, a call's
result is read off its finishing event (`result_of`); its cost is `call_cost` of that
result (`SubtaskResult.cost`, as the run computed it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from fanfold.models.resolve import model_label
from fanfold.record.calls import call_cost, priced
from fanfold.record.model import RecordStatus, RunRecord
from fanfold.scheduling.events import AGGREGATE, LifecycleEvent
from fanfold.scheduling.prices import PriceTable
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult, TokenUsage

__all__ = ["CallKey", "ItemState", "LiveSubtask", "RecordBuilder", "result_of"]

CallKey = tuple[str, int | None]
"""A call: (subtask id, item index or None)."""
ItemState = Literal["calling", "backoff", "succeeded", "failed", "skipped"]
_FINISHED = frozenset({"succeeded", "failed", "skipped"})


def result_of(
    event: LifecycleEvent, model: str | None = None, started: int = 0
) -> SubtaskResult:
    """A finished call's result as its finishing event tells it (before the state has it).

    Args:
        model: the call's model label (events do not carry it).
        started: the call's `started` events, for an event that does not say `attempts`.
    """
    return SubtaskResult(
        id=event.call,
        status=event.status,
        error=event.error,
        usage=TokenUsage(total_tokens=event.total_tokens or 0),
        started_at=event.started_at,
        finished_at=event.finished_at if event.finished_at is not None else event.time,
        attempts=_told_attempts(event, started),
        model=model,
        index=event.item,
        cost=event.cost,
        cost_source=event.cost_source,
        cached=event.cached,
    )


def _told_attempts(event: LifecycleEvent, otherwise: int = 0) -> int:
    """The attempts the event says the call made, else `otherwise`."""
    told = (event.model_extra or {}).get("attempts")
    return told if isinstance(told, int) else otherwise


@dataclass(eq=False)
class LiveSubtask:
    """Where one subtask stands, kept up to date event by event (a map: its items too)."""

    id: str
    status: RecordStatus = "not run"
    """not run, running, succeeded, failed or skipped."""
    is_map: bool = False
    started_at: float | None = None
    """When its first attempt (a map: the map) started, in this run."""
    finished_at: float | None = None
    attempt: int = 0
    backoff: bool = False
    """Waiting out a retry's backoff (its next attempt has not started yet)."""
    error: str | None = None
    items_total: int | None = None
    item_states: dict[int, ItemState] = field(default_factory=dict)
    tally: dict[str, int] = field(default_factory=dict)
    """Items per state (calling, backoff, succeeded, failed, skipped), this run's events."""
    reused: int = 0
    """Items that succeeded in an earlier run and are not run again."""
    preloaded: bool = False
    """Finished before this run started (a resumed or retried run)."""
    batch: dict[str, Any] | None = None
    tokens: int = 0
    cost: float | None = None
    """USD over its finished calls whose cost is known; None when none is."""
    cost_unknown: int = 0
    """Finished calls whose cost is unknown."""
    calls: dict[int | None, tuple[int, float | None]] = field(default_factory=dict)
    """Each finished call's tokens and cost, as counted in `tokens` and `cost`."""

    @property
    def finished(self) -> bool:
        """Succeeded, failed or skipped."""
        return self.status in _FINISHED

    def count(self, state: str) -> int:
        """Items in `state` (see `tally`)."""
        return self.tally.get(state, 0)

    def move(self, index: int, state: ItemState) -> None:
        """Item `index` is now in `state`."""
        before = self.item_states.get(index)
        if before is not None:
            self.tally[before] -= 1
        self.item_states[index] = state
        self.tally[state] = self.tally.get(state, 0) + 1

    def account(self, index: int | None, tokens: int, cost: float | None) -> None:
        """Count a finished call's tokens and cost (replacing what it counted before)."""
        old = self.calls.get(index)
        if old is not None:
            self._add(-old[0], old[1], -1)
        self.calls[index] = (tokens, cost)
        self._add(tokens, cost, 1)

    def _add(self, tokens: int, cost: float | None, sign: int) -> None:
        self.tokens += tokens
        if cost is None:
            self.cost_unknown += sign
        else:
            self.cost = (self.cost or 0.0) + sign * cost


class RecordBuilder:
    """A run's record as it grows (see the module's doc).

    Args:
        runtime: the compiled plan; without it (a goal not planned yet: `set_runtime`)
            subtasks are known as their events arrive.
        inputs: the run's inputs, so a map over a run input knows its item count.
        prices: extra prices, for calls that carry no cost of their own.
        max_concurrency: the run's concurrency limit, for the lower bound.
        started_at: when the run started (Unix time); by default the first event's time.
    """

    def __init__(
        self,
        runtime: PlanRuntime | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        prices: Any = None,
        max_concurrency: int | None = None,
        started_at: float | None = None,
    ) -> None:
        self.runtime: PlanRuntime | None = None
        self._labels: dict[str, str | None] = {}
        self.extra_prices = prices
        self.prices = PriceTable().merged(prices) if prices else PriceTable()
        self.max_concurrency = max_concurrency
        self.started_at = started_at
        self.first_event_at: float | None = None
        self.events: list[LifecycleEvent] = []
        """Every lifecycle event, in the order they came."""
        self.in_order = True
        """Whether `events` is sorted by time (events of one process are)."""
        self.by_call: dict[CallKey, list[LifecycleEvent]] = {}
        self.call_results: dict[CallKey, SubtaskResult | LifecycleEvent] = {}
        """Calls over whose subtask's result is not in yet: their finishing events (read
        as results by `finished_calls`), or items an earlier run left."""
        self.results: dict[str, SubtaskResult] = {}
        """Results given whole (`add_result`, `preload`)."""
        self.subtasks: dict[str, LiveSubtask] = {}
        self.maps: set[str] = set()
        self.retries = 0
        self.rate_limited = 0
        """Retries after a 429."""
        self.finishes: list[float] = []
        """When each call (a subtask, a map item) finished, for the pace."""
        self.aggregate: RecordStatus | None = None
        """The aggregate step's status, once its events arrive."""
        if runtime is not None:
            self.set_runtime(runtime, inputs=inputs)

    # -- feeding ------------------------------------------------------------------------

    def set_runtime(self, runtime: PlanRuntime, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Know the plan: every subtask starts out not run (stands already seen stay)."""
        self.runtime = runtime
        self._labels.clear()
        table = runtime.prices
        self.prices = table.merged(self.extra_prices) if self.extra_prices else table
        self.maps = set(runtime.maps)
        known = self.subtasks
        self.subtasks = {}
        for sid in runtime.order:
            stand = known.pop(sid, None) or LiveSubtask(id=sid)
            stand.is_map = stand.is_map or sid in runtime.maps
            listed = (inputs or {}).get(runtime.subtasks[sid].map or "")
            if stand.is_map and stand.items_total is None and isinstance(listed, list | tuple):
                stand.items_total = len(listed)
            self.subtasks[sid] = stand
        self.subtasks.update(known)  # events for ids the plan does not have, kept last

    def preload(
        self,
        results: Mapping[str, SubtaskResult],
        *,
        reused_items: Mapping[str, Iterable[Any]] | None = None,
    ) -> None:
        """Results an earlier run left, which this run does not run again.

        Args:
            results: subtask id -> result.
            reused_items: map id -> the items of it that this run reuses (results).
        """
        for sid, result in results.items():
            self.add_result(sid, result)
            self._stand(sid).preloaded = True
        for sid, items in (reused_items or {}).items():
            stand = self._stand(sid)
            stand.is_map = True
            for position, item in enumerate(items):
                stand.reused += 1
                if isinstance(item, SubtaskResult):
                    index = item.index if item.index is not None else position
                    self.call_results[(sid, index)] = item
                    stand.account(index, item.usage.total_tokens, self._cost(sid, item))

    def add_result(self, sid: str, result: SubtaskResult) -> None:
        """A subtask's whole result (a map's: with its items); it replaces its events'."""
        self.results[sid] = result
        stand = self._stand(sid)
        stand.status = result.status
        stand.backoff = False
        stand.error = result.error
        if result.items is not None:
            stand.is_map = True
            stand.items_total = len(result.items)
            for index in list(stand.calls):
                if index is not None:
                    old_tokens, old_cost = stand.calls.pop(index)
                    stand._add(-old_tokens, old_cost, -1)
            for position, item in enumerate(result.items):
                index = item.index if item.index is not None else position
                stand.account(index, item.usage.total_tokens, self._cost(sid, item))
        else:
            stand.account(None, result.usage.total_tokens, self._cost(sid, result))

    def add_event(self, raw: Any) -> LiveSubtask | None:
        """Take one lifecycle event (a dict or a `LifecycleEvent`; others are ignored).

        Returns:
            The subtask's stand when the event finished a subtask or a whole map (not an
            item), else None.
        """
        event = LifecycleEvent.parse(raw)
        if event is None:
            return None
        when = event.time
        events = self.events
        if events and when < events[-1].time:
            self.in_order = False
        events.append(event)
        key = (event.subtask, event.item)
        calls = self.by_call.get(key)
        if calls is None:
            self.by_call[key] = [event]
        else:
            calls.append(event)
        if self.started_at is None:
            self.started_at = when
        if self.first_event_at is None:
            self.first_event_at = when
        status = event.status
        if status == "retrying":
            self.retries += 1
            if (event.reason or "").startswith("429"):
                self.rate_limited += 1
        finished = status in _FINISHED
        if finished and (event.item is not None or event.subtask not in self.maps):
            self.finishes.append(when)
        if event.subtask == AGGREGATE and (
            self.runtime is None or AGGREGATE not in self.runtime.subtasks
        ):
            self.aggregate = status if finished else "running"  # type: ignore[assignment]
            return None
        stand = self._stand(event.subtask)
        if finished:
            self.call_results[key] = event
        if event.item is not None:
            self._item(stand, event.item, event)
            return None
        if status == "started":
            stand.status = "running"
            stand.backoff = False
            if stand.started_at is None:
                stand.started_at = event.begin
            if event.items is not None:
                stand.is_map = True
                stand.items_total = event.items
            if event.attempt is not None:
                stand.attempt = event.attempt
        elif status == "retrying":
            stand.backoff = True
            stand.error = event.reason or event.error
        elif status == "batch" and isinstance(event.batch, dict):
            stand.batch = event.batch
        elif finished:
            stand.status = status  # type: ignore[assignment]
            stand.backoff = False
            stand.finished_at = event.finished_at or when
            stand.error = event.error
            if stand.is_map:
                for index, state in stand.item_states.items():
                    if state in ("calling", "backoff"):  # cancelled: its map has finished
                        stand.move(index, "failed")
            elif event.subtask not in self.results:
                stand.account(None, event.total_tokens or 0, self._event_cost(event))
            return stand
        return None

    def _item(self, stand: LiveSubtask, index: int, event: LifecycleEvent) -> None:
        stand.is_map = True
        status = event.status
        if status == "started":
            stand.move(index, "calling")
            if stand.status == "not run":  # the map's own event should have come first
                stand.status = "running"
                stand.started_at = event.begin
        elif status == "retrying":
            stand.move(index, "backoff")  # not in flight: it holds no slot
        elif status in _FINISHED:
            stand.move(index, status)  # type: ignore[arg-type]
            if stand.id not in self.results:
                stand.account(index, event.total_tokens or 0, self._event_cost(event))

    def _stand(self, sid: str) -> LiveSubtask:
        stand = self.subtasks.get(sid)
        if stand is None:
            stand = self.subtasks[sid] = LiveSubtask(id=sid, is_map=sid in self.maps)
        return stand

    def _model(self, sid: str) -> str | None:
        if sid in self._labels:
            return self._labels[sid]
        runtime = self.runtime
        label = None
        if runtime is not None and sid in runtime.models:
            model = runtime.models.get(sid)
            label = model_label(model) if model is not None else None
        self._labels[sid] = label
        return label

    def _cost(self, sid: str, result: SubtaskResult) -> float | None:
        return call_cost(result, self.prices)

    def _started(self, event: LifecycleEvent) -> int:
        return sum(e.status == "started" for e in self.by_call[(event.subtask, event.item)])

    def _event_cost(self, event: LifecycleEvent) -> float | None:
        """`call_cost(result_of(event))`, without building the result (O(1) per event)."""
        attempts = _told_attempts(event, -1)
        return priced(
            event.cached,
            event.cost,
            attempts if attempts >= 0 else self._started(event),
            self._model(event.subtask),
            lambda: TokenUsage(total_tokens=event.total_tokens or 0),
            self.prices,
        )

    def finished_calls(self) -> dict[CallKey, SubtaskResult]:
        """Each call over whose subtask's result is not in yet, as a result."""
        return {
            key: held
            if isinstance(held, SubtaskResult)
            else result_of(held, self._model(key[0]), self._started(held))
            for key, held in self.call_results.items()
        }

    # -- reading ------------------------------------------------------------------------

    def sorted_events(self) -> list[LifecycleEvent]:
        """Every event by time (as `parse_events` orders them)."""
        if self.in_order:
            return self.events
        return sorted(self.events, key=lambda e: e.time)

    def record(
        self,
        state: Mapping[str, Any] | BaseModel | None = None,
        *,
        runtime: PlanRuntime | None = None,
        max_concurrency: int | None = None,
        prices: Any = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """The record of the run so far, or of `state` (its final or last saved values).

        Without `state` the run is taken to be going on: calls that started and are not
        over are "running", and the plan is the one `set_runtime` gave. With a state,
        its results are the truth, calls that never finished are "unfinished", and the
        plan is `runtime`'s, else the one in the state (`build_record`'s arguments).
        """
        from fanfold.record.build import assemble

        running = state is None
        if state is None:
            state = {"results": dict(self.results)}
            runtime = runtime or self.runtime
        elif isinstance(state, BaseModel):
            state = {name: getattr(state, name) for name in type(state).model_fields}
        if self.results:
            given = state.get("results") or {}
            state = {**state, "results": {**self.results, **given}}
        if inputs is not None and not state.get("inputs"):
            state = {**state, "inputs": dict(inputs)}
        return assemble(
            state,
            self,
            runtime=runtime,
            max_concurrency=max_concurrency if max_concurrency is not None else (
                self.max_concurrency
            ),
            prices=prices if prices is not None else self.extra_prices,
            running=running,
        )
