"""Per-subtask results and run totals, as they are stored in graph state."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["succeeded", "failed", "skipped"]


class TokenUsage(BaseModel):
    """Token counts reported by the model (zero when it reports none)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    @classmethod
    def from_metadata(cls, usage: Any) -> TokenUsage:
        """Build from a LangChain `usage_metadata` mapping (or None)."""
        if not usage:
            return cls()
        inp = int(usage.get("input_tokens") or 0)
        out = int(usage.get("output_tokens") or 0)
        return cls(
            input_tokens=inp,
            output_tokens=out,
            total_tokens=int(usage.get("total_tokens") or inp + out),
        )


class SubtaskResult(BaseModel):
    """What one subtask (or one item of a map subtask) produced, or why it did not."""

    id: str = Field(description="The subtask id; `analyse[3]` for item 3 of map `analyse`.")
    status: Status
    output: Any = None
    error: str | None = Field(default=None, description="Why it failed, or why it was skipped.")
    usage: TokenUsage = Field(default_factory=TokenUsage)
    started_at: float | None = Field(default=None, description="Unix time the call started.")
    finished_at: float | None = Field(default=None, description="Unix time the result was known.")
    attempts: int = 0
    model: str | None = None
    priority: float | None = None
    kind: str | None = Field(default=None, description="The node kind that ran it.")
    index: int | None = Field(default=None, description="The item's position, for a map item.")
    items: list[SubtaskResult] | None = Field(
        default=None, description="For a map subtask: one result per item, in item order."
    )

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, when the subtask ran."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def ok(self) -> bool:
        """True when the subtask succeeded."""
        return self.status == "succeeded"

    # The Parallelization pattern's TaskResult names, so pattern code keeps working.
    @property
    def task_id(self) -> str:
        """The pattern's name for `id`."""
        return self.id

    @property
    def result(self) -> Any:
        """The pattern's name for `output`."""
        return self.output

    @property
    def metadata(self) -> dict[str, Any]:
        """The pattern's TaskResult metadata: type, tokens, and error only when there is one."""
        meta: dict[str, Any] = {
            "type": self.kind,
            "tokens": self.usage.total_tokens,
            "status": self.status,
            "attempts": self.attempts,
            "model": self.model,
            "duration": self.duration,
        }
        if self.error is not None:
            meta["error"] = self.error
        return meta

    def to_state(self) -> dict[str, Any]:
        """This result as plain data, the form kept in graph state and checkpoints."""
        return self.model_dump()


class RunTotals(BaseModel):
    """Counts, tokens and wall time for a whole run."""

    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    usage: TokenUsage = Field(default_factory=TokenUsage)
    aggregate_usage: TokenUsage = Field(default_factory=TokenUsage)
    wall_time: float = 0.0
    call_time: float = Field(
        0.0,
        description="Seconds the calls took one after another (subtasks, map items one by "
        "one, and the aggregation): the wall time of running them sequentially.",
    )
    items: int = Field(0, description="Map items run, over all map subtasks.")

    @property
    def total_tokens(self) -> int:
        """All tokens, subtasks and aggregation together."""
        return self.usage.total_tokens + self.aggregate_usage.total_tokens

    @property
    def speedup(self) -> float | None:
        """Sequential time over wall time: how much running in parallel saved."""
        return self.call_time / self.wall_time if self.wall_time > 0 else None


def summarize(
    results: dict[str, SubtaskResult],
    *,
    planned: int,
    aggregate_usage: TokenUsage,
    wall_time: float,
    aggregate_time: float = 0.0,
) -> RunTotals:
    """Fold results into run totals.

    Args:
        aggregate_time: seconds the aggregation call took (part of the sequential time).
    """
    usage = TokenUsage()
    counts = {"succeeded": 0, "failed": 0, "skipped": 0}
    call_time = aggregate_time
    items = 0
    for res in results.values():
        counts[res.status] += 1
        usage = usage + res.usage
        calls = res.items if res.items is not None else [res]
        items += len(res.items or [])
        call_time += sum(r.duration or 0.0 for r in calls)
    return RunTotals(
        tasks=planned,
        usage=usage,
        aggregate_usage=aggregate_usage,
        wall_time=wall_time,
        call_time=call_time,
        items=items,
        **counts,
    )
