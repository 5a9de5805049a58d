"""`estimate_plan` with the process-wide node kinds: what a run will cost before it runs."""

from __future__ import annotations

from typing import Any

from fanfold.graphs.compiled import CompiledPlanGraph
from fanfold.nodes.registry import NodeKindRegistry, node_kinds
from fanfold.scheduling.estimate import estimate_plan as _estimate
from fanfold.scheduling.estimate_models import PlanEstimate


def estimate_plan(
    plan: Any, inputs: Any = None, *, kinds: NodeKindRegistry | None = None, **options: Any
) -> PlanEstimate:
    """Estimate a run of `plan` before it runs: calls, tokens, cost and wall time.

    No model is called or resolved. See `fanfold.scheduling.estimate.estimate_plan` for the
    options (model, aggregator, prices, durations, max_concurrency, defaults).

    Args:
        kinds: the node-kind registry that says which kinds call a model (default: the
            process-wide `fanfold.node_kinds`).
    """
    if isinstance(plan, CompiledPlanGraph) and plan.fanfold_runtime is not None:
        plan = plan.fanfold_runtime  # its resolved models are then used
    return _estimate(plan, inputs, kinds=kinds or node_kinds, **options)
