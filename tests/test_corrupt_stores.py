"""Corrupt SQLite files: one line naming the file, never a traceback (issue 21 item 12).

A checkpoint that is random bytes, truncated, or a SQLite file of another schema is a
one-line error. A corrupt durations database never stops a run: it warns and the run
goes on without learned durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fanfold
from fanfold.checkpoints import CheckpointStoreError, open_checkpointer
from fanfold.cli import EXIT_ERROR, EXIT_OK, app
from fanfold.scheduling.durations import DurationStore, DurationStoreError

PLAN = {"task": "t", "subtasks": [{"id": "a", "prompt": "say a"}, {"id": "b", "prompt": "b"}]}


def random_bytes(path: Path) -> Path:
    path.write_bytes(os.urandom(8192))
    return path


def truncated(path: Path) -> Path:
    """A real checkpoint database cut short in the middle of its pages."""
    fanfold.run_plan(PLAN, checkpoint=path, run_id="r1", options={"model": "simulated"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    return path


def wrong_schema(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("CREATE TABLE writes (id INTEGER PRIMARY KEY)")
    return path


def bit_flipped(path: Path) -> Path:
    """A durations database with its pages scrambled after the header."""
    store = DurationStore(path)
    store.record("plan", "model", {f"s{i}": float(i) for i in range(200)})
    store.close()
    data = bytearray(path.read_bytes())
    for i in range(100, len(data), 7):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    return path


CORRUPTIONS = [random_bytes, truncated, wrong_schema]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(tmp_path: Path, corrupt):
    path = corrupt(tmp_path / "runs.db")

    async def read() -> None:
        async with open_checkpointer(str(path)) as saver:
            await saver.aget_tuple({"configurable": {"thread_id": "r1"}})

    with pytest.raises(CheckpointStoreError) as caught:
        asyncio.run(read())
    message = str(caught.value)
    assert "\n" not in message and str(path) in message


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_resume_from_a_corrupt_checkpoint_prints_one_error_line(tmp_path: Path, corrupt):
    path = corrupt(tmp_path / "runs.db")
    done = CliRunner().invoke(app, ["resume", "r1", "--checkpoint", str(path)])
    assert done.exit_code == EXIT_ERROR, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(path) in lines[0]


def test_run_into_a_corrupt_checkpoint_prints_one_error_line(tmp_path: Path):
    path = random_bytes(tmp_path / "runs.db")
    plan = tmp_path / "plan.yaml"
    plan.write_text(fanfold.plan_to_yaml(fanfold.TaskPlan.model_validate(PLAN)))
    done = CliRunner().invoke(app, ["run", str(plan), "-m", "simulated", "--checkpoint", str(path)])
    assert done.exit_code == EXIT_ERROR, done.output
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and str(path) in errors[0]
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    "corrupt", [random_bytes, bit_flipped, wrong_schema], ids=lambda f: f.__name__
)
def test_a_corrupt_durations_database_is_one_line_naming_the_file(tmp_path: Path, corrupt):
    path = corrupt(tmp_path / "durations.db")
    if corrupt is wrong_schema:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE fanfold_durations (plan TEXT)")
    with pytest.raises(DurationStoreError) as caught:
        DurationStore.open(str(path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("corrupt", [random_bytes, bit_flipped], ids=lambda f: f.__name__)
def test_a_corrupt_durations_database_never_stops_a_run(tmp_path: Path, corrupt):
    home = Path(os.environ["FANFOLD_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    corrupt(home / "fanfold.db")
    plan = tmp_path / "plan.yaml"
    plan.write_text(fanfold.plan_to_yaml(fanfold.TaskPlan.model_validate(PLAN)))
    done = subprocess.run(
        [sys.executable, "-m", "fanfold.cli", "run", str(plan), "-m", "simulated", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FANFOLD_HOME": str(home)},
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["totals"]["succeeded"] == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("warning: ") and str(home / "fanfold.db") in lines[0]
    assert lines[0].endswith("running without learned durations")


@pytest.mark.parametrize("corrupt", [random_bytes, wrong_schema], ids=lambda f: f.__name__)
def test_a_corrupt_cache_file_is_one_line_naming_the_file(tmp_path: Path, corrupt):
    path = corrupt(tmp_path / "cache.db")
    if corrupt is wrong_schema:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE fanfold_cache (key TEXT)")
    with pytest.raises(fanfold.CacheError) as caught:
        fanfold.ResultCache(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
