"""Plan state round-trips through any LangGraph checkpointer as plain data.

LangGraph warns about (and, with LANGGRAPH_STRICT_MSGPACK=true, blocks) classes it does
not know when it reads a checkpoint. fanfold's state holds only plain data there, so
no checkpointer ever sees a fanfold class: no warning, and strict mode just works.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import BaseModel

from fanfold import RunTotals, SubtaskResult, TaskPlan, compile_plan


class Finding(BaseModel):
    claim: str
    score: int


@pytest.fixture
def serde_events() -> Iterator[list[dict[str, Any]]]:
    """Every allowlist event LangGraph's serializer emits (unlike its log, not once only)."""
    events: list[dict[str, Any]] = []
    unregister = register_serde_event_listener(lambda event: events.append(dict(event)))
    yield events
    unregister()


@pytest.fixture(params=["memory", "sqlite"])
def saver(request, tmp_path: Path) -> Iterator[Any]:
    """A checkpointer as a user builds it: LangGraph's default serializer."""
    if request.param == "memory":
        yield InMemorySaver()
        return
    conn = sqlite3.connect(tmp_path / "user.db", check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


def plan_with_a_failure() -> TaskPlan:
    return TaskPlan.model_validate(
        {
            "task": "Check the round trip",
            "subtasks": [
                {"id": "a", "prompt": "[a] first"},
                {"id": "finding", "prompt": "[finding] state one", "output_schema": Finding},
                {"id": "bad", "prompt": "[bad] fails"},
                {"id": "after", "prompt": "[after] uses {a}", "depends_on": ["a", "bad"]},
            ],
        }
    )


def test_state_round_trips_without_a_serializer_warning(saver, serde_events, simulated):
    model = simulated.model_copy(update={"fail_on": ("[bad]",)})
    graph = compile_plan(plan_with_a_failure(), model=model, checkpointer=saver)
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"inputs": {}}, config)

    # Read back through a graph compiled afresh, as another process would.
    reader = compile_plan(plan_with_a_failure(), model=model, checkpointer=saver)
    values = reader.get_state(config).values
    history = list(reader.get_state_history(config))
    assert len(history) > 2
    results = values["results"]
    assert {sid: r.status for sid, r in results.items()} == {
        "a": "succeeded",
        "finding": "succeeded",
        "bad": "failed",
        "after": "skipped",
    }
    assert all(isinstance(r, SubtaskResult) for r in results.values())
    assert isinstance(results["finding"].output, Finding)
    assert isinstance(values["totals"], RunTotals) and values["totals"].failed == 1

    retried = reader.retry_failed(config)
    assert retried["results"]["a"] == results["a"]  # kept, not asked again
    assert serde_events == [], "a checkpointer saw a class it does not know"


def test_an_interrupted_run_resumes_without_a_serializer_warning(saver, serde_events, echo):
    graph = compile_plan(plan_with_a_failure(), model=echo, checkpointer=saver, aggregator=None)
    config = {"configurable": {"thread_id": "t2"}}
    graph.invoke({"inputs": {}}, config, interrupt_before=["after"])
    assert graph.get_state(config).next == ("after",)
    state = graph.invoke(None, config)
    assert state["results"]["after"].status == "succeeded"
    assert state["results"]["finding"].status == "failed"  # echo has no tool calling
    assert len(echo.calls_for("a")) == 1  # the resume did not ask again
    assert serde_events == []


def test_a_checkpoint_holds_only_plain_data(saver, echo):
    graph = compile_plan(plan_with_a_failure(), model=echo, checkpointer=saver, aggregator=None)
    config = {"configurable": {"thread_id": "t3"}}
    graph.invoke({"inputs": {}}, config)
    stored = saver.get_tuple(config).checkpoint["channel_values"]

    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    assert plain(stored["results"]) and plain(stored["totals"])


