"""Durable runs: a killed run resumes without re-requesting checkpointed subtasks.

Every test drives the real ChatOpenAI over loopback against `fanfold.testing.SimServer`,
whose replies are deterministic per prompt, and counts the requests per subtask marker.
Runs that get killed are separate processes (`python -m fanfold.cli ...` or a short
`python -c` script) so that SIGKILL interrupts them the way a crash would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fanfold
from fanfold import SubtaskResult, TaskPlan, compile_plan
from fanfold.checkpoints import open_checkpointer
from fanfold.cli import app
from fanfold.testing import SimServer, SimServerConfig

LATENCY = 0.35
"""Seconds per simulated reply; long enough to SIGKILL a run between two replies."""
PROCESS_TIMEOUT = 60.0
"""Upper bound for one CLI process; the runs themselves take a few seconds."""
API_KEY = "sk-test-durable"
TASK_MARKER = "TASKMARK-durable"
"""In the task text, so only the aggregate request (`Task: ...` in its user message) has it."""


# -- plans ----------------------------------------------------------------------------------------


def marker(sid: str) -> str:
    """The unique text that identifies `sid`'s request on the server.

    It sits after the reply's six-word prompt summary, so no dependent's prompt (which
    quotes its dependencies' replies) ever contains it.
    """
    return f"<mark:{sid}>"


def prompt_for(sid: str) -> str:
    return f"Write one short note for this step, please: {marker(sid)}"


def layered_plan(levels: int, width: int) -> dict[str, Any]:
    """`levels` chained levels of `width` subtasks; each depends on the whole level before."""
    subtasks = []
    for level in range(1, levels + 1):
        for column in "abcdefgh"[:width]:
            subtasks.append(
                {
                    "id": f"l{level}_{column}",
                    "prompt": prompt_for(f"l{level}_{column}"),
                    "depends_on": [f"l{level - 1}_{c}" for c in "abcdefgh"[:width]]
                    if level > 1
                    else [],
                }
            )
    return {"task": f"Write the layered report {TASK_MARKER}", "subtasks": subtasks}


DIAMOND = {"a": [], "b": [], "c": ["a"], "d": ["b"], "e": ["c", "d"]}
"""`b` fails in the failure tests: `d` and `e` are blocked, `a` and `c` are not."""


def diamond_plan() -> dict[str, Any]:
    return {
        "task": f"Write the diamond report {TASK_MARKER}",
        "subtasks": [
            {"id": sid, "prompt": prompt_for(sid), "depends_on": deps}
            for sid, deps in DIAMOND.items()
        ],
    }


def write_plan(path: Path, plan: dict[str, Any]) -> Path:
    path.write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return path


def ids_of(plan: dict[str, Any]) -> list[str]:
    return [sub["id"] for sub in plan["subtasks"]]


# -- server, processes and checkpoints ------------------------------------------------------------


@contextmanager
def sim_server(**knobs: Any) -> Iterator[SimServer]:
    with SimServer(SimServerConfig(**{"latency": LATENCY, **knobs})) as srv:
        yield srv


def counts(srv: SimServer, ids: list[str]) -> dict[str, int]:
    """Requests per subtask, plus the aggregate's under the key 'aggregate'.

    The aggregate's prompt may quote a marker (in a failed subtask's error message), so
    it counts only as the aggregate.
    """
    prompts = [record.prompt for record in srv.log]
    subtask_prompts = [p for p in prompts if TASK_MARKER not in p]
    found = {sid: sum(marker(sid) in p for p in subtask_prompts) for sid in ids}
    found["aggregate"] = len(prompts) - len(subtask_prompts)
    return found


def cli_env(srv: SimServer, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_BASE_URL": srv.base_url,
        "OPENAI_API_KEY": API_KEY,
        "FANFOLD_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }


def fanfold_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fanfold.cli", *args]


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fanfold_cli(*args), env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )


def json_report(done: subprocess.CompletedProcess[str], *, status: int = 0) -> dict[str, Any]:
    """The --json report of a finished CLI run that exited with `status`."""
    assert done.returncode == status, f"exit {done.returncode}\nstderr:\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def run_id_from(stderr: str) -> str:
    found = re.search(r"run id: ([0-9a-f]+)", stderr)
    assert found, f"no run id on stderr:\n{stderr}"
    return found.group(1)


def outputs_of(report: dict[str, Any]) -> dict[str, Any]:
    """What a run produced: each subtask's output and the aggregate."""
    return {
        "results": {sid: r["output"] for sid, r in report["results"].items()},
        "output": report["output"],
    }


