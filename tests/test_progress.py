"""Run progress: the model fed by lifecycle events, its live view, and the CLI's progress flags."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fanfold import TaskPlan, compile_plan
from fanfold.cli import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, Watch, app
from fanfold.planning import make_plan
from fanfold.progress import (
    LiveProgress,
    PlainProgress,
    Progress,
    ProgressSnapshot,
    render_progress,
)
from fanfold.scheduling.dispatcher import EVENT_TYPE
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult, TokenUsage
from fanfold.testing import SimServer, SimServerConfig

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# -- a synthetic run -----------------------------------------------------------------------

T0 = 1_000.0


def event(sid: str, status: str, at: float, **fields: Any) -> dict[str, Any]:
    """A lifecycle event as the dispatcher emits it (an item's when `item` is given)."""
    found: dict[str, Any] = {"type": EVENT_TYPE, "subtask": sid, "status": status, "time": at}
    if "item" in fields:
        found["id"] = f"{sid}[{fields['item']}]"
    found.update(fields)
    return found


def runtime_of(data: dict[str, Any], durations: DurationStore | None = None) -> PlanRuntime:
    graph = compile_plan(TaskPlan.model_validate(data), model="simulated", durations=durations)
    assert graph.fanfold_runtime is not None
    return graph.fanfold_runtime


# fetch -> (summarise, each over run input xs) ; check has no dependencies.
PLAN = {
    "task": "t",
    "inputs": {"xs": {"description": "things"}},
    "subtasks": [
        {"id": "fetch", "prompt": "fetch"},
        {"id": "check", "prompt": "check"},
        {"id": "summarise", "prompt": "sum {fetch}", "depends_on": ["fetch"]},
        {"id": "each", "prompt": "look at {item}", "map": "xs", "depends_on": ["fetch"]},
    ],
}


@pytest.fixture
def progress() -> Progress:
    return Progress(runtime_of(PLAN), inputs={"xs": ["a", "b", "c"]}, started_at=T0)


def feed_all(progress: Progress, events: list[dict[str, Any]]) -> None:
    for ev in events:
        progress.feed(ev)


def test_every_subtask_starts_out_waiting_before_any_event(progress):
    counts = progress.counts()
    assert (counts.waiting, counts.running, counts.done, counts.total) == (4, 0, 0, 4)
    assert progress.running(T0) == []


def test_counts_follow_events_through_running_done_failed_and_skipped(progress):
    feed_all(
        progress,
        [
            event("fetch", "started", T0, attempt=1),
            event("check", "started", T0, attempt=1),
            event("fetch", "failed", T0 + 1, error="400 bad request", total_tokens=0),
            event("summarise", "skipped", T0 + 1, error="dependency 'fetch' failed"),
        ],
    )
    counts = progress.counts()
    assert (counts.done, counts.failed, counts.skipped) == (0, 1, 1)
    assert (counts.running, counts.waiting) == (1, 1)  # check runs; each still waits
    feed_all(progress, [event("check", "succeeded", T0 + 2, total_tokens=5)])
    assert progress.counts().done == 1
    assert progress.subtasks["fetch"].error == "400 bad request"


def test_feed_returns_the_entry_only_when_a_subtask_or_whole_map_finished(progress):
    assert progress.feed(event("each", "started", T0, items=3)) is None
    assert progress.feed(event("each", "succeeded", T0 + 1, item=0, total_tokens=1)) is None
    finished = progress.feed(event("each", "succeeded", T0 + 2, total_tokens=1))
    assert finished is not None and finished.id == "each" and finished.state == "done"


def test_map_items_are_counted_done_failed_and_running_out_of_n(progress):
    feed_all(
        progress,
        [
            event("each", "started", T0, items=3),
            event("each", "started", T0, item=0, attempt=1),
            event("each", "started", T0, item=1, attempt=1),
            event("each", "started", T0, item=2, attempt=1),
            event("each", "succeeded", T0 + 1, item=0, total_tokens=10),
            event("each", "failed", T0 + 1, item=2, error="boom", total_tokens=0),
        ],
    )
    items = progress.subtasks["each"].items
    assert items is not None
    assert (items.done, items.failed, items.running, items.total) == (1, 1, 1, 3)
    assert items.waiting == 0
    # Item events move the items, not the map's own count: the map is one running subtask.
    assert progress.counts().running == 1
    [row] = progress.running(T0 + 2)
    assert row.id == "each" and row.items == items


def test_a_map_over_a_run_input_knows_its_item_count_before_it_starts(progress):
    items = progress.subtasks["each"].items
    assert items is not None and items.total == 3 and items.done == 0


def test_running_lists_the_running_subtasks_longest_first_with_their_elapsed_time(progress):
    feed_all(
        progress,
        [
            event("check", "started", T0 + 1, started_at=T0 + 1, attempt=1),
            event("fetch", "started", T0 + 2, started_at=T0 + 2, attempt=1),
            event("fetch", "retrying", T0 + 3, attempt=1, error="429 slow down", delay=1.0),
        ],
    )
    rows = progress.running(T0 + 5)
    assert [(r.id, r.elapsed) for r in rows] == [("check", 4.0), ("fetch", 3.0)]
    assert rows[1].retrying and rows[1].error == "429 slow down"
    # The next attempt: still running, elapsed counted from the first attempt.
    progress.feed(event("fetch", "started", T0 + 4, started_at=T0 + 4, attempt=2))
    fetch = next(r for r in progress.running(T0 + 5) if r.id == "fetch")
    assert (fetch.attempt, fetch.retrying, fetch.elapsed) == (2, False, 3.0)


def test_tokens_add_up_items_and_the_maps_own_total_is_not_added_again(progress):
    feed_all(
        progress,
        [
            event("fetch", "started", T0, attempt=1),
            event("fetch", "succeeded", T0 + 1, total_tokens=100),
            event("each", "started", T0 + 1, items=3),
            event("each", "succeeded", T0 + 2, item=0, total_tokens=7),
            event("each", "succeeded", T0 + 2, item=1, total_tokens=8),
        ],
    )
    assert progress.tokens == 115
    progress.feed(event("each", "succeeded", T0 + 2, item=2, total_tokens=9))
    progress.feed(event("each", "succeeded", T0 + 3, total_tokens=24))
    assert progress.tokens == 124  # the items' 24, counted once (as the run record does)


def test_cost_is_unknown_for_a_call_without_a_cost_or_a_price(echo_factory):
    """The live view prices a finished call as the run record does: its event's cost (the
    run's), else the price table's; a call never sent costs nothing."""
    graph = compile_plan(TaskPlan.model_validate(PLAN), model=echo_factory())
    assert graph.fanfold_runtime is not None
    progress = Progress(graph.fanfold_runtime, inputs={"xs": ["a", "b", "c"]}, started_at=T0)
    feed_all(
        progress,
        [
            event("fetch", "started", T0, attempt=1),
            event("fetch", "succeeded", T0 + 1, total_tokens=100),  # no price for its model
        ],
    )
    assert progress.cost is None and progress.cost_unknown == 1
    feed_all(
        progress,
        [
            event("check", "started", T0, attempt=1),
            event("check", "succeeded", T0 + 1, total_tokens=50, cost=0.25),
            # A call that was never sent costs nothing.
            event("summarise", "failed", T0 + 1, total_tokens=0),
        ],
    )
    assert progress.cost == pytest.approx(0.25)
    assert progress.cost_unknown == 1  # fetch's


def test_eta_uses_learned_durations_as_the_remaining_critical_path(tmp_path):
    store = DurationStore(tmp_path / "durations.db")
    plan = {
        "task": "t",
        "subtasks": [
            {"id": "a", "prompt": "a"},
            {"id": "b", "prompt": "b", "depends_on": ["a"]},
            {"id": "c", "prompt": "c"},
        ],
    }
    store.record(*runtime_of(plan, store).durations_key, {"a": 2.0, "b": 3.0, "c": 10.0})
    runtime = runtime_of(plan, store)
    assert runtime.expected_source == "learned"
    progress = Progress(runtime, started_at=T0)
    assert progress.eta(T0).source == "learned durations"
    assert progress.eta(T0).seconds == pytest.approx(10.0)  # c's 10s beats a -> b's 5s
    feed_all(
        progress,
        [event("a", "started", T0, started_at=T0), event("c", "started", T0, started_at=T0)],
    )
    assert progress.eta(T0 + 4).seconds == pytest.approx(6.0)  # c has 6 of 10s left
    progress.feed(event("c", "succeeded", T0 + 4))
    # a ran 4s of its expected 2s (counted as about to finish), then b's 3s.
    assert progress.eta(T0 + 4).seconds == pytest.approx(3.0)


def test_eta_falls_back_to_observed_throughput_without_learned_durations(progress):
    assert progress.runtime is not None and progress.runtime.expected_source == "hops"
    eta = progress.eta(T0)
    assert eta.source == "observed throughput" and eta.seconds is None  # nothing finished
    feed_all(
        progress,
        [
            event("fetch", "started", T0, attempt=1),
            event("check", "started", T0, attempt=1),
            event("fetch", "succeeded", T0 + 2, total_tokens=1),
            event("check", "succeeded", T0 + 2, total_tokens=1),
        ],
    )
    # 2 calls in 2s; left: summarise (1 call) and each (3 items) -> 4 calls at 1 per second.
    assert progress.eta(T0 + 2).seconds == pytest.approx(4.0)


def test_eta_is_zero_once_every_subtask_finished(progress):
    for sid in ("fetch", "check", "summarise", "each"):
        progress.feed(event(sid, "skipped", T0 + 1))
    assert progress.eta(T0 + 1).seconds == 0.0


def test_preloaded_results_count_as_finished_but_not_as_this_runs_throughput(progress):
    done = SubtaskResult(id="fetch", status="succeeded", usage=TokenUsage(total_tokens=9))
    progress.preload({"fetch": done}, reused_items={"each": [object(), object()]})
    assert progress.counts().done == 1 and progress.tokens == 9
    items = progress.subtasks["each"].items
    assert items is not None and items.done == 2 and items.total == 3
    feed_all(
        progress,
        [
            event("check", "started", T0, attempt=1),
            event("check", "succeeded", T0 + 1, total_tokens=1),
        ],
    )
    # 1 call in 1s this run; left: summarise and the one item not reused.
    assert progress.eta(T0 + 1).seconds == pytest.approx(2.0)


def test_events_of_another_type_are_ignored(progress):
    assert progress.feed({"type": "my.custom", "subtask": "fetch", "status": "started"}) is None
    assert progress.events == 0 and progress.counts().waiting == 4


def test_without_a_plan_subtasks_are_known_from_their_events():
    progress = Progress(started_at=T0)
    assert progress.snapshot(T0).planning
    progress.feed(event("x", "started", T0, attempt=1))
    assert not progress.snapshot(T0).planning and progress.counts().running == 1


# -- the live view -------------------------------------------------------------------------


def rendered(snapshot: ProgressSnapshot, **options: Any) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    console.print(render_progress(snapshot, **options))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[" in text  # drawn as for a terminal
    return ANSI.sub("", text)


def test_live_view_shows_the_counts_the_running_ids_and_the_eta_source(progress):
    feed_all(
        progress,
        [
            event("fetch", "started", T0, attempt=1),
            event("fetch", "succeeded", T0 + 1, total_tokens=1200),
            event("check", "started", T0, attempt=1),
            event("each", "started", T0 + 1, items=3),
            event("each", "started", T0 + 1, item=0, attempt=1),
            event("each", "succeeded", T0 + 2, item=0, total_tokens=34),
        ],
    )
    text = rendered(progress.snapshot(T0 + 3))
    assert "1/4 subtasks" in text
    assert "done 1 · failed 0 · skipped 0 · running 2 · waiting 1" in text
    assert "tokens 1,234" in text
    assert re.search(r"^\s+check\s+3\.0s", text, re.M), text
    assert re.search(r"^\s+each\s+2\.0s\s+1/3 items done · 0 in flight · 2 queued", text, re.M)
    assert "ETA ~" in text and "(observed throughput)" in text
    assert "cost $0" in text  # the simulated model is free, as the run record says


def test_live_view_says_when_the_eta_comes_from_learned_durations(tmp_path):
    store = DurationStore(tmp_path / "durations.db")
    plan = {"task": "t", "subtasks": [{"id": "a", "prompt": "a"}]}
    store.record(*runtime_of(plan, store).durations_key, {"a": 40.0})
    progress = Progress(runtime_of(plan, store), started_at=T0)
    text = rendered(progress.snapshot(T0))
    assert "ETA ~40s (learned durations)" in text


def test_live_view_of_300_subtasks_lists_ten_running_and_counts_the_rest():
    plan = {"task": "t", "subtasks": [{"id": f"s{i:03d}", "prompt": "p"} for i in range(300)]}
    progress = Progress(runtime_of(plan), started_at=T0)
    for i in range(40):
        progress.feed(event(f"s{i:03d}", "started", T0 + i / 100, attempt=1))
    for i in range(15):
        progress.feed(event(f"s{i:03d}", "succeeded", T0 + 1))
    text = rendered(progress.snapshot(T0 + 2))
    assert "15/300 subtasks" in text and "running 25 · waiting 260" in text
    listed = re.findall(r"^\s+(s\d{3})\s", text, re.M)
    assert listed == [f"s{i:03d}" for i in range(15, 25)]  # the longest-running ten
    assert "… and 15 more running" in text
    assert len(text.splitlines()) <= 14


def test_live_view_shows_run_text_verbatim_not_as_markup(progress):
    feed_all(
        progress,
        [
            event("fetch", "started", T0, attempt=1),
            event("fetch", "retrying", T0, attempt=1, error="[bold]bad[/bold] reply", delay=1),
        ],
    )
    assert "retrying after: [bold]bad[/bold] reply" in rendered(progress.snapshot(T0 + 1))


def test_live_progress_prints_failures_above_its_final_frame(progress):
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with LiveProgress(progress, console=console, refresh_per_second=20) as live:
        live.feed(event("fetch", "started", T0, attempt=1))
        live.feed(event("fetch", "failed", T0 + 1, error="400 bad request"))
        live.feed(event("check", "started", T0, attempt=1))
        live.feed(event("check", "succeeded", T0 + 1))
    text = ANSI.sub("", console.file.getvalue())  # type: ignore[attr-defined]
    assert "failed    fetch  400 bad request" in text
    assert "done 1 · failed 1" in text.rsplit("fanfold", 1)[-1]  # the last frame


def test_plain_progress_prints_finished_subtasks_and_maps_but_not_items_or_starts():
    lines: list[str] = []
    plain = PlainProgress(lines.append)
    for ev in [
        event("each", "started", T0, items=2),
        event("each", "started", T0, item=0, attempt=1),
        event("each", "succeeded", T0, item=0),
        event("each", "failed", T0, item=1),
        event("each", "failed", T0),
        event("after", "skipped", T0),
    ]:
        plain.feed(ev)
    assert lines == ["  failed    each", "  skipped   after"]


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "100", "NO_COLOR": "1"})


