"""Run progress: a model fed by lifecycle events, a live terminal view of it, plain lines.

`Progress` folds the dispatcher's lifecycle events (`{"type": "fanfold.subtask", ...}`,
what `stream_mode="custom"` yields) into where a run stands: each subtask waiting,
running, done, failed or skipped; a map's items counted; tokens (and cost, when events
carry one) so far; and an estimate of the time left. It is plain data and needs no
terminal: feed it events, then read `snapshot(now)`.

`render_progress(snapshot)` draws a snapshot with rich; `LiveProgress` redraws it a few
times a second on stderr while a run streams. `PlainProgress` prints one line per
finished subtask instead, for logs and pipes.

How the estimate is made (`Eta.source` says which):

- "learned durations": when the plan's expected durations come from earlier runs or
  from hints (`PlanRuntime.expected_source` "learned", "mixed" or "hints"), the time
  left is the longest expected path through the unfinished subtasks; a running
  subtask counts its expected duration minus the time it has run so far.
- "observed throughput": otherwise, the calls left (a subtask is one call, a map one
  call per item) over the calls finished per second so far in this run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fanfold.formatting import money
from fanfold.plan.graph import remaining_paths
from fanfold.scheduling.events import AGGREGATE, LifecycleEvent
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult

__all__ = [
    "Counts",
    "Eta",
    "ItemCounts",
    "LiveProgress",
    "PlainProgress",
    "Progress",
    "ProgressSnapshot",
    "RunningRow",
    "SubtaskProgress",
    "render_progress",
]

State = Literal["waiting", "running", "backoff", "done", "failed", "skipped"]
EtaSource = Literal["learned durations", "observed throughput"]

LEARNED_SOURCES = frozenset({"learned", "mixed", "hints"})
"""`PlanRuntime.expected_source` values whose durations are worth an estimate."""

_FINISHED: dict[str, State] = {"succeeded": "done", "failed": "failed", "skipped": "skipped"}
_ENDED = frozenset({"done", "failed", "skipped"})
PACE_WINDOW = 10.0
"""Seconds over which the live view measures the current pace (calls finished a second)."""


@dataclass(frozen=True)
class ItemCounts:
    """A map's items: how many are done, failed, skipped and running, out of `total`."""

    total: int | None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    """Items with a call in flight at the provider."""
    backoff: int = 0
    """Items waiting out a retry's backoff (not in flight)."""

    @property
    def finished(self) -> int:
        """Items that will not run again in this run."""
        return self.done + self.failed + self.skipped

    @property
    def waiting(self) -> int | None:
        """Items queued: not started yet, or waiting for a slot, a limit or an upstream item."""
        if self.total is None:
            return None
        return max(self.total - self.finished - self.running - self.backoff, 0)


@dataclass
class SubtaskProgress:
    """Where one subtask stands. For a map, `item_states` holds its items'."""

    id: str
    state: State = "waiting"
    is_map: bool = False
    started_at: float | None = None
    """When its first attempt (a map: the map) started, in this run."""
    finished_at: float | None = None
    attempt: int = 0
    retrying: bool = False
    """A transient error happened and the next attempt has not started yet."""
    error: str | None = None
    tokens: int = 0
    cost: float | None = None
    """USD, summed over the calls whose events carried a `cost`; None when none did."""
    cost_unknown: int = 0
    """Finished calls that used tokens but carried no cost."""
    items_total: int | None = None
    item_states: dict[int, State] = field(default_factory=dict)
    items_reused: int = 0
    """Items that succeeded in an earlier run and are not run again."""
    preloaded: bool = False
    """Finished before this run started (a resumed or retried run)."""

    @property
    def items(self) -> ItemCounts | None:
        """The map's item counts, or None for a subtask that is not a map."""
        if not self.is_map:
            return None
        states = list(self.item_states.values())
        return ItemCounts(
            total=self.items_total,
            done=self.items_reused + states.count("done"),
            failed=states.count("failed"),
            skipped=states.count("skipped"),
            running=states.count("running"),
            backoff=states.count("backoff"),
        )

    @property
    def finished(self) -> bool:
        """Done, failed or skipped."""
        return self.state in _ENDED

    def add_cost(self, cost: Any, tokens: int) -> None:
        """Count one finished call's cost (missing: unknown, unless it used no tokens)."""
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            self.cost = (self.cost or 0.0) + float(cost)
        elif tokens:
            self.cost_unknown += 1


@dataclass(frozen=True)
class Counts:
    """Subtasks per state (a map counts once)."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    waiting: int = 0
    backoff: int = 0
    """Running subtasks waiting out a retry's backoff (counted apart from `running`)."""

    @property
    def total(self) -> int:
        """Every subtask known."""
        return self.done + self.failed + self.skipped + self.running + self.waiting + self.backoff

    @property
    def finished(self) -> int:
        """Done, failed or skipped."""
        return self.done + self.failed + self.skipped


@dataclass(frozen=True)
class Eta:
    """The time left, and how it was estimated; `seconds` is None when it cannot be yet."""

    seconds: float | None
    source: EtaSource


