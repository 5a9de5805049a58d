"""Under a concurrency limit, free slots go to the subtask with the highest priority.

Priority: an explicit `SubTask.priority` first, then the longest expected remaining path,
whose durations come from hints, else from durations recorded by earlier runs of the
same plan and model, else one hop per subtask. Orders are read from the "started"
lifecycle events, never from timings.

Most scenarios hold the only slot of a `RateLimiter(max_concurrency=1)` until every
ready subtask has queued for it, so the order is decided by the limiter's priority
queue alone and not by which task happened to reach the limiter first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from typer.testing import CliRunner

from fanfold import (
    EVENT_TYPE,
    CompiledPlanGraph,
    SimulatedChatModel,
    SubTask,
    TaskPlan,
    compile_plan,
)
from fanfold.cli import app, default_store_path
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.limits import RateLimiter
from fanfold.scheduling.priorities import (
    DEFAULT_CALL_SECONDS,
    SECONDS_PER_OUTPUT_TOKEN,
    critical_path,
    expected_durations,
    priority_key,
    remaining_paths,
)
from fanfold.scheduling.retry import RetryPolicy
from fanfold.scheduling.runtime import PlanRuntime

SHORTS = ["x1", "x2", "x3", "x4", "x5"]
CHAIN = ["c1", "c2", "c3", "c4"]


def shorts_then_chain(shorts: Sequence[str] = SHORTS) -> dict[str, list[str]]:
    """Short independent subtasks listed first, then one long chain c1 -> c2 -> c3 -> c4."""
    graph: dict[str, list[str]] = {sid: [] for sid in shorts}
    for i, sid in enumerate(CHAIN):
        graph[sid] = [CHAIN[i - 1]] if i else []
    return graph


def runtime_of(graph: CompiledPlanGraph) -> PlanRuntime:
    runtime = graph.fanfold_runtime
    assert runtime is not None
    return runtime


def roots(plan: TaskPlan) -> list[str]:
    return [s.id for s in plan.subtasks if not s.depends_on]


async def wait_until_queued(limiter: RateLimiter, count: int) -> None:
    """Yield to the loop until `count` callers wait for a slot (fails instead of hanging)."""
    for _ in range(5000):
        if limiter.waiting >= count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"only {limiter.waiting} of {count} subtasks queued for the slot")


async def collect_events(graph: Any) -> list[dict[str, Any]]:
    events = []
    async for event in graph.astream({"inputs": {}}, stream_mode="custom"):
        if isinstance(event, dict) and event.get("type") == EVENT_TYPE:
            events.append(event)
    return events


def started(events: list[dict[str, Any]]) -> list[str]:
    return [e["subtask"] for e in events if e["status"] == "started"]


async def start_order_with_slot_held(plan: TaskPlan, model: Any, **options: Any) -> list[str]:
    """Run `plan` under a limit of 1 whose slot the test holds until every root has queued."""
    limiter = RateLimiter(max_concurrency=1)
    graph = compile_plan(plan, model=model, aggregator=None, rate_limiter=limiter, **options)
    await limiter.acquire()
    run = asyncio.ensure_future(collect_events(graph))
    try:
        await wait_until_queued(limiter, len(roots(plan)))
    finally:
        limiter.release()
    return started(await run)


async def start_order(plan: TaskPlan, model: Any, **options: Any) -> list[str]:
    """Run `plan` under a fresh limit of 1, nothing held."""
    limiter = RateLimiter(max_concurrency=1)
    graph = compile_plan(plan, model=model, aggregator=None, rate_limiter=limiter, **options)
    return started(await collect_events(graph))


# -- (a) the longest remaining path goes first ----------------------------------------


async def test_chain_head_gets_the_slot_before_short_independent_subtasks(make_plan, echo):
    order = await start_order_with_slot_held(make_plan(shorts_then_chain()), echo)

    assert order[0] == "c1"
    assert sorted(order) == sorted(SHORTS + CHAIN)


async def test_equal_priorities_start_in_the_order_they_queued(make_plan, echo):
    order = await start_order_with_slot_held(make_plan(shorts_then_chain()), echo)

    assert [sid for sid in order if sid in SHORTS] == SHORTS
    assert [sid for sid in order if sid in CHAIN] == CHAIN


async def test_chain_head_takes_the_first_free_slot_of_a_run(make_plan, echo):
    order = await start_order(make_plan(shorts_then_chain()), echo)

    assert order[0] == "c1"


async def test_unblocked_chain_link_competes_for_the_slot_its_dependency_frees(make_plan, echo):
    order = await start_order_with_slot_held(make_plan(shorts_then_chain(["x1", "x2"])), echo)

    # c2 and c3 each become ready as the slot frees and outrank x1, x2 (c4 ties with them).
    assert order[:3] == ["c1", "c2", "c3"]


class ReleaseLog(RateLimiter):
    """A limit of 1 that notes which task frees each slot (None: a done callback)."""

    def __init__(self) -> None:
        super().__init__(max_concurrency=1)
        self.freed_by: list[str | None] = []

    def release(self, permit: Any = None) -> None:
        task = asyncio.current_task()
        self.freed_by.append(None if task is None else task.get_name())
        super().release(permit)


async def test_a_call_that_unblocks_nothing_frees_its_slot_before_its_task_ends(make_plan, echo):
    limiter = ReleaseLog()
    plan = make_plan({"a": [], "b": ["a"], "c": []})
    graph = compile_plan(plan, model=echo, aggregator=None, rate_limiter=limiter)

    assert len(started(await collect_events(graph))) == 3
    # "a" holds its slot until "b" has queued (a done callback of its task frees it);
    # "b" and "c" unblock nothing, so their own tasks free their slots at once.
    assert sorted(limiter.freed_by, key=str) == [None, "fanfold:b", "fanfold:c"]


# -- (b) explicit priorities dominate ------------------------------------------------


async def test_explicit_priority_beats_a_longer_computed_path(make_plan, echo):
    plan = make_plan(shorts_then_chain(["urgent", "demoted", "plain"]))
    plan.subtask("urgent").priority = 5.0
    plan.subtask("demoted").priority = -1.0

    order = await start_order_with_slot_held(plan, echo)

    assert order[:2] == ["urgent", "c1"]
    assert order.index("plain") < order.index("demoted")  # though "demoted" queued first


def test_explicit_priority_dominates_and_the_remaining_path_breaks_ties():
    assert priority_key(2.0, 1.0) > priority_key(1.0, 100.0)
    assert priority_key(2.0, 5.0) > priority_key(2.0, 3.0)
    assert priority_key(None, 5.0) > priority_key(None, 3.0)


# -- (c) hints change the order ------------------------------------------------------

HINTS = {
    "expected_seconds": {"big": {"expected_seconds": 30.0}},
    "expected_output_tokens": {"big": {"expected_output_tokens": 1500}},
    "hints on every subtask": {
        "big": {"expected_seconds": 1.0},
        **{sid: {"expected_seconds": 0.1} for sid in CHAIN},
    },
}


async def test_without_hints_the_longer_chain_starts_before_a_single_subtask(make_plan, echo):
    plan = make_plan({"big": [], **shorts_then_chain([])})

    order = await start_order_with_slot_held(plan, echo)

    assert order[0] == "c1"
    assert [sid for sid in order if sid in CHAIN] == CHAIN


@pytest.mark.parametrize("hints", HINTS.values(), ids=HINTS.keys())
async def test_a_long_duration_hint_starts_a_single_subtask_before_the_chain(
    make_plan, echo, hints
):
    plan = make_plan({"big": [], **shorts_then_chain([])})
    for sid, fields in hints.items():
        for name, value in fields.items():
            setattr(plan.subtask(sid), name, value)

    order = await start_order_with_slot_held(plan, echo)

    assert order[0] == "big"
    assert order[1:] == CHAIN


def test_source_of_expected_durations_is_reported_on_the_runtime(make_plan, echo):
    plan = make_plan({"a": [], "b": ["a"]})
    assert runtime_of(compile_plan(plan, model=echo)).expected_source == "hops"
    plan.subtask("a").expected_seconds = 2.0
    assert runtime_of(compile_plan(plan, model=echo)).expected_source == "mixed"
    plan.subtask("b").expected_output_tokens = 50
    runtime = runtime_of(compile_plan(plan, model=echo))
    assert runtime.expected_source == "hints"
    assert runtime.remaining["a"] == pytest.approx(2.0 + 50 * SECONDS_PER_OUTPUT_TOKEN)


# -- (d) recorded durations: same plan and same model only ---------------------------

LATENCIES = {"a": 0.001, "b": 0.03, "c": 0.001}


def latency_by_marker(latencies: dict[str, float]) -> Callable[[list[BaseMessage]], float]:
    """Latency from the `[id]` marker that starts the subtask's prompt."""

    def latency(messages: list[BaseMessage]) -> float:
        text = str(messages[-1].content)
        return next((s for sid, s in latencies.items() if text.startswith(f"[{sid}]")), 0.0)

    return latency


