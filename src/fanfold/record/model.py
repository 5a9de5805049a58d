"""The run record: one description of a run that every view renders.

All times are seconds from `started_at` (Unix time of the run's first known moment).
Definitions (also in the README):

- call time: seconds calls spent at the provider, attempts that failed included;
  waits for a concurrency slot or a rate limit, and backoff before a retry, are not;
- wall time: seconds a process was running the run (a resumed run: each process's
  share; the gaps between processes are "not running");
- speedup: call time / wall time; None when no call reached the provider (a fully
  cached run);
- critical path: the chain of dependent subtasks with the most call time and backoff
  (a map counts its longest item);
- lower bound: the critical path's length, or the call time over the concurrency
  limit when that is longer; `bound_ratio` is wall time / lower bound.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fanfold.state.results import TokenUsage

__all__ = [
    "AggregateRecord",
    "CallRecord",
    "RecordTotals",
    "RunRecord",
    "Segment",
    "SubtaskRecord",
]

SegmentKind = Literal["queued", "call", "retry", "backoff", "skip", "aggregate"]
RecordStatus = Literal["succeeded", "failed", "skipped", "running", "unfinished", "not run"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Segment(_Model):
    """A stretch of one call's life: queued (for a slot or a limit), at the provider
    (`call`; `retry` for an attempt that failed and was retried), in backoff, or skipped."""

    kind: SegmentKind
    start: float
    end: float
    note: str = ""


class CallRecord(_Model):
    """One call: a subtask's, or one item's of a map."""

    id: str
    subtask: str
    item: int | None = None
    status: RecordStatus
    model: str | None = None
    attempts: int = 0
    retries: int = 0
    ready: float | None = Field(None, description="When its dependencies were done.")
    start: float | None = None
    end: float | None = None
    queued: float = Field(0.0, description="Seconds waiting for a slot or a rate limit.")
    backoff: float = Field(0.0, description="Seconds in backoff before retries.")
    call_time: float = Field(0.0, description="Seconds at the provider.")
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost: float | None = Field(None, description="USD, as the run computed it; None: unknown.")
    cost_source: str | None = None
    cached: bool = False
    error: str | None = None
    segments: list[Segment] = Field(default_factory=list)


class BatchRecord(_Model):
    """The provider batch a map's items went out in, from its `batch` events."""

    id: str | None = None
    status: str = Field(description="As last reported: validating, in_progress, completed...")
    total: int = 0
    completed: int = 0
    failed: int = 0
    start: float | None = Field(None, description="When it was first reported.")
    end: float | None = Field(None, description="When it was first reported final.")
    states: list[tuple[str, float]] = Field(
        default_factory=list, description="Each status with when it was first reported."
    )


class SubtaskRecord(_Model):
    """One subtask of the plan, with its call (or its map's item calls)."""

    id: str
    kind: str = "llm"
    model: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    map: str | None = None
    status: RecordStatus
    error: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost: float | None = None
    cost_source: str | None = None
    cached: int = Field(0, description="Calls served from the cache.")
    attempts: int = 0
    retries: int = 0
    queued: float = 0.0
    backoff: float = 0.0
    call_time: float = 0.0
    start: float | None = None
    end: float | None = None
    critical: bool = False
    batch: BatchRecord | None = Field(None, description="For a map sent as a provider batch.")
    calls: list[CallRecord] = Field(default_factory=list)


class AggregateRecord(_Model):
    """The aggregate step (present only when the run aggregates)."""

    status: RecordStatus
    model: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost: float | None = None
    cached: bool = False
    start: float | None = None
    end: float | None = None
    call_time: float = 0.0
    estimated: bool = Field(
        False, description="Times inferred from the run's end (no events of the step)."
    )
    error: str | None = None


class RecordTotals(_Model):
    """Counts, tokens, cost and time for the whole run (RunTotals' fields, and more)."""

    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    not_run: int = 0
    items: int = 0
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    cached: int = 0
    usage: TokenUsage = Field(default_factory=TokenUsage)
    aggregate_usage: TokenUsage = Field(default_factory=TokenUsage)
    cached_usage: TokenUsage = Field(default_factory=TokenUsage)
    total_tokens: int = 0
    cost: float | None = None
    known_cost: float = 0.0
    cost_by_model: dict[str, float | None] = Field(default_factory=dict)
    unknown_cost_models: list[str] = Field(default_factory=list)
    cost_sources: dict[str, int] = Field(
        default_factory=dict,
        description="Calls per source of their cost: 'gateway' (the reply said), 'price table'.",
    )
    aggregate_cost: float | None = 0.0
    wall_time: float = 0.0
    not_running: float = Field(0.0, description="Seconds between processes (resumed runs).")
    call_time: float = 0.0
    queued: float = 0.0
    backoff: float = 0.0
    speedup: float | None = None
    critical_path_seconds: float = 0.0
    lower_bound: float = 0.0
    bound_ratio: float | None = None
    max_concurrency: int | None = None


class RunRecord(_Model):
    """One run, computed once from its results and lifecycle events."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    title: str = ""
    started_at: float | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    sessions: list[tuple[float, float]] = Field(
        default_factory=list, description="When a process was running the run."
    )
    critical_path: list[str] = Field(default_factory=list)
    subtasks: list[SubtaskRecord] = Field(default_factory=list)
    aggregate: AggregateRecord | None = None
    totals: RecordTotals = Field(default_factory=RecordTotals)
    results: dict[str, Any] = Field(
        default_factory=dict, description="Each subtask's result as plain data (outputs too)."
    )
    output: Any = None
    aggregate_error: str | None = None
    goal: str | None = None
    plan: dict[str, Any] | None = None
    planner_usage: TokenUsage | None = None
    rounds: list[dict[str, Any]] | None = Field(
        None,
        description="A replanning goal run's rounds: plan, results, output, totals and "
        "the judge's decision and reason (see GoalOutput.rounds).",
    )

    def subtask(self, sid: str) -> SubtaskRecord:
        """The record of subtask `sid`."""
        for sub in self.subtasks:
            if sub.id == sid:
                return sub
        raise KeyError(sid)

    @property
    def end(self) -> float:
        """Seconds from the start to the run's last known moment."""
        ends = [s[1] for s in self.sessions]
        if self.aggregate is not None and self.aggregate.end is not None:
            ends.append(self.aggregate.end)
        return max(ends, default=0.0)
