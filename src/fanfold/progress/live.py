"""Reporters: the live terminal view (`LiveProgress`) and plain lines (`PlainProgress`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from fanfold.formatting import batch_state
from fanfold.progress.model import Progress
from fanfold.progress.render import render_progress
from fanfold.progress.snapshot import SubtaskProgress
from fanfold.scheduling.events import LifecycleEvent
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult

__all__ = ["LiveProgress", "PlainProgress", "finished_line", "retry_line"]


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
        if parsed.status == "batch":
            state = parsed.batch if isinstance(parsed.batch, dict) else None
            self._write(
                f"  batch     {parsed.subtask}: {batch_state(state).removeprefix('batch ')}"
            )
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
