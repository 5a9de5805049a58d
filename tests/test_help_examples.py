"""Every example in every command's `--help` runs, offline, and exits 0.

The examples of a command run in order in one temporary folder (so `fanfold plan ... -o
brief.yaml` then `fanfold run brief.yaml` works as a user would type it), with:

- `plan.yaml`, `notes.txt` and `prices.yaml` there, and `examples/` linked in;
- the default model (`openai:gpt-4o-mini`) answered by fanfold's simulated
  OpenAI-compatible server on loopback (`OPENAI_BASE_URL`), so nothing leaves the machine;
- `RUN_ID` replaced by the id of a checkpointed run, and `fanfold serve-sim` started as a
  process on a free port (the port in its examples replaced by that one) and stopped after.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanfold.cli import app
from fanfold.testing import SimServer, SimServerConfig

ROOT = Path(__file__).resolve().parent.parent
PLAN = """\
task: Write a short brief on {topic}.
inputs:
  topic: home batteries
  notes: {description: "Notes to take into account.", default: none}
  items: {description: "Aspects to cover, one call each.", default: [price, safety]}
subtasks:
  - id: facts
    prompt: "Facts about {topic}. Notes: {notes}"
  - id: aspects
    map: items
    prompt: "The {item} of {topic}."
  - id: brief
    depends_on: [facts, aspects]
    prompt: "Write the brief from {facts} and {aspects}."
"""
PRICES = "gpt-4o-mini: {input: 0.15, output: 0.60}\nsim-model: {input: 0, output: 0}\n"


def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def commands() -> list[str]:
    help_text = runner().invoke(app, ["--help"]).output
    listed = help_text.split("Commands:", 1)[1]
    return re.findall(r"^\s{2}([a-z][a-z-]*)\s", listed, flags=re.MULTILINE)


def help_examples(command: str) -> list[str]:
    """The example lines under "Examples:" in `fanfold COMMAND --help`, comments removed."""
    result = runner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    if "Examples:" not in result.output:
        return []
    block = result.output.split("Examples:", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if not line.strip():
            break
        lines.append(re.sub(r"\s+#.*$", "", line.strip()))
    return lines


COMMANDS = commands()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_sim(args: list[str], env: dict[str, str]) -> Iterator[None]:
    """Run `fanfold serve-sim ARGS` as a process until the block ends."""
    port = args[args.index("--port") + 1]
    process = subprocess.Popen(
        [sys.executable, "-m", "fanfold.cli", "serve-sim", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "fanfold serve-sim exited"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, "fanfold serve-sim did not start"
                time.sleep(0.1)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def split_env(line: str) -> tuple[dict[str, str], list[str]]:
    """`A=1 fanfold cmd args` -> ({"A": "1"}, ["cmd", "args"])."""
    words = shlex.split(line)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[:1] == ["fanfold"], f"an example must run fanfold: {line!r}"
    return env, words[1:]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / "plan.yaml").write_text(PLAN)
    (folder / "notes.txt").write_text("Keep it under a page.\n")
    (folder / "prices.yaml").write_text(PRICES)
    monkeypatch.chdir(folder)
    with SimServer(SimServerConfig(latency=0.001)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback-only")
        yield folder


def test_every_command_has_examples_in_its_help():
    assert {"run", "plan", "resume", "estimate", "show", "serve-sim"} <= set(COMMANDS)
    assert all(help_examples(command) for command in COMMANDS)


@pytest.mark.parametrize(
    "command",
    [
        # serve-sim's examples start a server process
        pytest.param(c, marks=pytest.mark.slow) if c == "serve-sim" else c
        for c in COMMANDS
    ],
)
def test_every_example_in_the_help_runs_offline(command: str, workdir: Path):
    lines = help_examples(command)
    if any("RUN_ID" in line for line in lines):
        setup = runner().invoke(app, ["run", "plan.yaml", "--checkpoint", "runs.db", "--quiet"])
        assert setup.exit_code == 0, setup.output
        run_id = re.search(r"run id:? (\S+)", setup.output + str(setup.stderr_bytes or b""))
        assert run_id is not None, setup.output
        lines = [line.replace("RUN_ID", run_id.group(1)) for line in lines]
    port = str(free_port())
    lines = [line.replace("8000", port) for line in lines]
    with contextlib.ExitStack() as stack:
        for line in lines:
            env, args = split_env(line)
            if args[0] == "serve-sim":
                stack.enter_context(serve_sim(args[1:], env))
                continue
            result = runner().invoke(app, args, env=env)
            assert result.exit_code == 0, f"{line}\n{result.output}"


def show(plan: str, fmt: str) -> str:
    result = runner().invoke(app, ["show", str(ROOT / "examples" / plan), "--format", fmt])
    assert result.exit_code == 0, result.output
    return result.output


def test_show_help_promises_joins_maps_and_the_critical_path_only_where_they_are_drawn():
    help_text = runner().invoke(app, ["show", "--help"]).output
    formats = help_text.split("Formats:", 1)[1].split("Examples:", 1)[0]
    plain, drawn = formats.split("dot ", 1)
    assert "critical path" not in plain and "plain" in plain
    assert all(word in drawn for word in ("left to right", "join", "critical path", "stacked"))

    dot = show("research.yaml", "dot")
    assert 'rankdir="LR"' in dot and '"__join__' in dot and 'class="critical"' in dot
    assert 'shape="box3d"' in show("document_analysis/plan.yaml", "dot")  # a map: stacked
    for fmt in ("mermaid", "ascii"):
        text = show("research.yaml", fmt) + show("document_analysis/plan.yaml", fmt)
        assert not any(mark in text for mark in ("critical", "__join__", "box3d", "stacked"))
