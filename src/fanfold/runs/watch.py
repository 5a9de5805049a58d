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
    """Fans a run's lifecycle events out to the progress display and the events file.

    Use as a context manager around the run; `feed` takes every lifecycle event.

    Args:
        mode: "live" (a rich view on stderr), "plain" (a line per finished subtask on
            stderr) or "none".
        events: a file to write every event to, one JSON object per line.
        keep: keep every event in `kept` (for a report written afterwards).
    """

    def __init__(
        self, mode: ProgressMode, events: Path | None = None, *, keep: bool = False
    ) -> None:
        self.mode = mode
        self._events_path = events
        self.kept: list[dict[str, Any]] | None = [] if keep else None
        """Every event, when a report will be written from them."""
        self._log: TextIO | None = None
        self._display: LiveProgress | PlainProgress | None = None
        if mode == "live":
            self._display = LiveProgress(Progress(started_at=time.time()))
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
    def live(self) -> bool:
        """Whether a live view is drawn (it wants the plan: `set_runtime`)."""
        return isinstance(self._display, LiveProgress)

    def set_runtime(self, runtime: Any, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Tell the display the plan (its subtasks, maps and expected durations)."""
        if self._display is not None:
            self._display.set_runtime(runtime, inputs=inputs)

    def preload(
        self,
        results: Mapping[str, SubtaskResult],
        *,
        reused_items: Mapping[str, Iterable[Any]] | None = None,
    ) -> None:
        """Count results an earlier run left, which this run does not run again."""
        if self._display is not None:
            self._display.preload(results, reused_items=reused_items)

    def feed(self, event: dict[str, Any]) -> None:
        """Write one lifecycle event to the file (flushed at once) and show it."""
        if self.kept is not None:
            self.kept.append(event)
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
        if self._display is not None:
            self._display.feed(event)

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
