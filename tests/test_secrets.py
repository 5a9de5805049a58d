"""The API key never leaves the model: not in state, checkpoints, events, logs, errors, CLI.

The model and the simulated server share the key; the plan has a subtask the server
rejects with 400, one that fails with 500 once and is retried, and one whose kind raises
an error that quotes its request headers (key included), the way a careless HTTP client
does. Each place is also checked for a positive control, so "not found" means "redacted",
not "nothing was written".
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from fanfold import SubtaskCall, TaskPlan, compile_plan, node_kinds, resolve_model
from fanfold._secrets import describe_error, mask_url, redact, strip_password
from fanfold.checkpoints import open_checkpointer
from fanfold.cli import app
from fanfold.scheduling.dispatcher import EVENT_TYPE
from fanfold.scheduling.limits import RateLimiter
from fanfold.scheduling.retry import RetryPolicy
from fanfold.testing import SimServer, SimServerConfig

KEY = "sk-fanfold-SECRET-123456789"
LEAKY_KIND = "leaky_http"
FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.2)


class LeakyTransportError(ConnectionError):
    """A transient error whose message dumps the request, credentials included."""


async def leaky_http(call: SubtaskCall) -> str:
    """Fails like an HTTP client that puts the request's headers into its error message."""
    assert call.model is not None
    key = call.model.openai_api_key.get_secret_value()  # type: ignore[attr-defined]
    base = call.model.openai_api_base  # type: ignore[attr-defined]
    raise LeakyTransportError(
        f"POST {base}/chat/completions failed; request headers="
        f"{{'Authorization': 'Bearer {key}', 'x-api-key': '{key}'}} body={{'api_key': '{key}'}}"
    )


@pytest.fixture
def leaky_kind() -> Iterator[str]:
    node_kinds.register(LEAKY_KIND, leaky_http, needs_model=True, replace=True)
    try:
        yield LEAKY_KIND
    finally:
        node_kinds.unregister(LEAKY_KIND)


@pytest.fixture
def server() -> Iterator[SimServer]:
    config = SimServerConfig(
        latency=0.005,
        api_key=KEY,
        fail_prompts={"REJECT-ME": 400},
        error_500_rate=1.0,
        fault_first_attempts_only=True,  # every prompt fails with 500 once, then succeeds
    )
    with SimServer(config) as srv:
        yield srv


def plan_dict(kind: str) -> dict[str, Any]:
    return {
        "task": "Keep the key secret",
        "subtasks": [
            {"id": "fine", "prompt": "[fine] summarise the weather"},
            {"id": "rejected", "prompt": "[rejected] REJECT-ME now"},
            {"id": "leaky", "prompt": "[leaky] call out", "kind": kind, "max_attempts": 2},
            {"id": "after", "prompt": "[after] build on fine", "depends_on": ["fine"]},
        ],
    }


def model_for(srv: SimServer) -> Any:
    return resolve_model("openai:sim-model", base_url=srv.base_url, api_key=KEY)


def graph_for(srv: SimServer, kind: str, **options: Any) -> Any:
    return compile_plan(
        TaskPlan.model_validate(plan_dict(kind)),
        model=model_for(srv),
        retry=FAST,
        rate_limiter=RateLimiter(),
        **options,
    )


def assert_no_key(text: str, where: str) -> None:
    assert KEY not in text, f"the API key leaked into {where}"
    assert "SECRET-123456789" not in text, f"part of the API key leaked into {where}"


def assert_expected_outcomes(results: dict[str, Any]) -> None:
    """The run went the way the secrecy checks assume (so every error path was taken)."""
    assert results["fine"].ok and results["after"].ok
    assert results["fine"].attempts == 2  # a 500 first
    assert results["rejected"].status == "failed" and "400" in results["rejected"].error
    leaky = results["leaky"]
    assert leaky.status == "failed" and leaky.attempts == 2
    assert "LeakyTransportError" in leaky.error and "gave up after 2 attempts" in leaky.error


def results_json(results: dict[str, Any]) -> str:
    return json.dumps({sid: r.model_dump(mode="json") for sid, r in results.items()})


# -- the Python API ------------------------------------------------------------------------