def statuses(results: dict[str, Any]) -> dict[str, str]:
    return {sid: r["status"] if isinstance(r, dict) else r.status for sid, r in results.items()}


def kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def checkpointed(
    target: str, plan: dict[str, Any], thread_id: str
) -> tuple[dict[str, SubtaskResult], dict[str, SubtaskResult], tuple[str, ...]]:
    """A thread's committed results, results written in its open step, and next nodes.

    Read with a fresh checkpointer, as another process would. (The state snapshot's
    values already include the open step's writes, so committed results come from the
    raw checkpoint.)
    """
    config = {"configurable": {"thread_id": thread_id}}
    async with open_checkpointer(target) as saver:
        graph = compile_plan(TaskPlan.model_validate(plan), model="simulated", checkpointer=saver)
        snapshot = await graph.aget_state(config)
        latest = await saver.aget_tuple(config)
    if latest is None:
        return {}, {}, ()
    # Checkpoints and writes hold results as plain data (see fanfold.graphs.channels).
    raw = latest.checkpoint["channel_values"].get("results") or {}
    committed = {sid: SubtaskResult.model_validate(v) for sid, v in raw.items()}
    pending: dict[str, SubtaskResult] = {}
    for _task, channel, value in latest.pending_writes or []:
        if channel == "results" and isinstance(value, dict):
            pending.update({sid: SubtaskResult.model_validate(v) for sid, v in value.items()})
    return committed, pending, tuple(snapshot.next)


