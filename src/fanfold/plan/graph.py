"""Graph helpers over a plan's dependencies: dependents, sinks, layers, critical path.

Every part of fanfold that walks the dependency graph (the scheduler's priorities, the
estimate, the drawings, the run record) uses these functions, so they agree on it.
`order` is a topological order; `dependencies` maps each id to the ids it waits for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["critical_path", "dependents", "layers", "path_length", "remaining_paths", "sinks"]


def dependents(
    order: Sequence[str], dependencies: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Each subtask's direct dependents, in `order`."""
    out: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        for dep in dependencies.get(sid, ()):
            if dep in out:
                out[dep].append(sid)
    return out


def sinks(order: Sequence[str], dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """The subtasks nothing depends on (what the aggregate reads last), in `order`."""
    used = {dep for sid in order for dep in dependencies.get(sid, ())}
    return [sid for sid in order if sid not in used]


def layers(order: Sequence[str], dependencies: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Subtasks by layer: the longest path (in hops) from the start; roots are layer 0."""
    layer: dict[str, int] = {}
    for sid in order:
        layer[sid] = 1 + max(
            (layer[d] for d in dependencies.get(sid, ()) if d in layer), default=-1
        )
    out: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for sid in order:
        out[layer[sid]].append(sid)
    return out


def remaining_paths(
    order: Sequence[str],
    dependencies: Mapping[str, Sequence[str]],
    durations: Mapping[str, float],
    tails: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Each subtask's duration plus the longest path through its dependents (or its own
    `tails` entry, the time that must pass after it whatever its dependents, if longer)."""
    below = dependents(order, dependencies)
    remaining: dict[str, float] = {}
    for sid in reversed(order):
        tail = max((remaining[c] for c in below[sid]), default=0.0)
        if tails is not None:
            tail = max(tail, tails[sid])
        remaining[sid] = durations[sid] + tail
    return remaining


def critical_path(
    order: Sequence[str],
    dependencies: Mapping[str, Sequence[str]],
    remaining: Mapping[str, float] | None = None,
    durations: Mapping[str, float] | None = None,
) -> list[str]:
    """The chain of subtasks with the longest total duration, first to last.

    Pass `remaining` (from `remaining_paths`) when it is at hand; else it is computed
    from `durations`.
    """
    if not order:
        return []
    if remaining is None:
        if durations is None:
            raise TypeError("critical_path needs remaining or durations")
        remaining = remaining_paths(order, dependencies, durations)
    below = dependents(order, dependencies)
    roots = [sid for sid in order if not dependencies.get(sid)]
    path = [max(roots, key=lambda s: remaining[s])]
    while below[path[-1]]:
        path.append(max(below[path[-1]], key=lambda s: remaining[s]))
    return path


def path_length(path: Sequence[str], durations: Mapping[str, float]) -> float:
    """The summed duration of a path."""
    return sum(durations[sid] for sid in path)