@dataclass(frozen=True)
class RunningRow:
    """One running subtask as the live view lists it."""

    id: str
    elapsed: float
    attempt: int
    retrying: bool = False
    error: str | None = None
    """The error being retried, while `retrying`."""
    items: ItemCounts | None = None


@dataclass(frozen=True)
class ProgressSnapshot:
    """Everything the live view shows, at one moment."""

    elapsed: float
    counts: Counts
    running: list[RunningRow]
    tokens: int
    cost: float | None
    cost_unknown: int
    eta: Eta
    items: ItemCounts | None = None
    """All map items together, when the plan has maps."""
    planning: bool = False
    """No subtask is known yet (a goal is being planned)."""
    calls_total: int = 0
    """Calls the run makes (a map: one per item, once its list is known)."""
    calls_finished: int = 0
    rate_limited: int = 0
    """Retries after a 429 so far."""
    pace: float | None = None
    """Calls finished a second over the last PACE_WINDOW seconds."""
    aggregating: bool = False
    """Every subtask is over and the aggregate step is running."""


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
            entry.state = _FINISHED[result.status]
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
            self.aggregate = "running" if not event.finished else _FINISHED[event.status]
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
        elif status in _FINISHED:
            entry.state = _FINISHED[status]
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
        elif status in _FINISHED:
            entry.item_states[index] = _FINISHED[status]
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


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


# -- rendering ---------------------------------------------------------------------------


def format_seconds(seconds: float, *, tenths: bool = True) -> str:
    """`4.2s` (`4s` without `tenths`), `3m05s`, `1h02m`."""
    if seconds < 60:
        return f"{seconds:.1f}s" if tenths else f"{seconds:.0f}s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(int(seconds) // 60, 60)
    return f"{hours}h{rest:02d}m"


def eta_text(eta: Eta) -> str:
    """`ETA ~41s (learned durations)`, or `ETA ? (...)` before there is an estimate."""
    if eta.seconds is None:
        return f"ETA ? ({eta.source})"
    if eta.seconds < 1:
        return f"ETA <1s ({eta.source})"
    return f"ETA ~{format_seconds(eta.seconds, tenths=False)} ({eta.source})"


def _items_text(items: ItemCounts) -> str:
    total = "?" if items.total is None else str(items.total)
    parts = [f"{items.done}/{total} items done"]
    for count, word in ((items.failed, "failed"), (items.skipped, "skipped")):
        if count:
            parts.append(f"{count} {word}")
    parts.append(f"{items.running} in flight")
    if items.backoff:
        parts.append(f"{items.backoff} in backoff")
    if items.waiting:
        parts.append(f"{items.waiting} queued")
    return " · ".join(parts)


def render_progress(snapshot: ProgressSnapshot, *, max_running: int = 10) -> RenderableType:
    """The live view of `snapshot`: a bar, the counts, and at most `max_running` running rows.

    Every text from the run (ids, errors) is shown as is, never read as rich markup.
    """
    if snapshot.planning:
        return Text(f"fanfold  planning the goal…  {format_seconds(snapshot.elapsed)}")
    counts = snapshot.counts
    finished = counts.running == 0 and counts.waiting == 0 and counts.backoff == 0
    status = f"{counts.finished}/{counts.total} subtasks  {format_seconds(snapshot.elapsed)}"
    if snapshot.aggregating:
        status += "  aggregating"
    else:
        status += "  finished" if finished else f"  {eta_text(snapshot.eta)}"
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True, min_width=7)
    head.add_column(no_wrap=True, min_width=16)
    head.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    head.add_row(
        Text("fanfold", style="bold"),
        ProgressBar(
            total=max(snapshot.calls_total, counts.total, 1),
            completed=snapshot.calls_finished or counts.finished,
            width=16,
        ),
        Text(status),
    )
    tally = Text(no_wrap=True, overflow="ellipsis")
    for label, count, style in (
        ("done", counts.done, "green"),
        ("failed", counts.failed, "red" if counts.failed else ""),
        ("skipped", counts.skipped, "yellow" if counts.skipped else ""),
        ("running", counts.running, "blue"),
        ("backoff", counts.backoff, "magenta"),
        ("waiting", counts.waiting, "dim"),
    ):
        if label == "backoff" and not count:
            continue  # counted apart only while something waits out a backoff
        if tally:
            tally.append(" · ")
        tally.append(f"{label} {count}", style=style)
    tally.append(f"   tokens {snapshot.tokens:,}")
    if snapshot.cost is not None:
        unknown = snapshot.cost_unknown
        unknown_text = f" (+{unknown} calls without a cost)" if unknown else ""
        tally.append(f"   cost {money(snapshot.cost)}{unknown_text}")
    if snapshot.rate_limited:
        tally.append(f"   429s {snapshot.rate_limited}", style="magenta")
    if snapshot.pace is not None:
        tally.append(f"   pace {snapshot.pace:.1f} calls/s")
    parts: list[RenderableType] = [head, tally]
    if snapshot.items is not None:
        line = "map items: " + _items_text(snapshot.items).replace(" items done", " done")
        parts.append(Text(line, style="dim", no_wrap=True, overflow="ellipsis"))
    rows = snapshot.running[:max_running]
    if snapshot.aggregating:
        rows = [RunningRow(id="aggregate", elapsed=0.0, attempt=1), *rows][:max_running]
    if rows:
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, overflow="ellipsis", max_width=40)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        for row in rows:
            notes = []
            if row.items is not None:
                notes.append(_items_text(row.items))
            if row.attempt > 1:
                notes.append(f"attempt {row.attempt}")
            if row.retrying:
                notes.append(f"retrying after: {row.error}" if row.error else "retrying")
            elapsed = (
                "" if row.id == "aggregate" and not row.elapsed else format_seconds(row.elapsed)
            )
            table.add_row(Text("  " + row.id), Text(elapsed), Text(", ".join(notes)))
        parts.append(table)
    hidden = len(snapshot.running) - len(rows)
    if hidden > 0:
        parts.append(Text(f"  … and {hidden} more running", style="dim"))
    return Group(*parts)


