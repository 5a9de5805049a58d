"""Per-subtask results and run totals, as they are stored in graph state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Status = Literal["succeeded", "failed", "skipped"]


class TokenUsage(BaseModel):
    """Token counts reported by the model (zero when it reports none).

    `total_tokens` defaults to `input_tokens + output_tokens`.
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @model_validator(mode="after")
    def _default_total(self) -> TokenUsage:
        if not self.total_tokens and (self.input_tokens or self.output_tokens):
            object.__setattr__(self, "total_tokens", self.input_tokens + self.output_tokens)
        return self

    def as_dict(self) -> dict[str, int]:
        """The counts as plain data (what `model_dump()` gives), built without pydantic."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }

    def __add__(self, other: TokenUsage) -> TokenUsage:
        # Usage is frozen, so adding nothing returns the other side itself: no new model on
        # the hot path (a call's first attempt, the first of a sum). (`model_construct` is
        # slower than validating here: it runs in Python, validation in Rust.)
        if not (other.input_tokens or other.output_tokens or other.total_tokens):
            return self
        if not (self.input_tokens or self.output_tokens or self.total_tokens):
            return other
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    @classmethod
    def from_metadata(cls, usage: Any) -> TokenUsage:
        """Build from a LangChain `usage_metadata` mapping (or None)."""
        if not usage:
            return NO_USAGE
        inp = int(usage.get("input_tokens") or 0)
        out = int(usage.get("output_tokens") or 0)
        return cls(
            input_tokens=inp,
            output_tokens=out,
            total_tokens=int(usage.get("total_tokens") or inp + out),
        )


NO_USAGE = TokenUsage()
"""Zero tokens, shared (usage is frozen): the start of every sum, without building one."""

_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Output types `model_dump()` keeps as they are (so `to_state` may skip it)."""


def total_usage(usages: Iterable[TokenUsage]) -> TokenUsage:
    """All of `usages` added up: one model at the end, not one per addition."""
    inp = out = total = 0
    for usage in usages:
        inp += usage.input_tokens
        out += usage.output_tokens
        total += usage.total_tokens
    if not (inp or out or total):
        return NO_USAGE
    return TokenUsage(input_tokens=inp, output_tokens=out, total_tokens=total)


