"""Offline pictures of a plan: DOT text, Graphviz renders, and text listings for big plans.

DOT is checked by parsing it lightly (one statement a line, as `plan_dot` writes it);
the full text is compared only in the research plan's snapshot. Renders need Graphviz's
`dot` (the Debian package `graphviz`, installed in CI); without it they are skipped.
"""

from __future__ import annotations

import random
import re
import shutil
import time
from pathlib import Path

import pytest

from fanfold import FanfoldError, PlanError, TaskPlan, compile_plan
from fanfold.drawing import (
    ASCII_MAX_SUBTASKS,
    STATUS_COLOURS,
    DrawingError,
    GraphvizNotFoundError,
    ascii_fits,
    layered_listing,
    plan_ascii,
    plan_dot,
    render,
)
from fanfold.scheduling.priorities import critical_path, expected_durations, remaining_paths
from fanfold.scheduling.runtime import PlanRuntime

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT_PLAN = ROOT / "examples" / "document_analysis" / "plan.yaml"

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not installed (apt-get install graphviz); CI installs it",
)

START, END, AGGREGATE = "__start__", "__end__", "aggregate"


# -- reading DOT ---------------------------------------------------------------------------

_ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"(?: \[(.*)\])?;$')
_EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)"(?: \[(.*)\])?;$')


def attrs_of(text: str | None) -> dict[str, str]:
    return dict(_ATTR.findall(text or ""))


def nodes_of(dot: str) -> dict[str, dict[str, str]]:
    found = {}
    for line in dot.splitlines():
        if " -> " not in line and (m := _NODE.match(line)):
            found[m.group(1)] = attrs_of(m.group(2))
    return found


def edges_of(dot: str) -> dict[tuple[str, str], dict[str, str]]:
    found = {}
    for line in dot.splitlines():
        if m := _EDGE.match(line):
            found[(m.group(1), m.group(2))] = attrs_of(m.group(3))
    return found


def graph_attrs(dot: str) -> dict[str, str]:
    line = next(line for line in dot.splitlines() if line.strip().startswith("graph ["))
    return attrs_of(line)


def is_critical(attrs: dict[str, str]) -> bool:
    return "critical" in attrs.get("class", "").split()


def drawn_hops(path: list[str], dependencies: dict[str, tuple[str, ...]]) -> set[tuple[str, str]]:
    """The drawn edges that make up `path`, START to END, through join bars."""
    edges = {(START, path[0]), (path[-1], AGGREGATE), (AGGREGATE, END)}
    for tail, head in zip(path, path[1:], strict=False):
        if len(dependencies[head]) >= 2:
            edges |= {(tail, f"__join__{head}"), (f"__join__{head}", head)}
        else:
            edges.add((tail, head))
    return edges


def layered_plan(layers: int, width: int, *, seed: int = 7, task: str = "A big plan") -> TaskPlan:
    """`layers * width` subtasks `step-LL-II`; each depends on 1-3 of the two layers before."""
    rnd = random.Random(seed)
    subtasks: list[dict[str, object]] = []
    previous: list[list[str]] = []
    for layer in range(layers):
        ids = [f"step-{layer:02d}-{i:02d}" for i in range(width)]
        for sid in ids:
            deps: list[str] = []
            if previous:
                pool = [d for ids_before in previous[-2:] for d in ids_before]
                deps = [rnd.choice(previous[-1]), *rnd.sample(pool, rnd.randint(0, 2))]
            subtasks.append(
                {"id": sid, "prompt": f"do {sid}", "depends_on": list(dict.fromkeys(deps))}
            )
        previous.append(ids)
    return TaskPlan.model_validate({"task": task, "subtasks": subtasks})


@pytest.fixture
def research() -> TaskPlan:
    return TaskPlan.from_file(ROOT / "examples" / "research.yaml")


# -- DOT structure -------------------------------------------------------------------------


def test_dot_is_laid_out_left_to_right(research):
    dot = plan_dot(research)
    assert dot.startswith("digraph ")
    assert graph_attrs(dot)["rankdir"] == "LR"