async def kill_mid_step(
    proc: subprocess.Popen[Any],
    target: str,
    plan: dict[str, Any],
    thread_id: str,
    srv: SimServer,
    *,
    timeout: float = 30.0,
) -> None:
    """SIGKILL `proc` once its thread has committed results *and* results pending in an
    unfinished step (so resuming must honour both), while some subtasks are unfinished.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        # Only read once the run has opened (and set up) the store and started calls.
        if srv.request_count:
            try:
                committed, pending, upcoming = await checkpointed(target, plan, thread_id)
            except Exception:  # the writer may hold a lock for a moment: poll again
                committed, pending, upcoming = {}, {}, ()
            if committed and pending and upcoming:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return
        await asyncio.sleep(0.03)
    pytest.fail(f"no mid-step checkpoint within {timeout}s")


def assert_resume_requested_only_unfinished(
    before: dict[str, int], after: dict[str, int], kept: set[str], ids: list[str]
) -> None:
    """Kept (checkpointed) subtasks were not requested again; every other one once more."""
    expected = {sid: before[sid] + (0 if sid in kept else 1) for sid in ids}
    expected["aggregate"] = before["aggregate"] + 1
    assert after == expected, f"kept before the kill: {sorted(kept)}"


# -- 1. SQLite through the CLI: SIGKILL, then `fanfold resume` ------------------------------------


@pytest.mark.slow
def test_killed_cli_run_resumes_without_rerequesting_checkpointed_subtasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = layered_plan(levels=4, width=3)
    ids = ids_of(plan)
    plan_file = write_plan(tmp_path / "layered.json", plan)
    store = str(tmp_path / "runs.db")
    home = tmp_path / "home"
    # With a limit of 2 calls and 3 subtasks per step, there is always a moment when two
    # of a step's results are written to the open step and the third is still in flight.
    # No cache: this test is about checkpoints (a call cached in the moment before the
    # kill would rightly not be asked again; tests/test_cache.py covers that).
    run_args = ["--model", "openai:sim-model", "--max-concurrency", "2", "--json", "--no-cache"]
    with sim_server() as srv, sim_server() as reference_srv:
        # Meanwhile the uninterrupted run, against its own (just as deterministic) server.
        reference = subprocess.Popen(
            fanfold_cli("run", str(plan_file), "--checkpoint", str(tmp_path / "ref.db"), *run_args),
            env=cli_env(reference_srv, tmp_path / "ref-home"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stderr_file = tmp_path / "killed.stderr"
        with stderr_file.open("w") as stderr:
            killed = subprocess.Popen(
                fanfold_cli("run", str(plan_file), "--checkpoint", store, *run_args),
                env=cli_env(srv, home),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        try:
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while "run id:" not in stderr_file.read_text() and time.monotonic() < deadline:
                assert killed.poll() is None, stderr_file.read_text()
                time.sleep(0.02)
            run_id = run_id_from(stderr_file.read_text())
            asyncio.run(kill_mid_step(killed, store, plan, run_id, srv))
            ref_out, ref_err = reference.communicate(timeout=PROCESS_TIMEOUT)
        finally:
            kill(killed)
            kill(reference)
        assert reference.returncode == 0, ref_err
        uninterrupted = json.loads(ref_out)

        committed, pending, upcoming = asyncio.run(checkpointed(store, plan, run_id))
        kept = set(committed) | set(pending)
        assert committed and pending and upcoming
        assert all(r.ok for r in [*committed.values(), *pending.values()])
        assert kept < set(ids), "the kill came after every subtask had finished"
        before = counts(srv, ids)
        assert all(before[sid] == 1 for sid in kept)
        assert before["aggregate"] == 0

        # `fanfold resume` in this process, with the environment the killed run had.
        for name, value in cli_env(srv, home).items():
            monkeypatch.setenv(name, value)
        resumed_run = CliRunner().invoke(app, ["resume", run_id, "--checkpoint", store, "--json"])
        after = counts(srv, ids)

    assert resumed_run.exit_code == 0, resumed_run.output
    assert "continuing where it stopped" in resumed_run.stderr
    resumed = json.loads(resumed_run.stdout)
    assert statuses(resumed["results"]) == dict.fromkeys(ids, "succeeded")
    assert_resume_requested_only_unfinished(before, after, kept, ids)
    # Results kept from before the kill are the very same results, not new calls.
    for sid in kept:
        old = committed.get(sid) or pending[sid]
        assert resumed["results"][sid]["finished_at"] == old.finished_at
    assert statuses(uninterrupted["results"]) == dict.fromkeys(ids, "succeeded")
    assert outputs_of(resumed) == outputs_of(uninterrupted)
    # The thread is finished now: the stored state says so too.
    assert asyncio.run(checkpointed(store, plan, run_id))[2] == ()


# -- 2. A finished run with failures: `fanfold resume` retries failed and blocked only ------------


def test_finished_run_with_failures_resumes_only_failed_and_blocked_subtasks(
    tmp_path: Path,
) -> None:
    plan = diamond_plan()
    ids = ids_of(plan)
    plan_file = write_plan(tmp_path / "diamond.json", plan)
    store = str(tmp_path / "runs.db")
    with sim_server(latency=0.02, fail_prompts={marker("b"): 400}) as srv:
        env = cli_env(srv, tmp_path / "home")
        first_run = run_cli(
            ["run", str(plan_file), "-m", "openai:sim-model", "--checkpoint", store, "--json"], env
        )
        first = json_report(first_run, status=3)  # finished, with a failure
        run_id = run_id_from(first_run.stderr)
        assert statuses(first["results"]) == {
            "a": "succeeded",
            "b": "failed",
            "c": "succeeded",
            "d": "skipped",
            "e": "skipped",
        }
        before = counts(srv, ids)
        assert before == {"a": 1, "b": 1, "c": 1, "d": 0, "e": 0, "aggregate": 1}

        srv.update(fail_prompts={})
        resumed_run = run_cli(["resume", run_id, "--checkpoint", store, "--json"], env)
        resumed = json_report(resumed_run)
        after = counts(srv, ids)

    assert "retrying" in resumed_run.stderr
    assert statuses(resumed["results"]) == dict.fromkeys(ids, "succeeded")
    assert after == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1, "aggregate": 2}
    for sid in ("a", "c"):  # kept as they were
        assert resumed["results"][sid] == first["results"][sid]
    assert resumed["totals"]["succeeded"] == len(ids)


@pytest.mark.slow
def test_retry_killed_after_its_first_level_resumes_without_stale_skips(tmp_path: Path) -> None:
    """A failed run, a retry SIGKILLed after its first level succeeded, then a resume.

    The retry replaces the thread's failed and skipped results as it starts, so the
    resume finds only the retry's own results: it runs the rest, skips nothing, and
    aggregates every result.
    """
    plan = layered_plan(levels=3, width=2)
    ids = ids_of(plan)
    first_level = [sid for sid in ids if sid.startswith("l1_")]
    plan_file = write_plan(tmp_path / "layered.json", plan)
    store = str(tmp_path / "runs.db")
    home = tmp_path / "home"
    with sim_server(api_key="sk-not-the-one-we-send") as srv:
        env = cli_env(srv, home)
        failed_run = run_cli(
            ["run", str(plan_file), "-m", "openai:sim-model", "--checkpoint", store, "--json"], env
        )
        failed = json_report(failed_run, status=3)
        run_id = run_id_from(failed_run.stderr)
        assert set(statuses(failed["results"]).values()) == {"failed", "skipped"}
        assert failed["aggregate_error"] and "401" in failed["aggregate_error"]

        srv.update(api_key=API_KEY)
        retry = subprocess.Popen(
            fanfold_cli("resume", run_id, "--checkpoint", store, "--json"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while True:
                assert retry.poll() is None, "the retry ended before it could be killed"
                assert time.monotonic() < deadline, "the retry's first level never finished"
                try:
                    committed, pending, _ = asyncio.run(checkpointed(store, plan, run_id))
                except Exception:  # the writer may hold a lock for a moment: poll again
                    committed, pending = {}, {}
                done = {**committed, **pending}
                if all(sid in done and done[sid].ok for sid in first_level):
                    assert len(done) < len(ids), "the retry finished before the kill"
                    retry.send_signal(signal.SIGKILL)
                    retry.wait(timeout=10)
                    break
                time.sleep(0.02)
        finally:
            kill(retry)
        before = counts(srv, ids)

        resumed_run = run_cli(["resume", run_id, "--checkpoint", store, "--json"], env)
        after = counts(srv, ids)

    resumed = json_report(resumed_run)
    assert "continuing where it stopped" in resumed_run.stderr
    assert statuses(resumed["results"]) == dict.fromkeys(ids, "succeeded")
    assert not resumed["aggregate_error"]
    assert resumed["totals"]["succeeded"] == len(ids)
    # The first level was answered once by the retry and never again.
    for sid in first_level:
        assert before[sid] == after[sid] == 2  # the 401, then the retry's success
    # The aggregate request saw every result and nothing marked missing.
    aggregate_prompt = [r.prompt for r in srv.log if TASK_MARKER in r.prompt][-1]
    assert "produced no result" not in aggregate_prompt
    for sid in ids:
        assert f"### {sid}\n" in aggregate_prompt


# -- 3. PostgreSQL through the Python API ---------------------------------------------------------


@pytest.fixture
def postgres_dsn() -> str:
    dsn = os.environ.get("FANFOLD_TEST_POSTGRES_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "FANFOLD_TEST_POSTGRES_DSN is not set; .ci/run starts PostgreSQL and sets it"
            )
        pytest.skip("FANFOLD_TEST_POSTGRES_DSN is not set (.ci/run starts PostgreSQL)")
    return dsn


@asynccontextmanager
async def postgres_thread(dsn: str) -> AsyncIterator[str]:
    """A fresh thread id, deleted from the database afterwards."""
    thread_id = f"fanfold-test-{uuid.uuid4().hex}"
    try:
        yield thread_id
    finally:
        async with open_checkpointer(dsn) as saver:
            await saver.adelete_thread(thread_id)


RUN_IN_ANOTHER_PROCESS = """
import asyncio, json, sys