@pytest.fixture
def map_plan(tmp_path: Path) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(
        "task: Review {xs}\n"
        "inputs:\n  xs: {description: things to review}\n"
        "subtasks:\n"
        "  - id: intro\n    prompt: intro\n"
        "  - id: each\n    prompt: 'look at {item}'\n    map: xs\n    depends_on: [intro]\n"
        "  - id: wrap\n    prompt: 'wrap {each}'\n    depends_on: [each]\n",
        encoding="utf-8",
    )
    return path


MAP_ARGS = ["-m", "simulated", "-i", 'xs=["a","b"]']


def read_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, "no events written"
    return [json.loads(line) for line in lines]  # one JSON object per line


def test_run_without_a_terminal_prints_one_plain_line_per_finished_subtask(runner, map_plan):
    result = runner.invoke(app, ["run", str(map_plan), *MAP_ARGS])
    assert result.exit_code == EXIT_OK, result.output
    # The map reports once, not once per item.
    assert result.stderr.splitlines() == [
        "  succeeded intro",
        "  succeeded each",
        "  succeeded wrap",
        "  succeeded aggregate",
    ]
    assert "3 succeeded, 0 failed, 0 skipped (2 map items)" in result.stdout


def test_run_quiet_prints_nothing_on_stderr_and_still_reports(runner, map_plan):
    result = runner.invoke(app, ["run", str(map_plan), *MAP_ARGS, "--quiet"])
    assert result.exit_code == EXIT_OK, result.output
    assert result.stderr == ""
    assert result.stdout.startswith("Task: Review")
    assert "3 succeeded, 0 failed, 0 skipped" in result.stdout