def timed_model(name: str = "simulated") -> SimulatedChatModel:
    return SimulatedChatModel(latency_fn=latency_by_marker(LATENCIES), model_name=name)


async def test_recorded_durations_are_reused_only_for_the_same_plan_and_model(make_plan, tmp_path):
    store = DurationStore(tmp_path / "durations.db")
    plan = make_plan({"a": [], "b": ["a"], "c": []})
    model = timed_model()

    first = compile_plan(plan, model=model, aggregator=None, durations=store)
    assert runtime_of(first).expected_source == "hops"
    assert store.load(plan.fingerprint(), "simulated") == {}
    await first.ainvoke({"inputs": {}})

    recorded = store.load(plan.fingerprint(), "simulated")
    assert set(recorded) == {"a", "b", "c"}
    assert recorded["b"] > recorded["a"]  # 30 ms against 1 ms

    second = compile_plan(plan, model=model, aggregator=None, durations=store)
    assert runtime_of(second).expected_source == "learned"
    assert runtime_of(second).expected == recorded

    changed = make_plan({"a": [], "b": ["a"], "c": []}, prompts={"b": "[b] do b differently"})
    assert changed.fingerprint() != plan.fingerprint()
    assert store.load(changed.fingerprint(), "simulated") == {}
    recompiled = compile_plan(changed, model=model, aggregator=None, durations=store)
    assert runtime_of(recompiled).expected_source == "hops"

    assert store.load(plan.fingerprint(), "other-model") == {}
    other = compile_plan(plan, model=timed_model("other-model"), durations=store)
    assert runtime_of(other).expected_source == "hops"


