"""What a picture of a plan shows (`Shape`), from a plan, a runtime or a compiled graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fanfold.plan.graph import critical_path, layers, remaining_paths, sinks
from fanfold.plan.models import TaskPlan
from fanfold.scheduling.priorities import DEFAULT_CALL_SECONDS, expected_durations
from fanfold.scheduling.runtime import PlanRuntime

if TYPE_CHECKING:
    from fanfold.graphs.compiled import CompiledPlanGraph

START_NODE = "__start__"
END_NODE = "__end__"
JOIN_PREFIX = "__join__"
"""Join bars are named `__join__<id>`; no subtask id may start with `__`."""


STATUS_COLOURS: Mapping[str, str] = {
    "succeeded": "#c8e6c9",
    "failed": "#ffcdd2",
    "skipped": "#e0e0e0",
    "running": "#bbdefb",
    "waiting": "#fff8e1",
}
"""Fill colour per subtask status (green, red, grey, blue, pale amber)."""

FONT = "Helvetica,Arial,sans-serif"
CRITICAL = "#c2410c"
"""Burnt orange: apart from every status fill, so a failed node on the path still reads."""
CRITICAL_PEN = "2.4"
JOIN = "#37474f"
FAINT = "#b0bec5"
"""Edges from START and into the aggregate: they say little, so they recede."""
TITLE_WIDTH = 90
TITLE_LIMIT = 3 * TITLE_WIDTH


@dataclass(frozen=True)
class Shape:
    """The facts a picture needs, from a plan or a runtime."""

    task: str
    order: list[str]
    dependencies: dict[str, tuple[str, ...]]
    maps: dict[str, str]
    """Map subtask -> what it maps over (a run input or a subtask)."""
    kinds: dict[str, str]
    durations: dict[str, float]
    path: list[str]
    """The critical path, first to last."""


def shape_of(source: TaskPlan | PlanRuntime | CompiledPlanGraph) -> Shape:
    from fanfold.graphs.compiled import CompiledPlanGraph

    if isinstance(source, CompiledPlanGraph) and source.fanfold_runtime is not None:
        source = source.fanfold_runtime
    if isinstance(source, PlanRuntime):
        plan = source.plan
        order = list(source.order)
        deps = dict(source.dependencies)
        durations = {sid: source.expected.get(sid, DEFAULT_CALL_SECONDS) for sid in order}
        remaining = dict(source.remaining)
    elif isinstance(source, TaskPlan):
        plan = source
        order = plan.topological_order()
        deps = plan.dependencies()
        # The scheduler's rule without learned durations: hints, their median, a default.
        durations, _ = expected_durations(plan.subtasks)
        remaining = remaining_paths(order, deps, durations)
    else:
        raise TypeError(
            f"cannot draw a {type(source).__name__}; pass a TaskPlan, a PlanRuntime "
            "or a CompiledPlanGraph"
        )
    return Shape(
        task=plan.task,
        order=order,
        dependencies=deps,
        maps={s.id: s.map for s in plan.subtasks if s.map is not None},
        kinds={s.id: s.kind for s in plan.subtasks},
        durations=durations,
        path=critical_path(order, deps, remaining, durations),
    )


def shape_sinks(shape: Shape) -> list[str]:
    return sinks(shape.order, shape.dependencies)


def shape_layers(shape: Shape) -> list[list[str]]:
    """Subtasks by layer, the longest path (in hops) from START."""
    return layers(shape.order, shape.dependencies)
