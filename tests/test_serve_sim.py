"""`fanfold serve-sim` for users: every knob an option, /stats, a summary on exit, plans."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fanfold.cli import app
from fanfold.models.simulated import PLAN_PREFIX
from fanfold.testing import SimServer, SimServerConfig

# One non-default value per SimServerConfig field, and the options that give it.
OPTIONS: dict[str, tuple[list[str], Any]] = {
    "latency": (["--latency", "0.2"], 0.2),
    "latency_median": (["--latency-median", "0.3"], 0.3),
    "latency_sigma": (["--latency-sigma", "0.1"], 0.1),
    "token_delay": (["--token-delay", "0.01"], 0.01),
    "seed": (["--seed", "7"], 7),
    "rate_limit_rps": (["--rps", "5"], 5.0),
    "rate_limit_burst": (["--burst", "2"], 2.0),
    "rate_limit_concurrency": (["--concurrency", "3"], 3),
    "retry_after_ms": (["--retry-after-ms", "250"], 250),
    "retry_after_header": (["--retry-after-header", "soon"], "soon"),
    "retry_after_hints": (["--no-retry-after-hints"], False),
    "error_500_rate": (["--error-rate", "0.1"], 0.1),
    "error_503_rate": (["--error-503-rate", "0.1"], 0.1),
    "stall_rate": (["--stall-rate", "0.1"], 0.1),
    "stall_seconds": (["--stall-seconds", "2"], 2.0),
    "drop_rate": (["--drop-rate", "0.1"], 0.1),
    "malformed_rate": (["--malformed-rate", "0.1"], 0.1),
    "fail_prompts": (
        ["--fail-prompt", "BAD=418", "--fail-prompt", "a=b=503"],
        {"BAD": 418, "a=b": 503},
    ),
    "fault_first_attempts_only": (["--fault-first-attempts-only"], True),
    "api_key": (["--api-key", "sk-sim"], "sk-sim"),
    "finish_prompts": (["--finish-prompt", "CUT=length"], {"CUT": "length"}),
    "reply_tokens": (["--reply-tokens", "5"], 5),
    "scripted": (["--scripted", 'PICK={"a": "x=y"}'], {"PICK": {"a": "x=y"}}),
    "scripted_form": (["--scripted-form", "text"], "text"),
    "plans": (["--plans"], True),
    "rate_limit_headers": (
        ["--rate-limit-header", "llm_provider-retry-after=60"],
        {"llm_provider-retry-after": "60"},
    ),
    "reply_headers": (
        ["--reply-header", "x-litellm-response-cost=0.5"],
        {"x-litellm-response-cost": "0.5"},
    ),
}


def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_every_sim_server_setting_has_a_serve_sim_option_that_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert set(OPTIONS) == set(SimServerConfig.model_fields), "a field has no option here"
    served: list[SimServerConfig] = []
    # Record the configuration the command starts its (real) server with, then return
    # instead of serving until Ctrl-C.
    monkeypatch.setattr(SimServer, "serve_forever", lambda self: served.append(self.config))
    args = ["serve-sim", "--port", "0"]
    for options, _ in OPTIONS.values():
        args += options
    result = runner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (config,) = served
    defaults = SimServerConfig()
    for field, (_, value) in OPTIONS.items():
        assert getattr(config, field) == value, field
        assert getattr(defaults, field) != value, f"{field}: pick a value that is not the default"
    assert "served 0 requests" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--error-rate", "0.7", "--stall-rate", "0.7"], "fault rates sum to 1.4"),
        (["--fail-prompt", "BAD"], "--fail-prompt 'BAD': write it as TEXT=VALUE"),
        (["--fail-prompt", "BAD=oops"], "--fail-prompt 'BAD=oops'"),
        (["--fail-prompt", "BAD=42"], "fail_prompts status 42 is not an HTTP status code"),
        (["--scripted", "X={"], "--scripted 'X={'"),
        (["--rps", "0"], "--rps: Input should be greater than 0"),
    ],
)
def test_bad_serve_sim_options_are_one_line_errors_naming_the_option(
    args: list[str], message: str
) -> None:
    result = runner().invoke(app, ["serve-sim", "--port", "0", *args])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and message in line


@contextlib.contextmanager
def served(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """`fanfold serve-sim --port 0 ARGS` as a process: yields its base URL and, once the
    block ends and the process got SIGINT, the lines it wrote to stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fanfold.cli", "serve-sim", "--port", "0", *args],
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        lines.append(first)
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+/v1)", first)
        assert found, first
        yield found.group(1), lines
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        lines.extend(err.splitlines())
        assert process.returncode == 0, lines