def test_dot_runs_from_start_through_every_subtask_and_the_aggregate_to_end(research):
    dot = plan_dot(research)
    nodes = nodes_of(dot)
    assert nodes[START]["label"] == "START"
    assert nodes[END]["label"] == "END"
    assert nodes[AGGREGATE]["label"] == "aggregate"
    assert set(research.ids) <= set(nodes)
    edges = edges_of(dot)
    roots = {sid for sid, deps in research.dependencies().items() if not deps}
    assert {head for tail, head in edges if tail == START} == roots
    assert {tail for tail, head in edges if head == AGGREGATE} == {"recommendation"}
    assert (AGGREGATE, END) in edges


def test_a_join_subtask_gets_a_bar_where_its_dependencies_meet(research):
    dot = plan_dot(research)
    nodes, edges = nodes_of(dot), edges_of(dot)
    for sid, deps in research.dependencies().items():
        bar = f"__join__{sid}"
        if len(deps) >= 2:
            assert "join" in nodes[bar]["class"].split()
            assert nodes[bar]["width"] == "0.06" and nodes[bar]["label"] == ""
            for dep in deps:
                assert edges[(dep, bar)]["arrowhead"] == "none"
                assert (dep, sid) not in edges
            assert (bar, sid) in edges
        else:
            assert bar not in nodes


def test_a_single_dependency_is_a_plain_edge():
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "draft", "prompt": "draft"},
                {"id": "polish", "prompt": "polish {draft}", "depends_on": ["draft"]},
            ],
        }
    )
    dot = plan_dot(plan)
    assert ("draft", "polish") in edges_of(dot)
    assert "__join__" not in dot


def test_critical_path_attributes_are_on_exactly_the_path_edges(research):
    order, deps = research.topological_order(), research.dependencies()
    durations = dict.fromkeys(order, 1.0)
    path = critical_path(order, deps, remaining_paths(order, deps, durations), durations)
    dot = plan_dot(research)
    edges = edges_of(dot)
    critical = {edge for edge, attrs in edges.items() if is_critical(attrs)}
    assert critical == drawn_hops(path, deps)
    for edge in critical:
        assert edges[edge]["color"] == "#c2410c" and edges[edge]["penwidth"] == "2.4"
    for edge in set(edges) - critical:
        assert "penwidth" not in edges[edge]
    nodes = nodes_of(dot)
    assert {sid for sid in research.ids if is_critical(nodes[sid])} == set(path)


def test_critical_path_follows_expected_seconds_hints():
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "quick", "prompt": "q", "expected_seconds": 1},
                {"id": "slow", "prompt": "s", "expected_seconds": 30},
                {"id": "report", "prompt": "r", "depends_on": ["quick", "slow"]},
            ],
        }
    )
    edges = edges_of(plan_dot(plan))
    assert is_critical(edges[("slow", "__join__report")])
    assert not is_critical(edges[("quick", "__join__report")])
    assert is_critical(edges[(START, "slow")])
    assert not is_critical(edges[(START, "quick")])


def test_critical_path_of_a_runtime_uses_its_learned_durations(research):
    runtime = PlanRuntime(
        plan=research, kinds={}, models={}, expected={"regulation": 40.0, "risks": 5.0}
    )
    edges = edges_of(plan_dot(runtime))
    critical = {edge for edge, attrs in edges.items() if is_critical(attrs)}
    path = ["regulation", "risks", "recommendation"]
    assert critical == drawn_hops(path, research.dependencies())


def test_a_compiled_graph_is_drawn_like_its_plan(research):
    graph = compile_plan(research, model="simulated")
    assert plan_dot(graph) == plan_dot(research)


def test_with_no_hints_the_path_is_the_longest_in_hops(research):
    durations, source = expected_durations(research.subtasks)
    assert source == "hops"
    critical = [sid for sid, a in nodes_of(plan_dot(research)).items() if is_critical(a)]
    assert [s for s in critical if s in research.ids][-1] == "recommendation"
    assert len([s for s in critical if s in research.ids]) == 3  # three hops deep