async def test_recorded_durations_survive_reopening_the_store(make_plan, tmp_path):
    plan = make_plan({"a": [], "b": ["a"]})
    store = DurationStore(tmp_path / "durations.db")
    await compile_plan(plan, model=timed_model(), aggregator=None, durations=store).ainvoke(
        {"inputs": {}}
    )
    recorded = store.load(plan.fingerprint(), "simulated")
    store.close()

    reopened = DurationStore(tmp_path / "durations.db")
    assert reopened.load(plan.fingerprint(), "simulated") == recorded
    runtime = runtime_of(compile_plan(plan, model=timed_model(), durations=reopened))
    assert runtime.expected_source == "learned"


async def test_failed_subtasks_record_no_duration(make_plan, tmp_path):
    plan = make_plan({"ok": [], "bad": [], "after_bad": ["bad"]}, prompts={"bad": "[bad] BOOM"})
    store = DurationStore(tmp_path / "durations.db")
    model = SimulatedChatModel(latency=0.001, fail_on=("BOOM",))
    graph = compile_plan(plan, model=model, aggregator=None, durations=store)
    await graph.ainvoke({"inputs": {}})

    assert set(store.load(plan.fingerprint(), "simulated")) == {"ok"}
    runtime = runtime_of(compile_plan(plan, model=model, durations=store))
    assert runtime.expected_source == "mixed"


