"""The README's Python examples run as written, and what it promises about options holds."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from fanfold import CompiledPlanGraph, compile_plan, node_kinds
from fanfold.report import run_report, write_run_report

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_blocks(text: str) -> list[str]:
    """Every ```python block of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def readme_block(marker: str) -> str:
    """The one README python block that contains `marker`."""
    (block,) = [b for b in python_blocks(README) if marker in b]
    return block


def run_block(code: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Execute a README block from the repository root (its paths are relative to it)."""
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_the_python_api_example_runs_offline(monkeypatch, capsys):
    namespace = run_block(readme_block("graph = compile_plan(plan, model="), monkeypatch)
    assert set(namespace["state"]["results"]) == {"market", "rivals", "pitch"}
    assert "pitch succeeded" in capsys.readouterr().out


def test_the_lcel_example_streams_the_same_output_as_ainvoke(monkeypatch):
    namespace = run_block(readme_block("itemgetter"), monkeypatch)
    brief = namespace["brief"]
    assert isinstance(brief, str) and "tidal power" in brief


def test_the_lcel_example_explains_why_updates_mode_fails(monkeypatch):
    """The README's reason is true: streamed in "updates" mode, the next step fails."""
    namespace = run_block(readme_block("itemgetter"), monkeypatch)
    plain = namespace["graph"] | namespace["itemgetter"]("output")

    async def stream_plain() -> None:
        async for _ in plain.astream({"inputs": {"topic": "tidal power"}}):
            pass

    with pytest.raises(KeyError, match="output"):
        namespace["asyncio"].run(stream_plain())


def test_the_provider_example_builds_its_models_offline(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-a-real-key")
    code = readme_block('init_chat_model("anthropic:')
    has_anthropic = importlib.util.find_spec("langchain_anthropic") is not None
    if not has_anthropic:
        # Without the extra, build the rest: the local model and the graph.
        code, replaced = re.subn(r"claude = init_chat_model\(.*?\)\n", "claude = None\n", code)
        assert replaced == 1
    namespace = run_block(code, monkeypatch)
    local = namespace["local"]
    assert isinstance(local, ChatOpenAI)
    assert local.openai_api_base == "http://127.0.0.1:8000/v1"
    assert local.max_retries == 0
    graph = namespace["graph"]
    assert isinstance(graph, CompiledPlanGraph)
    runtime = graph.fanfold_runtime
    assert runtime is not None
    assert all(model is local for model in runtime.models.values())
    if has_anthropic:
        assert type(runtime.aggregate_model).__name__ == "ChatAnthropic"


def test_the_anthropic_extra_the_readme_names_installs_its_langchain_package():
    assert 'pip install -e ".[anthropic]"' in README
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("langchain-anthropic") for req in extras["anthropic"])


def test_the_readme_shows_the_example_kind_as_it_is_in_the_file():
    path = ROOT / "examples" / "custom_kind" / "web_api.py"
    source = path.read_text(encoding="utf-8")
    (function,) = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "http_json"
    ]
    lines = source.splitlines(keepends=True)[function.lineno - 1 : function.end_lineno]
    assert readme_block("async def http_json") == "".join(lines)


def test_the_readme_shout_kind_runs_on_the_prompt(monkeypatch):
    run_block(readme_block('@register_node_kind("shout"'), monkeypatch)
    try:
        plan = {"task": "t", "subtasks": [{"id": "a", "kind": "shout", "prompt": "hi {who}"}]}
        state = compile_plan(plan, aggregator=None).invoke({"inputs": {"who": "there"}})
    finally:
        node_kinds.unregister("shout")
    assert state["results"]["a"].output == "HI THERE"


def test_write_run_report_takes_exactly_run_reports_options():
    def options(function: Any) -> dict[str, Any]:
        return {
            name: param.default
            for name, param in inspect.signature(function).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY
        }

    assert options(write_run_report) == options(run_report)
    assert options(write_run_report)
    for name in options(run_report):
        assert f"`{name}`" in README[README.index("write_run_report(path") :][:600]


def test_the_langgraph_server_state_folder_is_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".langgraph_api/" in ignored