def test_a_map_subtask_is_one_stacked_node_naming_its_source():
    plan = TaskPlan.from_file(DOCUMENT_PLAN)
    nodes = nodes_of(plan_dot(plan))
    assert nodes["analyse"]["shape"] == "box3d"
    assert nodes["analyse"]["label"] == r"analyse\n[map over sections]"
    assert "shape" not in nodes["combine"]  # the default rounded box
    assert [n for n in nodes if n.startswith("analyse")] == ["analyse"]


def test_a_map_over_a_run_input_names_the_input():
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "inputs": {"cities": {"default": ["Lisbon", "Oslo"]}},
            "subtasks": [{"id": "describe", "prompt": "Describe {item}", "map": "cities"}],
        }
    )
    node = nodes_of(plan_dot(plan))["describe"]
    assert node["shape"] == "box3d"
    assert node["label"] == r"describe\n[map over cities]"


def test_statuses_colour_the_nodes_and_are_written_under_the_name(research):
    statuses = {
        "market_size": "succeeded",
        "competitors": "failed",
        "regulation": "skipped",
        "opportunities": "running",
        "risks": "waiting",
    }
    nodes = nodes_of(plan_dot(research, statuses=statuses))
    for sid, status in statuses.items():
        assert nodes[sid]["fillcolor"] == STATUS_COLOURS[status]
        assert nodes[sid]["label"] == f"{sid}\\n{status}"
        assert f"status-{status}" in nodes[sid]["class"].split()
    assert "dashed" in nodes["regulation"]["style"].split(",")
    assert "fillcolor" not in nodes["recommendation"]  # no status: the default white
    assert len(set(STATUS_COLOURS.values())) == len(STATUS_COLOURS)


def test_the_aggregate_can_have_a_status_too(research):
    node = nodes_of(plan_dot(research, statuses={"aggregate": "failed"}))[AGGREGATE]
    assert node["fillcolor"] == STATUS_COLOURS["failed"]


def test_a_status_for_an_unknown_subtask_is_a_one_line_error_with_a_suggestion(research):
    with pytest.raises(DrawingError, match=r"'risk'.*did you mean 'risks'") as caught:
        plan_dot(research, statuses={"risk": "failed"})
    assert "\n" not in str(caught.value)


def test_an_unknown_status_is_a_one_line_error_listing_the_known_ones(research):
    with pytest.raises(DrawingError, match=r"'done'.*'succeeded', 'failed'"):
        plan_dot(research, statuses={"risks": "done"})


def test_ids_with_hyphens_and_awkward_titles_are_quoted_and_escaped():
    plan = TaskPlan.model_validate(
        {
            "task": 'Say "hi" \\ then\nleave',
            "subtasks": [
                {"id": "fetch-page", "prompt": "fetch"},
                {"id": "sum-up", "prompt": "sum {fetch-page}", "depends_on": ["fetch-page"]},
            ],
        }
    )
    dot = plan_dot(plan)
    assert re.search(r'^  "fetch-page" -> "sum-up"[ ;]', dot, re.M)
    assert nodes_of(dot)["sum-up"]["label"] == "sum-up"
    title = graph_attrs(dot)["label"]
    assert title == r"Say \"hi\" \\ then leave\l"  # quote escaped, backslash doubled
    assert dot.splitlines()[0] == r'digraph "Say \"hi\" \\ then leave" {'
    # Every quote inside a statement is escaped: each line has balanced quotes.
    for line in dot.splitlines():
        assert line.replace('\\"', "").count('"') % 2 == 0, line


def test_title_defaults_to_the_task_and_can_be_replaced_or_left_out(research):
    assert graph_attrs(plan_dot(research))["label"].startswith("Write a one-page market brief")
    assert graph_attrs(plan_dot(research, title="Brief"))["label"] == r"Brief\l"
    assert "label" not in graph_attrs(plan_dot(research, title=""))


def test_a_long_task_title_is_shortened_and_wrapped(research):
    dot = plan_dot(research, title="word " * 200)
    label = graph_attrs(dot)["label"]
    lines = label.split(r"\l")[:-1]
    assert 1 < len(lines) <= 3 and all(len(line) <= 90 for line in lines)
    assert label.endswith(r"...\l")


