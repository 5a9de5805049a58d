"""The plan as text: LangGraph's ASCII boxes while they fit, else a layered listing."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fanfold.drawing.shape import END_NODE, START_NODE, Shape, shape_layers, shape_of, shape_sinks
from fanfold.plan.graph_checks import AGGREGATE_NODE
from fanfold.plan.models import TaskPlan
from fanfold.scheduling.runtime import PlanRuntime

if TYPE_CHECKING:
    from fanfold.graphs.compiled import CompiledPlanGraph

__all__ = ["ASCII_MAX_SUBTASKS", "ascii_fits", "layered_listing", "plan_ascii"]

ASCII_MAX_SUBTASKS = 12
"""Past this many subtasks the ASCII boxes are a tangle; `plan_ascii` lists layers instead."""
_LISTING_INDENT = 8


def layered_listing(
    plan_or_runtime: TaskPlan | PlanRuntime | CompiledPlanGraph, *, width: int = 100
) -> str:
    """The plan as text, layer by layer: for plans too big for boxes.

    A subtask's layer is its longest path from START (roots are layer 1), so every
    dependency sits in an earlier layer. Each line is `  id  <- dep1, dep2`; a map is
    `  id [map over SOURCE]`. Long dependency lists wrap to stay within `width`.
    """
    shape = shape_of(plan_or_runtime)
    layers = shape_layers(shape)
    count = len(shape.order)
    lines = [
        f"{count} subtask{'s' if count != 1 else ''} in {len(layers)} "
        f"layer{'s' if len(layers) != 1 else ''}",
        *textwrap.wrap(
            f"Critical path: {' -> '.join(shape.path)}",
            width,
            subsequent_indent=" " * len("Critical path: "),
            break_long_words=False,
            break_on_hyphens=False,
        ),
    ]

    def entry(sid: str) -> str:
        source = shape.maps.get(sid)
        return sid if source is None else f"{sid} [map over {source}]"

    def with_deps(name: str, column: int, deps: Sequence[str]) -> list[str]:
        if not deps:
            return [f"  {name}"]
        head = f"  {name.ljust(column)}  <- "
        # Continuation lines align under the first dependency, unless the name is so
        # long that little room would be left: then every dependency line is indented.
        indent = len(head) if len(head) <= width // 2 else _LISTING_INDENT
        wrapped = textwrap.wrap(
            ", ".join(deps),
            max(width - indent, 20),
            break_long_words=False,
            break_on_hyphens=False,
        )
        if indent != len(head):
            return [head.rstrip(), *(" " * indent + line for line in wrapped)]
        return [head + wrapped[0], *(" " * indent + line for line in wrapped[1:])]

    for number, members in enumerate(layers, start=1):
        noun = "subtask" if len(members) == 1 else "subtasks"
        note = ", no dependencies" if number == 1 else ""
        lines.append(f"Layer {number} ({len(members)} {noun}{note})")
        column = min(max(len(entry(s)) for s in members), 32)
        for sid in members:
            deps = shape.dependencies[sid] if number > 1 else ()
            lines += with_deps(entry(sid), column, deps)
    lines.append("Finally")
    lines += with_deps(AGGREGATE_NODE, len(AGGREGATE_NODE), shape_sinks(shape))
    return "\n".join(lines) + "\n"


def _boxes(shape: Shape) -> str:
    """LangGraph's ASCII drawing of the same graph `CompiledPlanGraph.get_graph()` draws."""
    from langchain_core.runnables.graph import Graph

    graph = Graph()
    for name in [START_NODE, *shape.order, AGGREGATE_NODE, END_NODE]:
        graph.add_node(None, name)
    edges = {(START_NODE, sid) for sid in shape.order if not shape.dependencies[sid]}
    edges |= {(dep, sid) for sid, deps in shape.dependencies.items() for dep in deps}
    edges |= {(sid, AGGREGATE_NODE) for sid in shape_sinks(shape)}
    for tail, head in sorted(edges):
        graph.add_edge(graph.nodes[tail], graph.nodes[head])
    graph.add_edge(graph.nodes[AGGREGATE_NODE], graph.nodes[END_NODE])
    return graph.draw_ascii()


def _terminal_width(width: int | None) -> int:
    return width if width is not None else shutil.get_terminal_size((100, 24)).columns


def ascii_fits(
    plan_or_runtime: TaskPlan | PlanRuntime | CompiledPlanGraph,
    width: int | None = None,
    *,
    max_subtasks: int = ASCII_MAX_SUBTASKS,
) -> bool:
    """Whether the ASCII boxes suit this plan: at most `max_subtasks` and within `width`.

    `width` defaults to the terminal's width (100 when there is no terminal). Past
    `max_subtasks` the edges cross too much to follow, whatever the width.
    """
    shape = shape_of(plan_or_runtime)
    if len(shape.order) > max_subtasks:
        return False
    limit = _terminal_width(width)
    return max(map(len, _boxes(shape).splitlines()), default=0) <= limit


def plan_ascii(
    plan_or_runtime: TaskPlan | PlanRuntime | CompiledPlanGraph,
    width: int | None = None,
    *,
    max_subtasks: int = ASCII_MAX_SUBTASKS,
) -> str:
    """The terminal picture: ASCII boxes when `ascii_fits`, else the `layered_listing`."""
    shape = shape_of(plan_or_runtime)
    limit = _terminal_width(width)
    if len(shape.order) <= max_subtasks:
        boxes = _boxes(shape)
        if max(map(len, boxes.splitlines()), default=0) <= limit:
            return boxes
    return layered_listing(plan_or_runtime, width=limit)
