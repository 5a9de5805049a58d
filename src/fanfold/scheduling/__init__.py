"""Scheduling without LangGraph: the dispatcher, rate limits, retries, priorities, durations.

These modules need no graph and never import LangGraph; the graph layer (`graphs/`)
drives them through the nodes (`nodes/`).
"""

from fanfold.scheduling.calls import KindOutput, KindRunner, SubtaskCall
from fanfold.scheduling.dispatcher import EVENT_TYPE, Dispatcher
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.limits import RateLimiter
from fanfold.scheduling.retry import RetryPolicy
from fanfold.scheduling.runtime import PlanRuntime

__all__ = [
    "EVENT_TYPE",
    "Dispatcher",
    "DurationStore",
    "KindOutput",
    "KindRunner",
    "PlanRuntime",
    "RateLimiter",
    "RetryPolicy",
    "SubtaskCall",
]