def test_research_dot_matches_snapshot(research, snapshot):
    snapshot("research.dot", plan_dot(research))


# -- rendering -----------------------------------------------------------------------------


@needs_dot
def test_svg_is_an_svg_document_naming_every_subtask(research):
    svg = render(plan_dot(research), "svg").decode("utf-8")
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    for sid in research.ids:
        assert f">{sid}</text>" in svg


@needs_dot
def test_svg_of_ids_with_hyphens_keeps_them():
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "fetch-page", "prompt": "f"},
                {"id": "b", "prompt": "b"},
                {"id": "sum-up", "prompt": "s", "depends_on": ["fetch-page", "b"]},
            ],
        }
    )
    svg = render(plan_dot(plan), "svg").decode("utf-8")
    assert "fetch&#45;page" in svg and "sum&#45;up" in svg


@needs_dot
def test_png_starts_with_the_png_signature(research):
    assert render(plan_dot(research), "png").startswith(b"\x89PNG\r\n\x1a\n")


@needs_dot
def test_pdf_starts_with_the_pdf_header(research):
    assert render(plan_dot(research), "pdf").startswith(b"%PDF-")


@needs_dot
def test_html_page_embeds_the_svg_inline_and_links_nothing(research):
    page = render(plan_dot(research), "html").decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 1 and "</svg>" in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    urls = re.findall(r"https?://[^\s\"'<>]+", page)
    assert set(urls) <= {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(script|link|img|iframe)\b|@import|url\(", page)
    for sid in research.ids:
        assert f">{sid}</text>" in page


@needs_dot
def test_html_title_is_the_plan_task(research):
    page = render(plan_dot(research), "html").decode("utf-8")
    assert "<title>Write a one-page market brief on {topic} for a product team.</title>" in page


@needs_dot
def test_html_title_can_be_given_and_is_escaped(research):
    page = render(plan_dot(research), "html", title="R&D <brief>").decode("utf-8")
    assert "<title>R&amp;D &lt;brief&gt;</title>" in page


def test_dot_format_returns_the_text_and_needs_no_graphviz(research):
    dot = plan_dot(research)
    assert render(dot, "dot", executable="/nonexistent/dot") == dot.encode("utf-8")


def test_an_unknown_format_names_the_formats(research):
    with pytest.raises(DrawingError, match=r"'jpeg'.*svg, png, pdf, html, dot"):
        render(plan_dot(research), "jpeg")


@pytest.mark.parametrize("fmt", ["svg", "png", "pdf", "html"])
def test_missing_graphviz_says_how_to_install_it(research, fmt):
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz") as caught:
        render(plan_dot(research), fmt, executable="/nonexistent/dot")
    message = str(caught.value)
    assert "\n" not in message and fmt in message


def test_missing_graphviz_on_path_is_reported(research, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizNotFoundError, match="install Graphviz"):
        render(plan_dot(research), "svg")


def test_drawing_errors_are_fanfold_errors_so_the_cli_prints_one_line():
    assert issubclass(GraphvizNotFoundError, DrawingError)
    assert issubclass(DrawingError, FanfoldError) and issubclass(DrawingError, ValueError)
    assert not issubclass(DrawingError, PlanError)


@needs_dot
def test_dot_that_graphviz_rejects_is_a_one_line_error():
    with pytest.raises(DrawingError, match="Graphviz could not draw svg") as caught:
        render("digraph { a -> }", "svg")
    assert "\n" not in str(caught.value)


@needs_dot
def test_a_300_subtask_plan_renders_quickly_on_a_readable_canvas():
    plan = layered_plan(15, 20)
    assert len(plan.subtasks) == 300
    started = time.perf_counter()
    svg = render(plan_dot(plan), "svg").decode("utf-8")
    took = time.perf_counter() - started
    assert took < 10, f"rendering 300 subtasks took {took:.1f}s"
    size = re.search(r'<svg width="(\d+)pt" height="(\d+)pt"', svg)
    assert size is not None
    width, height = int(size.group(1)), int(size.group(2))
    # About 45 x 30 inches: big, but one canvas to zoom around, not a poster wall.
    assert width < 6000 and height < 4000, (width, height)
    assert len(svg) < 2_000_000
    # Node names at 12 pt, the same as for a small plan: nothing is shrunk to fit.
    assert 'font-size="12.00">step&#45;14&#45;19</text>' in svg
    for sid in plan.ids:
        assert f">{sid.replace('-', '&#45;')}</text>" in svg


# -- text for the terminal -----------------------------------------------------------------


def test_layered_listing_of_the_research_plan(research):
    listing = layered_listing(research)
    assert listing.splitlines() == [
        "6 subtasks in 3 layers",
        "Critical path: market_size -> opportunities -> recommendation",
        "Layer 1 (3 subtasks, no dependencies)",
        "  market_size",
        "  competitors",
        "  regulation",
        "Layer 2 (2 subtasks)",
        "  opportunities  <- market_size, competitors",
        "  risks          <- regulation, competitors",
        "Layer 3 (1 subtask)",
        "  recommendation  <- opportunities, risks",
        "Finally",
        "  aggregate  <- recommendation",
    ]


def test_a_layer_is_the_longest_path_from_start():
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "a", "prompt": "a"},
                {"id": "b", "prompt": "b", "depends_on": ["a"]},
                {"id": "c", "prompt": "c", "depends_on": ["a", "b"]},
            ],
        }
    )
    lines = layered_listing(plan).splitlines()
    assert lines[lines.index("Layer 3 (1 subtask)") + 1] == "  c  <- a, b"