def post(base_url: str, prompt: str, key: str = "sk-test") -> int:
    body = json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": prompt}]})
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=body.encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def get_stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as reply:
        stats: dict[str, Any] = json.load(reply)
        return stats


def test_served_stats_count_requests_statuses_and_concurrency_and_the_exit_prints_them() -> None:
    with served("--latency", "0.5", "--concurrency", "2", "--fail-prompt", "BAD=418") as (
        url,
        lines,
    ):
        assert get_stats(url) == {
            "requests": 0,
            "statuses": {},
            "tokens": 0,
            "in_flight": 0,
            "max_in_flight": 0,
        }
        statuses: list[int] = []
        threads = [
            threading.Thread(target=lambda i=i: statuses.append(post(url, f"hello {i}")))
            for i in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert post(url, "a BAD one") == 418
        stats = get_stats(url)
    assert sorted(statuses) == [200, 200, 429]
    assert stats["requests"] == 4
    assert stats["statuses"] == {"200": 2, "418": 1, "429": 1}
    assert stats["max_in_flight"] == 3 and stats["in_flight"] == 0
    assert stats["tokens"] > 0
    summary = lines[-1]
    assert summary.startswith("served 4 requests (200: 2, 418: 1, 429: 1), ")
    assert summary.endswith("tokens, at most 3 in flight")


def test_fanfold_plan_and_run_goal_work_against_serve_sim_with_plans(tmp_path: Path) -> None:
    goal = "Compare {two} heat pumps for a cold climate"
    with served("--latency", "0", "--plans") as (url, lines):
        env = {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-loopback-only"}
        model = ["-m", "openai:sim-model"]
        planned = CliRunner(env=env).invoke(
            app, ["plan", goal, *model, "-i", "budget=the budget", "-o", str(tmp_path / "p.yaml")]
        )
        assert planned.exit_code == 0, planned.output
        plan = yaml.safe_load((tmp_path / "p.yaml").read_text())
        assert plan["task"] == f"{PLAN_PREFIX} {goal.replace('{', '{{').replace('}', '}}')}"
        assert all("{budget}" in s["prompt"] for s in plan["subtasks"][:-1])
        ran = CliRunner(env=env).invoke(
            app, ["run", str(tmp_path / "p.yaml"), *model, "-i", "budget=100", "--json"]
        )
        assert ran.exit_code == 0, ran.output
        goal_run = CliRunner(env=env).invoke(app, ["run", "--goal", goal, *model, "--json"])
        assert goal_run.exit_code == 0, goal_run.output
        stats = get_stats(url)
    record = json.loads(goal_run.stdout)
    assert [s for s in record["subtasks"] if s["status"] != "succeeded"] == []
    # One planner request each for `plan` and `run --goal`; each run: one request per
    # subtask and one for the aggregate.
    runs = len(plan["subtasks"]) + 1 + len(record["subtasks"]) + 1
    assert stats["statuses"] == {"200": 2 + runs}
    assert "served" in lines[-1]


def test_without_plans_a_planner_request_gets_a_sampled_reply_that_is_no_plan(
    tmp_path: Path,
) -> None:
    with SimServer(SimServerConfig()) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-loopback-only"}
        result = CliRunner(env=env).invoke(
            app, ["plan", "A goal", "-m", "openai:sim-model", "--attempts", "1"]
        )
        assert result.exit_code == 1
        assert PLAN_PREFIX not in result.output
        server.update(plans=True)
        result = CliRunner(env=env).invoke(
            app, ["plan", "A goal", "-m", "openai:sim-model", "--attempts", "1"]
        )
        assert result.exit_code == 0, result.output
        assert PLAN_PREFIX in result.output
