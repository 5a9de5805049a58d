"""Typed graph state: per-subtask results, run totals, and the channels that store them.

`fanfold.state.results` needs no LangGraph (the scheduling layer uses it);
`fanfold.state.schema` and `fanfold.state.channels` are the LangGraph side.
"""

from fanfold.state.results import RunTotals, Status, SubtaskResult, TokenUsage, summarize

__all__ = ["RunTotals", "Status", "SubtaskResult", "TokenUsage", "summarize"]
