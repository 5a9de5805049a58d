"""Imports point one way: plan -> state -> scheduling -> nodes -> graphs -> views -> runs
-> entry points -> CLI, checked on the real import graph by import-linter (the contracts
are in pyproject.toml; `.ci/run` runs `lint-imports` too).

Plan, state and scheduling need no LangGraph, and no module uses LangGraph's private
`_internal` package.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "fanfold"


def contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found: list[dict] = config["tool"]["importlinter"]["contracts"]
    return found


def test_import_linter_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(contracts())} kept, 0 broken" in done.stdout


def test_every_top_level_module_is_placed_in_a_layer_or_among_the_helpers():
    named: set[str] = set()
    for contract in contracts():
        for entry in [*contract.get("layers", []), *contract.get("source_modules", [])]:
            named.update(part.strip() for part in re.split(r"[|:]", entry))
    helpers_of_langgraph = {"fanfold._langgraph"}  # the contract module, used by graphs/nodes
    tops = {
        f"fanfold.{path.stem if path.is_file() else path.name}"
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").is_file())
    }
    assert tops - named - helpers_of_langgraph == set()


def test_no_module_imports_langgraph_internals():
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import)\s+langgraph\._internal", text, re.M), path


def test_only_the_contract_module_names_pregel_configurable_keys():
    # LangGraph's private config keys appear in exactly one module, next to their tests.
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_langgraph.py":
            continue
        assert "__pregel_" not in path.read_text(encoding="utf-8"), path.relative_to(PACKAGE)


def test_the_plan_checks_and_plan_models_form_no_cycle():
    text = (PACKAGE / "plan" / "graph_checks.py").read_text(encoding="utf-8")
    assert "fanfold.plan.models" not in text