def test_running_means_fold_new_observations_in():
    store = DurationStore(":memory:")
    store.record("plan", "model", {"a": 1.0})
    store.record("plan", "model", {"a": 3.0, "b": 2.0})

    assert store.load("plan", "model") == {"a": 2.0, "b": 2.0}
    assert store.load("plan", "other") == {}
    assert store.load("other", "model") == {}


# -- (e) lifecycle events carry the priority ------------------------------------------


class RateLimitedOnce(RuntimeError):
    status_code = 429


def flaky_latency(marker: str) -> Callable[[list[BaseMessage]], float]:
    """Latency function that raises a 429 on the first call whose prompt has `marker`."""
    seen: set[str] = set()

    def latency(messages: list[BaseMessage]) -> float:
        text = str(messages[-1].content)
        if marker in text and text not in seen:
            seen.add(text)
            raise RateLimitedOnce("429 Too Many Requests")
        return 0.001

    return latency


async def lifecycle_events(plan: TaskPlan, model: Any) -> tuple[list[dict[str, Any]], Any]:
    graph = compile_plan(
        plan,
        model=model,
        aggregator=None,
        rate_limiter=RateLimiter(max_concurrency=2),  # a 429 slows the shared one down
        retry=RetryPolicy(initial_backoff=0.001, jitter=0.0),
    )
    return await collect_events(graph), runtime_of(graph)


async def test_started_succeeded_and_failed_events_carry_the_priority(make_plan):
    plan = make_plan({"a": [], "b": ["a"], "pinned": [], "bad": []}, prompts={"bad": "[bad] BOOM"})
    plan.subtask("pinned").priority = 7.0
    model = SimulatedChatModel(latency=0.001, fail_on=("BOOM",))

    events, runtime = await lifecycle_events(plan, model)

    by_status = {(e["subtask"], e["status"]): e for e in events}
    assert {status for _, status in by_status} == {"started", "succeeded", "failed"}
    for (sid, _status), event in by_status.items():
        expected = 7.0 if sid == "pinned" else runtime.remaining[sid]
        assert event["priority"] == expected, event
    assert by_status[("a", "started")]["priority"] == 2 * DEFAULT_CALL_SECONDS  # a and b


async def test_retrying_events_carry_the_priority(make_plan):
    plan = make_plan({"a": [], "flaky": ["a"]}, prompts={"flaky": "[flaky] FLAKY"})
    model = SimulatedChatModel(latency_fn=flaky_latency("FLAKY"))

    events, runtime = await lifecycle_events(plan, model)

    retrying = [e for e in events if e["status"] == "retrying"]
    assert [e["subtask"] for e in retrying] == ["flaky"]
    assert retrying[0].get("priority") == runtime.remaining["flaky"]


async def test_skipped_events_carry_the_priority(make_plan):
    plan = make_plan({"bad": [], "after_bad": ["bad"]}, prompts={"bad": "[bad] BOOM"})
    model = SimulatedChatModel(latency=0.001, fail_on=("BOOM",))

    events, runtime = await lifecycle_events(plan, model)

    skipped = [e for e in events if e["status"] == "skipped"]
    assert [e["subtask"] for e in skipped] == ["after_bad"]
    assert skipped[0]["priority"] == runtime.remaining["after_bad"]


# -- (f) the CLI prints the critical path ---------------------------------------------

CLI_PLAN = """\
task: Check the critical path
subtasks:
  - id: outline
    prompt: Outline the report.
  - id: draft
    prompt: Draft the report from the outline.
    depends_on: [outline]
  - id: side_note
    prompt: Write a side note.
"""


@pytest.fixture
def cli_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FANFOLD_HOME", str(tmp_path / "home"))
    path = tmp_path / "plan.yaml"
    path.write_text(CLI_PLAN, encoding="utf-8")
    return path


