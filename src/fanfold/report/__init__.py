"""The run report: one self-contained HTML page rendering a run's record.

`run_report(state, events=...)` builds the run's record (`fanfold.record.build_record`)
and renders it: the plan's graph by status (the aggregate step too), a timeline of every
call with its waits, backoffs and the critical path, a table per subtask and the totals.
The record itself is embedded as `<script type="application/json" id="fanfold-run">`,
the same text `fanfold run --json` prints. `render_record(record)` renders a saved one.

The page is built from a Jinja2 template with its CSS and JS as package data; every
string from the run is HTML-escaped, and a given `graph_svg` is embedded after its
scripts, event handlers, XML prolog and comments are removed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2

from fanfold._svg import clean_svg
from fanfold.record import RunRecord, build_record, record_json
from fanfold.report import graph, tables, timeline
from fanfold.report._html import STATUSES, e, short, slug
from fanfold.scheduling.runtime import PlanRuntime

__all__ = ["render_record", "run_report", "write_run_report"]


def run_report(
    state: Mapping[str, Any],
    *,
    events: Sequence[Any] = (),
    runtime: PlanRuntime | None = None,
    graph_svg: str | None = None,
    prices: Mapping[str, Any] | None = None,
    title: str | None = None,
    max_concurrency: int | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> str:
    """One self-contained HTML document about a run.

    Args:
        state: the run's final state values (`results`, `totals`, `inputs`, `output`,
            `aggregate_error`, `run`), e.g. the last `values` chunk or `invoke`'s result.
        events: the run's lifecycle events (what `stream_mode="custom"` yielded).
        runtime: the compiled plan (`graph.fanfold_runtime`); without it the plan kept
            in `state["run"]["plan"]` is used when there is one.
        graph_svg: a pre-rendered SVG of the graph to show instead of the built-in one.
        prices: extra prices, used only for calls whose run did not know their cost.
        title: the page title (default: the task with its inputs filled in).
        max_concurrency: the run's concurrency limit, for the lower bound.
        inputs: the run's inputs, when `state` does not hold them (`invoke`'s result).
    """
    record = build_record(
        state,
        events=events,
        runtime=runtime,
        max_concurrency=max_concurrency,
        prices=prices,
        inputs=inputs,
    )
    return render_record(record, graph_svg=graph_svg, title=title)


def write_run_report(
    path: str | os.PathLike[str],
    state: Mapping[str, Any],
    *,
    events: Sequence[Any] = (),
    runtime: PlanRuntime | None = None,
    graph_svg: str | None = None,
    prices: Mapping[str, Any] | None = None,
    title: str | None = None,
    max_concurrency: int | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> Path:
    """Write `run_report(state, ...)` to `path` (UTF-8) and return the path.

    The options are `run_report`'s: `events` (the run's lifecycle events), `runtime`
    (`graph.fanfold_runtime`), `graph_svg`, `prices`, `title`, `max_concurrency` and
    `inputs`.
    """
    report = run_report(
        state,
        events=events,
        runtime=runtime,
        graph_svg=graph_svg,
        prices=prices,
        title=title,
        max_concurrency=max_concurrency,
        inputs=inputs,
    )
    return write_html(path, report)


def write_html(path: str | os.PathLike[str], text: str) -> Path:
    """Write a rendered report to `path` (UTF-8), making its folder, and return the path."""
    target = Path(path)
    if target.parent != Path(""):
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


@cache
def _asset(name: str) -> str:
    return files("fanfold.report").joinpath("static", name).read_text(encoding="utf-8")


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fanfold.report", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


def render_record(
    record: RunRecord, *, graph_svg: str | None = None, title: str | None = None
) -> str:
    """The HTML report of a record (e.g. one `fanfold run --json` printed)."""
    heading = title or (
        f"fanfold run: {short(record.title, 90)}" if record.title else "fanfold run report"
    )
    started = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
        if record.started_at
        else "unknown"
    )
    svg = clean_svg(graph_svg) if graph_svg is not None else None
    note = ""
    if graph_svg is not None and svg is None:
        note = '<p class="note">The given graph is not an SVG; drawn here instead.</p>'
    parts = {
        "summary": tables.summary(record),
        "rounds": tables.rounds(record),
        "legend": "".join(f'<span class="chip st-{slug(s)}"></span>{e(s)} ' for s in STATUSES),
        "overview": graph.overview(record),
        "graph_note": note,
        "graph": svg if svg is not None else graph.graph_svg(record),
        "timeline": timeline.timeline(record),
        "table": tables.table(record),
        "totals": tables.totals(record),
        "outputs": tables.outputs(record),
    }
    return _template().render(
        heading=heading,
        started=started,
        record=record,
        parts=parts,
        css=_asset("report.css"),
        js=_asset("report.js"),
        defs=_asset("defs.svg"),
        record_json=record_json(record),
    )
