"""A batched map survives SIGKILL at every stage: `fanfold resume` never submits twice.

The run is a real `fanfold run` process against the loopback server; the server counts
the batches created, so a second submission would show.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fanfold.testing import SimServer, SimServerConfig

PROCESS_TIMEOUT = 180
ITEMS = [f"ticket {i}" for i in range(6)]
PLAN = {
    "task": "Sort the tickets",
    "inputs": {"tickets": {"description": "the tickets"}},
    "subtasks": [{"id": "classify", "map": "tickets", "prompt": "Classify {item}", "batch": True}],
    "aggregation": {"enabled": False},
}


@pytest.fixture
def server() -> Iterator[SimServer]:
    with SimServer(SimServerConfig(seed=5)) as srv:
        yield srv


def env_for(srv: SimServer, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_BASE_URL": srv.base_url,
        "OPENAI_API_KEY": "sk-test",
        "FANFOLD_HOME": str(home),
        "FANFOLD_BATCH_POLL": "0.05",
        "PYTHONUNBUFFERED": "1",
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fanfold.cli", *args]


def run_args(tmp_path: Path) -> list[str]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    return [
        "run", str(plan), "--checkpoint", str(tmp_path / "runs.db"), "--no-cache",
        "--model", "openai:gpt-4o-mini", "-i", f"tickets={json.dumps(ITEMS)}", "--json",
    ]  # fmt: skip


def checkpointed(tmp_path: Path) -> bool:
    """True once the run's checkpoint file holds a checkpoint."""
    path = tmp_path / "runs.db"
    if not path.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=0.1)) as conn:
            return bool(conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0])
    except sqlite3.Error:
        return False


def killed_run(tmp_path: Path, srv: SimServer, when: Callable[[], bool]) -> str:
    """Start `fanfold run`, SIGKILL it once `when()` holds; return its run id."""
    stderr_file = tmp_path / "killed.stderr"
    with stderr_file.open("w") as stderr:
        proc = subprocess.Popen(
            cli(*run_args(tmp_path)),
            env=env_for(srv, tmp_path / "home"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not when():
            assert proc.poll() is None, stderr_file.read_text()
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    found = re.search(r"run id: ([0-9a-f]+)", stderr_file.read_text())
    assert found, stderr_file.read_text()
    return found.group(1)


def resume(tmp_path: Path, srv: SimServer, run_id: str) -> dict[str, Any]:
    done = subprocess.run(
        cli("resume", run_id, "--checkpoint", str(tmp_path / "runs.db"), "--json"),
        env=env_for(srv, tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def assert_all_classified(report: dict[str, Any], srv: SimServer) -> None:
    result = report["results"]["classify"]
    assert result["status"] == "succeeded"
    assert [o.split("Classify ")[1].split(" ")[:2] for o in result["output"]] == [
        t.split(" ") for t in ITEMS
    ]
    assert srv.request_count == 0  # nothing went live


@pytest.mark.slow
def test_killed_before_submitting_the_resume_submits_once(
    tmp_path: Path, server: SimServer
) -> None:
    server.batch_api.update(upload_delay=2.0)
    api = server.batch_api
    # Killed once the run's first checkpoint is on disk: before it, there is no run to resume.
    run_id = killed_run(tmp_path, server, lambda: api.uploads == 1 and checkpointed(tmp_path))
    assert api.creations == 0
    server.batch_api.update(upload_delay=0.0)
    report = resume(tmp_path, server, run_id)
    assert_all_classified(report, server)
    assert api.creations == 1


@pytest.mark.slow
def test_killed_after_submitting_the_resume_collects_the_same_batch(
    tmp_path: Path, server: SimServer
) -> None:
    server.batch_api.update(completion_delay=1.5)
    api = server.batch_api
    run_id = killed_run(tmp_path, server, lambda: api.retrievals >= 1)
    (batch_id,) = api.batch_ids()
    assert api.status(batch_id) == "in_progress"
    # The batch finishes while no process runs; the resume collects it.
    deadline = time.monotonic() + 10
    while api.status(batch_id) != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    report = resume(tmp_path, server, run_id)
    assert_all_classified(report, server)
    assert api.creations == 1
    assert api.batch_ids() == [batch_id]
    assert report["results"]["classify"]["batch"]["id"] == batch_id


@pytest.mark.slow
def test_killed_while_the_batch_was_being_created_the_resume_adopts_it(
    tmp_path: Path, server: SimServer
) -> None:
    """Killed after the provider made the batch but before its id was journaled: the
    resume finds the batch by its input file (journaled before the batch was created)."""
    server.batch_api.update(create_delay=2.0, completion_delay=0.2)
    api = server.batch_api
    run_id = killed_run(tmp_path, server, lambda: api.creations == 1)
    server.batch_api.update(create_delay=0.0)
    report = resume(tmp_path, server, run_id)
    assert_all_classified(report, server)
    assert api.creations == 1


@pytest.mark.slow
def test_killed_after_the_batch_completed_the_resume_collects_it(
    tmp_path: Path, server: SimServer
) -> None:
    server.batch_api.update(content_delay=3.0)
    api = server.batch_api
    run_id = killed_run(tmp_path, server, lambda: api.downloads >= 1)
    (batch_id,) = api.batch_ids()
    assert api.status(batch_id) == "completed"
    server.batch_api.update(content_delay=0.0)
    report = resume(tmp_path, server, run_id)
    assert_all_classified(report, server)
    assert api.creations == 1