async def test_key_never_reaches_state_events_logs_errors_or_memory_checkpoints(
    server: SimServer, leaky_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: openai, httpx, httpcore, langgraph...
    saver = InMemorySaver()
    graph = graph_for(server, leaky_kind, checkpointer=saver)
    config = {"configurable": {"thread_id": "secret-run"}}
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        {"inputs": {}}, config, stream_mode=["custom", "values"]
    ):
        if mode == "values":
            final = chunk
        elif isinstance(chunk, dict) and chunk.get("type") == EVENT_TYPE:
            events.append(chunk)

    results = final["results"]
    assert_expected_outcomes(results)
    # Final state.
    assert_no_key(repr(final), "the final state")
    assert_no_key(results_json(results), "the results as JSON")
    for result in results.values():
        assert_no_key(result.error or "", f"the error of {result.id}")
    assert "Bearer ***" in results["leaky"].error  # redacted where the key was
    assert_no_key(repr(final.get("aggregate_error")), "the aggregate error")
    # Lifecycle events, the retrying ones with errors included.
    assert any(e["status"] == "retrying" and "leaky" == e["subtask"] for e in events)
    assert_no_key(repr(events), "lifecycle events")
    # Every checkpoint of the thread.
    tuples = list(saver.list(config))
    assert tuples and "REJECT-ME" in repr(tuples)  # errors are in there, redacted
    for checkpoint in tuples:
        assert_no_key(repr(checkpoint), "an in-memory checkpoint")
    state = await graph.aget_state(config)
    assert_no_key(repr(state), "the thread state")
    # Log records at DEBUG from every logger, arguments and tracebacks included.
    assert caplog.records
    assert_no_key(caplog.text, "the logs")
    for record in caplog.records:
        assert_no_key(record.getMessage(), f"log record {record.name}")
        assert_no_key(repr(record.args), f"log record arguments of {record.name}")


async def test_key_never_reaches_a_sqlite_checkpoint_file(
    server: SimServer, leaky_kind: str, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.db"
    async with open_checkpointer(str(path)) as saver:
        graph = graph_for(server, leaky_kind, checkpointer=saver)
        state = await graph.ainvoke({"inputs": {}}, {"configurable": {"thread_id": "t1"}})
    assert_expected_outcomes(state["results"])

    files = sorted(tmp_path.glob("checkpoints.db*"))  # the database and any WAL left over
    data = b"".join(f.read_bytes() for f in files)
    assert b"REJECT-ME" in data and b"LeakyTransportError" in data  # stored in plain bytes
    assert KEY.encode() not in data
    assert b"SECRET-123456789" not in data
    assert KEY.encode("utf-16-le") not in data


# -- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["text", "json"])
def test_key_never_reaches_cli_output_or_its_checkpoint(
    server: SimServer, leaky_kind: str, tmp_path: Path, output: str
) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan_dict(leaky_kind)), encoding="utf-8")
    checkpoint = tmp_path / "runs.db"
    env = {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": server.base_url,
        "FANFOLD_HOME": str(tmp_path / "home"),
    }
    args = ["run", str(plan_path), "--model", "openai:sim-model", "--max-attempts", "2"]
    args += ["--checkpoint", str(checkpoint)]
    if output == "json":
        args.append("--json")
    result = CliRunner(env=env).invoke(app, args, catch_exceptions=False)

    assert result.exit_code == 3, result.output  # finished, with failed subtasks
    text = result.output + result.stderr
    assert "REJECT-ME" in text and "LeakyTransportError" in text
    assert_no_key(text, "CLI output")
    if output == "json":
        payload = json.loads(result.stdout)
        assert payload["results"]["fine"]["status"] == "succeeded"
        assert payload["results"]["leaky"]["status"] == "failed"
    data = b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())
    assert KEY.encode() not in data, "the API key leaked into a file the CLI wrote"
    assert os.environ.get("OPENAI_API_KEY") != KEY  # CliRunner restored the environment


# -- redact ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {KEY} here", "key *** here"),
        ("Authorization: Bearer abc.DEF-123_456", "Authorization: Bearer ***"),
        ("authorization: bearer abcdefgh", "authorization: bearer ***"),
        ("api_key=abcdefgh123 next", "api_key=*** next"),
        ("{'api_key': 'abcdefgh123'}", "{'api_key': '***'}"),
        ('{"api-key": "abcdefgh123", "n": 1}', '{"api-key": "***", "n": 1}'),
        ("x-api-key: abcdefgh123", "x-api-key: ***"),
        ("sk-proj-Ab_cd-EF12 and sk-ant-api03-xyzxyz", "*** and ***"),
        ("Authorization: Basic YWxpY2U6aHVudGVyMnB3", "Authorization: Basic ***"),
        ("{'authorization': 'basic dTpw'}", "{'authorization': 'basic ***'}"),
        ("GET http://alice:hunter2pw@gw.local/v1/x", "GET http://alice:***@gw.local/v1/x"),
        (
            "at postgresql://u:p@127.0.0.1:1/db: port 1",
            "at postgresql://u:***@127.0.0.1:1/db: port 1",
        ),
        ("dsn password=s3cret host=h", "dsn password=*** host=h"),
    ],
)
def test_redact_replaces_keys_and_tokens(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "nothing secret here",
        "",
        "risk-taking and task-based work",  # 'sk-' inside a word is not a key
        "Bearer ab",  # too short to be a token
        "api_key=short",
        "the key was sk-12",
        "a basic example, basic abcdefgh",  # not base64 of user:password
        "GET http://gw.local:8080/v1/x and http://user@host/v1",  # a port, a user alone
        "password authentication failed for user 'u'",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_removes_values_of_key_like_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "plainvalue-0123456789")
    monkeypatch.setenv("SERVICE_TOKEN", "tok_ABCDEFGH")
    monkeypatch.setenv("SHORT_SECRET", "abc123")  # under 8 characters: left alone
    monkeypatch.setenv("HOSTNAME_FOR_TEST", "plainhost-0123456789")  # not a key name
    text = "a plainvalue-0123456789 b tok_ABCDEFGH c abc123 d plainhost-0123456789"
    assert redact(text) == "a *** b *** c abc123 d plainhost-0123456789"


