"""Pictures of a plan without a network: Graphviz DOT, SVG/PNG/PDF/HTML, and text listings.

* `plan_dot(plan)` writes Graphviz DOT text (pure Python, needs nothing installed).
* `render(dot_text, fmt)` turns it into svg, png, pdf or a self-contained html page by
  running Graphviz's `dot` program locally (Debian/Ubuntu: `apt-get install graphviz`);
  nothing is fetched from a network.
* `plan_ascii(plan, width)` is the terminal picture: LangGraph's ASCII boxes while they
  fit (`ascii_fits`), else `layered_listing(plan)`, a list of subtasks layer by layer.

Every function takes a `TaskPlan`, a `PlanRuntime` (its learned expected durations then
shape the critical path) or a `CompiledPlanGraph` (its runtime is used).

Errors: `DrawingError` (a `FanfoldError`, and a `ValueError`) for a format that cannot be
drawn, a `dot` run that fails or times out, or statuses that name no subtask;
`GraphvizNotFoundError` (a `DrawingError`) when the `dot` program is not installed.
Each message is one line that says how to fix it.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fanfold.errors import DrawingError, did_you_mean
from fanfold.formatting import seconds as format_seconds
from fanfold.plan.graph import critical_path, layers, remaining_paths, sinks
from fanfold.plan.graph_checks import AGGREGATE_NODE
from fanfold.plan.models import TaskPlan
from fanfold.scheduling.priorities import DEFAULT_CALL_SECONDS, expected_durations
from fanfold.scheduling.runtime import PlanRuntime

if TYPE_CHECKING:
    from fanfold.graphs.compiled import CompiledPlanGraph

__all__ = [
    "ASCII_MAX_SUBTASKS",
    "FORMATS",
    "STATUS_COLOURS",
    "DrawingError",
    "GraphvizNotFoundError",
    "ascii_fits",
    "layered_listing",
    "plan_ascii",
    "plan_dot",
    "render",
]

START_NODE = "__start__"
END_NODE = "__end__"
JOIN_PREFIX = "__join__"
"""Join bars are named `__join__<id>`; no subtask id may start with `__`."""

FORMATS = ("svg", "png", "pdf", "html", "dot")
"""What `render` produces; `dot` is the DOT text itself and needs no Graphviz."""

INSTALL_HINT = "install Graphviz: apt-get install graphviz (macOS: brew install graphviz)"

ASCII_MAX_SUBTASKS = 12
"""Past this many subtasks the ASCII boxes are a tangle; `plan_ascii` lists layers instead."""
_LISTING_INDENT = 8

STATUS_COLOURS: Mapping[str, str] = {
    "succeeded": "#c8e6c9",
    "failed": "#ffcdd2",
    "skipped": "#e0e0e0",
    "running": "#bbdefb",
    "waiting": "#fff8e1",
}
"""Fill colour per subtask status (green, red, grey, blue, pale amber)."""

_FONT = "Helvetica,Arial,sans-serif"
_CRITICAL = "#c2410c"
"""Burnt orange: apart from every status fill, so a failed node on the path still reads."""
_CRITICAL_PEN = "2.4"
_JOIN = "#37474f"
_FAINT = "#b0bec5"
"""Edges from START and into the aggregate: they say little, so they recede."""
_TITLE_WIDTH = 90
_TITLE_LIMIT = 3 * _TITLE_WIDTH


class GraphvizNotFoundError(DrawingError):
    """Graphviz's `dot` program, which renders svg/png/pdf/html, is not installed."""

    def __init__(self, fmt: str, executable: str) -> None:
        super().__init__(
            f"cannot draw {fmt}: Graphviz's {executable!r} program was not found; "
            f"{INSTALL_HINT}, or write the DOT text (format 'dot') instead"
        )
        self.fmt = fmt
        self.executable = executable


# -- what is drawn -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
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


def _shape(source: TaskPlan | PlanRuntime | CompiledPlanGraph) -> _Shape:
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
    return _Shape(
        task=plan.task,
        order=order,
        dependencies=deps,
        maps={s.id: s.map for s in plan.subtasks if s.map is not None},
        kinds={s.id: s.kind for s in plan.subtasks},
        durations=durations,
        path=critical_path(order, deps, remaining, durations),
    )