from fanfold import compile_plan
from fanfold.checkpoints import open_checkpointer


async def main(plan, dsn, thread_id):
    async with open_checkpointer(dsn) as saver:
        graph = compile_plan(
            json.loads(plan), model="openai:sim-model", max_concurrency=2, checkpointer=saver
        )
        await graph.ainvoke({"inputs": {}}, {"configurable": {"thread_id": thread_id}})


asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.postgres
async def test_postgres_run_killed_in_another_process_resumes_without_rerequests(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = layered_plan(levels=3, width=3)
    ids = ids_of(plan)
    async with postgres_thread(postgres_dsn) as thread_id:
        with sim_server() as srv:
            killed = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    RUN_IN_ANOTHER_PROCESS,
                    json.dumps(plan),
                    postgres_dsn,
                    thread_id,
                ],
                env=cli_env(srv, tmp_path / "home"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                await kill_mid_step(killed, postgres_dsn, plan, thread_id, srv)
            finally:
                kill(killed)
            committed, pending, _ = await checkpointed(postgres_dsn, plan, thread_id)
            kept = set(committed) | set(pending)
            assert kept < set(ids)
            before = counts(srv, ids)

            monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
            monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
            config = {"configurable": {"thread_id": thread_id}}
            async with open_checkpointer(postgres_dsn) as saver:
                graph = compile_plan(
                    TaskPlan.model_validate(plan),
                    model="openai:sim-model",
                    max_concurrency=2,
                    checkpointer=saver,
                )
                state = await asyncio.wait_for(graph.ainvoke(None, config), PROCESS_TIMEOUT)
                snapshot = await graph.aget_state(config)
            after = counts(srv, ids)

    assert statuses(state["results"]) == dict.fromkeys(ids, "succeeded")
    assert_resume_requested_only_unfinished(before, after, kept, ids)
    for sid in kept:
        old = committed.get(sid) or pending[sid]
        assert state["results"][sid].finished_at == old.finished_at
    assert snapshot.next == ()
    assert state["output"] is not None and state["aggregate_error"] is None


@pytest.mark.postgres
async def test_postgres_aretry_failed_reruns_only_failed_and_blocked_subtasks(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = TaskPlan.model_validate(diamond_plan())
    ids = plan.ids
    with sim_server(latency=0.02, fail_prompts={marker("b"): 400}) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        async with postgres_thread(postgres_dsn) as thread_id:
            config = {"configurable": {"thread_id": thread_id}}
            async with open_checkpointer(postgres_dsn) as saver:
                graph = compile_plan(plan, model="openai:sim-model", checkpointer=saver)
                first = await graph.ainvoke({"inputs": {}}, config)
            assert statuses(first["results"]) == {
                "a": "succeeded",
                "b": "failed",
                "c": "succeeded",
                "d": "skipped",
                "e": "skipped",
            }
            assert counts(srv, ids) == {"a": 1, "b": 1, "c": 1, "d": 0, "e": 0, "aggregate": 1}

            srv.update(fail_prompts={})
            # A new checkpointer and graph, as a later process would have.
            async with open_checkpointer(postgres_dsn) as saver:
                graph = compile_plan(plan, model="openai:sim-model", checkpointer=saver)
                retried = await graph.aretry_failed(config)
                stored = (await graph.aget_state(config)).values
            after = counts(srv, ids)

    assert after == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1, "aggregate": 2}
    assert statuses(retried["results"]) == dict.fromkeys(ids, "succeeded")
    assert statuses(stored["results"]) == dict.fromkeys(ids, "succeeded")
    for sid in ("a", "c"):
        assert retried["results"][sid] == first["results"][sid]


# -- 4. `fanfold resume` of an unknown or already finished run ------------------------------------


def test_resume_of_an_unknown_run_id_prints_one_error_line_and_exits_1(tmp_path: Path) -> None:
    plan_file = write_plan(tmp_path / "diamond.json", diamond_plan())
    store = str(tmp_path / "runs.db")
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(plan_file), "-m", "simulated", "--checkpoint", store])
    assert first.exit_code == 0, first.output
    result = runner.invoke(app, ["resume", "0123456789ab", "--checkpoint", store])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "0123456789ab" in lines[0]
    assert result.stdout == ""


