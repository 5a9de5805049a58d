"""Graphviz DOT text of a plan (pure Python, needs nothing installed)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fanfold.drawing.shape import (
    CRITICAL,
    CRITICAL_PEN,
    END_NODE,
    FAINT,
    FONT,
    JOIN,
    JOIN_PREFIX,
    START_NODE,
    STATUS_COLOURS,
    TITLE_LIMIT,
    TITLE_WIDTH,
    Shape,
    shape_of,
    shape_sinks,
)
from fanfold.errors import DrawingError, did_you_mean
from fanfold.formatting import seconds as format_seconds
from fanfold.plan.graph_checks import AGGREGATE_NODE
from fanfold.plan.models import TaskPlan
from fanfold.scheduling.runtime import PlanRuntime

if TYPE_CHECKING:
    from fanfold.graphs.compiled import CompiledPlanGraph

__all__ = ["plan_dot"]


class _Escaped(str):
    """Text already in DOT's escString form (e.g. with `\\l` line ends): quoted as is."""


def _quote(text: str) -> str:
    """A DOT double-quoted string showing `text` literally (as a label or an id).

    Backslashes are doubled (a label reads `\\n`, `\\l` or `\\N` as escapes) and line
    breaks become centred `\\n` breaks.
    """
    if isinstance(text, _Escaped):
        return f'"{text}"'
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    return f'"{text}"'


def _attrs(**attrs: str | float | None) -> str:
    """`[a="x", b="y"]` for the attributes that are set, in the order given."""
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        shown = value if isinstance(value, str) else f"{value:g}"
        parts.append(f"{key.rstrip('_')}={_quote(shown)}")
    return f" [{', '.join(parts)}]" if parts else ""


def _title_text(task: str, title: str | None) -> str:
    """The picture's title on one line: `title`, else the plan's task (shortened)."""
    text = task if title is None else title
    return textwrap.shorten(text, TITLE_LIMIT, placeholder=" ...") if text.strip() else ""


def _title_label(heading: str) -> _Escaped:
    """The title wrapped into left-justified lines (`\\l` ends a left-justified line)."""
    lines = textwrap.wrap(heading, TITLE_WIDTH, break_long_words=False)
    return _Escaped("".join(_quote(line)[1:-1] + "\\l" for line in lines))


def _check_statuses(shape: Shape, statuses: Mapping[str, str]) -> None:
    known = [*shape.order, AGGREGATE_NODE]
    for sid, status in statuses.items():
        if sid not in known:
            raise DrawingError(
                f"statuses name {sid!r}, which is not a subtask of the plan"
                f"{did_you_mean(sid, known)}"
            )
        if status not in STATUS_COLOURS:
            raise DrawingError(
                f"subtask {sid!r} has status {status!r}; use one of "
                + ", ".join(repr(s) for s in STATUS_COLOURS)
            )