def test_run_quiet_json_still_prints_the_json_report(runner, map_plan):
    result = runner.invoke(app, ["run", str(map_plan), *MAP_ARGS, "-q", "--json"])
    assert result.exit_code == EXIT_OK, result.output
    assert result.stderr == ""
    assert set(json.loads(result.stdout)["results"]) == {"intro", "each", "wrap"}


def test_run_on_a_terminal_draws_the_live_view_instead_of_plain_lines(
    runner, map_plan, monkeypatch
):
    monkeypatch.setattr("fanfold.runs.watch.stderr_is_terminal", lambda: True)
    result = runner.invoke(app, ["run", str(map_plan), *MAP_ARGS])
    assert result.exit_code == EXIT_OK, result.output
    assert "  succeeded intro" not in result.stderr
    assert "3/3 subtasks" in result.stderr and "finished" in result.stderr
    assert "done 3 · failed 0 · skipped 0 · running 0 · waiting 0" in result.stderr
    assert "map items: 2/2 done" in result.stderr
    assert "3 succeeded, 0 failed, 0 skipped" in result.stdout  # the report is unchanged


def test_events_file_has_every_lifecycle_event_one_json_object_per_line(runner, map_plan, tmp_path):
    events_path = tmp_path / "events.jsonl"
    result = runner.invoke(app, ["run", str(map_plan), *MAP_ARGS, "--events", str(events_path)])
    assert result.exit_code == EXIT_OK, result.output
    events = read_events(events_path)
    assert {e["type"] for e in events} == {EVENT_TYPE}
    whole = [e for e in events if "item" not in e]
    for sid in ("intro", "each", "wrap", "aggregate"):
        assert {e["status"] for e in whole if e["subtask"] == sid} == {"started", "succeeded"}
    [map_start] = [e for e in whole if e["subtask"] == "each" and e["status"] == "started"]
    assert map_start["items"] == 2
    items = [e for e in events if "item" in e]
    assert sorted((e["id"], e["status"]) for e in items) == [
        ("each[0]", "started"),
        ("each[0]", "succeeded"),
        ("each[1]", "started"),
        ("each[1]", "succeeded"),
    ]
    # In arrival order: each item between its map's start and finish.
    positions = {
        (e["id"] if "item" in e else e["subtask"], e["status"]): i for i, e in enumerate(events)
    }
    for index in (0, 1):
        assert (
            positions[("each", "started")]
            < positions[(f"each[{index}]", "started")]
            < positions[(f"each[{index}]", "succeeded")]
            < positions[("each", "succeeded")]
        )
    assert positions[("intro", "succeeded")] < positions[("each", "started")]
    assert positions[("wrap", "succeeded")] < positions[("aggregate", "started")]
    # The plain progress lines still print alongside (the aggregate's too).
    assert len(result.stderr.splitlines()) == 4