def _sinks(shape: _Shape) -> list[str]:
    return sinks(shape.order, shape.dependencies)


def _layers(shape: _Shape) -> list[list[str]]:
    """Subtasks by layer, the longest path (in hops) from START."""
    return layers(shape.order, shape.dependencies)


# -- DOT -----------------------------------------------------------------------------------


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
    return textwrap.shorten(text, _TITLE_LIMIT, placeholder=" ...") if text.strip() else ""


def _title_label(heading: str) -> _Escaped:
    """The title wrapped into left-justified lines (`\\l` ends a left-justified line)."""
    lines = textwrap.wrap(heading, _TITLE_WIDTH, break_long_words=False)
    return _Escaped("".join(_quote(line)[1:-1] + "\\l" for line in lines))


def _check_statuses(shape: _Shape, statuses: Mapping[str, str]) -> None:
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
    shape = _shape(plan_or_runtime)
    statuses = dict(statuses or {})
    _check_statuses(shape, statuses)
    heading = _title_text(shape.task, title)
    graph = _attrs(
        rankdir="LR",
        fontname=_FONT,
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
        fontname=_FONT,
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
    return {"color": _CRITICAL, "penwidth": _CRITICAL_PEN, "group": "critical"} if on else {}


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


def _node_lines(shape: _Shape, statuses: Mapping[str, str]) -> list[str]:
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
            colour = _CRITICAL if on else _JOIN
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


def _edge_lines(shape: _Shape) -> list[str]:
    path = shape.path
    hops = set(zip(path, path[1:], strict=False))

    def line(tail: str, head: str, critical: bool, **attrs: str | None) -> str:
        if critical:
            # A heavier weight (with the group) keeps the critical path straight.
            attrs.update(color=_CRITICAL, penwidth=_CRITICAL_PEN, weight="4", class_="critical")
        return f"  {_quote(tail)} -> {_quote(head)}{_attrs(**attrs)};"

    lines = []
    for sid in shape.order:
        deps = shape.dependencies[sid]
        if not deps:
            lines.append(line(START_NODE, sid, sid == path[0], color=_FAINT))
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
    lines += [line(sid, AGGREGATE_NODE, sid == path[-1], color=_FAINT) for sid in _sinks(shape)]
    lines.append(line(AGGREGATE_NODE, END_NODE, True))
    return lines


# -- rendering -----------------------------------------------------------------------------


def _dot_program(fmt: str, executable: str | None) -> str:
    name = executable or "dot"
    found = shutil.which(name)
    if found is None:
        raise GraphvizNotFoundError(fmt, name)
    return found


def _run_dot(
    dot_text: str, fmt: str, executable: str | None, timeout: float, *, asked: str
) -> bytes:
    """Graphviz's `-T<fmt>` output; `asked` is the format the caller asked for."""
    program = _dot_program(asked, executable)
    try:
        done = subprocess.run(
            [program, f"-T{fmt}"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DrawingError(
            f"Graphviz took longer than {timeout:g}s to draw {asked}; write the DOT text "
            "(format 'dot') and render it yourself, or draw a smaller plan"
        ) from exc
    except OSError as exc:
        raise DrawingError(f"cannot run Graphviz's {program!r}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        errors = done.stderr.decode("utf-8", "replace").strip().splitlines()
        first = next((line for line in errors if line.strip()), "no error message")
        raise DrawingError(
            f"Graphviz could not draw {asked} (exit status {done.returncode}): {first}"
        )
    return done.stdout


_SVG_START = re.compile(r"<svg\b")
_XLINK_DECLARATION = re.compile(r'\s+xmlns:xlink="[^"]*"')
_GRAPH_TITLE = re.compile(r'<g id="graph0"[^>]*>\s*<title>(.*?)</title>', re.S)


def _html_page(svg: str, title: str | None) -> bytes:
    """A self-contained HTML page with `svg` inline: no script, stylesheet or font links."""
    start = _SVG_START.search(svg)
    if start is None:
        raise DrawingError("Graphviz produced no <svg> element; cannot build the html page")
    # Drop the XML prolog and DOCTYPE (it names an external DTD). HTML gives inline SVG
    # its namespaces itself, so the xlink declaration is not needed either.
    svg = svg[start.start() :]
    svg = _XLINK_DECLARATION.sub("", svg, count=1)
    if title is None:
        found = _GRAPH_TITLE.search(svg)
        title = html.unescape(found.group(1)) if found else "fanfold plan"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
  body {{ margin: 1rem; font-family: {_FONT}; background: #fff; color: #263238; }}
  .plan {{ overflow: auto; }}
  .plan svg {{ display: block; }}
</style>
</head>
<body>
<div class="plan">
{svg.strip()}
</div>
</body>
</html>
"""
    return page.encode("utf-8")


def render(
    dot_text: str,
    fmt: str,
    *,
    title: str | None = None,
    executable: str | None = None,
    timeout: float = 60.0,
) -> bytes:
    """Render DOT text as svg, png, pdf or html by running Graphviz's `dot` locally.

    `html` is one self-contained page with the SVG inline, titled `title` (default: the
    graph's name, which `plan_dot` sets to the plan's task). `dot` returns the text
    itself, with no Graphviz needed.

    Args:
        dot_text: DOT text, e.g. from `plan_dot`.
        fmt: one of FORMATS.
        title: the html page's title.
        executable: the `dot` program (a name on PATH or a path); default `dot`.
        timeout: seconds to wait for Graphviz.

    Raises:
        GraphvizNotFoundError: `dot` is not installed (says how to install it).
        DrawingError: an unknown format, or Graphviz failed or timed out.
    """
    if fmt not in FORMATS:
        raise DrawingError(
            f"cannot draw as {fmt!r}{did_you_mean(fmt, FORMATS)}; use one of {', '.join(FORMATS)}"
        )
    if fmt == "dot":
        return dot_text.encode("utf-8")
    if fmt == "html":
        svg = _run_dot(dot_text, "svg", executable, timeout, asked=fmt).decode("utf-8")
        return _html_page(svg, title)
    return _run_dot(dot_text, fmt, executable, timeout, asked=fmt)


# -- text ----------------------------------------------------------------------------------


def layered_listing(
    plan_or_runtime: TaskPlan | PlanRuntime | CompiledPlanGraph, *, width: int = 100
) -> str:
    """The plan as text, layer by layer: for plans too big for boxes.

    A subtask's layer is its longest path from START (roots are layer 1), so every
    dependency sits in an earlier layer. Each line is `  id  <- dep1, dep2`; a map is
    `  id [map over SOURCE]`. Long dependency lists wrap to stay within `width`.
    """
    shape = _shape(plan_or_runtime)
    layers = _layers(shape)
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
    lines += with_deps(AGGREGATE_NODE, len(AGGREGATE_NODE), _sinks(shape))
    return "\n".join(lines) + "\n"


def _boxes(shape: _Shape) -> str:
    """LangGraph's ASCII drawing of the same graph `CompiledPlanGraph.get_graph()` draws."""
    from langchain_core.runnables.graph import Graph

    graph = Graph()
    for name in [START_NODE, *shape.order, AGGREGATE_NODE, END_NODE]:
        graph.add_node(None, name)
    edges = {(START_NODE, sid) for sid in shape.order if not shape.dependencies[sid]}
    edges |= {(dep, sid) for sid, deps in shape.dependencies.items() for dep in deps}
    edges |= {(sid, AGGREGATE_NODE) for sid in _sinks(shape)}
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
    shape = _shape(plan_or_runtime)
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
    shape = _shape(plan_or_runtime)
    limit = _terminal_width(width)
    if len(shape.order) <= max_subtasks:
        boxes = _boxes(shape)
        if max(map(len, boxes.splitlines()), default=0) <= limit:
            return boxes
    return layered_listing(plan_or_runtime, width=limit)
