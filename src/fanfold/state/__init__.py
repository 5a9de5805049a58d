"""Typed graph state: per-subtask results, run totals and the reducers that merge them."""

from fanfold.state.results import RunTotals, Status, SubtaskResult, TokenUsage, summarize
from fanfold.state.schema import PlanState, SubtaskNodeInput, merge_results

__all__ = [
    "PlanState",
    "RunTotals",
    "Status",
    "SubtaskNodeInput",
    "SubtaskResult",
    "TokenUsage",
    "merge_results",
    "summarize",
]