def test_a_checkpointer_without_a_thread_id_raises_langgraphs_value_error(echo):
    graph = compile_plan(plan_with_a_failure(), model=echo, checkpointer=InMemorySaver())
    with pytest.raises(ValueError, match="thread_id"):
        graph.invoke({"inputs": {}})


STRICT_SCRIPT = textwrap.dedent(
    """
    import json, sqlite3, sys
    from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
    from langgraph.checkpoint.sqlite import SqliteSaver
    from fanfold import SimulatedChatModel, SubtaskResult, TaskPlan, compile_plan

    events = []
    register_serde_event_listener(lambda e: events.append(dict(e)))
    plan = TaskPlan.model_validate({
        "task": "strict",
        "subtasks": [
            {"id": "a", "prompt": "[a] one"},
            {"id": "bad", "prompt": "[bad] two"},
            {"id": "c", "prompt": "[c] uses {a}", "depends_on": ["a", "bad"]},
        ],
    })
    model = SimulatedChatModel(latency=0.0, fail_on=("[bad]",))
    saver = SqliteSaver(sqlite3.connect(sys.argv[1], check_same_thread=False))
    config = {"configurable": {"thread_id": "strict"}}
    compile_plan(plan, model=model, checkpointer=saver).invoke({"inputs": {}}, config)
    reader = compile_plan(plan, model=SimulatedChatModel(latency=0.0), checkpointer=saver)
    before = reader.get_state(config).values["results"]
    after = reader.retry_failed(config)["results"]
    print(json.dumps({
        "types": sorted({type(r).__name__ for r in before.values()}),
        "before": {k: r.status for k, r in before.items()},
        "after": {k: r.status for k, r in after.items()},
        "events": events,
    }))
    """
)


def test_strict_msgpack_mode_still_round_trips_and_retries(tmp_path: Path):
    env = {**os.environ, "LANGGRAPH_STRICT_MSGPACK": "true"}
    done = subprocess.run(
        [sys.executable, "-c", STRICT_SCRIPT, str(tmp_path / "strict.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["types"] == ["SubtaskResult"]
    assert report["before"] == {"a": "succeeded", "bad": "failed", "c": "skipped"}
    assert report["after"] == {"a": "succeeded", "bad": "succeeded", "c": "succeeded"}
    assert report["events"] == []


def test_a_large_input_is_stored_once_however_many_steps_the_run_takes(tmp_path: Path, echo):
    """A 50 MB `-i doc=@file` once made a 262 MB checkpoint for 5 subtasks."""
    doc = "x" * 1_000_000
    plan = TaskPlan.model_validate(
        {
            "task": "Read {doc}",
            "inputs": {"doc": {"description": "a long document"}},
            "subtasks": [
                {"id": sid, "prompt": f"[{sid}] step", "depends_on": [prev] if prev else []}
                for prev, sid in zip(["", "a", "b", "c", "d"], "abcde", strict=True)
            ],
        }
    )
    path = tmp_path / "run.db"
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        config = {"configurable": {"thread_id": "big"}}
        graph = compile_plan(plan, model=echo, checkpointer=saver, aggregator=None)
        graph.invoke({"inputs": {"doc": doc}}, config, interrupt_before=["d"])
        resumed = compile_plan(plan, model=echo, checkpointer=saver, aggregator=None)
        assert resumed.get_state(config).values["inputs"] == {"doc": doc}
        state = resumed.invoke(None, config)
        assert [r.status for r in state["results"].values()] == ["succeeded"] * 5
        assert resumed.get_state(config).values["inputs"] == {"doc": doc}
        steps = len(list(resumed.get_state_history(config)))
        stored = sum(
            conn.execute(f"SELECT coalesce(sum(length({column})), 0) FROM {table}").fetchone()[0]
            for table, column in (("checkpoints", "checkpoint"), ("writes", "value"))
        )
    finally:
        conn.close()
    assert steps >= 6
    # The input checkpoint holds the input, and the write of the first step: no more.
    assert stored < 2.5 * len(doc), f"{stored / len(doc):.1f} copies of the input stored"
