"""Imports point one way: plan -> state -> scheduling -> nodes -> graphs -> CLI.

Scheduling (dispatcher, limits, retries, priorities) needs no LangGraph, and no module
uses LangGraph's private `_internal` package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "fanfold"
LAYERS = ["plan", "state", "scheduling", "nodes", "graphs"]
"""Lowest first: a layer may import the ones before it, never the ones after."""
ABOVE_ALL = ["cli", "pattern"]
"""Entry points built on the layers; no layer imports them."""
SIDE = ["models", "planning", "testing"]
"""Helpers any layer may use (model resolution, the planner, the test server); they
build on the plan alone."""


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules_in(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


def test_every_layer_has_modules():
    for layer in LAYERS:
        assert modules_in(layer), f"src/fanfold/{layer}/ is empty"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_never_imports_a_layer_above_it(layer):
    above = LAYERS[LAYERS.index(layer) + 1 :] + ABOVE_ALL
    for path in modules_in(layer):
        for name in imports_of(path):
            for upper in above:
                assert not name.startswith(f"fanfold.{upper}"), (
                    f"{path.relative_to(PACKAGE)} imports {name}, a layer above {layer}/"
                )


@pytest.mark.parametrize("side", SIDE)
def test_side_packages_build_on_the_plan_alone(side):
    for path in modules_in(side):
        for name in imports_of(path):
            for upper in ["scheduling", "nodes", "graphs", *ABOVE_ALL]:
                assert not name.startswith(f"fanfold.{upper}"), (
                    f"{path.relative_to(PACKAGE)} imports {name}"
                )


@pytest.mark.parametrize("layer", ["plan", "scheduling"])
def test_plan_and_scheduling_need_no_langgraph(layer):
    for path in modules_in(layer):
        for name in imports_of(path):
            assert not name.startswith("langgraph"), f"{path.relative_to(PACKAGE)} imports {name}"


def test_state_results_need_no_langgraph():
    assert not any(n.startswith("langgraph") for n in imports_of(PACKAGE / "state" / "results.py"))


def test_no_module_imports_langgraph_internals():
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in imports_of(path):
            assert not name.startswith("langgraph._internal"), path.relative_to(PACKAGE)


def test_only_the_contract_module_names_pregel_configurable_keys():
    # LangGraph's private config keys appear in exactly one module, next to their tests.
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_langgraph.py":
            continue
        assert "__pregel_" not in path.read_text(encoding="utf-8"), path.relative_to(PACKAGE)


def test_the_plan_checks_and_plan_models_form_no_cycle():
    assert not any(
        n.startswith("fanfold.plan.models")
        for n in imports_of(PACKAGE / "plan" / "graph_checks.py")
    )
