"""What the live view shows: per-subtask entries, counts, the ETA and a snapshot (plain data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

State = Literal["waiting", "running", "backoff", "done", "failed", "skipped"]
EtaSource = Literal["learned durations", "observed throughput"]

LEARNED_SOURCES = frozenset({"learned", "mixed", "hints"})
"""`PlanRuntime.expected_source` values whose durations are worth an estimate."""

FINISHED_STATES: dict[str, State] = {"succeeded": "done", "failed": "failed", "skipped": "skipped"}
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


@dataclass(frozen=True)
class SubtaskProgress:
    """Where one subtask stands, as the live view shows it (read off the growing record's
    `fanfold.record.LiveSubtask`)."""

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
    """USD over its finished calls whose cost is known; None when none is."""
    cost_unknown: int = 0
    """Finished calls whose cost is unknown."""
    items_total: int | None = None
    items: ItemCounts | None = None
    """The map's item counts, or None for a subtask that is not a map."""
    items_reused: int = 0
    """Items that succeeded in an earlier run and are not run again."""
    preloaded: bool = False
    """Finished before this run started (a resumed or retried run)."""
    batch: dict[str, Any] | None = None
    """For a map sent as a provider batch: its id, status and counts, as last reported."""

    @property
    def finished(self) -> bool:
        """Done, failed or skipped."""
        return self.state in _ENDED


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
    batch: dict[str, Any] | None = None
    """The provider batch the subtask's items went out in, as last reported."""


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