def test_describe_error_names_the_type_and_redacts_the_message() -> None:
    exc = LeakyTransportError(f"failed:\n  headers {{'Authorization': 'Bearer {KEY}'}}")
    described = describe_error(exc)
    assert described == "LeakyTransportError: failed: headers {'Authorization': 'Bearer ***'}"
    assert describe_error(RuntimeError()) == "RuntimeError: RuntimeError()"


@pytest.mark.parametrize(
    ("url", "masked", "stripped"),
    [
        (
            "postgresql://u:p@127.0.0.1:1/db",
            "postgresql://u:***@127.0.0.1:1/db",
            "postgresql://u@127.0.0.1:1/db",
        ),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
            "postgresql://u@h/db?sslmode=require",
        ),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("runs.db", "runs.db", "runs.db"),
    ],
)
def test_database_urls_are_masked_and_stripped_by_parsing(
    url: str, masked: str, stripped: str
) -> None:
    assert mask_url(url) == masked
    assert strip_password(url) == stripped


def test_a_short_database_password_is_masked_only_in_the_url(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text("task: t\nsubtasks:\n  - {id: a, prompt: x}\n", encoding="utf-8")
    target = "postgresql://u:p@127.0.0.1:1/db"
    args = ["run", str(plan_path), "-m", "simulated", "--shared-limits", target]
    result = CliRunner(env={"FANFOLD_HOME": str(tmp_path)}).invoke(app, args)

    assert result.exit_code == 1, result.output
    assert "postgresql://u:***@127.0.0.1:1/db" in result.stderr
    # Every other "p" is kept: "port 1 failed", "accepting TCP/IP".
    assert "port 1 failed" in result.stderr and "accepting TCP/IP" in result.stderr
    assert "u:p@" not in result.stderr


async def leaky_basic_auth(call: SubtaskCall) -> str:
    """Fails like a gateway client that echoes its base URL and Basic auth header."""
    assert call.model is not None
    base = call.model.openai_api_base  # type: ignore[attr-defined]
    basic = base64.b64encode(b"alice:hunter2pw").decode()
    raise LeakyTransportError(
        f"POST {base}/chat/completions failed; headers={{'Authorization': 'Basic {basic}'}}"
    )


def test_basic_auth_credentials_never_reach_output_events_report_or_checkpoint(
    tmp_path: Path,
) -> None:
    node_kinds.register("leaky_basic", leaky_basic_auth, needs_model=True, replace=True)
    try:
        plan = {
            "task": "Keep the password secret",
            "subtasks": [{"id": "leaky", "prompt": "call out", "kind": "leaky_basic"}],
        }
        plan_path = tmp_path / "plan.yaml"
        plan_path.write_text(yaml.safe_dump(plan), encoding="utf-8")
        out = tmp_path / "out"
        out.mkdir()
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": "http://alice:hunter2pw@127.0.0.1:9/v1",
            "FANFOLD_HOME": str(out / "home"),
        }
        args = ["run", str(plan_path), "--model", "openai:sim-model", "--max-attempts", "1"]
        args += ["--checkpoint", str(out / "runs.db"), "--events", str(out / "events.jsonl")]
        args += ["--report", str(out / "report.html"), "--json"]
        result = CliRunner(env=env).invoke(app, args, catch_exceptions=False)
    finally:
        node_kinds.unregister("leaky_basic")

    assert result.exit_code == 3, result.output
    error = json.loads(result.stdout)["results"]["leaky"]["error"]
    assert "http://alice:***@127.0.0.1:9/v1" in error and "'Basic ***'" in error
    basic = base64.b64encode(b"alice:hunter2pw")
    text = (result.output + result.stderr).encode()
    files = {f.name: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    assert {"runs.db", "events.jsonl", "report.html"} <= set(files)
    assert b"LeakyTransportError" in files["events.jsonl"]  # the error is there, redacted
    for where, data in {"output": text, **files}.items():
        assert b"hunter2pw" not in data, f"the password leaked into {where}"
        assert basic not in data, f"the Basic credentials leaked into {where}"
