"""Which ready subtask gets the next free slot: the one with the longest expected path left.

With unlimited concurrency every subtask starts as soon as it can and order does not
matter. Under a limit, starting the critical path first keeps a long chain from
starting late.

`expected_durations` is the one rule for a call's expected seconds, used by the
scheduler's priorities, `estimate` and the drawings alike: the subtask's own hint
(`expected_seconds`, else `expected_output_tokens` at SECONDS_PER_OUTPUT_TOKEN), then
the duration earlier runs of the same plan and model recorded, then the median of what
those runs recorded, then DEFAULT_CALL_SECONDS.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Literal

from fanfold.plan.graph import critical_path, remaining_paths
from fanfold.plan.models import SubTask

__all__ = [
    "DEFAULT_CALL_SECONDS",
    "SECONDS_PER_OUTPUT_TOKEN",
    "DurationSource",
    "critical_path",
    "duration_sources",
    "expected_durations",
    "commit_tails",
    "priority_key",
    "remaining_paths",
]

SECONDS_PER_OUTPUT_TOKEN = 0.02
"""Used to turn an `expected_output_tokens` hint into seconds."""
DEFAULT_CALL_SECONDS = 5.0
"""A call's expected duration when nothing else is known about it or its plan."""

DurationSource = Literal["hint", "learned", "median", "default"]
"""Where one subtask's expected duration came from."""


def duration_sources(
    subtasks: Sequence[SubTask],
    learned: Mapping[str, float] | None = None,
    *,
    default: float = DEFAULT_CALL_SECONDS,
) -> dict[str, tuple[float, DurationSource]]:
    """Each subtask's expected seconds and where they came from (hint, learned, median, default)."""
    learned = learned or {}
    known: dict[str, tuple[float, DurationSource]] = {}
    for sub in subtasks:
        if sub.expected_seconds is not None:
            known[sub.id] = (sub.expected_seconds, "hint")
        elif sub.expected_output_tokens is not None:
            known[sub.id] = (sub.expected_output_tokens * SECONDS_PER_OUTPUT_TOKEN, "hint")
        elif sub.id in learned:
            known[sub.id] = (learned[sub.id], "learned")
    # A subtask with no figure yet counts as a typical recorded one of this plan.
    median: tuple[float, DurationSource] = (
        (statistics.median(learned.values()), "median") if learned else (default, "default")
    )
    return {sub.id: known.get(sub.id, median) for sub in subtasks}


def expected_durations(
    subtasks: Sequence[SubTask],
    learned: Mapping[str, float] | None = None,
    *,
    default: float = DEFAULT_CALL_SECONDS,
) -> tuple[dict[str, float], str]:
    """Expected seconds per subtask, and the source used for most of them.

    Returns:
        (durations, source) where source is "hints", "learned", "hops" (nothing known:
        every subtask the default) or "mixed".
    """
    found = duration_sources(subtasks, learned, default=default)
    names = {"hint": "hints", "learned": "learned", "median": "hops", "default": "hops"}
    sources = {names[source] for _, source in found.values()}
    durations = {sid: seconds for sid, (seconds, _) in found.items()}
    return durations, (sources.pop() if len(sources) == 1 else "mixed")


STEP_SECONDS = 0.002
"""LangGraph's fixed time per superstep of a plan's graph (set-up, writes, output)."""
NODE_SECONDS = 0.0004
"""LangGraph's time per node it runs in a superstep (task, config, callbacks, writes);
measured on a 1000-subtask plan whose results were all in: about 20 ms per superstep of
40-60 nodes on 2 cores."""


def commit_tails(
    order: Sequence[str], dependencies: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Seconds LangGraph needs after a subtask's superstep to reach the end of the graph.

    The graph runs in supersteps: a node at depth k (its longest chain of dependencies)
    runs in step k, and step k+1 starts only when every node of step k is done. So a
    subtask finishing last holds back every later step, each of which then runs after
    it: a shallow subtask that a limit starts last costs the whole tail of steps. When
    a subtask ranks for a slot, its path ends no earlier than this tail
    (`remaining_paths(..., tails=...)`).
    """
    depth: dict[str, int] = {}
    for sid in order:
        depth[sid] = 1 + max((depth[dep] for dep in dependencies[sid]), default=0)
    deepest = max(depth.values(), default=0)
    per_step = [0.0] * (deepest + 2)
    for d in depth.values():
        per_step[d] += NODE_SECONDS
    after = [0.0] * (deepest + 2)  # after[k]: the steps after step k, and the aggregate's
    for k in range(deepest, 0, -1):
        after[k] = after[k + 1] + STEP_SECONDS + per_step[k + 1]
    return {sid: after[depth[sid]] for sid in order}


def priority_key(explicit: float | None, remaining: float) -> tuple[float, float]:
    """Sort key for the limiter: an explicit priority dominates, then the remaining path."""
    return (explicit if explicit is not None else 0.0, remaining)
