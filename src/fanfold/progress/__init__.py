"""Run progress: a view of the run record as it grows, a live terminal view, plain lines.

`Progress` reads where a run stands off the run record as it grows
(`fanfold.record.RecordBuilder`, fed the dispatcher's lifecycle events:
`{"type": "fanfold.subtask", ...}`, what `stream_mode="custom"` yields): each subtask
waiting, running, in backoff, done, failed or skipped; a map's items counted (queued,
in flight, in backoff, over); tokens and cost so far, by the record's rules; 429s, the
current pace and an estimate of the time left. It is plain data and needs no terminal:
feed it events, then read `snapshot(now)`; `Progress.record.record()` is the run's
record at that moment, and the CLI's summary is the same record at the end.

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