def test_layered_listing_marks_map_subtasks():
    listing = layered_listing(TaskPlan.from_file(DOCUMENT_PLAN))
    assert "  analyse [map over sections]  <- sections" in listing.splitlines()


def entries(listing: str) -> list[str]:
    """The subtask each entry line of a listing starts with (not wrapped dependencies)."""
    found = []
    for line in listing.splitlines():
        if m := re.match(r"^  (\S+)", line):
            found.append(m.group(1))
    return found


def test_layered_listing_of_60_subtasks_is_narrow_and_lists_every_id_once():
    plan = layered_plan(6, 10)
    assert len(plan.subtasks) == 60
    listing = layered_listing(plan)
    lines = listing.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert sorted(entries(listing)) == sorted([*plan.ids, AGGREGATE])
    assert sum(line.startswith("Layer ") for line in lines) == 6


def test_layered_listing_wraps_long_dependency_lists_under_the_first_dependency():
    subtasks = [{"id": f"source-{i:02d}", "prompt": "p"} for i in range(30)]
    subtasks.append({"id": "merge", "prompt": "m", "depends_on": [s["id"] for s in subtasks]})
    plan = TaskPlan.model_validate({"task": "t", "subtasks": subtasks})
    lines = layered_listing(plan, width=60).splitlines()
    start = lines.index(next(line for line in lines if line.startswith("  merge")))
    column = lines[start].index("source-00")
    assert all(len(line) <= 60 for line in lines)
    continued = lines[start + 1 : lines.index("Finally")]
    assert continued and all(line[:column].strip() == "" for line in continued)
    listed = " ".join(line.strip() for line in [lines[start][column:], *continued])
    assert listed.split(", ") == [f"source-{i:02d}" for i in range(30)]


def test_small_plans_fit_as_ascii_boxes_that_match_the_compiled_graph(research):
    assert ascii_fits(research, 100)
    expected = compile_plan(research, model="simulated").get_graph().draw_ascii()
    assert plan_ascii(research, 100) == expected


def test_ascii_boxes_do_not_fit_a_narrow_terminal(research):
    assert not ascii_fits(research, 40)
    assert plan_ascii(research, 40) == layered_listing(research, width=40)


def test_past_the_subtask_limit_the_terminal_gets_the_layered_listing():
    plan = layered_plan(ASCII_MAX_SUBTASKS + 1, 1)
    assert not ascii_fits(plan, 10_000)
    assert plan_ascii(plan, 120) == layered_listing(plan, width=120)
    assert ascii_fits(layered_plan(ASCII_MAX_SUBTASKS, 1), 10_000)