def test_events_file_is_written_with_quiet_and_json_too(runner, map_plan, tmp_path):
    events_path = tmp_path / "events.jsonl"
    result = runner.invoke(
        app, ["run", str(map_plan), *MAP_ARGS, "-q", "--json", "--events", str(events_path)]
    )
    assert result.exit_code == EXIT_OK, result.output
    assert result.stderr == ""
    statuses = {(e["subtask"], e["status"]) for e in read_events(events_path)}
    assert ("wrap", "succeeded") in statuses


def test_events_file_in_a_missing_folder_is_one_error_line_before_anything_runs(
    runner, map_plan, tmp_path
):
    target = tmp_path / "no-such-folder" / "events.jsonl"
    result = runner.invoke(app, ["run", str(map_plan), *MAP_ARGS, "--events", str(target)])
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write events to"), lines
    assert result.stdout == ""


SIM_KEY = "sk-test-progress"


@pytest.fixture
def server():
    with SimServer(SimServerConfig(api_key=SIM_KEY)) as srv:
        yield srv


def sim_runner(server: SimServer) -> CliRunner:
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": SIM_KEY, "COLUMNS": "100"}
    return CliRunner(env=env)


def test_a_failed_subtask_still_exits_3_with_quiet_and_events(server, map_plan, tmp_path):
    server.update(fail_prompts={"look at b": 400})
    events_path = tmp_path / "events.jsonl"
    args = ["run", str(map_plan), "-m", "openai:sim-model", "-i", 'xs=["a","b"]']
    result = sim_runner(server).invoke(app, [*args, "--quiet", "--events", str(events_path)])
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    assert result.stderr == ""
    statuses = {(e.get("id", e["subtask"]), e["status"]) for e in read_events(events_path)}
    assert {("each[0]", "succeeded"), ("each[1]", "failed"), ("each", "failed")} <= statuses
    assert ("wrap", "skipped") in statuses