def test_resume_of_a_finished_successful_run_has_nothing_to_resume(tmp_path: Path) -> None:
    plan_file = write_plan(tmp_path / "diamond.json", diamond_plan())
    store = str(tmp_path / "runs.db")
    runner = CliRunner()
    first = runner.invoke(
        app, ["run", str(plan_file), "--model", "simulated", "--checkpoint", store, "--json"]
    )
    assert first.exit_code == 0, first.output
    run_id = run_id_from(first.stderr)

    again = runner.invoke(app, ["resume", run_id, "--checkpoint", store, "--json"])
    assert again.exit_code == 0, again.output
    assert "nothing to resume" in again.stderr
    report = json.loads(again.stdout)
    assert statuses(report["results"]) == dict.fromkeys(DIAMOND, "succeeded")
    assert outputs_of(report) == outputs_of(json.loads(first.stdout))


def test_resume_with_an_unreachable_postgres_url_prints_one_error_line(tmp_path: Path) -> None:
    # Port 1 on loopback refuses connections at once; no PostgreSQL server is needed.
    url = "postgresql://postgres:hunter2-secret@127.0.0.1:1/postgres?connect_timeout=5"
    result = CliRunner().invoke(app, ["resume", "0123456789ab", "--checkpoint", url])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "hunter2-secret" not in result.stderr


