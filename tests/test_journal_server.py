"""Nothing billed twice on a real `langgraph dev`: the call journal lives in the server's store.

The served `plan_or_goal` graph runs a 500-item map against fanfold's loopback model
server. After 200 items have been answered the model server stops answering, and the
`langgraph dev` process is stopped in the middle of the map (whose node has not
committed: its checkpoint holds none of the items). A new `langgraph dev` on the same
folder puts the run left running back in the queue and runs it again on its thread.

- Stopped with SIGTERM: the in-memory runtime writes its store to disk as it shuts down,
  the journal is there after the restart, and no finished item is requested again.
- SIGKILLed (not tested, because the outcome depends on timing): the items finished since
  the runtime last wrote its store to disk are requested again. In a quiet run that was
  every item, in a loaded CI run 122 of 203, and once the restarted server did not know
  the thread at all. What
  langgraph-runtime-inmem 0.36.7 does: it pickles the store, checkpoints and
  runs under `.langgraph_api/` from a daemon thread every 10 s (`_persistence`), and at a
  clean shutdown; but `InMemorySaver.__aexit__` calls `stop_flush_loop()`
  (`checkpoint.py`), so the loop can stop while a run is under way. Watched on a quiet machine:
  during a 40 s map only `.langgraph_ops.pckl` was written (once, 9 s in); `store.pckl`
  and the checkpoints were not on disk when the process was killed. So a SIGKILLed dev
  server loses the journal with everything else it kept in memory; a server whose store
  is a database (`langgraph up`, PostgreSQL) keeps each `put`, and
  `tests/test_journal.py` shows the same journal surviving a SIGKILLed CLI run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from fanfold.testing import SimServer, SimServerConfig

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_server import CONFIG, free_port, server_env, stop, wait_until_ready  # noqa: E402

API_KEY = "sk-test-journal-server-0123456789"
ITEMS = [f"item{n:03d}" for n in range(500)]
KILL_AFTER = 200
SETTLE = 1.0
"""Seconds for the answered requests to finish before the server is stopped."""
PLAN = {
    "task": "Tag every item",
    "inputs": ["items"],
    "subtasks": [{"id": "tag", "prompt": "Tag this entry, briefly, now: <{item}>", "map": "items"}],
    "aggregation": {"enabled": False},
}


def start_server(workdir: Path, port: int, model_url: str) -> subprocess.Popen[bytes]:
    env = server_env(workdir)
    env.update(FANFOLD_MODEL="openai:sim-model", OPENAI_BASE_URL=model_url, OPENAI_API_KEY=API_KEY)
    command = [
        sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload",
        "--host", "127.0.0.1", "--port", str(port), "--config", str(CONFIG),
    ]  # fmt: skip
    with (workdir / "server.log").open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=workdir,  # the runtime's state: ./.langgraph_api
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def answered(srv: SimServer, before: float) -> set[str]:
    """Items whose request was answered 200 (at the fast latency) before `before`."""
    return {
        record.prompt.split("<", 1)[1].split(">", 1)[0]
        for record in srv.log
        if record.outcome == 200 and record.time < before and "<item" in record.prompt
    }


# SIGKILL is not a case: what the in-memory runtime had flushed by then (nothing, part of
# the store, or not even the thread) depends on timing; see the module docstring.
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM], ids=["term"])
async def test_a_stopped_langgraph_dev_finishes_the_thread_after_a_restart(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with SimServer(SimServerConfig(latency=0.05, api_key=API_KEY)) as srv:
        server = start_server(tmp_path, port, srv.base_url)
        try:
            wait_until_ready(url, server, log)
            client = get_client(url=url)
            (assistant,) = await client.assistants.search(graph_id="plan_or_goal")
            thread = await client.threads.create()
            run = await client.runs.create(
                thread["thread_id"],
                assistant["assistant_id"],
                input={"plan": PLAN, "inputs": {"items": ITEMS}},
            )
            deadline = time.monotonic() + 120
            while srv.status_counts().get(200, 0) < KILL_AFTER:
                assert server.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, f"too few items answered: {srv.stats()}"
                await asyncio.sleep(0.01)
            # The model server stops answering, what was answered finishes, then the
            # server is stopped mid-map.
            frozen = time.monotonic()
            srv.update(latency=3600.0)
            await asyncio.sleep(SETTLE)
            os.killpg(server.pid, stop_signal)
            server.wait(timeout=60)
        finally:
            stop(server)
        finished = answered(srv, frozen)
        assert KILL_AFTER <= len(finished) < len(ITEMS)

        srv.update(latency=0.01)
        before = srv.request_count
        server = start_server(tmp_path, port, srv.base_url)
        try:
            wait_until_ready(url, server, log)
            client = get_client(url=url)
            # The runtime queued the interrupted run again; wait for it on its thread.
            await asyncio.wait_for(client.runs.join(thread["thread_id"], run["run_id"]), 240)
            state = await client.threads.get_state(thread["thread_id"])
            runs = await client.runs.list(thread["thread_id"])
        finally:
            stop(server)
        requests = {item: srv.requests_for(f"<{item}>") for item in ITEMS}
        after = srv.request_count

    assert [r["status"] for r in runs] == ["success"], runs
    values: dict[str, Any] = state["values"]
    items = values["results"]["tag"]["items"]
    assert [i["status"] for i in items] == ["succeeded"] * len(ITEMS)
    repeated = sorted(item for item in finished if requests[item] != 1)
    assert repeated == []  # 0 repeated requests for finished items
    # After the restart only unfinished items were asked for (those stalled at the stop).
    assert after - before <= len(ITEMS) - len(finished)
