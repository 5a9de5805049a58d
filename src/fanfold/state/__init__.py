"""Typed run state: per-subtask results and run totals.

Nothing here imports LangGraph (the scheduling layer builds on it); the graph state
schema and the channels that store results are LangGraph's side, in `fanfold.graphs`.
"""

from fanfold.state.results import RunTotals, Status, SubtaskResult, TokenUsage, summarize

__all__ = ["RunTotals", "Status", "SubtaskResult", "TokenUsage", "summarize"]
