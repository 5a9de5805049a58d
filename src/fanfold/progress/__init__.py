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

from fanfold.progress.live import LiveProgress, PlainProgress, finished_line, retry_line
from fanfold.progress.model import Progress
from fanfold.progress.render import eta_text, format_seconds, render_progress
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

__all__ = [
    "LEARNED_SOURCES",
    "PACE_WINDOW",
    "Counts",
    "Eta",
    "EtaSource",
    "ItemCounts",
    "LiveProgress",
    "PlainProgress",
    "Progress",
    "ProgressSnapshot",
    "RunningRow",
    "State",
    "SubtaskProgress",
    "eta_text",
    "finished_line",
    "format_seconds",
    "render_progress",
    "retry_line",
]
