"""Where a run's lifecycle events go: a progress display and an events file."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

from fanfold.errors import EventsFileError
from fanfold.progress import LiveProgress, PlainProgress, Progress
from fanfold.record import RecordBuilder, RunRecord
from fanfold.state.results import SubtaskResult

__all__ = ["ProgressMode", "Watch", "echo", "progress_mode", "stderr_is_terminal"]

ProgressMode = Literal["live", "plain", "none"]


def echo(text: str, *, err: bool = False) -> None:
    """Print a line on stdout, or on stderr with `err`."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal that can redraw a live view."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False
    return tty and os.environ.get("TERM") != "dumb"


def progress_mode(*, quiet: bool, as_json: bool) -> ProgressMode:
    """How a run shows progress: none when quiet or printing JSON, live on a terminal,
    else a line per finished subtask."""
    if quiet or as_json:
        return "none"
    return "live" if stderr_is_terminal() else "plain"


class Watch:
    """Fans a run's lifecycle events out to the run record, the progress display and the
    events file.

    Use as a context manager around the run; `feed` takes every lifecycle event. The
    record grows with each event (`growing`); the live view is a view of it, and
    `record(state)` is what the CLI prints, `--json` and the report render.

    Args:
        mode: "live" (a rich view on stderr), "plain" (a line per finished subtask on
            stderr) or "none".
        events: a file to write every event to, one JSON object per line.
    """

    def __init__(self, mode: ProgressMode, events: Path | None = None) -> None:
        self.mode = mode
        self._events_path = events
        self.growing = RecordBuilder(started_at=time.time())
        """The run's record as it grows."""
        self._log: TextIO | None = None
        self._display: LiveProgress | PlainProgress | None = None
        if mode == "live":
            self._display = LiveProgress(Progress(record=self.growing))
        elif mode == "plain":
            self._display = PlainProgress(lambda line: echo(line, err=True))

    def __enter__(self) -> Watch:
        if self._events_path is not None:
            try:
                self._log = self._events_path.open("w", encoding="utf-8")
            except OSError as exc:
                raise EventsFileError(
                    f"cannot write events to {str(self._events_path)!r}: {exc.strerror}"
                ) from exc
        if self._display is not None:
            self._display.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._display is not None:
                self._display.__exit__(exc_type, exc, traceback)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    @property
    def progress(self) -> Progress | None:
        """The live view's model (a view of `growing`), when a live view is drawn."""
        return self._display.progress if isinstance(self._display, LiveProgress) else None

    @property
    def live(self) -> bool:
        """Whether a live view is drawn (it wants the plan: `set_runtime`)."""
        return isinstance(self._display, LiveProgress)

    def set_runtime(self, runtime: Any, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Tell the record and the display the plan (subtasks, maps, expected durations)."""
        if isinstance(self._display, LiveProgress):
            self._display.set_runtime(runtime, inputs=inputs)  # under the view's lock
            return
        self.growing.set_runtime(runtime, inputs=inputs)

    def preload(
        self,
        results: Mapping[str, SubtaskResult],
        *,
        reused_items: Mapping[str, Iterable[Any]] | None = None,
    ) -> None:
        """Count results an earlier run left, which this run does not run again."""
        if isinstance(self._display, LiveProgress):
            self._display.preload(results, reused_items=reused_items)  # under the view's lock
            return
        self.growing.preload(results, reused_items=reused_items)

    def feed(self, event: dict[str, Any]) -> None:
        """Write one lifecycle event to the file (flushed at once), add it to the record
        and show it."""
        if self._log is not None:
            try:
                self._log.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
                self._log.flush()
            except OSError as exc:
                self._log = None
                self.echo(
                    f"warning: stopped writing events to {str(self._events_path)!r}: "
                    f"{exc.strerror}",
                    err=True,
                )
        if isinstance(self._display, LiveProgress):
            self._display.feed(event)  # adds it to the record, under the view's lock
            return
        self.growing.add_event(event)
        if self._display is not None:
            self._display.feed(event)

    def record(
        self,
        state: Mapping[str, Any],
        *,
        runtime: Any = None,
        max_concurrency: int | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """The run's record: the one that grew with its events, given its final state."""
        return self.growing.record(
            state, runtime=runtime, max_concurrency=max_concurrency, inputs=inputs
        )

    def note(self, text: str) -> None:
        """Print a progress line on stderr (above the live view); nothing when quiet."""
        if self._display is not None:
            self._display.note(text)

    def echo(self, text: str, *, err: bool) -> None:
        """Print `text` whatever the progress mode, above the live view when one is drawn."""
        if isinstance(self._display, LiveProgress) and (err or sys.stdout.isatty()):
            self._display.note(text)
        else:
            echo(text, err=err)
