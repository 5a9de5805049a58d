"""What `estimate_plan` returns: per-subtask call estimates and the plan's totals."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fanfold.formatting import money as format_usd
from fanfold.scheduling.priorities import DEFAULT_CALL_SECONDS
from fanfold.scheduling.tokens import CHARS_PER_TOKEN, DEFAULT_OUTPUT_TOKENS

__all__ = ["CallEstimate", "PlanEstimate", "SecondsSource"]

SecondsSource = Literal["learned", "hint", "median", "default", "none"]


class CallEstimate(BaseModel):
    """The expected calls of one subtask (or of the aggregate step)."""

    id: str
    kind: str
    model: str | None = Field(description="The model label; None for a kind with no model.")
    calls: int | None = Field(
        description="Model calls; None for a map whose list is known only once the run has it."
    )
    input_tokens_per_call: int = 0
    output_tokens_per_call: int = 0
    input_tokens: int | None = Field(None, description="All its calls; None when calls is.")
    output_tokens: int | None = None
    cost_per_call: float | None = Field(None, description="USD; None when unpriced.")
    cost: float | None = Field(None, description="USD; None when unpriced or calls unknown.")
    batch: bool = Field(False, description="Whether the plan sends its calls as a batch.")
    live_cost: float | None = Field(None, description="For a map: USD of its calls sent live.")
    batch_cost: float | None = Field(
        None, description="For a map: USD of its calls sent as a batch (the batch price)."
    )
    seconds_per_call: float = 0.0
    seconds_source: SecondsSource = "none"
    items: int | None = Field(None, description="For a map: its items, when known.")


class PlanEstimate(BaseModel):
    """What a run of a plan is expected to take: calls, tokens, cost and wall time."""

    task: str
    subtasks: list[CallEstimate]
    aggregate: CallEstimate | None = None
    calls: int = Field(description="Model calls counted (maps whose list is known included).")
    unknown_maps: list[str] = Field(
        default_factory=list, description="Maps whose number of items is not known before the run."
    )
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = Field(
        None, description="USD for the counted calls; None when a model is unpriced."
    )
    known_cost: float = Field(0.0, description="USD over the calls with a known price.")
    batch_cost: float | None = Field(
        None, description="USD if every map went as a batch (`--batch`); None when unpriced."
    )
    cost_by_model: dict[str, float | None] = Field(default_factory=dict)
    unknown_price_models: list[str] = Field(default_factory=list)
    wall_time: float = Field(0.0, description="Expected seconds from start to the end.")
    critical_path: list[str] = Field(default_factory=list)
    critical_path_seconds: float = 0.0
    max_concurrency: int | None = None
    durations: str = Field(
        "default", description="Where call durations came from: learned, hint, default, mixed."
    )
    missing_inputs: list[str] = Field(
        default_factory=list, description="Inputs the run needs and the estimate did not have."
    )
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    default_seconds: float = DEFAULT_CALL_SECONDS
    chars_per_token: int = CHARS_PER_TOKEN

    @property
    def total_tokens(self) -> int:
        """Input and output tokens of the counted calls."""
        return self.input_tokens + self.output_tokens

    def fits(self, budget: float) -> bool | None:
        """Whether the estimated cost fits `budget` (None: the cost is unknown)."""
        return None if self.cost is None else self.cost <= budget

    def lines(self) -> list[str]:
        """The estimate as text, one line each, as `fanfold estimate` prints it."""
        out = [f"Estimate for: {self.task}"]
        width = max([len(c.id) for c in self.subtasks] + [9])
        for call in [*self.subtasks, *([self.aggregate] if self.aggregate else [])]:
            out.append("  " + _call_line(call, width))
        unknown = (
            f" + {len(self.unknown_maps)} map(s) whose items are known only during the run "
            f"({', '.join(self.unknown_maps)})"
            if self.unknown_maps
            else ""
        )
        out.append(f"calls: {self.calls}{unknown}")
        out.append(
            f"tokens: {self.input_tokens:,} in + {self.output_tokens:,} out = "
            f"{self.total_tokens:,} (prompts at {self.chars_per_token} characters a token; "
            f"replies: expected_output_tokens, else {self.default_output_tokens})"
        )
        out.append("cost: " + _cost_text(self))
        concurrency = (
            f"up to {self.max_concurrency} calls at once"
            if self.max_concurrency
            else "no concurrency limit"
        )
        out.append(
            f"wall time: ~{self.wall_time:.1f}s with {concurrency}; durations: {self.durations}"
            f" (default {self.default_seconds:g}s a call)"
        )
        if self.critical_path:
            out.append(
                f"critical path: {' -> '.join(self.critical_path)}  "
                f"[{self.critical_path_seconds:.1f}s]"
            )
        if self.missing_inputs:
            out.append(
                "inputs not given (their prompts are estimated without them): "
                + ", ".join(self.missing_inputs)
            )
        out.append("no model was called")
        return out


def _call_line(call: CallEstimate, width: int) -> str:
    model = call.model or "-"
    per_call = (
        f"{call.input_tokens_per_call:,} in + {call.output_tokens_per_call:,} out tokens, "
        f"{format_usd(call.cost_per_call)}, {call.seconds_per_call:.2f}s ({call.seconds_source})"
    )
    if call.model is None:
        return f"{call.id:<{width}}  {call.kind:<10} no model call"
    if call.calls is None:
        return f"{call.id:<{width}}  {call.kind:<10} {model}: calls unknown, per item: {per_call}"
    prices = ""
    if call.batch_cost is not None:
        chosen = "batch" if call.batch else "live"
        prices = (
            f" (live {format_usd(call.live_cost)}, batch {format_usd(call.batch_cost)}; "
            f"sent {chosen})"
        )
    return (
        f"{call.id:<{width}}  {call.kind:<10} {model}: {call.calls} call(s), "
        f"{(call.input_tokens or 0) + (call.output_tokens or 0):,} tokens, "
        f"{format_usd(call.cost)}{prices}; per call: {per_call}"
    )


def _cost_text(estimate: PlanEstimate) -> str:
    models = ", ".join(f"{m} {format_usd(c)}" for m, c in sorted(estimate.cost_by_model.items()))
    if estimate.cost is not None:
        text = format_usd(estimate.cost)
    else:
        unknown = ", ".join(estimate.unknown_price_models)
        text = f"{format_usd(estimate.known_cost)} + unknown for {unknown}"
    extra = " (and the items of maps whose lists are unknown)" if estimate.unknown_maps else ""
    batched = ""
    if estimate.batch_cost is not None and estimate.batch_cost != estimate.cost:
        batched = f"; with every map as a batch: {format_usd(estimate.batch_cost)}"
    return f"{text}{extra}{batched}" + (f"  [{models}]" if models else "")