def failed_run_id(server: SimServer, map_plan: Path, store: str) -> str:
    """Run `map_plan` with item `b` failing, checkpointed; return the run id."""
    server.update(fail_prompts={"look at b": 400})
    args = ["-m", "openai:sim-model", "-i", 'xs=["a","b"]', "--checkpoint", store]
    first = sim_runner(server).invoke(app, ["run", str(map_plan), *args])
    assert first.exit_code == EXIT_INCOMPLETE, first.output
    found = re.search(r"run id: ([0-9a-f]+)", first.stderr)
    assert found, first.stderr
    server.update(fail_prompts={})
    return found[1]


def test_resume_takes_quiet_and_writes_only_the_retried_subtasks_events(server, map_plan, tmp_path):
    store = str(tmp_path / "runs.db")
    run_id = failed_run_id(server, map_plan, store)
    events_path = tmp_path / "resumed.jsonl"
    resumed = sim_runner(server).invoke(
        app,
        ["resume", run_id, "--checkpoint", store, "--quiet", "--events", str(events_path)],
    )
    assert resumed.exit_code == EXIT_OK, resumed.output
    # No progress lines: only the one-off notice of what is resumed.
    assert resumed.stderr.splitlines() == [f"resuming run {run_id}: retrying 2 subtasks"]
    events = read_events(events_path)
    assert {e["subtask"] for e in events} == {"each", "wrap", "aggregate"}  # intro is kept
    assert {e["id"] for e in events if "item" in e} == {"each[1]"}  # each[0] is reused


