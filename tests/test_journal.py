"""Nothing billed twice: a checkpointed run journals each finished call in its store.

A `fanfold run --checkpoint` process is SIGKILLed in the middle of a 500-item map (whose
node has not committed, so the checkpoint holds none of its items) and resumed with the
cache off: no finished item is requested again, and the run completes. The loopback
server counts the requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from fanfold import compile_plan
from fanfold.cli import app
from fanfold.nodes.journal import NAMESPACE, store_beside
from fanfold.testing import SimServer, SimServerConfig

API_KEY = "sk-test-journal-0123456789abcdef"
ITEMS = [f"item{n:03d}" for n in range(500)]
KILL_AFTER = 200
TIMEOUT = 120.0
PLAN = {
    "task": "Tag every item",
    "inputs": ["items"],
    "subtasks": [{"id": "tag", "prompt": "Tag this entry, briefly, now: <{item}>", "map": "items"}],
    "aggregation": {"enabled": False},
}


def succeeded_items(events: Path) -> set[int]:
    if not events.exists():
        return set()
    lines = [line for line in events.read_text(encoding="utf-8").splitlines() if line.endswith("}")]
    found = (json.loads(line) for line in lines)
    return {e["item"] for e in found if e.get("item") is not None and e["status"] == "succeeded"}


def test_a_killed_run_resumed_requests_no_finished_map_item_again(tmp_path: Path, monkeypatch: Any):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN), encoding="utf-8")
    store = str(tmp_path / "runs.db")
    events = tmp_path / "events.jsonl"
    with SimServer(SimServerConfig(latency=0.1, api_key=API_KEY)) as srv:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": srv.base_url,
            "OPENAI_API_KEY": API_KEY,
            "PYTHONUNBUFFERED": "1",
        }
        args = [
            "run", str(plan), "-m", "openai:sim-model", "--max-concurrency", "8",
            "--checkpoint", store, "--no-cache", "--events", str(events), "--quiet",
            "-i", f"items={json.dumps(ITEMS)}",
        ]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanfold.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while len(succeeded_items(events)) < KILL_AFTER:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "too few items finished"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            stderr = proc.stderr.read() if proc.stderr else ""
            if proc.stderr is not None:
                proc.stderr.close()
        run_id = stderr.split("run id: ", 1)[1].split()[0]
        finished = succeeded_items(events)
        assert KILL_AFTER <= len(finished) < len(ITEMS)
        before = srv.request_count

        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
            monkeypatch.setenv(name, env[name])
        resumed = CliRunner().invoke(app, ["resume", run_id, "--checkpoint", store, "--json"])
        requests = {item: srv.requests_for(f"<{item}>") for item in ITEMS}
        after = srv.request_count

    assert resumed.exit_code == 0, resumed.output
    items = json.loads(resumed.stdout)["results"]["tag"]["items"]
    assert [i["status"] for i in items] == ["succeeded"] * len(ITEMS)
    repeated = [ITEMS[i] for i in finished if requests[ITEMS[i]] != 1]
    assert repeated == []  # 0 repeated requests for finished items
    assert all(items[i]["cached"] for i in finished)
    # The resume asked only for what had not finished (the calls in flight at the kill
    # included, at most --max-concurrency of them).
    assert after - before <= len(ITEMS) - len(finished)
    assert all(count >= 1 for count in requests.values())


def test_a_run_with_an_in_memory_checkpointer_journals_beside_it():
    saver = InMemorySaver()
    graph = compile_plan(PLAN, model="simulated", checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"inputs": {"items": ITEMS[:3]}}, config)
    store = store_beside(saver)
    assert store is not None
    entries = store.search((*NAMESPACE, "t1"), limit=10)
    assert len(entries) == 3
    assert {e.value["subtask"] for e in entries} == {"tag[0]", "tag[1]", "tag[2]"}
    assert store.search((*NAMESPACE, "other"), limit=10) == []