@pytest.mark.postgres
def test_resume_of_an_unknown_run_id_on_postgres_keeps_the_password_out_of_the_error(
    postgres_dsn: str,
) -> None:
    # The test server trusts loopback, so any password is accepted and must not be shown.
    scheme, rest = postgres_dsn.split("://", 1)
    user_and_host = rest.split("@", 1)
    assert len(user_and_host) == 2 and ":" not in user_and_host[0], "expected a passwordless DSN"
    url = f"{scheme}://{user_and_host[0]}:hunter2-secret@{user_and_host[1]}"
    result = CliRunner().invoke(app, ["resume", "0123456789ab", "--checkpoint", url])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "0123456789ab" in lines[0]
    assert "hunter2-secret" not in result.stderr


# -- 5. The Python run API: run by id, SIGKILL, then read and resume it by its id -----------------


@pytest.mark.slow
def test_python_api_resumes_a_killed_run_by_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = layered_plan(levels=4, width=3)
    ids = ids_of(plan)
    store = str(tmp_path / "runs.db")
    run_id = "apirun000001"
    options = {"model": "openai:sim-model", "max_concurrency": 2, "cache": False}
    script = (
        "import fanfold\n"
        f"fanfold.run_plan({plan!r}, checkpoint={store!r}, run_id={run_id!r}, "
        f"options={options!r})\n"
    )
    with sim_server() as srv:
        env = cli_env(srv, tmp_path / "home")
        killed = subprocess.Popen([sys.executable, "-c", script], env=env)
        try:
            asyncio.run(kill_mid_step(killed, store, plan, run_id, srv))
        finally:
            kill(killed)
        committed, pending, _ = asyncio.run(checkpointed(store, plan, run_id))
        kept = set(committed) | set(pending)
        before = counts(srv, ids)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

        stopped = fanfold.get_run(run_id, store)
        assert not stopped.finished and stopped.next
        assert stopped.plan.ids == ids and stopped.options == options
        assert set(stopped.results) == kept
        assert set(stopped.failed) == set(ids) - kept

        final = fanfold.resume_run(run_id, store)
        after = counts(srv, ids)

    assert statuses(final["results"]) == dict.fromkeys(ids, "succeeded")
    assert final["output"]
    assert_resume_requested_only_unfinished(before, after, kept, ids)
    done = fanfold.get_run(run_id, store)
    assert done.finished and done.complete and done.failed == []