def test_resume_on_a_terminal_counts_the_kept_results_as_done(
    server, map_plan, tmp_path, monkeypatch
):
    store = str(tmp_path / "runs.db")
    run_id = failed_run_id(server, map_plan, store)
    monkeypatch.setattr("fanfold.runs.watch.stderr_is_terminal", lambda: True)
    resumed = sim_runner(server).invoke(app, ["resume", run_id, "--checkpoint", store])
    assert resumed.exit_code == EXIT_OK, resumed.output
    # intro ran before; each[0] is reused: the view still ends at everything done.
    assert "3/3 subtasks" in resumed.stderr
    assert "done 3 · failed 0 · skipped 0 · running 0 · waiting 0" in resumed.stderr
    assert "map items: 2/2 done" in resumed.stderr


GOAL = "Compare three note-taking apps for a small team"


def test_run_goal_quiet_prints_no_progress_and_writes_the_plans_events(runner, tmp_path):
    events_path = tmp_path / "events.jsonl"
    result = runner.invoke(
        app, ["run", "--goal", GOAL, "-m", "simulated", "-q", "--events", str(events_path)]
    )
    assert result.exit_code == EXIT_OK, result.output
    assert result.stderr == ""  # not even the planner's line
    plan = make_plan(GOAL, model="simulated")
    events = read_events(events_path)
    for sid in plan.ids:
        assert {e["status"] for e in events if e["subtask"] == sid} >= {"started", "succeeded"}


@pytest.mark.parametrize("command", ["run", "resume"])
def test_help_shows_quiet_and_events_and_points_python_users_at_stream_mode_custom(runner, command):
    text = runner.invoke(app, [command, "--help"]).stdout
    assert "--quiet" in text and "--events FILE.jsonl" in text
    assert "stream_mode='custom'" in " ".join(text.split())


def test_each_event_is_on_disk_as_soon_as_it_is_fed_so_a_crash_keeps_it(tmp_path):
    events_path = tmp_path / "events.jsonl"
    with Watch("none", events_path) as watch:
        watch.feed(event("a", "started", T0, attempt=1))
        # Read by another handle while the run goes on, as after a crash.
        assert read_events(events_path) == [event("a", "started", T0, attempt=1)]
        watch.feed(event("a", "succeeded", T0 + 1))
        assert [e["status"] for e in read_events(events_path)] == ["started", "succeeded"]


def _event(sid: str, status: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"type": EVENT_TYPE, "subtask": sid, "status": status, "time": at, **fields}


