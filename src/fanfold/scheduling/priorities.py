"""Which ready subtask gets the next free slot: the one with the longest expected path left.

With unlimited concurrency every subtask starts as soon as it can and order does not
matter. Under a limit, starting the critical path first keeps a long chain from
starting late. Expected durations come from, in order: the subtask's own hint, the
durations recorded by earlier runs of the same plan and model, else one hop each.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from fanfold.plan.models import SubTask

SECONDS_PER_OUTPUT_TOKEN = 0.02
"""Used to turn an `expected_output_tokens` hint into seconds."""


def expected_durations(
    subtasks: Sequence[SubTask], learned: Mapping[str, float] | None = None
) -> tuple[dict[str, float], str]:
    """Expected seconds per subtask, and the source used for most of them.

    Returns:
        (durations, source) where source is "hints", "learned", "hops" or "mixed".
    """
    learned = learned or {}
    # A subtask with no figure yet counts as a typical learned one, not as a "1 second" hop.
    fallback = statistics.median(learned.values()) if learned else 1.0
    durations: dict[str, float] = {}
    sources: set[str] = set()
    for sub in subtasks:
        if sub.expected_seconds is not None:
            durations[sub.id], source = sub.expected_seconds, "hints"
        elif sub.expected_output_tokens is not None:
            durations[sub.id] = sub.expected_output_tokens * SECONDS_PER_OUTPUT_TOKEN
            source = "hints"
        elif sub.id in learned:
            durations[sub.id], source = learned[sub.id], "learned"
        else:
            durations[sub.id], source = fallback, "hops"
        sources.add(source)
    return durations, (sources.pop() if len(sources) == 1 else "mixed")


def remaining_paths(
    order: Sequence[str],
    dependencies: Mapping[str, Sequence[str]],
    durations: Mapping[str, float],
) -> dict[str, float]:
    """Each subtask's expected duration plus the longest expected path through its dependents."""
    dependents: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        for dep in dependencies[sid]:
            dependents[dep].append(sid)
    remaining: dict[str, float] = {}
    for sid in reversed(order):
        tail = max((remaining[c] for c in dependents[sid]), default=0.0)
        remaining[sid] = durations[sid] + tail
    return remaining


def critical_path(
    order: Sequence[str],
    dependencies: Mapping[str, Sequence[str]],
    remaining: Mapping[str, float],
    durations: Mapping[str, float],
) -> list[str]:
    """The chain of subtasks with the longest expected length, first to last."""
    if not order:
        return []
    dependents: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        for dep in dependencies[sid]:
            dependents[dep].append(sid)
    roots = [sid for sid in order if not dependencies[sid]]
    path = [max(roots, key=lambda s: remaining[s])]
    while dependents[path[-1]]:
        path.append(max(dependents[path[-1]], key=lambda s: remaining[s]))
    return path


def priority_key(explicit: float | None, remaining: float) -> tuple[float, float]:
    """Sort key for the limiter: an explicit priority dominates, then the remaining path."""
    return (explicit if explicit is not None else 0.0, remaining)
