"""Durable goal runs: a goal run SIGKILLed after planning resumes with its plan (no second
planner request) and requests no finished subtask again.

The runs are separate processes (`python -m fanfold.cli run --goal ...` or a `python -c`
script using `fanfold.runs`) driving the real ChatOpenAI over loopback against
`fanfold.testing.SimServer`, which scripts the planner's plan and counts the requests.
The cache is off, so only the checkpoint and the run's journal can save a request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fanfold
from fanfold.cli import app
from fanfold.testing import SimServer, SimServerConfig

API_KEY = "sk-test-durable-goal"
GOAL = "Write the durable brief"
PLANNER = "Plan this goal"  # in the planner's request only
TASK_MARKER = "TASKMARK-goal"  # in the aggregate's request only (it quotes the task)
IDS = ["a", "b", "c", "d", "e"]
KILL_AFTER = 2
"""Subtasks finished when the run is killed."""
TIMEOUT = 120.0
PLAN = {
    "task": f"The durable brief {TASK_MARKER}",
    "subtasks": [
        {"id": sid, "prompt": f"Write one short note for this step, please: <mark:{sid}>"}
        for sid in IDS
    ],
}


@contextmanager
def serving() -> Iterator[SimServer]:
    with SimServer(SimServerConfig(latency=0.4, api_key=API_KEY, scripted={PLANNER: PLAN})) as srv:
        yield srv


def env_for(srv: SimServer, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_BASE_URL": srv.base_url,
        "OPENAI_API_KEY": API_KEY,
        "FANFOLD_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }


def requests(srv: SimServer) -> dict[str, int]:
    """Requests per subtask, and the planner's and the aggregate's."""
    found = {sid: srv.requests_for(f"<mark:{sid}>") for sid in IDS}
    found["planner"] = srv.requests_for(PLANNER)
    found["aggregate"] = srv.requests_for(TASK_MARKER)
    return found


def finished(events: Path) -> set[str]:
    """The subtasks a run announced as succeeded (each one's call journaled first)."""
    if not events.exists():
        return set()
    lines = [line for line in events.read_text(encoding="utf-8").splitlines() if line.endswith("}")]
    found = (json.loads(line) for line in lines)
    return {e["subtask"] for e in found if e["status"] == "succeeded" and e["subtask"] in IDS}


def kill_after_some_subtasks(proc: subprocess.Popen[Any], done: Any) -> set[str]:
    """SIGKILL `proc` once `done()` names KILL_AFTER finished subtasks; return them."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(done()) < KILL_AFTER:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "too few subtasks finished"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    return set(done())


def assert_resumed_without_repeats(
    before: dict[str, int], after: dict[str, int], kept: set[str]
) -> None:
    assert before["planner"] == after["planner"] == 1  # the plan was kept: no second request
    assert {sid: after[sid] for sid in kept} == dict.fromkeys(kept, 1)  # 0 repeated requests
    assert all(after[sid] >= 1 for sid in IDS)
    # The resume asked only for what had not finished (the call in flight at the kill too).
    resumed = sum(after[sid] - before[sid] for sid in IDS)
    assert resumed <= len(IDS) - len(kept)
    assert after["aggregate"] == 1


def test_a_killed_cli_goal_run_resumes_with_its_plan_and_no_repeated_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "runs.db")
    events = tmp_path / "events.jsonl"
    log = tmp_path / "stderr.txt"
    with serving() as srv:
        env = env_for(srv, tmp_path / "home")
        args = [
            "run", "--goal", GOAL, "-m", "openai:sim-model", "--max-concurrency", "1",
            "--checkpoint", store, "--no-cache", "--events", str(events), "--quiet",
        ]  # fmt: skip
        with log.open("w", encoding="utf-8") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fanfold.cli", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            kept = kill_after_some_subtasks(proc, lambda: finished(events))
        assert KILL_AFTER <= len(kept) < len(IDS)
        run_id = log.read_text(encoding="utf-8").split("run id: ", 1)[1].split()[0]
        before = requests(srv)

        stopped = fanfold.get_run(run_id, store)
        assert stopped.goal == GOAL and not stopped.finished
        assert stopped.plan is not None and stopped.plan.ids == IDS

        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FANFOLD_HOME"):
            monkeypatch.setenv(name, env[name])
        resumed = CliRunner().invoke(app, ["resume", run_id, "--checkpoint", store, "--json"])
        after = requests(srv)

    assert resumed.exit_code == 0, resumed.output
    assert "continuing with its plan" in resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["goal"] == GOAL and [s["id"] for s in report["plan"]["subtasks"]] == IDS
    assert {sid: r["status"] for sid, r in report["results"].items()} == dict.fromkeys(
        IDS, "succeeded"
    )
    assert all(report["results"][sid]["cached"] for sid in kept)
    assert report["output"]
    assert_resumed_without_repeats(before, after, kept)
    done = fanfold.get_run(run_id, store)
    assert done.finished and done.complete


def test_a_killed_goal_run_of_the_python_api_resumes_by_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "runs.db")
    run_id = "goalrun00001"
    options = {"model": "openai:sim-model", "max_concurrency": 1, "cache": False}
    script = (
        "from fanfold.runs import start_goal_run\n"
        f"run = start_goal_run({GOAL!r}, checkpoint={store!r}, run_id={run_id!r}, "
        f"options={options!r})\n"
        "run.run()\n"
    )
    with serving() as srv:
        env = env_for(srv, tmp_path / "home")
        proc = subprocess.Popen([sys.executable, "-c", script], env=env)
        # The subtasks asked for after the one in flight have finished.
        started = lambda: {sid for sid in IDS if srv.requests_for(f"<mark:{sid}>")}  # noqa: E731
        asked = kill_after_some_subtasks(proc, lambda: set(sorted(started())[:-1]))
        before = requests(srv)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

        stopped = fanfold.get_run(run_id, store)
        assert stopped.goal == GOAL and not stopped.finished
        assert stopped.plan is not None and stopped.plan.ids == IDS
        assert stopped.options == options

        opened = fanfold.open_run(run_id, store)
        assert isinstance(opened, fanfold.GoalRun) and opened.mode == "continue"
        final = fanfold.resume_run(run_id, store)
        after = requests(srv)

    assert {sid: r.status for sid, r in final["results"].items()} == dict.fromkeys(
        IDS, "succeeded"
    )
    assert final["output"] and final["goal"] == GOAL
    # Which calls had finished is known from the requests: with one call at a time, each
    # one asked for before the last had finished (its reply was journaled).
    kept = {sid for sid in asked if before[sid]}
    assert_resumed_without_repeats(before, after, kept)
    assert fanfold.get_run(run_id, store).complete