def test_the_run_api_names_a_missing_checkpoint_and_an_unknown_run(tmp_path: Path) -> None:
    with pytest.raises(fanfold.RunNotFoundError, match="does not exist"):
        fanfold.get_run("abc", tmp_path / "missing.db")
    store = tmp_path / "runs.db"
    options = {"model": "simulated"}
    fanfold.run_plan(diamond_plan(), checkpoint=store, run_id="known", options=options)
    assert fanfold.get_run("known", store).complete
    with pytest.raises(fanfold.RunNotFoundError, match="run 'nope' not found") as caught:
        fanfold.resume_run("nope", store)
    assert isinstance(caught.value, fanfold.StoreError) and caught.value.run_id == "nope"
    # A complete run has nothing left to resume: its state comes back as it is.
    again = fanfold.open_run("known", store)
    assert again.mode == "finished" and again.run() == again.values


def test_a_run_killed_between_its_steps_writes_and_the_steps_checkpoint_is_unfinished(
    tmp_path: Path,
) -> None:
    """Every task of the open step saved its writes; the kill came before the step's checkpoint.

    LangGraph's `next` is empty then (it leaves out tasks that wrote), yet the run has
    subtasks left: it must read as unfinished and resume by going on, not as a finished
    run to retry.
    """
    store = tmp_path / "runs.db"
    options = {"model": "simulated"}
    finished = fanfold.run_plan(diamond_plan(), checkpoint=store, run_id="cut", options=options)
    graph = compile_plan(TaskPlan.model_validate(diamond_plan()), model="simulated")

    async def step_with_e() -> str:
        async with open_checkpointer(str(store)) as saver:
            history = graph.copy(update={"checkpointer": saver}).aget_state_history(
                {"configurable": {"thread_id": "cut"}}
            )
            async for snapshot in history:  # newest first
                if "e" in [task.name for task in snapshot.tasks]:
                    return str(snapshot.config["configurable"]["checkpoint_id"])
        raise AssertionError("no step ran e")

    cut = asyncio.run(step_with_e())
    with contextlib.closing(sqlite3.connect(store)) as conn, conn:
        dropped = conn.execute(
            "DELETE FROM checkpoints WHERE thread_id = 'cut' AND checkpoint_id > ?", (cut,)
        ).rowcount
    assert dropped >= 1

    stopped = fanfold.get_run("cut", store)
    assert not stopped.finished and "e" in stopped.next
    assert set(stopped.results) == set(DIAMOND)  # e's result is in its saved writes
    opened = fanfold.open_run("cut", store)
    assert opened.mode == "continue"
    final = opened.run()
    assert statuses(final["results"]) == dict.fromkeys(DIAMOND, "succeeded")
    assert final["output"] == finished["output"]
    assert fanfold.get_run("cut", store).finished