# -- reporters ---------------------------------------------------------------------------


def finished_line(entry: SubtaskProgress) -> str:
    """The plain line of a finished subtask: `  failed    summarise  <error>`."""
    note = f"  {entry.error}" if entry.error and entry.state == "failed" else ""
    return f"  {entry.state:<9} {entry.id}{note}"


def retry_line(event: LifecycleEvent) -> str:
    """`  retrying  s7: 429 from the provider, retrying in 0.4 s`."""
    line = f"  retrying  {event.call}"
    reason = event.reason or (event.error.split(":", 1)[0] if event.error else None)
    if reason:
        line += f": {reason}"
    if event.delay is not None:
        line += f", retrying in {event.delay:.1f} s"
    return line


class PlainProgress:
    """One line per finished subtask (a map: one line, not one per item); for pipes.

    A line is `  <status> <subtask id>` with the event's status (`succeeded`, `failed`,
    `skipped`), and `  retrying  <subtask id>` when a subtask's call is retried.

    Args:
        write: prints one line (e.g. to stderr).
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_runtime(self, runtime: PlanRuntime, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Nothing to do: the lines need no plan."""

    def preload(self, results: Mapping[str, SubtaskResult], **_: Any) -> None:
        """Nothing to do: earlier results print no line."""

    def feed(self, event: Mapping[str, Any]) -> None:
        """Print the line of a finished (or retried) subtask; items and starts print none."""
        parsed = LifecycleEvent.parse(event)
        if parsed is None or parsed.item is not None or parsed.status == "started":
            return
        self._write(
            retry_line(parsed)
            if parsed.status == "retrying"
            else f"  {parsed.status:<9} {parsed.subtask}"
        )

    def note(self, text: str) -> None:
        """Print a line about the run (e.g. what the planner planned)."""
        self._write(text)


class LiveProgress:
    """A `Progress` drawn on the terminal and redrawn a few times a second.

    Use as a context manager around the run; feed it events from the run's thread. A
    failed subtask's line (with its error) is printed above the view and stays.

    Args:
        progress: the model to draw (a new one by default).
        console: where to draw; stderr by default.
        refresh_per_second: redraws per second.
        max_running: the most running subtasks listed; the rest are counted.
    """

    def __init__(
        self,
        progress: Progress | None = None,
        *,
        console: Console | None = None,
        refresh_per_second: float = 4,
        max_running: int = 10,
    ) -> None:
        self.progress = progress or Progress()
        self.console = console or Console(stderr=True)
        self.max_running = max_running
        # Events arrive on the run's thread; Live redraws from its own.
        self._lock = threading.RLock()
        self._live = Live(
            console=self.console,
            refresh_per_second=refresh_per_second,
            get_renderable=self.render,
            redirect_stdout=False,  # the report goes to stdout, maybe a file: leave it be
            transient=False,
        )

    def render(self) -> RenderableType:
        """The view as it stands now."""
        with self._lock:
            return render_progress(self.progress.snapshot(), max_running=self.max_running)

    def __enter__(self) -> LiveProgress:
        self._live.start(refresh=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()  # draws the last frame, which stays above the report

    def set_runtime(self, runtime: PlanRuntime, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Know the plan (for a goal: once the planner made it)."""
        with self._lock:
            self.progress.set_runtime(runtime, inputs=inputs)

    def preload(
        self,
        results: Mapping[str, SubtaskResult],
        *,
        reused_items: Mapping[str, Iterable[Any]] | None = None,
    ) -> None:
        """Count an earlier run's results as finished."""
        with self._lock:
            self.progress.preload(results, reused_items=reused_items)

    def feed(self, event: Mapping[str, Any]) -> None:
        """Fold in one event; a failure is also printed above the view."""
        with self._lock:
            finished = self.progress.feed(event)
        if finished is not None and finished.state == "failed":
            self.console.print(Text(finished_line(finished), style="red"), soft_wrap=True)

    def note(self, text: str) -> None:
        """Print a line above the view."""
        self.console.print(Text(text), soft_wrap=True)