def test_cli_prints_the_critical_path_then_learns_durations(cli_plan, tmp_path):
    runner = CliRunner()
    command = ["run", str(cli_plan), "--model", "simulated", "--critical-path"]

    first = runner.invoke(app, command)
    assert first.exit_code == 0, first.output
    assert "critical path (hops): outline -> draft  [2 hops]" in first.stdout
    assert default_store_path() == tmp_path / "home" / "fanfold.db"
    assert default_store_path().exists()

    second = runner.invoke(app, command)
    assert second.exit_code == 0, second.output
    line = next(x for x in second.stdout.splitlines() if x.startswith("critical path"))
    assert line.startswith("critical path (learned): outline -> draft  [")
    assert line.endswith("s expected]")


def test_cli_json_run_prints_the_critical_path_on_stderr(cli_plan):
    result = CliRunner().invoke(
        app, ["run", str(cli_plan), "-m", "simulated", "--critical-path", "--json"]
    )

    assert result.exit_code == 0, result.output
    assert "critical path (hops): outline -> draft" in result.stderr
    assert set(json.loads(result.stdout)["results"]) == {"outline", "draft", "side_note"}


# -- (g) units: remaining paths, critical path, expected durations, the limiter --------

DIAMOND_ORDER = ["a", "b", "c", "d", "lone"]
DIAMOND_DEPS = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "lone": ()}
DIAMOND_SECONDS = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0, "lone": 6.5}


def test_remaining_path_is_own_duration_plus_the_longest_tail():
    remaining = remaining_paths(DIAMOND_ORDER, DIAMOND_DEPS, DIAMOND_SECONDS)

    assert remaining == {"a": 7.0, "b": 6.0, "c": 3.0, "d": 1.0, "lone": 6.5}


def test_remaining_path_in_hops_counts_subtasks_on_the_longest_chain():
    hops = dict.fromkeys(DIAMOND_ORDER, 1.0)

    assert remaining_paths(DIAMOND_ORDER, DIAMOND_DEPS, hops) == {
        "a": 3.0,
        "b": 2.0,
        "c": 2.0,
        "d": 1.0,
        "lone": 1.0,
    }


def test_critical_path_follows_the_longest_remaining_path_from_the_best_root():
    remaining = remaining_paths(DIAMOND_ORDER, DIAMOND_DEPS, DIAMOND_SECONDS)

    assert critical_path(DIAMOND_ORDER, DIAMOND_DEPS, remaining, DIAMOND_SECONDS) == [
        "a",
        "b",
        "d",
    ]


def test_critical_path_is_a_single_subtask_when_it_outlasts_every_chain():
    seconds = {**DIAMOND_SECONDS, "lone": 7.5}
    remaining = remaining_paths(DIAMOND_ORDER, DIAMOND_DEPS, seconds)

    assert critical_path(DIAMOND_ORDER, DIAMOND_DEPS, remaining, seconds) == ["lone"]


def test_critical_path_of_nothing_is_empty():
    assert critical_path([], {}, {}, {}) == []


def subtask(sid: str, **fields: Any) -> SubTask:
    return SubTask(id=sid, prompt=f"[{sid}] do {sid}", **fields)


def test_expected_durations_prefer_hints_then_learned_then_hops():
    subtasks = [
        subtask("hinted", expected_seconds=3.0),
        subtask("tokens", expected_output_tokens=100),
        subtask("both", expected_seconds=0.5, expected_output_tokens=1000),
        subtask("learned"),
        subtask("hinted_and_learned", expected_seconds=4.0),
        subtask("unknown"),
    ]
    learned = {"learned": 0.25, "hinted_and_learned": 9.0, "not_in_plan": 1.0}

    durations, source = expected_durations(subtasks, learned)

    assert durations == {
        "hinted": 3.0,
        "tokens": pytest.approx(100 * SECONDS_PER_OUTPUT_TOKEN),
        "both": 0.5,
        "learned": 0.25,
        "hinted_and_learned": 4.0,
        "unknown": 1.0,  # the median of what earlier runs recorded
    }
    assert source == "mixed"


@pytest.mark.parametrize(
    ("fields", "learned", "source"),
    [
        ({}, {}, "hops"),
        ({}, {"a": 0.1, "b": 0.2}, "learned"),
        ({"expected_seconds": 1.0}, {}, "hints"),
        ({}, {"a": 0.1}, "mixed"),
    ],
)
def test_expected_durations_name_their_source(fields, learned, source):
    subtasks = [subtask("a", **fields), subtask("b", **fields)]

    assert expected_durations(subtasks, learned)[1] == source