def test_items_in_backoff_are_not_in_flight_and_the_bar_moves_per_item():
    """Issue 15 (7): "226 running" under --max-concurrency 128 (items in backoff counted
    as running), and the bar sat at 0/2 subtasks through a 5,000-item map."""
    progress = Progress(started_at=0.0)
    progress.feed(_event("each", "started", 0.0, items=4))
    for i in range(3):
        progress.feed(_event("each", "started", 0.1, item=i, id=f"each[{i}]"))
    progress.feed(_event("each", "retrying", 0.2, item=1, id="each[1]", delay=0.4,
                         reason="429 from the provider"))  # fmt: skip
    progress.feed(_event("each", "succeeded", 0.3, item=0, id="each[0]", total_tokens=5))
    snap = progress.snapshot(now=1.0)
    items = snap.items
    assert items is not None
    assert (items.running, items.backoff, items.waiting, items.done) == (1, 1, 1, 1)
    assert (snap.calls_finished, snap.calls_total) == (1, 4)
    assert snap.rate_limited == 1 and snap.pace is not None and snap.pace > 0
    text = render_text(snap)
    assert "1 in flight · 1 in backoff · 1 queued" in text and "429s 1" in text


def test_plain_lines_say_why_a_call_is_retried():
    """Issue 23: `retrying s7` gave no reason."""
    lines: list[str] = []
    plain = PlainProgress(lines.append)
    reason, error = "429 from the provider", "RateLimitError: slow down"
    plain.feed(_event("s7", "retrying", 1.0, attempt=1, delay=0.4, reason=reason, error=error))
    assert lines == ["  retrying  s7: 429 from the provider, retrying in 0.4 s"]


def test_the_aggregate_shows_as_a_running_step():
    """Issue 15 (6): "6/6 finished, running 0" while the aggregate call ran."""
    progress = Progress(started_at=0.0)
    progress.feed(_event("a", "started", 0.0))
    progress.feed(_event("a", "succeeded", 0.5, total_tokens=3))
    progress.feed(_event("aggregate", "started", 0.6))
    snap = progress.snapshot(now=1.0)
    assert snap.aggregating and "aggregating" in render_text(snap)
    assert "  aggregate" in render_text(snap)
    progress.feed(_event("aggregate", "succeeded", 0.9))
    assert not progress.snapshot(now=1.0).aggregating


def render_text(snapshot: ProgressSnapshot) -> str:
    console = Console(file=io.StringIO(), force_terminal=False, width=160)
    console.print(render_progress(snapshot))
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


# -- the live view and the run record agree ---------------------------------------------------

RECORD_PLAN = {
    "task": "t",
    "inputs": {"xs": {"description": "things"}},
    "subtasks": [
        {"id": "fetch", "prompt": "fetch"},
        {"id": "check", "prompt": "check"},
        {"id": "summarise", "prompt": "sum {fetch}", "depends_on": ["fetch"]},
        {"id": "each", "prompt": "look at {item}", "map": "xs", "depends_on": ["fetch"]},
        {"id": "broken", "prompt": "fail {check}", "depends_on": ["check"]},
        {"id": "after", "prompt": "after {broken}", "depends_on": ["broken"]},
    ],
}


async def test_the_live_views_totals_equal_the_run_records_at_the_end_of_a_run(echo_factory):
    """Issue 15: the live view and the record (what --json and the report show) tell the
    same totals: subtasks per status, calls, tokens and cost."""
    from fanfold.record import build_record

    inputs = {"xs": ["a", "b", "c", "d"]}
    model = echo_factory(fail_on={"fail"})
    prices = {"EchoChatModel": {"input": 1.0, "output": 2.0}}
    graph = compile_plan(TaskPlan.model_validate(RECORD_PLAN), model=model, prices=prices)
    runtime = graph.fanfold_runtime
    assert runtime is not None
    progress = Progress(runtime, inputs=inputs)
    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    async for mode, chunk in graph.astream({"inputs": inputs}, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
            progress.feed(chunk)
        else:
            state = chunk
    record = build_record(state, events=events, runtime=runtime)
    totals = record.totals
    counts = progress.counts()
    assert (
        (counts.done, counts.failed, counts.skipped)
        == (
            totals.succeeded,
            totals.failed,
            totals.skipped,
        )
        == (4, 1, 1)
    )
    assert counts.running == counts.waiting == counts.backoff == 0
    assert progress.calls_total() == progress.calls_finished() == totals.calls == 9
    assert progress.tokens == sum(s.usage.total_tokens for s in record.subtasks) > 0
    assert progress.tokens + totals.aggregate_usage.total_tokens == totals.total_tokens
    assert progress.cost is not None and totals.cost is not None
    assert progress.cost + (totals.aggregate_cost or 0.0) == pytest.approx(totals.cost)
    assert progress.cost_unknown == 0 and not totals.unknown_cost_models
    assert not progress.aggregating()
