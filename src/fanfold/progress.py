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

from fanfold.scheduling.dispatcher import EVENT_TYPE
from fanfold.scheduling.priorities import remaining_paths
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

State = Literal["waiting", "running", "done", "failed", "skipped"]
EtaSource = Literal["learned durations", "observed throughput"]

LEARNED_SOURCES = frozenset({"learned", "mixed", "hints"})
"""`PlanRuntime.expected_source` values whose durations are worth an estimate."""

_FINISHED: dict[str, State] = {"succeeded": "done", "failed": "failed", "skipped": "skipped"}
_ENDED = frozenset({"done", "failed", "skipped"})


@dataclass(frozen=True)
class ItemCounts:
    """A map's items: how many are done, failed, skipped and running, out of `total`."""

    total: int | None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0

    @property
    def finished(self) -> int:
        """Items that will not run again in this run."""
        return self.done + self.failed + self.skipped

    @property
    def waiting(self) -> int | None:
        """Items not started yet (waiting for a slot or an upstream item), when `total` is known."""
        if self.total is None:
            return None
        return max(self.total - self.finished - self.running, 0)


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

    @property
    def total(self) -> int:
        """Every subtask known."""
        return self.done + self.failed + self.skipped + self.running + self.waiting

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
        if runtime is not None:
            self.set_runtime(runtime, inputs=inputs)

    # -- feeding ------------------------------------------------------------------------

    def set_runtime(self, runtime: PlanRuntime, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Know the plan: every subtask starts out waiting (entries already seen stay)."""
        self.runtime = runtime
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
        if event.get("type") != EVENT_TYPE or not isinstance(event.get("subtask"), str):
            return None
        self.events += 1
        when = _number(event.get("time")) or time.time()
        if self.started_at is None:
            self.started_at = when
        if self.first_event_at is None:
            self.first_event_at = when
        entry = self._entry(event["subtask"])
        status = event.get("status")
        index = event.get("item")
        if isinstance(index, int):
            self._feed_item(entry, index, status, event)
            return None
        if status == "started":
            entry.state = "running"
            entry.retrying = False
            if entry.started_at is None:
                entry.started_at = _number(event.get("started_at")) or when
            if isinstance(event.get("items"), int):
                entry.is_map = True
                entry.items_total = event["items"]
            if isinstance(event.get("attempt"), int):
                entry.attempt = event["attempt"]
        elif status == "retrying":
            entry.retrying = True
            entry.error = event.get("error")
        elif status in _FINISHED:
            entry.state = _FINISHED[status]
            entry.retrying = False
            entry.finished_at = _number(event.get("finished_at")) or when
            entry.error = event.get("error")
            tokens = event.get("total_tokens")
            if entry.is_map:
                if isinstance(tokens, int):
                    entry.tokens = tokens
                if _number(event.get("cost")) is not None:
                    entry.cost, entry.cost_unknown = _number(event.get("cost")), 0
                for i, state in entry.item_states.items():
                    if state == "running":  # a cancelled item: its map has finished
                        entry.item_states[i] = "failed"
            else:
                entry.tokens = tokens if isinstance(tokens, int) else 0
                entry.add_cost(event.get("cost"), entry.tokens)
            return entry
        return None

    def _feed_item(
        self, entry: SubtaskProgress, index: int, status: Any, event: Mapping[str, Any]
    ) -> None:
        entry.is_map = True
        if status == "started":
            entry.item_states[index] = "running"
            if entry.state == "waiting":  # the map's own event should have come first
                entry.state = "running"
                entry.started_at = _number(event.get("started_at")) or _number(event.get("time"))
        elif status in _FINISHED:
            entry.item_states[index] = _FINISHED[status]
            tokens = event.get("total_tokens")
            tokens = tokens if isinstance(tokens, int) else 0
            entry.tokens += tokens
            entry.add_cost(event.get("cost"), tokens)

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
            running=states.count("running"),
            waiting=states.count("waiting"),
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
        )


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
    parts.append(f"{items.running} running")
    if items.waiting:
        parts.append(f"{items.waiting} waiting")
    return " · ".join(parts)


def render_progress(snapshot: ProgressSnapshot, *, max_running: int = 10) -> RenderableType:
    """The live view of `snapshot`: a bar, the counts, and at most `max_running` running rows.

    Every text from the run (ids, errors) is shown as is, never read as rich markup.
    """
    if snapshot.planning:
        return Text(f"fanfold  planning the goal…  {format_seconds(snapshot.elapsed)}")
    counts = snapshot.counts
    finished = counts.running == 0 and counts.waiting == 0
    status = f"{counts.finished}/{counts.total} subtasks  {format_seconds(snapshot.elapsed)}"
    status += "  finished" if finished else f"  {eta_text(snapshot.eta)}"
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True, min_width=7)
    head.add_column(no_wrap=True, min_width=16)
    head.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    head.add_row(
        Text("fanfold", style="bold"),
        ProgressBar(total=max(counts.total, 1), completed=counts.finished, width=16),
        Text(status),
    )
    tally = Text(no_wrap=True, overflow="ellipsis")
    for label, count, style in (
        ("done", counts.done, "green"),
        ("failed", counts.failed, "red" if counts.failed else ""),
        ("skipped", counts.skipped, "yellow" if counts.skipped else ""),
        ("running", counts.running, "blue"),
        ("waiting", counts.waiting, "dim"),
    ):
        if tally:
            tally.append(" · ")
        tally.append(f"{label} {count}", style=style)
    tally.append(f"   tokens {snapshot.tokens:,}")
    if snapshot.cost is not None:
        unknown = snapshot.cost_unknown
        unknown_text = f" (+{unknown} calls without a cost)" if unknown else ""
        tally.append(f"   cost ${snapshot.cost:.4f}{unknown_text}")
    parts: list[RenderableType] = [head, tally]
    if snapshot.items is not None:
        line = "map items: " + _items_text(snapshot.items).replace(" items done", " done")
        parts.append(Text(line, style="dim", no_wrap=True, overflow="ellipsis"))
    rows = snapshot.running[:max_running]
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
            table.add_row(
                Text("  " + row.id), Text(format_seconds(row.elapsed)), Text(", ".join(notes))
            )
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
        if event.get("type") != EVENT_TYPE or "item" in event:
            return
        status = event.get("status")
        if status != "started":
            self._write(f"  {status:<9} {event.get('subtask')}")

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
