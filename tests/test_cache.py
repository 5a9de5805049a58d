"""The persistent cache of model calls: the same call, across runs, is paid for once.

HTTP paths drive the real ChatOpenAI against fanfold's loopback `SimServer` and count its
requests. The durability test runs `fanfold run` as a separate process and SIGKILLs it
after a fast chain's calls finished but before a slow sibling's node did, as a crash
would, then resumes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from fanfold import (
    ResultCache,
    SimulatedChatModel,
    SubtaskResult,
    TaskPlan,
    compile_plan,
    default_cache_path,
    resolve_model,
)
from fanfold.checkpoints import open_checkpointer
from fanfold.cli import app
from fanfold.scheduling.cache import call_key, model_identity
from fanfold.testing import SimServer, SimServerConfig

API_KEY = "sk-test-cache-0123456789abcdef"
TASK_MARKER = "TASKMARK-cache"
"""In the task text: only the aggregate's request has it."""
PROCESS_TIMEOUT = 60.0


@pytest.fixture
def server():
    with SimServer(SimServerConfig(api_key=API_KEY)) as srv:
        yield srv


def sim_model(srv: SimServer, **settings: Any) -> Any:
    return resolve_model("openai:sim-model", base_url=srv.base_url, api_key=API_KEY, **settings)


def marker(sid: str) -> str:
    return f"<mark:{sid}>"


def prompt_for(sid: str) -> str:
    # The marker comes after the six words a SimServer reply quotes, so no dependent's
    # prompt (nor the aggregate's) contains it.
    return f"Write one short note for this step, please: {marker(sid)}"


def subtask_requests(srv: SimServer, sid: str) -> int:
    return sum(marker(sid) in r.prompt and TASK_MARKER not in r.prompt for r in srv.log)


def aggregate_requests(srv: SimServer) -> int:
    return sum(TASK_MARKER in r.prompt for r in srv.log)