class SubtaskResult(BaseModel):
    """What one subtask (or one item of a map subtask) produced, or why it did not."""

    id: str = Field(description="The subtask id; `analyse[3]` for item 3 of map `analyse`.")
    status: Status
    output: Any = None
    error: str | None = Field(default=None, description="Why it failed, or why it was skipped.")
    usage: TokenUsage = Field(default_factory=lambda: NO_USAGE)
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
    cost: float | None = Field(
        default=None,
        description="USD this call cost (a map: its items added up). None when unknown: the "
        "model has no price (never 0 for an unknown price). 0 for a cached result, a skip, "
        "or a kind that calls no model.",
    )
    cost_source: str | None = Field(
        default=None,
        description="Where `cost` came from: 'gateway' (the reply said what it cost), "
        "'price table', or 'mixed' (a map's items, a retried call).",
    )
    cached: bool = Field(
        default=False,
        description="Served from the persistent cache: no request was made and usage is 0 "
        "(a map: every item was).",
    )
    cached_usage: TokenUsage | None = Field(
        default=None,
        description="For a cached result: the tokens the original call used (not billed now).",
    )
    batch: dict[str, Any] | None = Field(
        default=None,
        description="For a map sent as a provider batch: the batch's id, its input, output "
        "and error files' ids, its last status and its request counts.",
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
        """This result as plain data, the form kept in graph state and checkpoints.

        The dict also carries this object (`ResultData.typed`, invisible to any
        serializer), so the state's channel need not rebuild it from the data.
        """
        fields = self.__dict__
        if (
            fields["items"] is None
            and fields["batch"] is None
            and fields["cached_usage"] is None
            and type(fields["output"]) in _PLAIN
            and type(self) is SubtaskResult
        ):
            # The common result (text output, no items): the same dict as `model_dump()`,
            # built without the serializer.
            data = ResultData(fields)
            data["usage"] = fields["usage"].as_dict()
        else:
            data = ResultData(self.model_dump())
        data.typed = self
        return data


class ResultData(dict[str, Any]):
    """A result's plain data, with the SubtaskResult it was made from (not serialized)."""

    __slots__ = ("typed",)

    typed: SubtaskResult | None


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
    cost: float | None = Field(
        None,
        description="USD for the run, subtasks and aggregation; None when a model's price "
        "is unknown (see unknown_cost_models and known_cost).",
    )
    known_cost: float = Field(0.0, description="USD over the calls whose model has a price.")
    cost_by_model: dict[str, float | None] = Field(
        default_factory=dict, description="USD per model label; None for an unknown price."
    )
    unknown_cost_models: list[str] = Field(
        default_factory=list, description="Models that made calls and have no price."
    )
    aggregate_cost: float | None = Field(
        0.0, description="USD of the aggregation's call; None when its model has no price."
    )
    cached: int = Field(
        0, description="Calls served from the persistent cache (map items one by one)."
    )
    cached_usage: TokenUsage = Field(
        default_factory=TokenUsage,
        description="Tokens the cached calls used when they were first made; not billed now.",
    )
    planner_usage: TokenUsage = Field(
        default_factory=TokenUsage,
        description="Tokens of a goal run's planner calls (rejected plans included).",
    )
    planner_cost: float | None = Field(
        0.0, description="USD of the planner's calls; None when its model has no price."
    )
    judge_usage: TokenUsage = Field(
        default_factory=TokenUsage,
        description="Tokens of a replanning goal run's judge calls, every round's.",
    )
    judge_cost: float | None = Field(
        0.0, description="USD of the judge's calls; None when its model has no price."
    )
    earlier_usage: TokenUsage = Field(
        default_factory=TokenUsage,
        description="Tokens of a replanned goal run's earlier rounds (their planner, "
        "subtasks and aggregation); the other fields count the last round.",
    )
    earlier_cost: float | None = Field(
        0.0, description="USD of the earlier rounds; None when a price is unknown."
    )
    rounds: int = Field(1, description="Rounds a goal run planned and ran (1 + its replans).")

    @property
    def total_tokens(self) -> int:
        """All tokens: planner, subtasks and aggregation together (judge and earlier
        rounds too)."""
        return (
            self.usage.total_tokens
            + self.aggregate_usage.total_tokens
            + self.planner_usage.total_tokens
            + self.judge_usage.total_tokens
            + self.earlier_usage.total_tokens
        )

    def _priced(self, by_model: dict[str, float | None]) -> dict[str, Any]:
        unknown = sorted(name for name, spent in by_model.items() if spent is None)
        known = sum(spent for spent in by_model.values() if spent is not None)
        return {
            "cost_by_model": by_model,
            "unknown_cost_models": unknown,
            "known_cost": known,
            "cost": None if unknown else known,
        }

    def with_judge(
        self,
        *,
        usage: TokenUsage,
        cost: float | None,
        model: str,
        seconds: float,
        cached_usage: TokenUsage | None = None,
    ) -> RunTotals:
        """These totals with a judge call added (tokens, cost, sequential time); a call
        the cache answered (`cached_usage`) counts as cached."""
        by_model = dict(self.cost_by_model)
        if by_model.get(model, 0.0) is not None:
            by_model[model] = None if cost is None else (by_model.get(model) or 0.0) + cost
        judged = None if cost is None or self.judge_cost is None else self.judge_cost + cost
        return self.model_copy(
            update={
                "judge_usage": self.judge_usage + usage,
                "judge_cost": judged,
                "call_time": self.call_time + seconds,
                "cached": self.cached + (1 if cached_usage is not None else 0),
                "cached_usage": self.cached_usage + (cached_usage or TokenUsage()),
                **self._priced(by_model),
            }
        )

    def with_earlier(self, earlier: RunTotals) -> RunTotals:
        """These totals (the last round's) with the earlier rounds' totals folded in.

        The earlier rounds' planner, subtask and aggregate tokens and cost go to
        `earlier_usage`/`earlier_cost`; their judge calls, cached calls, times and cost
        per model add up; `rounds` counts this one too.
        """
        by_model = dict(self.cost_by_model)
        for model, spent in earlier.cost_by_model.items():
            mine = by_model.get(model, 0.0)
            by_model[model] = None if spent is None or mine is None else mine + spent
        own = earlier.cost
        if own is not None:
            own -= (earlier.judge_cost or 0.0) + (earlier.earlier_cost or 0.0)
        used = earlier.usage + earlier.aggregate_usage + earlier.planner_usage
        costs = [own, earlier.earlier_cost, self.earlier_cost]
        return self.model_copy(
            update={
                "earlier_usage": self.earlier_usage + earlier.earlier_usage + used,
                "earlier_cost": None if None in costs else sum(c or 0.0 for c in costs),
                "judge_usage": self.judge_usage + earlier.judge_usage,
                "judge_cost": None
                if earlier.judge_cost is None or self.judge_cost is None
                else self.judge_cost + earlier.judge_cost,
                "call_time": self.call_time + earlier.call_time,
                "wall_time": self.wall_time + earlier.wall_time,
                "cached": self.cached + earlier.cached,
                "cached_usage": self.cached_usage + earlier.cached_usage,
                "rounds": self.rounds + earlier.rounds,
                **self._priced(by_model),
            }
        )

    def with_planner(
        self,
        *,
        usage: TokenUsage,
        cost: float | None,
        model: str | None,
        seconds: float,
        started_at: float | None = None,
        finished_at: float | None = None,
        cached_usage: TokenUsage | None = None,
    ) -> RunTotals:
        """These totals with a goal run's planner calls added (tokens, cost, time).

        Args:
            seconds: how long the planner's calls took (added to the sequential time).
            started_at: when planning began; the wall time then runs from there.
            finished_at: when the run ended (with `started_at`).
            cached_usage: the usage of the planner call the cache answered, if it did.
        """
        by_model = dict(self.cost_by_model)
        label = model or "(planner's model)"
        if cached_usage is None and (usage.total_tokens or usage.input_tokens):
            if by_model.get(label, 0.0) is not None:
                by_model[label] = None if cost is None else (by_model.get(label) or 0.0) + cost
        unknown = sorted(name for name, spent in by_model.items() if spent is None)
        known = sum(spent for spent in by_model.values() if spent is not None)
        wall = self.wall_time
        if started_at is not None and finished_at is not None:
            wall = max(wall, finished_at - started_at)
        return self.model_copy(
            update={
                "planner_usage": usage,
                "planner_cost": cost if cached_usage is None else 0.0,
                "cost_by_model": by_model,
                "unknown_cost_models": unknown,
                "known_cost": known,
                "cost": None if unknown else known,
                "call_time": self.call_time + seconds,
                "wall_time": wall,
                "cached": self.cached + (1 if cached_usage is not None else 0),
                "cached_usage": self.cached_usage + (cached_usage or TokenUsage()),
            }
        )

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
    aggregate_model: str | None = None,
    aggregate_cost: float | None = None,
    aggregate_cached: TokenUsage | None = None,
) -> RunTotals:
    """Fold results into run totals.

    Args:
        aggregate_time: seconds the aggregation call took (part of the sequential time).
        aggregate_model: the label of the aggregation's model, when it has one.
        aggregate_cost: USD of the aggregation's call (None: unknown). Left out, it is 0
            when the aggregation used no tokens and unknown otherwise.
        aggregate_cached: the original usage, when the aggregation came from the cache.
    """
    usages: list[TokenUsage] = []
    cached_usages: list[TokenUsage] = []
    counts = {"succeeded": 0, "failed": 0, "skipped": 0}
    call_time = aggregate_time
    items = 0
    cached = 0
    by_model: dict[str, float | None] = {}

    def spend(model: str, cost: float | None) -> None:
        if model in by_model and by_model[model] is None:
            return
        by_model[model] = None if cost is None else (by_model.get(model) or 0.0) + cost

    for res in results.values():
        counts[res.status] += 1
        usages.append(res.usage)
        calls = res.items if res.items is not None else [res]
        items += len(res.items or [])
        call_time += sum(r.duration or 0.0 for r in calls)
        for call in calls:
            if call.cached:
                cached += 1
                if call.cached_usage is not None:
                    cached_usages.append(call.cached_usage)
            if call.model is not None and (call.attempts or call.cached):
                spend(call.model, call.cost)
    used = bool(aggregate_usage.total_tokens or aggregate_usage.input_tokens)
    if aggregate_cost is None and not used and aggregate_cached is None:
        aggregate_cost = 0.0
    if aggregate_cached is not None:
        cached += 1
        cached_usages.append(aggregate_cached)
    if aggregate_model is not None or used:
        spend(aggregate_model or "(aggregate's model)", aggregate_cost)
    unknown = sorted(model for model, cost in by_model.items() if cost is None)
    known = sum(cost for cost in by_model.values() if cost is not None)
    return RunTotals(
        tasks=planned,
        usage=total_usage(usages),
        aggregate_usage=aggregate_usage,
        wall_time=wall_time,
        call_time=call_time,
        items=items,
        cost=None if unknown else known,
        known_cost=known,
        cost_by_model=by_model,
        unknown_cost_models=unknown,
        aggregate_cost=aggregate_cost,
        cached=cached,
        cached_usage=total_usage(cached_usages),
        **counts,
    )
