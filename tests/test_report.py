"""The HTML run report: built from a real run's state and events, checked as text and in
headless Chromium.

A real run (simulated models, two slots) supplies a failed subtask, a skipped dependent,
a retried call, a map over an input list and a prompt holding `<script>`. Runs with
made-up times check the figures exactly: waits, backoffs, the critical path and the
lower bound. The browser tests need `chromium` on PATH (CI installs it).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from fanfold import RetryPolicy, SimulatedChatModel, SubtaskResult, TokenUsage, compile_plan
from fanfold.record import build_record
from fanfold.report import run_report, write_run_report

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
PRICED = "priced-sim"
FREE = "free-sim"
PRICES = {PRICED: {"input": 0.15, "output": 0.60}}
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not on PATH (CI installs Debian's chromium; locally: apt-get install "
    "chromium) - the report's browser rendering is not checked",
)

RECT = re.compile(r'<rect class="([^"]*)" data-subtask="([^"]*)" data-call="([^"]*)"')


# -- a real run ----------------------------------------------------------------------------


def report_plan(flaky_model: SimulatedChatModel) -> dict[str, Any]:
    return {
        "task": "Write a report about <b>things</b>",
        "inputs": {"items": {"description": "the things to look at"}},
        "subtasks": [
            {"id": "outline", "prompt": f"Outline the things {SCRIPT}"},
            {"id": "flaky", "prompt": "A flaky call", "model": flaky_model},
            {"id": "broken", "prompt": "This prompt holds the marker"},
            {"id": "after_broken", "prompt": "Use {broken}", "depends_on": ["broken"]},
            {"id": "each", "prompt": "[each {index}] {item}", "map": "items"},
            {
                "id": "summary",
                "prompt": "Combine {outline} {each} {flaky}",
                "depends_on": ["outline", "each", "flaky"],
            },
        ],
    }


def once_timing_out() -> Any:
    """A latency_fn whose first call for each prompt raises TimeoutError (a transient error)."""
    seen: set[str] = set()

    def latency(messages: list[BaseMessage]) -> float:
        text = str(messages[-1].content)
        if text not in seen:
            seen.add(text)
            raise TimeoutError("simulated timeout")
        return 0.02

    return latency


@pytest.fixture
def real_run() -> dict[str, Any]:
    """A finished run: its graph, final state and the lifecycle events it streamed."""
    flaky = SimulatedChatModel(model_name=FREE, latency_fn=once_timing_out())
    graph = compile_plan(
        report_plan(flaky),
        model=SimulatedChatModel(model_name=PRICED, latency_median=0.02, fail_on=("marker",)),
        aggregator=lambda results: f"{len(results)} results {SCRIPT}",
        max_concurrency=2,
        retry=RetryPolicy(initial_backoff=0.03, jitter=0.0),
    )

    async def run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        events: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        inputs = {"items": ["alpha", IMG, "gamma"]}
        async for mode, chunk in graph.astream(
            {"inputs": inputs}, stream_mode=["custom", "values"]
        ):
            if mode == "custom":
                events.append(chunk)
            else:
                final = chunk
        return events, final

    events, state = asyncio.run(run())
    statuses = {sid: r.status for sid, r in state["results"].items()}
    assert statuses == {
        "outline": "succeeded",
        "flaky": "succeeded",
        "broken": "failed",
        "after_broken": "skipped",
        "each": "succeeded",
        "summary": "succeeded",
    }
    assert any(e["status"] == "retrying" and e["subtask"] == "flaky" for e in events)
    return {"graph": graph, "state": state, "events": events}


def render(run: dict[str, Any], **kwargs: Any) -> str:
    return run_report(
        run["state"],
        events=run["events"],
        runtime=run["graph"].fanfold_runtime,
        prices=PRICES,
        max_concurrency=2,
        **kwargs,
    )


def table_rows(doc: str) -> dict[str, str]:
    """The subtask table's rows by id (a map's row includes its nested item table)."""
    body = doc.split('<table id="ff-table"', 1)[1].split("</tbody></table></div></section>")[0]
    rows: dict[str, str] = {}
    for chunk in body.split('<tr class="row" ')[1:]:
        match = re.match(r'data-id="([^"]*)" data-status="([^"]*)"', chunk)
        assert match, chunk[:200]
        rows[match.group(1)] = chunk
    return rows


def status_of(row: str) -> str:
    match = re.match(r'data-id="[^"]*" data-status="([^"]*)"', row)
    assert match
    return match.group(1)


def costs_in(row: str) -> list[str]:
    return re.findall(r'class="num cost[^"]*" data-cost="([^"]*)"', row)


def time_value(doc: str, key: str) -> float:
    match = re.search(rf'<tr id="total-{key}" data-value="([^"]*)"', doc)
    assert match, f"no total-{key} value"
    return float(match.group(1))


# -- the page as text ----------------------------------------------------------------------


def test_report_lists_every_subtask_and_map_item_with_its_status(real_run: dict[str, Any]):
    doc = render(real_run)

    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    rows = table_rows(doc)
    results = real_run["state"]["results"]
    assert {sid: status_of(row) for sid, row in rows.items()} == {
        sid: r.status for sid, r in results.items()
    }
    # The map's items are listed under it, and the failure and the skip say why.
    for index in range(3):
        assert f'<td class="id">each[{index}]</td>' in rows["each"]
    assert "SimulatedModelError" in rows["broken"]
    assert "dependency &#x27;broken&#x27; failed" in rows["after_broken"]
    # The retried call shows both attempts.
    assert re.search(r'class="num attempts">2 <span class="muted">\(1 retried\)', rows["flaky"])


def test_cost_is_unknown_for_an_unpriced_model_and_a_number_for_a_priced_one(
    real_run: dict[str, Any],
):
    doc = render(real_run)
    rows = table_rows(doc)
    results: dict[str, SubtaskResult] = real_run["state"]["results"]

    assert costs_in(rows["flaky"]) == ["unknown"]
    assert ">unknown</td>" in rows["flaky"]
    outline = results["outline"].usage
    expected = (outline.input_tokens * 0.15 + outline.output_tokens * 0.60) / 1e6
    assert expected > 0
    assert float(costs_in(rows["outline"])[0]) == pytest.approx(expected, rel=1e-6)
    # A map's cost is its items' (the first figure is the map's, the rest its items').
    each = [float(c) for c in costs_in(rows["each"])]
    assert each[0] == pytest.approx(sum(each[1:])) and len(each) == 4

    per_model = doc.split('id="totals-cost"', 1)[1].split("</table>")[0]
    free_row = per_model.split(f'data-model="{FREE}"', 1)[1].split("</tr>")[0]
    priced_row = per_model.split(f'data-model="{PRICED}"', 1)[1].split("</tr>")[0]
    assert costs_in(free_row) == ["unknown"]
    priced_calls = [
        r for res in results.values() for r in (res.items or [res]) if r.model == PRICED
    ]
    priced_cost = sum(
        (r.usage.input_tokens * 0.15 + r.usage.output_tokens * 0.60) / 1e6 for r in priced_calls
    )
    assert float(costs_in(priced_row)[0]) == pytest.approx(priced_cost, rel=1e-6)
    # The total is the known part, flagged as missing the unpriced model.
    total = per_model.split("<tfoot>", 1)[1]
    assert float(costs_in(total)[0]) == pytest.approx(priced_cost, rel=1e-6)
    assert "+ unknown" in total


def test_totals_show_counts_tokens_wall_time_and_speedup(real_run: dict[str, Any]):
    doc = render(real_run)
    totals = real_run["state"]["totals"]

    counts = doc.split('id="totals-counts"', 1)[1].split("</table>")[0]
    for label, value in [
        ("planned subtasks", 6),
        ("succeeded", 4),
        ("failed", 1),
        ("skipped", 1),
        ("map items", 3),
        ("retries", 1),
    ]:
        assert f"<tr><th>{label}</th><td class='num'>{value}</td></tr>" in counts
    assert f"{totals.total_tokens:,}" in doc.split('id="totals-tokens"', 1)[1]
    assert totals.total_tokens > 0
    record = build_record(
        real_run["state"],
        events=real_run["events"],
        runtime=real_run["graph"].fanfold_runtime,
        max_concurrency=2,
    )
    # The record's run ends at its last event, which may be written a few µs after the
    # state's clock stopped (36 µs seen in CI): equal to the millisecond.
    assert time_value(doc, "wall-time") == pytest.approx(totals.wall_time, abs=1e-3)
    assert record.totals.wall_time == pytest.approx(totals.wall_time, abs=1e-3)
    # Call time is time at the provider: less than the calls' spans, which hold the backoff.
    assert 0 < record.totals.call_time < totals.call_time
    speedup = record.totals.call_time / record.totals.wall_time
    assert time_value(doc, "speedup") == pytest.approx(speedup, rel=1e-4)
    assert f"{record.totals.speedup:.2f}×" in doc.split('id="card-speedup"')[1]
    # The aggregate's output is shown too.
    assert "6 results" in doc.split('id="output"', 1)[1]


def test_user_data_is_escaped_everywhere(real_run: dict[str, Any]):
    doc = render(real_run)

    # The prompt's script came back in outputs, the aggregate and the item list.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert SCRIPT not in doc
    assert "alert(1)</script>" not in doc
    # The report's own script, and the run's record as data (its "<" escaped).
    assert doc.count("<script") == 2 and doc.count('<script type="application/json"') == 1
    assert "<img" not in doc and "&lt;img src=x onerror=alert(2)&gt;" in doc
    assert "<b>things</b>" not in doc and "&lt;b&gt;things&lt;/b&gt;" in doc
    own_script = doc.split("<script>", 1)[1].split("</script>", 1)[0]
    assert "alert" not in own_script


def test_report_has_no_network_references(real_run: dict[str, Any]):
    doc = render(real_run)

    urls = re.findall(r"https?://[^\s\"'<>)]*", doc)
    assert urls and set(urls) == {"http://www.w3.org/2000/svg"}
    assert all(m.group(0).startswith('xmlns="') for m in re.finditer(r'\S+="http', doc))
    assert not re.search(r"<(link|img|iframe|object|embed)\b", doc)
    assert not re.search(r"<[a-zA-Z][^>]*\s(src|href|action)=", doc)
    assert "@import" not in doc and "@font-face" not in doc


def test_timeline_shows_retry_backoff_waits_and_the_critical_path(real_run: dict[str, Any]):
    doc = render(real_run)
    timeline = doc.split('<section id="timeline">', 1)[1].split("</section>", 1)[0]
    rects = RECT.findall(timeline)

    flaky = [cls for cls, _sid, call in rects if call == "flaky"]
    assert any(cls.startswith("bar retry") for cls in flaky)
    assert "backoff" in flaky
    assert sum(cls.startswith("bar run") for cls in flaky) == 1
    # With two slots, some of the map's items waited for a slot.
    item_rects = [cls for cls, sid, call in rects if sid == "each" and call != "each"]
    assert "wait" in item_rects
    assert {call for _cls, sid, call in rects if sid == "each"} >= {"each[0]", "each[1]", "each[2]"}
    # The critical path ends in `summary` (everything else feeds it or is cut off).
    assert re.search(r"Critical path \([^)]*\): [^<]*→ summary → aggregate\.", timeline)
    assert re.search(r'<div class="g-row crit" data-id="summary"', timeline)
    # A small map is shown expanded.
    assert re.search(r'<details class="g-group" data-id="each" data-status="succeeded" open>', doc)


def test_write_run_report_writes_utf8_and_returns_the_path(
    real_run: dict[str, Any], tmp_path: Path
):
    kwargs = {
        "events": real_run["events"],
        "runtime": real_run["graph"].fanfold_runtime,
        "prices": PRICES,
        "max_concurrency": 2,
        "title": "Nightly ◆ run",
    }
    path = write_run_report(tmp_path / "out" / "report.html", real_run["state"], **kwargs)

    assert path == tmp_path / "out" / "report.html"
    text = path.read_bytes().decode("utf-8")
    assert text == run_report(real_run["state"], **kwargs)
    assert "<title>Nightly ◆ run</title>" in text


def test_given_graph_svg_is_embedded_without_scripts_or_prolog(real_run: dict[str, Any]):
    svg = (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
        "<!-- Generated by graphviz -->\n"
        '<svg width="80pt" height="40pt" xmlns="http://www.w3.org/2000/svg" id="dot-graph">'
        '<g class="node" onclick="alert(3)"><title>outline</title></g>'
        "<script>alert(4)</script></svg>\n"
    )
    doc = render(real_run, graph_svg=svg)
    graph = doc.split('<section id="graph">', 1)[1].split("</section>", 1)[0]

    assert 'id="dot-graph"' in graph
    assert 'class="graph-svg"' not in graph  # the built-in drawing is not used
    assert "<?xml" not in doc and "<!DOCTYPE svg" not in doc and "graphviz" not in doc
    assert "onclick" not in doc and "alert(3)" not in doc and "alert(4)" not in doc
    assert doc.count("<script") == 2  # the report's script and its record, as data


# -- made-up runs: exact figures -------------------------------------------------------------

T = 1_800_000_000.0
CHAIN_PLAN = {
    "task": "A chain and a loner",
    "subtasks": [
        {"id": "a", "prompt": "first"},
        {"id": "b", "prompt": "then {a}", "depends_on": ["a"]},
        {"id": "c", "prompt": "alone"},
    ],
}


def chain_run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """a: 0-1 s; b after a: queued 1-1.5, fails at 2, backs off 0.5 s, queued 2.5-2.75,
    runs 2.75-3.5; c: 0-2 s, served from a cache. Wall time 4 s."""

    def result(sid: str, start: float, end: float, attempts: int, tokens: tuple[int, int]):
        return SubtaskResult(
            id=sid,
            status="succeeded",
            output=f"{sid} done",
            usage=TokenUsage(
                input_tokens=tokens[0], output_tokens=tokens[1], total_tokens=sum(tokens)
            ),
            started_at=T + start,
            finished_at=T + end,
            attempts=attempts,
            model=PRICED,
        )

    c = result("c", 0, 2, 1, (500, 100)).to_state()
    c["cached"] = True  # what a cache layer may add
    state = {
        "inputs": {},
        "results": {
            "a": result("a", 0, 1, 1, (1000, 500)),
            "b": result("b", 1.5, 3.5, 2, (100, 100)),
            "c": c,
        },
        "totals": {
            "tasks": 3,
            "succeeded": 3,
            "usage": {"input_tokens": 1600, "output_tokens": 700, "total_tokens": 2300},
            "wall_time": 4.0,
            "call_time": 5.0,
        },
    }

    def event(sid: str, status: str, at: float, **fields: Any) -> dict[str, Any]:
        return {"type": "fanfold.subtask", "subtask": sid, "status": status, "time": T + at,
                **fields}  # fmt: skip

    events = [
        event("a", "started", 0, started_at=T, attempt=1),
        event("c", "started", 0, started_at=T, attempt=1),
        {"type": "something.else", "time": T},  # another custom event: ignored
        event("a", "succeeded", 1, started_at=T, finished_at=T + 1),
        event("b", "started", 1.5, started_at=T + 1.5, attempt=1),
        event("b", "retrying", 2.0, attempt=1, delay=0.5, error=f"TimeoutError {SCRIPT}"),
        event("c", "succeeded", 2, started_at=T, finished_at=T + 2),
        event("b", "started", 2.75, started_at=T + 2.75, attempt=2),
        event("b", "succeeded", 3.5, started_at=T + 1.5, finished_at=T + 3.5),
    ]
    return state, events


def chain_runtime() -> Any:
    return compile_plan(CHAIN_PLAN, model=SimulatedChatModel(), aggregator=None).fanfold_runtime


def test_waits_and_backoff_are_derived_from_the_events():
    state, events = chain_run()
    doc = run_report(state, events=events, runtime=chain_runtime(), prices=PRICES)
    rects = [(cls, call) for cls, _sid, call in RECT.findall(doc)]
    b = [cls for cls, call in rects if call == "b"]

    # queued after a finished (1 -> 1.5), attempt 1, backoff, queued again, attempt 2
    assert b == ["wait", "bar retry crit", "backoff", "wait", "bar run st-succeeded crit"]
    backoff = re.search(
        r'class="backoff" data-subtask="b" data-call="b" [^>]* width="([^"]*)"', doc
    )
    assert backoff is not None
    assert float(backoff.group(1)) == pytest.approx(0.5 / 4.0 * 1000, abs=0.05)
    row = table_rows(doc)["b"]
    assert '<td class="num">750 ms</td>' in row  # waited 0.5 + 0.25
    assert '<td class="num">500 ms</td>' in row  # backoff
    assert '2 <span class="muted">(1 retried)' in row
    assert "TimeoutError &lt;script&gt;" in doc and SCRIPT not in doc
    # a had nothing to wait for; c started with the run.
    assert [cls for cls, call in rects if call == "a"] == ["bar run st-succeeded crit"]
    assert [cls for cls, call in rects if call == "c"] == ["bar run st-succeeded"]


def test_critical_path_and_lower_bound_use_the_actual_durations():
    state, events = chain_run()
    runtime = chain_runtime()

    unlimited = run_report(state, events=events, runtime=runtime)
    # a (1 s) + b (attempts 0.5 + 0.75 s, backoff 0.5 s) = 2.75 s beats c (a cache hit).
    assert "Critical path (2.75 s): a → b." in unlimited
    assert time_value(unlimited, "bound-ratio") == pytest.approx(4.0 / 2.75)
    # Call time is time at the provider: a 1 s, b 0.5 + 0.75 s; c came from the cache.
    assert time_value(unlimited, "call-time") == pytest.approx(2.25)
    assert time_value(unlimited, "speedup") == pytest.approx(2.25 / 4.0)

    # One slot: the calls one after another (2.25 s) are still shorter than the path.
    one_slot = run_report(state, events=events, runtime=runtime, max_concurrency=1)
    assert time_value(one_slot, "bound-ratio") == pytest.approx(4.0 / 2.75)
    assert "max(critical path 2.75 s, work 2.25 s / 1 slots)" in one_slot


def test_cache_hits_are_counted_and_cost_nothing():
    state, events = chain_run()
    doc = run_report(state, events=events, runtime=chain_runtime(), prices=PRICES)
    rows = table_rows(doc)

    assert '<td class="cache">hit</td>' in rows["c"]
    assert '<td class="cache"></td>' in rows["a"]
    assert float(costs_in(rows["c"])[0]) == 0.0
    assert float(costs_in(rows["a"])[0]) == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    assert "<tr><th>cache hits</th><td class='num'>1</td></tr>" in doc

    state["results"]["a"] = state["results"]["a"].model_copy(update={"cached": True})
    again = table_rows(run_report(state, events=events, runtime=chain_runtime(), prices=PRICES))
    assert '<td class="cache">hit</td>' in again["a"]


def test_without_runtime_the_plan_kept_in_state_gives_the_edges():
    state, events = chain_run()
    with_plan = {**state, "run": {"plan": CHAIN_PLAN}}
    doc = run_report(with_plan, events=events)
    assert '<path class="edge crit"' in doc  # a -> b, on the critical path
    # The plan aggregates: its step ran last, after b (3.5 s) until the run's end (4 s).
    assert "Critical path (3.25 s): a → b → aggregate." in doc

    # No plan at all: still a box and a bar per subtask, no edges, no invented waits.
    bare = run_report({"results": state["results"]})
    assert '<path class="edge' not in bare
    assert len(re.findall(r'<g class="node st-succeeded', bare)) == 3
    assert sorted(call for _cls, _sid, call in RECT.findall(bare)) == ["a", "b", "c"]
    assert 'class="wait"' not in bare


def test_unknown_model_cost_is_never_zero():
    state, events = chain_run()
    doc = run_report(state, events=events, runtime=chain_runtime())  # no prices at all
    rows = table_rows(doc)
    assert costs_in(rows["a"]) == ["unknown"] and costs_in(rows["b"]) == ["unknown"]
    total = doc.split('id="totals-cost"', 1)[1].split("<tfoot>", 1)[1].split("</tfoot>")[0]
    assert ">unknown</td>" in total and "$0" not in total


def big_run(subtasks: int = 300, items: int = 40) -> tuple[dict[str, Any], dict[str, Any]]:
    """A made-up finished run of `subtasks` subtasks in chains of ten, plus one map."""
    plan: dict[str, Any] = {
        "task": "big",
        "inputs": {"docs": {"description": "documents"}},
        "subtasks": [
            {
                "id": f"s{i:03d}",
                "prompt": "p",
                "depends_on": [f"s{i - 1:03d}"] if i % 10 else [],
            }
            for i in range(subtasks)
        ]
        + [{"id": "many", "prompt": "{item}", "map": "docs"}],
    }
    results: dict[str, Any] = {}
    for i in range(subtasks):
        start = (i % 10) * 0.1 + (i // 10) * 0.01
        results[f"s{i:03d}"] = SubtaskResult(
            id=f"s{i:03d}",
            status="failed" if i == 7 else "succeeded",
            error="boom" if i == 7 else None,
            started_at=T + start,
            finished_at=T + start + 0.09,
            attempts=1,
            model=PRICED,
            usage=TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15),
        )
    item_results = [
        SubtaskResult(
            id=f"many[{k}]",
            status="succeeded",
            index=k,
            started_at=T + k * 0.02,
            finished_at=T + k * 0.02 + 0.05,
            attempts=1,
            model=PRICED,
        )
        for k in range(items)
    ]
    results["many"] = SubtaskResult(
        id="many",
        status="succeeded",
        items=item_results,
        started_at=T,
        finished_at=T + items * 0.02 + 0.05,
        attempts=items,
        model=PRICED,
    )
    state = {"inputs": {"docs": [f"doc {k}" for k in range(items)]}, "results": results,
             "run": {"plan": plan}}  # fmt: skip
    return state, plan


def test_a_300_subtask_report_stays_compact_and_collapses_big_maps():
    state, _plan = big_run()
    began = time.perf_counter()
    doc = run_report(state, prices=PRICES, max_concurrency=8)
    elapsed = time.perf_counter() - began

    assert elapsed < 5.0
    assert len(doc) < 3_000_000
    assert len(table_rows(doc)) == 301
    calls = {call for _cls, _sid, call in RECT.findall(doc)}
    assert {f"s{i:03d}" for i in range(300)} <= calls
    assert {f"many[{k}]" for k in range(40)} <= calls
    # 40 items: the map's group starts collapsed; the graph wraps its wide first layer.
    assert re.search(r'<details class="g-group" data-id="many" data-status="succeeded">', doc)
    heights = re.search(r'<svg class="graph-svg"[^>]* width="(\d+)" height="(\d+)"', doc)
    assert heights and int(heights.group(2)) < 2000


# -- in the browser ------------------------------------------------------------------------


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    profile.mkdir()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # the report must need no network
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@needs_chromium
def test_browser_renders_the_gantt_bars_graph_and_totals(real_run: dict[str, Any], tmp_path: Path):
    path = write_run_report(
        tmp_path / "report.html",
        real_run["state"],
        events=real_run["events"],
        runtime=real_run["graph"].fanfold_runtime,
        prices=PRICES,
        max_concurrency=2,
    )
    dom = chromium(tmp_path, "--dump-dom", path.as_uri()).stdout

    assert 'data-report-ready="1"' in dom  # the page's script ran without an error
    bars = [(cls, sid, call) for cls, sid, call in RECT.findall(dom) if cls.startswith("bar")]
    per_subtask = {
        sid: sum(1 for _c, s, _k in bars if s == sid) for sid in real_run["state"]["results"]
    }
    assert all(count >= 1 for count in per_subtask.values()), per_subtask
    assert per_subtask["flaky"] == 2  # the failed attempt and the one that succeeded
    assert {call for _c, sid, call in bars if sid == "each"} == {
        "each", "each[0]", "each[1]", "each[2]"
    }  # fmt: skip
    graph = dom.split('<section id="graph">', 1)[1].split("</section>", 1)[0]
    assert "<svg" in graph
    assert len(re.findall(r'<g class="node st-', graph)) == 6
    assert re.search(r'<g class="node st-failed[^"]*" data-subtask="broken"', graph)
    assert re.search(r'<g class="node st-skipped[^"]*" data-subtask="after_broken"', graph)
    record = json.loads(dom.split('id="fanfold-run">', 1)[1].split("</script>", 1)[0])
    wall = record["totals"]["wall_time"]
    assert wall == pytest.approx(real_run["state"]["totals"].wall_time, abs=1e-5)
    assert re.search(rf'<tr id="total-wall-time" data-value="{wall:.6f}">', dom)
    # The aggregate step is drawn last, coloured by how it went.
    assert re.search(r'<g class="node aggregate-node st-succeeded" data-subtask="aggregate"', graph)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and SCRIPT not in dom


def png_rows(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and raw (still filtered) scanlines of a non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, width, height, channels = 8, b"", 0, 0, 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    assert len(raw) == stride * height
    return width, height, [raw[i * stride : (i + 1) * stride] for i in range(height)]


@needs_chromium
def test_browser_screenshot_is_a_nontrivial_png(real_run: dict[str, Any], tmp_path: Path):
    path = write_run_report(
        tmp_path / "report.html",
        real_run["state"],
        events=real_run["events"],
        runtime=real_run["graph"].fanfold_runtime,
        prices=PRICES,
        max_concurrency=2,
    )
    shot = tmp_path / "report.png"
    chromium(tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", path.as_uri())

    data = shot.read_bytes()
    assert len(data) > 30_000
    width, height, rows = png_rows(data)
    assert (width, height) == (1280, 1600)
    # A blank or one-colour page compresses to a handful of identical scanlines.
    assert len(set(rows)) > 300
    assert len(set(b"".join(rows[::8]))) > 100


# What the browser check below does on the page, as a user would; it writes what it saw
# into `data-check` on <html>, which `--dump-dom` then shows.
INTERACT = """<script>
(function(){
  var out={},box=document.querySelector(".graph-box"),svg=box.querySelector("svg");
  function scale(){return parseFloat(svg.getAttribute("data-scale"));}
  function click(id){document.getElementById(id).click();}
  var overview=document.getElementById("ff-overview");
  out.overviewFirst=!!overview&&!!(overview.compareDocumentPosition(box)&4);
  out.startScale=scale();
  out.startFits=svg.getBoundingClientRect().width<=box.clientWidth;
  click("ff-zoom-in");out.zoomedIn=scale();
  click("ff-zoom-out");click("ff-zoom-out");out.zoomedOut=scale();
  click("ff-zoom-in");click("ff-zoom-in");click("ff-zoom-in");click("ff-zoom-in");
  click("ff-zoom-in");click("ff-zoom-in");click("ff-zoom-in");click("ff-zoom-in");
  out.bigScale=scale();out.overflows=box.scrollWidth>box.clientWidth;
  box.scrollLeft=0;box.scrollTop=0;
  var at={bubbles:true,clientX:600,clientY:400};
  box.dispatchEvent(new MouseEvent("mousedown",at));
  box.dispatchEvent(new MouseEvent("mousemove",{bubbles:true,clientX:450,clientY:330}));
  window.dispatchEvent(new MouseEvent("mouseup",{bubbles:true}));
  out.panned=[box.scrollLeft,box.scrollTop];
  box.dispatchEvent(new MouseEvent("mousemove",{bubbles:true,clientX:0,clientY:0}));
  out.afterRelease=[box.scrollLeft,box.scrollTop];
  var find=document.getElementById("ff-find");find.value="s057";
  find.dispatchEvent(new Event("input",{bubbles:true}));
  var found=svg.querySelectorAll(".found");out.found=[];
  for(var i=0;i<found.length;i++)out.found.push(found[i].getAttribute("data-subtask"));
  if(found.length){var r=found[0].getBoundingClientRect(),b=box.getBoundingClientRect();
    out.foundInView=r.right>b.left&&r.left<b.right&&r.bottom>b.top&&r.top<b.bottom;}
  click("ff-fit");out.fitScale=scale();
  out.fitFits=svg.getBoundingClientRect().width<=box.clientWidth+1;
  document.documentElement.setAttribute("data-check",JSON.stringify(out));
})();
</script>"""


@needs_chromium
def test_browser_pans_zooms_fits_and_finds_a_subtask_in_a_large_plan(tmp_path: Path):
    state, _plan = big_run(subtasks=120, items=5)
    doc = run_report(state, prices=PRICES, max_concurrency=8)
    path = tmp_path / "big.html"
    path.write_text(doc.replace("</body>", INTERACT + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--window-size=1280,900", "--dump-dom", path.as_uri()).stdout

    assert 'data-report-ready="1"' in dom
    found = re.search(r'<html[^>]* data-check="([^"]*)"', dom)
    assert found, "the page's check did not run"
    check = json.loads(html.unescape(found.group(1)))
    assert check["overviewFirst"]  # above 60 subtasks, the layered overview comes first
    assert check["startScale"] < 1 and check["startFits"]  # opened fitted to the screen
    assert check["zoomedIn"] == pytest.approx(check["startScale"] * 1.25, rel=0.01)
    assert check["zoomedOut"] < check["startScale"]
    assert check["bigScale"] > 1 and check["overflows"]
    assert check["panned"] == [150, 70]  # dragged 150 px left and 70 px up
    assert check["afterRelease"] == check["panned"]  # no drag once the button is up
    assert check["found"] == ["s057"] and check["foundInView"]
    assert check["fitScale"] == pytest.approx(check["startScale"], rel=0.01)
    assert check["fitFits"]
