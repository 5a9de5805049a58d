"""The graph state every fanfold node reads and writes."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, Field

from fanfold.state.results import RunTotals, SubtaskResult


def merge_results(
    left: dict[str, SubtaskResult] | None, right: dict[str, SubtaskResult] | None
) -> dict[str, SubtaskResult]:
    """Reducer: results from parallel nodes merge by subtask id; a newer result wins."""
    return {**(left or {}), **(right or {})}


class SubtaskNodeInput(TypedDict, total=False):
    """What a subtask node reads: a plain dict, so LangGraph does not rebuild (and
    revalidate) the whole PlanState, results included, for every node of every step."""

    inputs: dict[str, Any]
    results: dict[str, SubtaskResult]


class PlanState(BaseModel):
    """State of one plan run.

    `inputs` come from the caller, each subtask node adds its entry to `results`, and the
    aggregate node writes `output`, `totals` and, if aggregation failed, `aggregate_error`.
    """

    inputs: dict[str, Any] = Field(default_factory=dict)
    run: dict[str, Any] = Field(
        default_factory=dict,
        description="Caller's notes about the run; `fanfold run --checkpoint` keeps the plan "
        "and options here so `fanfold resume` can rebuild the graph.",
    )
    results: Annotated[dict[str, SubtaskResult], merge_results] = Field(default_factory=dict)
    output: Any = None
    aggregate_error: str | None = None
    totals: RunTotals | None = None
