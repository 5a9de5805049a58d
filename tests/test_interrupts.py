"""Ctrl-C: `fanfold run` prints one line (how to resume, with a checkpoint) and exits 130.

Each test runs the real CLI in a subprocess and sends it SIGINT once its first call has
started, as a terminal's Ctrl-C would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fanfold.cli import EXIT_INTERRUPTED

TIMEOUT = 60.0
SLOW = json.dumps({"name": "simulated", "latency": 30})
"""A simulated model whose calls take 30 s: the run is surely still going at the SIGINT."""
RESUMABLE = json.dumps({"name": "simulated", "latency": 1.5})
"""Slow enough to interrupt, fast enough for the resume to finish soon."""
PLAN = {
    "task": "Notes",
    "subtasks": [
        {"id": "a", "prompt": "Write about tides."},
        {"id": "b", "prompt": "Write about waves."},
    ],
}


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN), encoding="utf-8")
    events = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "fanfold.cli", "run", str(plan), "--events", str(events)]
    proc = subprocess.Popen(
        [*command, "--quiet", "--no-cache", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, events


def interrupt_once_started(proc: subprocess.Popen[str], events: Path) -> tuple[int, str]:
    """SIGINT as soon as a call has started; the exit status and stderr."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (events.exists() and '"started"' in events.read_text(encoding="utf-8")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no call started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stderr


def test_ctrl_c_prints_how_to_resume_and_exits_130(tmp_path: Path):
    store = tmp_path / "runs.db"
    proc, events = start(tmp_path, "-m", RESUMABLE, "--checkpoint", str(store))
    status, stderr = interrupt_once_started(proc, events)
    assert status == EXIT_INTERRUPTED == 130
    lines = stderr.strip().splitlines()
    run_id = lines[0].split("run id: ", 1)[1].split()[0]
    assert lines[1:] == [f"interrupted; resume with: fanfold resume {run_id} --checkpoint {store}"]
    assert "Traceback" not in stderr

    # The hint works: the run finishes.
    resumed = subprocess.run(
        [sys.executable, "-m", "fanfold.cli", "resume", run_id, "--checkpoint", str(store)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run" in resumed.stderr


def test_ctrl_c_without_a_checkpoint_says_interrupted_and_exits_130(tmp_path: Path):
    proc, events = start(tmp_path, "-m", SLOW)
    status, stderr = interrupt_once_started(proc, events)
    assert status == 130
    assert stderr.strip().splitlines() == ["interrupted"]
