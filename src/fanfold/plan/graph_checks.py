"""Structural checks on a plan's dependency graph: ids, references, maps and cycles.

The checks read only ids, dependencies, maps and prompts, so they work on any object
with those attributes (`SubtaskShape`) and need nothing from `plan.models`.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Collection, Sequence
from typing import Protocol

from fanfold.errors import (
    DependencyCycleError,
    DuplicateSubtaskError,
    EmptyPlanError,
    InvalidMapError,
    InvalidSubtaskIdError,
    PlanValidationError,
    SelfDependencyError,
    UndeclaredDependencyError,
    UnknownDependencyError,
    did_you_mean,
)
from fanfold.plan.template import placeholders


class SubtaskShape(Protocol):
    """What the graph checks read of a subtask."""

    @property
    def id(self) -> str: ...

    @property
    def prompt(self) -> str: ...

    @property
    def depends_on(self) -> list[str]: ...

    @property
    def map(self) -> str | None: ...


ITEM_PLACEHOLDERS = frozenset({"item", "index"})
"""Placeholders that only a map subtask has: its item and the item's position."""

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
        "item",
        "index",
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


def all_dependencies(sub: SubtaskShape, ids: Collection[str]) -> tuple[str, ...]:
    """The subtask's dependencies: `depends_on`, then its map source if that is a subtask."""
    deps = dict.fromkeys(sub.depends_on)
    if sub.map is not None and sub.map in ids:
        deps.setdefault(sub.map)
    return tuple(deps)


def check_graph(subtasks: Sequence[SubtaskShape], inputs: Collection[str] = ()) -> None:
    """Check ids, dependency references, maps, placeholders and acyclicity.

    Args:
        subtasks: the plan's subtasks.
        inputs: the plan's declared input names (a map may name one).

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
    for name in inputs:
        if name in ids:
            raise InvalidSubtaskIdError(
                f"{name!r} names both a run input and a subtask, so {{{name}}} in a prompt "
                f"would be ambiguous; rename the subtask (e.g. to '{name}_step') or the input",
                subtask_id=name,
            )
    for sub in subtasks:
        for dep in sub.depends_on:
            if dep == sub.id:
                raise SelfDependencyError(sub.id)
            if dep not in ids:
                raise UnknownDependencyError(sub.id, dep, ids)
        _check_map(sub, ids, inputs)
        deps = set(all_dependencies(sub, ids))
        for name in placeholders(sub.prompt):
            if name in ids and name not in deps:
                if name == sub.id:
                    raise SelfDependencyError(sub.id)
                raise UndeclaredDependencyError(sub.id, name)
            if name in ITEM_PLACEHOLDERS and sub.map is None:
                raise PlanValidationError(
                    f"subtask {sub.id!r} uses {{{name}}} in its prompt but has no map; "
                    f"add 'map: NAME' to run it once per item of a list, or write "
                    f"{{{{{name}}}}} for literal braces"
                )
    cycle = find_cycle(subtasks)
    if cycle:
        raise DependencyCycleError(cycle)


def _check_map(sub: SubtaskShape, ids: Collection[str], inputs: Collection[str]) -> None:
    source = sub.map
    if source is None:
        return
    if source == sub.id:
        raise InvalidMapError(
            f"subtask {sub.id!r} maps over itself; map over a run input or over another "
            "subtask whose output is a list",
            subtask_id=sub.id,
            source=source,
        )
    if source not in ids and source not in inputs:
        known = [*ids, *inputs]
        hint = did_you_mean(source, known) or (
            "; name a subtask whose output is a list, or declare a list input under 'inputs:'"
        )
        raise InvalidMapError(
            f"subtask {sub.id!r} maps over {source!r}, which is neither a subtask nor a "
            f"declared input{hint}",
            subtask_id=sub.id,
            source=source,
        )


def find_cycle(subtasks: Sequence[SubtaskShape]) -> list[str] | None:
    """Return one dependency cycle, each id depending on the next, or None.

    Iterative depth-first search, so a long chain cannot overflow the stack.
    """
    ids = {s.id for s in subtasks}
    depends: dict[str, list[str]] = {s.id: [] for s in subtasks}
    for sub in subtasks:
        depends[sub.id] = [d for d in all_dependencies(sub, ids) if d in depends]
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


def topological_order(subtasks: Sequence[SubtaskShape]) -> list[str]:
    """Return subtask ids so that each comes after its dependencies, keeping plan order."""
    ids = {s.id for s in subtasks}
    deps = {s.id: all_dependencies(s, ids) for s in subtasks}
    remaining = {sid: len(d) for sid, d in deps.items()}
    dependents: dict[str, list[str]] = {s.id: [] for s in subtasks}
    for sid, sub_deps in deps.items():
        for dep in sub_deps:
            dependents[dep].append(sid)
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