DIAMOND = {
    "task": f"Write the report {TASK_MARKER}",
    "subtasks": [
        {"id": "a", "prompt": prompt_for("a")},
        {"id": "b", "prompt": prompt_for("b")},
        {"id": "c", "prompt": prompt_for("c") + " {a} {b}", "depends_on": ["a", "b"]},
    ],
}


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def cli_run(srv: SimServer, plan: Path, *args: str) -> Any:
    env = {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": API_KEY, "COLUMNS": "200"}
    return CliRunner(env=env).invoke(app, ["run", str(plan), "-m", "openai:sim-model", *args])


# -- repeated runs --------------------------------------------------------------------------------


def test_a_repeated_cli_run_makes_no_request_and_bills_no_tokens(server: SimServer, tmp_path: Path):
    plan = write_json(tmp_path / "diamond.json", DIAMOND)
    first_run = cli_run(server, plan, "--json")
    assert first_run.exit_code == 0, first_run.output
    sent = server.request_count
    assert sent == 4  # a, b, c and the aggregate

    again_run = cli_run(server, plan, "--json")
    assert again_run.exit_code == 0, again_run.output
    assert server.request_count == sent
    first, again = json.loads(first_run.stdout), json.loads(again_run.stdout)
    for sid, entry in again["results"].items():
        assert entry["cached"] is True and first["results"][sid]["cached"] is False
        assert entry["usage"]["total_tokens"] == 0 and entry["cost"] == 0.0
        assert entry["cached_usage"] == first["results"][sid]["usage"]  # the original tokens
        assert entry["output"] == first["results"][sid]["output"]
    assert again["output"] == first["output"]
    totals = again["totals"]
    assert totals["usage"]["total_tokens"] == totals["aggregate_usage"]["total_tokens"] == 0
    assert totals["cached"] == 4
    assert totals["cached_usage"]["total_tokens"] == (
        first["totals"]["usage"]["total_tokens"]
        + first["totals"]["aggregate_usage"]["total_tokens"]
    )
    # No call reached the provider: no speedup to speak of (issue 15: it said 0.21x).
    assert totals["speedup"] is None and first["totals"]["speedup"] > 0
    human = cli_run(server, plan)
    assert human.stdout.count(" cached  ") == 3
    assert "cache: 4 calls served from the cache" in human.stdout
    assert "speedup: n/a (no call reached the provider" in human.stdout


def test_no_cache_requests_every_call_again(server: SimServer, tmp_path: Path):
    plan = write_json(tmp_path / "diamond.json", DIAMOND)
    assert cli_run(server, plan).exit_code == 0
    assert cli_run(server, plan, "--no-cache").exit_code == 0
    assert [subtask_requests(server, s) for s in "abc"] == [2, 2, 2]
    assert aggregate_requests(server) == 2


def test_a_subtask_with_cache_false_is_requested_on_every_run(server: SimServer, tmp_path: Path):
    plan = json.loads(json.dumps(DIAMOND))
    plan["subtasks"][1]["cache"] = False
    path = write_json(tmp_path / "diamond.json", plan)
    assert cli_run(server, path).exit_code == 0
    second = cli_run(server, path, "--json")
    assert [subtask_requests(server, s) for s in "abc"] == [1, 2, 1]
    results = json.loads(second.stdout)["results"]
    assert (results["a"]["cached"], results["b"]["cached"]) == (True, False)


def test_the_python_api_caches_only_when_asked(server: SimServer, tmp_path: Path):
    model = sim_model(server)
    compile_plan(DIAMOND, model=model).invoke({"inputs": {}})
    compile_plan(DIAMOND, model=model).invoke({"inputs": {}})
    assert server.request_count == 8  # no cache by default: everything twice
    assert not default_cache_path().exists()

    cache = tmp_path / "calls.db"
    compile_plan(DIAMOND, model=model, cache=cache).invoke({"inputs": {}})
    state = compile_plan(DIAMOND, model=model, cache=ResultCache(cache)).invoke({"inputs": {}})
    assert server.request_count == 12
    assert all(r.cached for r in state["results"].values())


def test_a_change_to_the_model_settings_or_the_schema_misses_the_cache(
    server: SimServer, tmp_path: Path
):
    cache = ResultCache(tmp_path / "calls.db")
    plan = {"task": "One", "subtasks": [{"id": "a", "prompt": prompt_for("a")}]}
    run = {"cache": cache, "aggregator": None}
    compile_plan(plan, model=sim_model(server), **run).invoke({"inputs": {}})
    compile_plan(plan, model=sim_model(server), **run).invoke({"inputs": {}})
    assert subtask_requests(server, "a") == 1
    compile_plan(plan, model=sim_model(server, temperature=0.3), **run).invoke({"inputs": {}})
    assert subtask_requests(server, "a") == 2
    schema = {"type": "object", "properties": {"note": {"type": "string"}}}
    structured = {"task": "One", "subtasks": [{**plan["subtasks"][0], "output_schema": schema}]}
    compile_plan(structured, model=sim_model(server), **run).invoke({"inputs": {}})
    assert subtask_requests(server, "a") == 3
    with_system = {"task": "One", "subtasks": [{**plan["subtasks"][0], "system": "Be brief."}]}
    compile_plan(with_system, model=sim_model(server), **run).invoke({"inputs": {}})
    assert subtask_requests(server, "a") == 4


def test_failed_calls_are_not_cached(server: SimServer, tmp_path: Path):
    cache = tmp_path / "calls.db"
    server.update(fail_prompts={marker("b"): 400})
    first = compile_plan(DIAMOND, model=sim_model(server), cache=cache).invoke({"inputs": {}})
    assert first["results"]["b"].status == "failed"
    server.update(fail_prompts={})
    again = compile_plan(DIAMOND, model=sim_model(server), cache=cache).invoke({"inputs": {}})
    assert again["results"]["b"].ok and not again["results"]["b"].cached
    assert again["results"]["a"].cached
    assert [subtask_requests(server, s) for s in "abc"] == [1, 2, 1]


def test_kinds_that_call_no_model_are_not_cached(tmp_path: Path):
    cache = ResultCache(tmp_path / "calls.db")
    plan = {"task": "T", "subtasks": [{"id": "t", "prompt": "plain text", "kind": "template"}]}
    for _ in range(2):
        state = compile_plan(plan, model="simulated", cache=cache, aggregator=None).invoke(
            {"inputs": {}}
        )
        assert not state["results"]["t"].cached
    assert len(cache) == 0


def test_map_items_are_cached_one_by_one(server: SimServer, tmp_path: Path):
    cache = tmp_path / "calls.db"
    plan = {
        "task": f"Teas {TASK_MARKER}",
        "inputs": ["teas"],
        "subtasks": [
            {"id": "each", "prompt": "Write one short note on this tea: {item}", "map": "teas"}
        ],
    }
    graph = compile_plan(plan, model=sim_model(server), cache=cache)
    graph.invoke({"inputs": {"teas": ["<sencha>", "<assam>"]}})
    state = graph.invoke({"inputs": {"teas": ["<sencha>", "<assam>", "<oolong>"]}})
    item_requests = [r.prompt for r in server.log if TASK_MARKER not in r.prompt]
    assert len(item_requests) == 3 and "<oolong>" in item_requests[-1]
    each = state["results"]["each"]
    assert each.items is not None
    assert [i.cached for i in each.items] == [True, True, False]
    assert not each.cached  # not every item was
    assert aggregate_requests(server) == 2  # its prompt holds a third output now


class Note(BaseModel):
    title: str
    words: int


def test_a_structured_output_comes_back_from_the_cache_as_its_schema_instance(tmp_path: Path):
    cache = ResultCache(tmp_path / "calls.db")
    plan = TaskPlan.model_validate(
        {"task": "T", "subtasks": [{"id": "n", "prompt": "A note", "output_schema": Note}]}
    )
    model = SimulatedChatModel(latency=0)
    first = compile_plan(plan, model=model, cache=cache, aggregator=None).invoke({"inputs": {}})
    again = compile_plan(plan, model=model, cache=cache, aggregator=None).invoke({"inputs": {}})
    assert again["results"]["n"].cached
    assert isinstance(again["results"]["n"].output, Note)
    assert again["results"]["n"].output == first["results"]["n"].output


# -- where the cache lives, and what it never holds ---------------------------------------------


def test_the_cache_file_is_fanfold_cache_else_under_xdg_cache_home_else_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "fanfold" / "cache.db"
    monkeypatch.setenv("FANFOLD_CACHE", str(tmp_path / "elsewhere.db"))
    assert default_cache_path() == tmp_path / "elsewhere.db"
    monkeypatch.delenv("FANFOLD_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_path() == tmp_path / "home" / ".cache" / "fanfold" / "cache.db"


def test_the_cli_writes_its_cache_where_fanfold_cache_says(
    server: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    target = tmp_path / "moved" / "calls.db"
    monkeypatch.setenv("FANFOLD_CACHE", str(target))
    assert cli_run(server, write_json(tmp_path / "d.json", DIAMOND)).exit_code == 0
    assert len(ResultCache(target)) == 4
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "fanfold" / "cache.db").exists()


def test_the_api_key_reaches_neither_the_cache_key_nor_the_cache_file(
    server: SimServer, tmp_path: Path
):
    other_key = "sk-test-another-key-9876543210"
    messages = TaskPlan.model_validate(DIAMOND).subtasks[0]
    from fanfold.plan.prompts import subtask_messages

    sent = subtask_messages(messages, task="t", prompt="p")
    key = call_key(model=sim_model(server), messages=sent, kind="llm")
    other = resolve_model("openai:sim-model", base_url=server.base_url, api_key=other_key)
    assert call_key(model=other, messages=sent, kind="llm") == key

    path = tmp_path / "calls.db"
    compile_plan(DIAMOND, model=sim_model(server), cache=path).invoke({"inputs": {}})
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(FULL)").close()
    for file in tmp_path.glob("calls.db*"):
        assert API_KEY.encode() not in file.read_bytes(), file
    rows = sqlite3.connect(path).execute("SELECT * FROM fanfold_cache").fetchall()
    assert len(rows) == 4 and API_KEY not in repr(rows)


def test_a_models_identity_keeps_its_settings_and_drops_every_secret():
    class Keyed(SimulatedChatModel):
        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {
                "model_name": "keyed",
                "max_tokens": 5,
                "api_key": "sk-live-abcdefghijkl",
                "default_headers": {"Authorization": "Bearer abcdefghijkl"},
                "organization_token": "tok-123456789",
                "note": f"uses {API_KEY}",
                "client": object(),
            }

    identity = model_identity(Keyed(latency=0))
    note = identity["params"].pop("note")  # a secret-looking value counts as a digest only
    assert identity["params"] == {"model_name": "keyed", "max_tokens": 5}
    assert set(note) == {"sha256"} and API_KEY not in json.dumps(note)
    assert identity["class"].endswith("Keyed")
    with_password = resolve_model(
        "openai:sim-model", base_url="http://me:pw-secret@127.0.0.1:9/v1?key=abc", api_key=API_KEY
    )
    assert model_identity(with_password)["endpoint"] == "http://127.0.0.1:9/v1"


def test_everything_that_changes_the_answer_changes_the_cache_key():
    from langchain_core.messages import HumanMessage
    from langchain_openai import AzureChatOpenAI, ChatOpenAI

    sent = [HumanMessage("Write a note")]

    def key(model: Any) -> str:
        return call_key(model=model, messages=sent, kind="llm")

    def azure(endpoint: str) -> Any:
        return AzureChatOpenAI(
            azure_endpoint=endpoint,
            azure_deployment="notes",
            api_version="2024-06-01",
            api_key="azure-key-0123456789",
        )

    def openai(**settings: Any) -> Any:
        return ChatOpenAI(
            model="sim-model", base_url="http://127.0.0.1:9/v1", api_key=API_KEY, **settings
        )

    # Two Azure resources with the same deployment name are two models.
    assert key(azure("https://east.example.com")) != key(azure("https://west.example.com"))
    plain = key(openai())
    assert key(openai(default_headers={"X-Model-Version": "2"})) != plain
    assert key(openai(default_query={"deployment": "b"})) != plain
    # Stop strings that look like keys still count (as digests).
    first, second = "sk-abcdefghijklmnopqrstuvwxyz012345", "sk-zyxwvutsrqponmlkjihgfedcba543210"
    assert key(openai(stop=[first])) != key(openai(stop=[second])) != plain
    # Credentials never count and never show.
    assert key(openai(default_headers={"Authorization": "Bearer one-0123456789"})) == plain
    identity = json.dumps(model_identity(openai(stop=[first], default_headers={"X-Trace": first})))
    assert first not in identity and API_KEY not in identity


def test_a_cache_file_that_cannot_be_created_is_one_error_line(server: SimServer, tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    env = {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": API_KEY,
        "FANFOLD_CACHE": str(blocker / "cache.db"),
    }
    plan = write_json(tmp_path / "d.json", DIAMOND)
    result = CliRunner(env=env).invoke(app, ["run", str(plan), "-m", "openai:sim-model"])
    assert result.exit_code == 1
    target = str(blocker / "cache.db")
    assert result.stderr.startswith(f"Error: cache file {target!r}: cannot use it"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--no-cache" in result.stderr
    assert server.request_count == 0


# -- durability: a call is stored the moment it ends --------------------------------------------


LATENCY = 0.3
"""Seconds per reply: the fast chain takes three; the slow map, sixteen items, far more."""
SLOW_ITEMS = [f"i{n:02d}" for n in range(16)]


def kill_plan() -> dict[str, Any]:
    """A fast chain a -> b -> c beside a slow map over sixteen items (one LangGraph step).

    With two slots, the chain (a higher priority) keeps one, so it is done after three
    replies while the map still has most of its items to go. LangGraph runs b's and
    c's nodes only after the map's node, in a later step: until then their results are
    nowhere but in the dispatcher's memory, and in the cache.
    """
    return {
        "task": f"Write the report {TASK_MARKER}",
        "inputs": ["items"],
        "subtasks": [
            {"id": "a", "prompt": prompt_for("a"), "priority": 1},
            {"id": "b", "prompt": prompt_for("b"), "depends_on": ["a"], "priority": 1},
            {"id": "c", "prompt": prompt_for("c"), "depends_on": ["b"], "priority": 1},
            {"id": "slow", "prompt": prompt_for("slow") + " {item}", "map": "items"},
        ],
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


async def checkpointed(target: str, plan: dict[str, Any], thread: str) -> set[str]:
    """Subtask ids with a result in the thread's checkpoint or its open step's writes."""
    config: Any = {"configurable": {"thread_id": thread}}
    async with open_checkpointer(target) as saver:
        latest = await saver.aget_tuple(config)
    if latest is None:
        return set()
    kept = set(latest.checkpoint["channel_values"].get("results") or {})
    for _task, channel, value in latest.pending_writes or []:
        if channel == "results" and isinstance(value, dict):
            kept.update(value)
    return kept


@pytest.mark.slow
def test_calls_finished_before_a_kill_are_not_requested_again_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    plan = kill_plan()
    plan_file = write_json(tmp_path / "kill.json", plan)
    store = str(tmp_path / "runs.db")
    events_file = tmp_path / "events.jsonl"
    with SimServer(SimServerConfig(latency=LATENCY, api_key=API_KEY)) as srv:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": srv.base_url,
            "OPENAI_API_KEY": API_KEY,
            "PYTHONUNBUFFERED": "1",
        }
        args = [
            "run", str(plan_file), "-m", "openai:sim-model", "--max-concurrency", "2",
            "--checkpoint", store, "--events", str(events_file), "--quiet",
            "-i", f"items={json.dumps(SLOW_ITEMS)}",
        ]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanfold.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the chain never finished"
                events = read_events(events_file)
                done = {
                    e["subtask"] for e in events if "item" not in e and e["status"] != "started"
                }  # noqa: E501
                if "c" in done:
                    assert "slow" not in done, "the slow map finished before the chain"
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
                    break
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stderr is not None:
                stderr = proc.stderr.read()
                proc.stderr.close()
        run_id = stderr.split("run id: ", 1)[1].split()[0]
        events = read_events(events_file)
        items_done = {
            e["item"] for e in events if e.get("item") is not None and e["status"] == "succeeded"
        }
        assert len(items_done) < len(SLOW_ITEMS)
        # b's and c's calls had finished, but LangGraph had not committed their nodes.
        kept = asyncio.run(checkpointed(store, plan, run_id))
        assert "a" in kept and not kept & {"b", "c", "slow"}, kept
        before = {sid: subtask_requests(srv, sid) for sid in "abc"}
        assert before == {"a": 1, "b": 1, "c": 1}

        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
            monkeypatch.setenv(name, env[name])
        resumed_run = CliRunner().invoke(app, ["resume", run_id, "--checkpoint", store, "--json"])
        after = {sid: subtask_requests(srv, sid) for sid in "abc"}
        item_requests = {
            item: sum(f"{marker('slow')} {item}" in r.prompt for r in srv.log)
            for item in SLOW_ITEMS
        }

    assert resumed_run.exit_code == 0, resumed_run.output
    assert "continuing where it stopped" in resumed_run.stderr
    resumed = json.loads(resumed_run.stdout)
    assert {sid: r["status"] for sid, r in resumed["results"].items()} == dict.fromkeys(
        ["a", "b", "c", "slow"], "succeeded"
    )
    assert after == before  # 0 repeated requests for the finished chain
    assert resumed["results"]["b"]["cached"] and resumed["results"]["c"]["cached"]
    slow = resumed["results"]["slow"]["items"]
    for index in items_done:  # nor for the map items that had finished
        assert item_requests[SLOW_ITEMS[index]] == 1
        assert slow[index]["cached"] is True
    assert all(count >= 1 for count in item_requests.values())
    assert SubtaskResult.model_validate(resumed["results"]["c"]).cached_usage is not None