def plan_dot(
    plan_or_runtime: TaskPlan | PlanRuntime | CompiledPlanGraph,
    *,
    statuses: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str:
    """Graphviz DOT text of the plan's graph, laid out left to right.

    START -> subtasks -> aggregate -> END. A subtask with two or more dependencies is a
    join: its dependencies' edges meet at a small bar just before it. The critical path
    (from expected durations: hints or learned, else one hop each) is drawn in bold
    orange, edges and nodes, and kept straight. A map subtask is one stacked box
    labelled `id [map over SOURCE]`.

    Args:
        plan_or_runtime: a TaskPlan, a PlanRuntime or a CompiledPlanGraph.
        statuses: subtask id (or "aggregate") -> succeeded, failed, skipped, running or
            waiting; colours the node and writes the status under its name.
        title: the picture's title; default the plan's task, "" for none.

    Raises:
        DrawingError: `statuses` names an unknown subtask or status.
    """
    shape = shape_of(plan_or_runtime)
    statuses = dict(statuses or {})
    _check_statuses(shape, statuses)
    heading = _title_text(shape.task, title)
    graph = _attrs(
        rankdir="LR",
        fontname=FONT,
        fontsize="16",
        # Measured on 300-subtask plans: tight enough for one readable canvas (about
        # 45 x 30 inches at 12 pt), loose enough that edges do not hug the boxes.
        nodesep="0.18",
        ranksep="0.4",
        outputorder="edgesfirst",
        pad="0.2",
        labelloc="t" if heading else None,
        labeljust="l" if heading else None,
        label=_title_label(heading) if heading else None,
    )
    node = _attrs(
        shape="box",
        style="rounded,filled",
        fillcolor="#ffffff",
        color="#455a64",
        fontname=FONT,
        fontsize="12",
        height="0.32",
        margin="0.12,0.04",
    )
    lines = [
        f"digraph {_quote(heading or 'fanfold plan')} {{",
        f"  graph{graph};",
        f"  node{node};",
        f"  edge{_attrs(color='#78909c', arrowsize='0.6')};",
        "",
        *_node_lines(shape, statuses),
        "",
        *_edge_lines(shape),
        "}",
    ]
    return "\n".join(lines) + "\n"


def _critical(on: bool = True) -> dict[str, str | None]:
    # One group: dot then keeps the path's edges straight, a spine across the picture.
    return {"color": CRITICAL, "penwidth": CRITICAL_PEN, "group": "critical"} if on else {}


def _status_attrs(status: str | None, styles: list[str]) -> dict[str, str | None]:
    if status is None:
        return {"style": ",".join(styles)}
    if status == "skipped":
        styles = [*styles, "dashed"]
    return {
        "style": ",".join(styles),
        "fillcolor": STATUS_COLOURS[status],
        "fontcolor": "#616161" if status == "skipped" else None,
        "class_": f"status-{status}",
    }


def _node_lines(shape: Shape, statuses: Mapping[str, str]) -> list[str]:
    def line(name: str, label: str, **attrs: str | None) -> str:
        return f"  {_quote(name)}{_attrs(label=label, **attrs)};"

    def classes(*names: str | None) -> str | None:
        return " ".join(n for n in names if n) or None

    on_path = set(shape.path)
    terminal = {"shape": "oval", "style": "filled", "fillcolor": "#eceff1", "fontsize": "10"}
    lines = [line(START_NODE, "START", **terminal, **_critical())]
    for sid in shape.order:
        on = sid in on_path
        deps = shape.dependencies[sid]
        if len(deps) >= 2:
            colour = CRITICAL if on else JOIN
            lines.append(
                line(
                    JOIN_PREFIX + sid,
                    "",
                    shape="box",
                    style="filled",
                    fixedsize="true",
                    width="0.06",
                    height="0.3",
                    color=colour,
                    fillcolor=colour,
                    tooltip=f"{sid} waits for all of: {', '.join(deps)}",
                    class_=classes("join", "critical" if on else None),
                    group="critical" if on else None,
                )
            )
        status = statuses.get(sid)
        source = shape.maps.get(sid)
        # A map is one stacked box however many items it runs over.
        label = sid if source is None else f"{sid}\n[map over {source}]"
        styles = ["rounded", "filled"] if source is None else ["filled"]
        attrs = {"shape": None if source is None else "box3d", **_status_attrs(status, styles)}
        attrs["class_"] = classes(attrs.get("class_"), "critical" if on else None)
        tooltip = f"{sid} ({shape.kinds[sid]}), expected {format_seconds(shape.durations[sid])}"
        lines.append(
            line(
                sid,
                label if status is None else f"{label}\n{status}",
                **attrs,
                **_critical(on),
                tooltip=tooltip if status is None else f"{tooltip}, {status}",
            )
        )
    status = statuses.get(AGGREGATE_NODE)
    lines.append(
        line(
            AGGREGATE_NODE,
            AGGREGATE_NODE if status is None else f"{AGGREGATE_NODE}\n{status}",
            **_status_attrs(status, ["rounded", "filled", "bold"]),
            **_critical(),
        )
    )
    lines.append(line(END_NODE, "END", **terminal, **_critical()))
    return lines


def _edge_lines(shape: Shape) -> list[str]:
    path = shape.path
    hops = set(zip(path, path[1:], strict=False))

    def line(tail: str, head: str, critical: bool, **attrs: str | None) -> str:
        if critical:
            # A heavier weight (with the group) keeps the critical path straight.
            attrs.update(color=CRITICAL, penwidth=CRITICAL_PEN, weight="4", class_="critical")
        return f"  {_quote(tail)} -> {_quote(head)}{_attrs(**attrs)};"

    lines = []
    for sid in shape.order:
        deps = shape.dependencies[sid]
        if not deps:
            lines.append(line(START_NODE, sid, sid == path[0], color=FAINT))
        elif len(deps) == 1:
            lines.append(line(deps[0], sid, (deps[0], sid) in hops))
        else:
            # A join's dependencies meet at a bar, then one arrow enters the subtask.
            # Why a bar and not an edge style: every edge is an "and" already (a
            # subtask waits for all its dependencies), but a join is where parallel
            # branches wait for each other, the place to look when a run stalls; a bar,
            # as in a UML activity diagram, shows that at a glance. A dashed or coloured
            # edge would read as "optional" or compete with the critical path and the
            # status colours. The cost, one more rank per join, stays cheap at 300
            # subtasks (see the timing test).
            bar = JOIN_PREFIX + sid
            via = next((d for d in deps if (d, sid) in hops), None)
            lines += [line(dep, bar, dep == via, arrowhead="none") for dep in deps]
            lines.append(line(bar, sid, via is not None))
    lines += [line(sid, AGGREGATE_NODE, sid == path[-1], color=FAINT) for sid in shape_sinks(shape)]
    lines.append(line(AGGREGATE_NODE, END_NODE, True))
    return lines
