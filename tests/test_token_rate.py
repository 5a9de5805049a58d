"""`fanfold run --tpm`: a known tokens-per-minute limit paces the calls."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fanfold.cli import app
from fanfold.testing import SimServer, SimServerConfig

REPLY = 1000
"""Reply tokens each call reserves (its expected_output_tokens); prompts add a few dozen."""


def two_calls(tmp_path: Path) -> Path:
    plan = {
        "task": "Two calls",
        "subtasks": [
            {"id": sid, "prompt": f"Say {sid}", "expected_output_tokens": REPLY}
            for sid in ("a", "b")
        ],
        "aggregation": {"enabled": False},
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def arrival_gap(tmp_path: Path, *args: str) -> float:
    with SimServer(SimServerConfig()) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-loopback-only"}
        result = CliRunner(env=env).invoke(
            app, ["run", str(two_calls(tmp_path)), "-m", "openai:sim-model", "--json", *args]
        )
        assert result.exit_code == 0, result.output
        first, second = server.log
    return second.time - first.time


def test_tpm_holds_the_second_call_until_the_minute_has_tokens_for_it(tmp_path: Path) -> None:
    # A budget just short of two calls: the first starts at once, the second waits for
    # its last few dozen tokens to refill at tpm/60 per second, about 1.5-4.5 s.
    budget = 2 * REPLY * 0.98
    held = arrival_gap(tmp_path, "--no-cache", "--tpm", str(budget))
    assert 0.7 <= held <= 20
    free = arrival_gap(tmp_path, "--no-cache")
    assert free < held


def test_tpm_below_one_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(two_calls(tmp_path)), "--tpm", "0"])
    assert result.exit_code == 1
    assert "--tpm" in result.output
