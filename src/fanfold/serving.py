"""The graphs `langgraph.json` serves on LangGraph Server (`langgraph dev`, `langgraph up`).

    research             examples/research.yaml
    document_analysis    examples/document_analysis/plan.yaml
    data_processing      examples/data_processing/plan.yaml
    content_generation   examples/content_generation/plan.yaml
    plan_or_goal         `compile_goal`: input {"goal": ...} or {"plan": ...}, plus "inputs"

A run's input holds only `inputs` (and `goal` or `plan` for plan_or_goal); a client
cannot write results, output or totals.

Every graph is compiled once, when the server imports this module, without a
checkpointer: the server gives each run its own (in memory for `langgraph dev`,
PostgreSQL for `langgraph up` and deployments).

Environment:
    FANFOLD_MODEL: the chat model of every subtask, the aggregate and the planner, as
        `--model` takes it ("simulated", "openai:gpt-4o-mini", "anthropic:...");
        default "simulated", so the served graphs run offline out of the box. A real
        provider reads its own key and URL variables (OPENAI_API_KEY, OPENAI_BASE_URL).
    FANFOLD_ALLOWED_MODELS: more models, comma-separated, that a plan sent to
        plan_or_goal may name (`model:` of a subtask or the aggregation). Without it, a
        plan may name only FANFOLD_MODEL; any other model, or model settings, fails the
        run with `ModelNotAllowedError` before any call, so clients never choose what
        the operator's key pays for.
    FANFOLD_EXAMPLES_DIR: the folder of the example plans; default the copy that ships
        inside the package (`fanfold/_examples`, the repository's `examples/`), so the
        graphs load from a wheel as from a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from fanfold.errors import PlanFileError
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.compiled import CompiledPlanGraph
from fanfold.graphs.goal import CompiledGoalGraph, compile_goal
from fanfold.models.resolve import SIMULATED

__all__ = [
    "ALLOWED_MODELS",
    "MODEL",
    "RECIPES",
    "content_generation",
    "data_processing",
    "document_analysis",
    "plan_or_goal",
    "research",
]

MODEL = os.environ.get("FANFOLD_MODEL", "").strip() or SIMULATED
"""The model every served graph uses (env FANFOLD_MODEL, default "simulated")."""

ALLOWED_MODELS = frozenset(
    {MODEL, *(m.strip() for m in os.environ.get("FANFOLD_ALLOWED_MODELS", "").split(","))} - {""}
)
"""The models a client's plan may name: FANFOLD_MODEL and FANFOLD_ALLOWED_MODELS."""

EXAMPLES = Path(os.environ.get("FANFOLD_EXAMPLES_DIR") or Path(__file__).parent / "_examples")

RECIPES = {
    "research": "research.yaml",
    "document_analysis": "document_analysis/plan.yaml",
    "data_processing": "data_processing/plan.yaml",
    "content_generation": "content_generation/plan.yaml",
}
"""Served graph name -> its plan file under the examples folder."""


def _recipe(name: str) -> CompiledPlanGraph:
    path = EXAMPLES / RECIPES[name]
    if not path.is_file():
        raise PlanFileError(
            f"the plan of the served graph {name!r} is not at {path}; set "
            "FANFOLD_EXAMPLES_DIR to the folder that holds fanfold's examples",
            path=str(path),
        )
    return compile_plan(path, model=MODEL, name=name, input_interface="server")


research = _recipe("research")
document_analysis = _recipe("document_analysis")
data_processing = _recipe("data_processing")
content_generation = _recipe("content_generation")
plan_or_goal: CompiledGoalGraph = compile_goal(
    model=MODEL, name="plan_or_goal", input_interface="server", allowed_models=ALLOWED_MODELS
)
