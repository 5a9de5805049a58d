"""Structural checks on a plan's dependency graph: ids, references and cycles."""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fanfold.errors import (
    DependencyCycleError,
    DuplicateSubtaskError,
    EmptyPlanError,
    InvalidSubtaskIdError,
    SelfDependencyError,
    UndeclaredDependencyError,
    UnknownDependencyError,
)
from fanfold.plan.template import placeholders

if TYPE_CHECKING:
    from fanfold.plan.models import SubTask

AGGREGATE_NODE = "aggregate"
# Node names LangGraph reserves, plus our own node and state keys: LangGraph refuses a
# node that shares its name with a state key.
RESERVED_IDS = frozenset(
    {
        AGGREGATE_NODE,
        "inputs",
        "results",
        "output",
        "totals",
        "aggregate_error",
        "run",
        "task",
        "__start__",
        "__end__",
    }
)
MAX_ID_LENGTH = 64
_ID = re.compile(r"[^\W\d][\w-]*")


def check_subtask_id(subtask_id: str) -> None:
    """Raise InvalidSubtaskIdError unless `subtask_id` can name a graph node."""
    if not subtask_id:
        raise InvalidSubtaskIdError(
            "a subtask has an empty id; give every subtask a short name such as 'summary'",
            subtask_id=subtask_id,
        )
    if len(subtask_id) > MAX_ID_LENGTH:
        raise InvalidSubtaskIdError(
            f"subtask id {subtask_id[:20]!r}... is {len(subtask_id)} characters long; "
            f"use at most {MAX_ID_LENGTH}",
            subtask_id=subtask_id,
        )
    if not _ID.fullmatch(subtask_id):
        raise InvalidSubtaskIdError(
            f"subtask id {subtask_id!r} cannot name a graph node; start with a letter or "
            "underscore and use only letters, digits, '_' and '-' (e.g. 'market_scan')",
            subtask_id=subtask_id,
        )
    if subtask_id in RESERVED_IDS or subtask_id.startswith("__"):
        raise InvalidSubtaskIdError(
            f"subtask id {subtask_id!r} is reserved by fanfold or LangGraph; "
            f"rename it, e.g. to '{subtask_id.strip('_')}_step'",
            subtask_id=subtask_id,
        )


def check_graph(subtasks: Sequence[SubTask]) -> None:
    """Check ids, dependency references, placeholders and acyclicity.

    Raises:
        PlanError: the first problem found, as the matching subclass.
    """
    if not subtasks:
        raise EmptyPlanError("the plan has no subtasks; add at least one entry under 'subtasks'")
    ids: set[str] = set()
    for sub in subtasks:
        check_subtask_id(sub.id)
        if sub.id in ids:
            raise DuplicateSubtaskError(sub.id)
        ids.add(sub.id)
    for sub in subtasks:
        for dep in sub.depends_on:
            if dep == sub.id:
                raise SelfDependencyError(sub.id)
            if dep not in ids:
                raise UnknownDependencyError(sub.id, dep, ids)
        deps = set(sub.depends_on)
        for name in placeholders(sub.prompt):
            if name in ids and name not in deps:
                if name == sub.id:
                    raise SelfDependencyError(sub.id)
                raise UndeclaredDependencyError(sub.id, name)
    cycle = find_cycle(subtasks)
    if cycle:
        raise DependencyCycleError(cycle)


def find_cycle(subtasks: Sequence[SubTask]) -> list[str] | None:
    """Return one dependency cycle, each id depending on the next, or None.

    Iterative depth-first search, so a long chain cannot overflow the stack.
    """
    depends: dict[str, list[str]] = {s.id: [] for s in subtasks}
    for sub in subtasks:
        depends[sub.id] = [d for d in dict.fromkeys(sub.depends_on) if d in depends]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in depends:
        if root in state:
            continue
        path: list[str] = [root]
        iters = [iter(depends[root])]
        state[root] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(depends[nxt]))
    return None


def topological_order(subtasks: Sequence[SubTask]) -> list[str]:
    """Return subtask ids so that each comes after its dependencies, keeping plan order."""
    remaining = {s.id: len(set(s.depends_on)) for s in subtasks}
    dependents: dict[str, list[str]] = {s.id: [] for s in subtasks}
    for sub in subtasks:
        for dep in set(sub.depends_on):
            dependents[dep].append(sub.id)
    position = {s.id: i for i, s in enumerate(subtasks)}
    ready = [(position[i], i) for i, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, current = heapq.heappop(ready)
        order.append(current)
        for child in dependents[current]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, (position[child], child))
    return order
