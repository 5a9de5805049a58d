"""The run record (issue 15): one account of a run that --json, the report and the CLI share."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fanfold import SimulatedChatModel, SubtaskResult, TokenUsage, compile_plan
from fanfold.cli import app
from fanfold.record import build_record, load_record, record_json
from fanfold.report import render_record, run_report
from fanfold.scheduling.events import LifecycleEvent, parse_events

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "research.yaml"
T = 1_800_000_000.0
BRIEF = {
    "task": "Brief on {topic}",
    "inputs": ["topic"],
    "subtasks": [
        {"id": "market", "prompt": "Size the {topic} market."},
        {"id": "pitch", "prompt": "Pitch using {market}.", "depends_on": ["market"]},
    ],
}


def embedded_record(html: str) -> str:
    pattern = r'<script type="application/json" id="fanfold-run">(.*?)</script>'
    match = re.search(pattern, html, re.S)
    assert match, "no embedded record"
    return match.group(1)


def test_json_and_the_reports_embedded_record_are_the_same_bytes(tmp_path: Path):
    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        ["run", str(EXAMPLE), "-m", "simulated", "-i", "topic=solar", "--json",
         "--report", str(report), "--max-concurrency", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = result.stdout.rstrip("\n")
    assert embedded_record(report.read_text(encoding="utf-8")) == printed
    record = json.loads(printed)
    assert record["totals"]["speedup"] > 0
    assert record["totals"]["max_concurrency"] == 2
    assert record["aggregate"]["status"] == "succeeded"


def test_a_saved_record_renders_the_same_report(tmp_path: Path):
    saved = tmp_path / "run.json"
    result = CliRunner().invoke(app, ["run", str(EXAMPLE), "-m", "simulated", "--json"])
    assert result.exit_code == 0, result.output
    saved.write_text(result.stdout, encoding="utf-8")

    out = tmp_path / "again.html"
    rendered = CliRunner().invoke(app, ["report", str(saved), "-o", str(out)])
    assert rendered.exit_code == 0, rendered.output
    html = out.read_text(encoding="utf-8")
    assert embedded_record(html) == result.stdout.rstrip("\n")
    assert html == render_record(load_record(saved))
    assert load_record(out) == load_record(saved)  # a report gives back its record

    (tmp_path / "bad.json").write_text('{"subtasks": 3}', encoding="utf-8")
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "bad.json")])
    assert bad.exit_code == 1 and "is not a run record" in bad.output


def test_the_report_prices_calls_as_the_run_did_without_prices():
    """Issue 15 (1): the report had its own price parser, and without prices= (or for a
    dated model such as gpt-4o-2024-08-06) it said "unknown" where the run had a price."""
    model = SimulatedChatModel(model_name="gpt-4o-2024-08-06", latency_median=0.001)
    graph = compile_plan(BRIEF, model=model, aggregator=None)
    state = graph.invoke({"inputs": {"topic": "solar"}})
    cost = state["results"]["market"].cost
    assert cost is not None and cost > 0

    html = run_report(state, runtime=graph.fanfold_runtime)
    record = build_record(state, runtime=graph.fanfold_runtime)
    assert record.subtask("market").cost == pytest.approx(cost)
    assert record.totals.cost == pytest.approx(state["totals"].cost)
    assert f'data-cost="{cost:.8f}"' in html
    per_model = html.split('id="totals-cost"', 1)[1].split("</table>", 1)[0]
    assert "unknown" not in per_model


def test_the_title_is_the_task_with_its_inputs_filled_in_shown_once():
    """Issue 15 (8): the title showed "Brief on {topic}" and the task twice."""
    graph = compile_plan(BRIEF, model="simulated")
    state = graph.invoke({"inputs": {"topic": "solar"}})
    html = run_report(state, runtime=graph.fanfold_runtime, inputs={"topic": "solar"})
    header = html.split("<main>", 1)[0]
    assert '<h1 id="report-title">fanfold run: Brief on solar</h1>' in header
    assert "{topic}" not in header and header.count("Brief on solar") == 2  # <title>, <h1>


def test_the_aggregate_has_a_node_and_a_row_and_is_absent_when_disabled():
    """Issue 15 (6): the aggregate node was never coloured, had no row, and was drawn
    when aggregation was disabled."""
    graph = compile_plan(BRIEF, model="simulated")
    state = graph.invoke({"inputs": {"topic": "solar"}})
    html = run_report(state, runtime=graph.fanfold_runtime)
    assert re.search(r'<g class="node aggregate-node st-succeeded" data-subtask="aggregate"', html)
    assert '<tr class="row aggregate" data-id="aggregate" data-status="succeeded">' in html
    record = build_record(state, runtime=graph.fanfold_runtime)
    assert record.aggregate is not None and record.aggregate.usage.total_tokens > 0

    bare = compile_plan(BRIEF, model="simulated", aggregator=None)
    state = bare.invoke({"inputs": {"topic": "solar"}})
    html = run_report(state, runtime=bare.fanfold_runtime)
    assert 'data-subtask="aggregate"' not in html and 'data-id="aggregate"' not in html
    assert build_record(state, runtime=bare.fanfold_runtime).aggregate is None


def resumed_run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """market ran 0-2 s in a process that then died; 100 s later another process ran
    pitch (100.1-101 s) and the aggregate, and took 1.2 s in all."""

    def result(sid: str, start: float, end: float) -> SubtaskResult:
        return SubtaskResult(
            id=sid, status="succeeded", output=f"{sid} done", started_at=T + start,
            finished_at=T + end, attempts=1, model="simulated", cost=0.0,
            usage=TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15),
        )  # fmt: skip

    state = {
        "inputs": {"topic": "solar"},
        "results": {"market": result("market", 0, 2), "pitch": result("pitch", 100.1, 101)},
        "totals": {"tasks": 2, "succeeded": 2, "wall_time": 1.2, "call_time": 2.9},
        "run": {"plan": BRIEF},
    }
    events = [
        {"type": "fanfold.subtask", "subtask": "pitch", "status": "started", "time": T + 100.1,
         "started_at": T + 100.1, "attempt": 1},
        {"type": "fanfold.subtask", "subtask": "pitch", "status": "succeeded", "time": T + 101,
         "started_at": T + 100.1, "finished_at": T + 101},
    ]  # fmt: skip
    return state, events


def test_a_resumed_run_counts_only_the_time_a_process_was_running():
    """Issue 15 (4): after a resume the CLI said 2.36x, the report 0.99x of the bound, and
    the time no process ran was drawn as waiting for a slot."""
    state, events = resumed_run()
    record = build_record(state, events=events)

    assert record.sessions == [(0.0, 2.0), (pytest.approx(100.1), pytest.approx(101.3))]
    assert record.totals.not_running == pytest.approx(98.1)
    assert record.totals.wall_time == pytest.approx(2.0 + 1.2)
    pitch = record.subtask("pitch").calls[0]
    assert pitch.queued == pytest.approx(0.0, abs=1e-6)  # ready at 2 s, but nothing ran
    assert record.totals.call_time == pytest.approx(2.0 + 0.9 + 0.3)
    assert record.totals.speedup == pytest.approx(3.2 / 3.2)
    html = render_record(record)
    assert html.count('<rect class="notrun"') >= 2
    assert re.search(r'<tr id="total-not-running"><th>not running', html)


def test_call_time_leaves_out_waits_for_a_slot_and_backoff():
    """Issue 15 (4): time waiting for the limiter counted as call time (72x under a limit
    that allows 60x)."""
    events = [
        {"type": "fanfold.subtask", "subtask": "market", "status": "started", "time": T + 3,
         "started_at": T + 3, "attempt": 1},
        {"type": "fanfold.subtask", "subtask": "market", "status": "retrying", "time": T + 4,
         "attempt": 1, "delay": 2.0, "reason": "429 from the provider"},
        {"type": "fanfold.subtask", "subtask": "market", "status": "started", "time": T + 7,
         "started_at": T + 7, "attempt": 2},
    ]  # fmt: skip
    state = {
        "results": {
            "market": SubtaskResult(
                id="market", status="succeeded", started_at=T + 3, finished_at=T + 8,
                attempts=2, model="simulated", cost=0.0,
            )
        },
        "totals": {"tasks": 1, "succeeded": 1, "wall_time": 8.0},
        "run": {"plan": {**BRIEF, "subtasks": BRIEF["subtasks"][:1]}},
    }  # fmt: skip
    record = build_record(state, events=events)
    call = record.subtask("market").calls[0]
    # 1 s failed attempt, 2 s backoff, 1 s queued for a slot, 1 s attempt 2.
    assert [s.kind for s in call.segments] == ["retry", "backoff", "queued", "call"]
    assert call.call_time == pytest.approx(2.0) and call.backoff == pytest.approx(2.0)
    assert call.queued == pytest.approx(1.0)
    assert "429 from the provider" in call.segments[0].note


def test_events_are_parsed_once_into_one_typed_model():
    raw = [
        ("custom", {"type": "fanfold.subtask", "subtask": "a", "status": "started", "time": 2.0}),
        {"type": "something.else", "time": 1.0},
        {"type": "fanfold.subtask", "subtask": "m", "status": "succeeded", "time": 1.0,
         "item": 3, "id": "m[3]", "cost": 0.5},
        {"type": "fanfold.subtask", "subtask": "a", "status": "bogus", "time": 0.5},
    ]  # fmt: skip
    events = parse_events(raw)
    assert [e.call for e in events] == ["m[3]", "a"]
    assert isinstance(events[0], LifecycleEvent) and events[0].finished
    assert events[0].cost == 0.5 and events[1].status == "started"


def test_record_json_escapes_markup_so_it_can_sit_in_a_script():
    graph = compile_plan(BRIEF, model="simulated")
    inputs = {"topic": "</script><b>"}
    state = graph.invoke({"inputs": inputs})
    text = record_json(build_record(state, runtime=graph.fanfold_runtime, inputs=inputs))
    assert "<" not in text and json.loads(text)["title"] == "Brief on </script><b>"


def test_run_goal_writes_the_report_and_the_events_file(tmp_path: Path):
    """Issue 15 (8): `run --goal --report r.html` exited 0 and wrote no report."""
    report, events = tmp_path / "r.html", tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        app,
        ["run", "--goal", "Brief on kelp", "-m", "simulated", "--report", str(report),
         "--events", str(events)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    html = report.read_text(encoding="utf-8")
    record = json.loads(embedded_record(html))
    assert record["goal"] == "Brief on kelp" and record["subtasks"]
    assert all(s["status"] == "succeeded" for s in record["subtasks"])
    assert record["aggregate"]["status"] == "succeeded"
    lines = events.read_text(encoding="utf-8").splitlines()
    parsed = parse_events(json.loads(line) for line in lines)
    assert {e.subtask for e in parsed} >= {s["id"] for s in record["subtasks"]}