async def grant_order(limiter: RateLimiter, priorities: dict[str, Any]) -> list[str]:
    """Queue one caller per priority behind a held slot; return the order they got it."""
    await limiter.acquire()
    order: list[str] = []

    async def caller(name: str, priority: Any) -> None:
        await limiter.acquire(priority)
        order.append(name)
        limiter.release()

    tasks = [asyncio.ensure_future(caller(n, p)) for n, p in priorities.items()]
    await wait_until_queued(limiter, len(priorities))
    limiter.release()
    await asyncio.gather(*tasks)
    return order


async def test_limiter_hands_the_freed_slot_to_the_highest_priority_waiter():
    order = await grant_order(
        RateLimiter(max_concurrency=1), {"low": 1.0, "high": 5.0, "mid": 3.0, "lowest": -2.0}
    )

    assert order == ["high", "mid", "low", "lowest"]


async def test_limiter_serves_equal_priorities_first_come_first_served():
    order = await grant_order(RateLimiter(max_concurrency=1), {"first": 1.0, "second": 1.0})

    assert order == ["first", "second"]


async def test_limiter_compares_tuple_priorities_element_by_element():
    order = await grant_order(
        RateLimiter(max_concurrency=1),
        {"long path": (0.0, 9.0), "explicit": (1.0, 1.0), "short path": (0.0, 2.0)},
    )

    assert order == ["explicit", "long path", "short path"]


async def test_cancelled_waiter_does_not_keep_the_slot_from_the_next():
    limiter = RateLimiter(max_concurrency=1)
    await limiter.acquire()
    cancelled = asyncio.ensure_future(limiter.acquire(9.0))
    waiting = asyncio.ensure_future(limiter.acquire(1.0))
    await wait_until_queued(limiter, 2)

    cancelled.cancel()
    limiter.release()
    await waiting

    assert cancelled.cancelled()
    assert limiter.active == 1 and limiter.waiting == 0
    limiter.release()
    assert limiter.active == 0


async def test_paced_starts_stay_an_interval_apart_after_a_stalled_event_loop():
    limiter = RateLimiter(requests_per_second=20)  # one start every 50 ms
    starts: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        starts.append(time.monotonic())
        limiter.release()

    tasks = [asyncio.create_task(call()) for _ in range(6)]
    await asyncio.sleep(0.01)  # every waiter has its slot and sleeps towards it
    time.sleep(0.4)  # a stall: every slot but the last passes while nobody runs
    await asyncio.gather(*tasks)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 6
    # Without respacing, the waiters whose slots passed start in one burst (gaps of ~0).
    assert min(gaps) >= 0.045, gaps


def test_a_shallow_subtask_outranks_a_deep_one_whose_path_is_shorter_than_langgraphs_steps(
    echo,
):
    """A subtask in an early superstep holds back every later one until it is done, so
    the supersteps LangGraph runs after it count towards its remaining path."""
    graph: dict[str, list[str]] = {"x": []}
    chain = [f"c{i}" for i in range(1, 9)]
    for i, sid in enumerate(chain):
        graph[sid] = [chain[i - 1]] if i else []
    graph["z"] = [chain[-1]]
    subtasks = [
        {
            "id": sid,
            "prompt": f"[{sid}] do it",
            "depends_on": deps,
            "expected_seconds": {"x": 0.001, "z": 0.004}.get(sid, 0.0001),
        }
        for sid, deps in graph.items()
    ]
    plan = TaskPlan.model_validate({"task": "t", "subtasks": subtasks})
    runtime = runtime_of(compile_plan(plan, model=echo, aggregator=None))
    # By the calls alone z's path (4 ms) is longer than x's (1 ms) ...
    assert runtime.remaining["z"] > runtime.remaining["x"]
    # ... but if x finished last, LangGraph would still run nine supersteps after it.
    assert runtime.priorities["x"] > runtime.priorities["z"]
