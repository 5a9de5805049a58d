"""fanfold: compile LLM subtask plans into greedy, resumable LangGraph StateGraphs.

Import everything from here; the submodules are private. Names load on first use, so
`import fanfold` (and the command line's --version and --help) stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AggregationSettings": "fanfold.plan",
    "BatchNotSupportedError": "fanfold.errors",
    "BatchOptions": "fanfold.scheduling.batches",
    "BudgetError": "fanfold.errors",
    "CacheError": "fanfold.scheduling.cache",
    "CallEstimate": "fanfold.scheduling.costs",
    "CheckpointStoreError": "fanfold.errors",
    "CompiledPlanGraph": "fanfold.graphs",
    "DEFAULT_MODEL": "fanfold.models",
    "DEFAULT_PRICES": "fanfold.scheduling.costs",
    "DependencyCycleError": "fanfold.errors",
    "DrawingError": "fanfold.errors",
    "DuplicateSubtaskError": "fanfold.errors",
    "DurationStore": "fanfold.scheduling",
    "DurationStoreError": "fanfold.errors",
    "EVENT_TYPE": "fanfold.scheduling",
    "EmptyPlanError": "fanfold.errors",
    "EventsFileError": "fanfold.errors",
    "FanfoldError": "fanfold.errors",
    "GoalRun": "fanfold.runs",
    "GraphvizNotFoundError": "fanfold.errors",
    "InputSpec": "fanfold.plan",
    "InvalidMapError": "fanfold.errors",
    "InvalidOptionsError": "fanfold.errors",
    "InvalidOutputSchemaError": "fanfold.errors",
    "InvalidSubtaskIdError": "fanfold.errors",
    "KindOutput": "fanfold.nodes",
    "MapInputError": "fanfold.errors",
    "MissingCredentialsError": "fanfold.errors",
    "MissingInputError": "fanfold.errors",
    "ModelNotAllowedError": "fanfold.errors",
    "ModelResolutionError": "fanfold.errors",
    "ModelSpec": "fanfold.plan",
    "NodeKind": "fanfold.nodes",
    "NodeKindRegistry": "fanfold.nodes",
    "PlanError": "fanfold.errors",
    "PlanEstimate": "fanfold.scheduling.costs",
    "PlanFileError": "fanfold.errors",
    "PlanRun": "fanfold.runs",
    "PlanState": "fanfold.graphs.schema",
    "PlanValidationError": "fanfold.errors",
    "PlannerError": "fanfold.planning",
    "Price": "fanfold.scheduling.costs",
    "PriceError": "fanfold.scheduling.costs",
    "PriceTable": "fanfold.scheduling.costs",
    "ProviderError": "fanfold.errors",
    "RateLimiter": "fanfold.scheduling",
    "ResultCache": "fanfold.scheduling.cache",
    "RetryPolicy": "fanfold.scheduling",
    "RunNotFoundError": "fanfold.errors",
    "RunState": "fanfold.runs",
    "RunTotals": "fanfold.state",
    "SelfDependencyError": "fanfold.errors",
    "SharedLimitsError": "fanfold.scheduling.shared_limits",
    "SharedRateLimiter": "fanfold.scheduling.shared_limits",
    "SimulatedChatModel": "fanfold.models.simulated",
    "StoreError": "fanfold.errors",
    "SubTask": "fanfold.plan",
    "SubtaskCall": "fanfold.nodes",
    "SubtaskResult": "fanfold.state",
    "TaskPlan": "fanfold.plan",
    "TokenUsage": "fanfold.state",
    "UndeclaredDependencyError": "fanfold.errors",
    "UnknownDependencyError": "fanfold.errors",
    "UnknownInputError": "fanfold.errors",
    "UnknownKindError": "fanfold.errors",
    "UnknownModelSettingError": "fanfold.errors",
    "UnknownPriceError": "fanfold.scheduling.costs",
    "aget_run": "fanfold.runs",
    "amake_plan": "fanfold.planning",
    "aopen_run": "fanfold.runs",
    "aresume_run": "fanfold.runs",
    "arun_plan": "fanfold.runs",
    "compile_goal": "fanfold.graphs.goal",
    "compile_plan": "fanfold.graphs",
    "default_cache_path": "fanfold.scheduling.cache",
    "estimate_plan": "fanfold.graphs.estimate",
    "get_run": "fanfold.runs",
    "load_prices": "fanfold.scheduling.costs",
    "make_plan": "fanfold.planning",
    "node_kinds": "fanfold.nodes",
    "open_run": "fanfold.runs",
    "parallel_process": "fanfold.pattern",
    "plan_to_yaml": "fanfold.planning",
    "register_node_kind": "fanfold.nodes",
    "resolve_model": "fanfold.models",
    "resume_run": "fanfold.runs",
    "run_plan": "fanfold.runs",
    "start_goal_run": "fanfold.runs",
    "start_run": "fanfold.runs",
}
"""Public name -> the module that defines it."""

__all__ = [
    "AggregationSettings",
    "BatchNotSupportedError",
    "BatchOptions",
    "BudgetError",
    "CacheError",
    "CallEstimate",
    "CheckpointStoreError",
    "CompiledPlanGraph",
    "DEFAULT_MODEL",
    "DEFAULT_PRICES",
    "DependencyCycleError",
    "DrawingError",
    "DuplicateSubtaskError",
    "DurationStore",
    "DurationStoreError",
    "EVENT_TYPE",
    "EmptyPlanError",
    "EventsFileError",
    "FanfoldError",
    "GoalRun",
    "GraphvizNotFoundError",
    "InputSpec",
    "InvalidMapError",
    "InvalidOptionsError",
    "InvalidOutputSchemaError",
    "InvalidSubtaskIdError",
    "KindOutput",
    "MapInputError",
    "MissingCredentialsError",
    "MissingInputError",
    "ModelNotAllowedError",
    "ModelResolutionError",
    "ModelSpec",
    "NodeKind",
    "NodeKindRegistry",
    "PlanError",
    "PlanEstimate",
    "PlanFileError",
    "PlanRun",
    "PlanState",
    "PlanValidationError",
    "PlannerError",
    "Price",
    "PriceError",
    "PriceTable",
    "ProviderError",
    "RateLimiter",
    "ResultCache",
    "RetryPolicy",
    "RunNotFoundError",
    "RunState",
    "RunTotals",
    "SelfDependencyError",
    "SharedLimitsError",
    "SharedRateLimiter",
    "SimulatedChatModel",
    "StoreError",
    "SubTask",
    "SubtaskCall",
    "SubtaskResult",
    "TaskPlan",
    "TokenUsage",
    "UndeclaredDependencyError",
    "UnknownDependencyError",
    "UnknownInputError",
    "UnknownKindError",
    "UnknownModelSettingError",
    "UnknownPriceError",
    "__version__",
    "aget_run",
    "amake_plan",
    "aopen_run",
    "aresume_run",
    "arun_plan",
    "compile_goal",
    "compile_plan",
    "default_cache_path",
    "estimate_plan",
    "get_run",
    "load_prices",
    "make_plan",
    "node_kinds",
    "open_run",
    "parallel_process",
    "plan_to_yaml",
    "register_node_kind",
    "resolve_model",
    "resume_run",
    "run_plan",
    "start_goal_run",
    "start_run",
]

if TYPE_CHECKING:
    from fanfold.errors import (
        BatchNotSupportedError,
        BudgetError,
        CheckpointStoreError,
        DependencyCycleError,
        DrawingError,
        DuplicateSubtaskError,
        DurationStoreError,
        EmptyPlanError,
        EventsFileError,
        FanfoldError,
        GraphvizNotFoundError,
        InvalidMapError,
        InvalidOptionsError,
        InvalidOutputSchemaError,
        InvalidSubtaskIdError,
        MapInputError,
        MissingCredentialsError,
        MissingInputError,
        ModelNotAllowedError,
        ModelResolutionError,
        PlanError,
        PlanFileError,
        PlanValidationError,
        ProviderError,
        RunNotFoundError,
        SelfDependencyError,
        StoreError,
        UndeclaredDependencyError,
        UnknownDependencyError,
        UnknownInputError,
        UnknownKindError,
        UnknownModelSettingError,
    )
    from fanfold.graphs import (
        CompiledPlanGraph,
        compile_plan,
    )
    from fanfold.graphs.estimate import (
        estimate_plan,
    )
    from fanfold.graphs.goal import (
        compile_goal,
    )
    from fanfold.graphs.schema import (
        PlanState,
    )
    from fanfold.models import (
        DEFAULT_MODEL,
        resolve_model,
    )
    from fanfold.models.simulated import (
        SimulatedChatModel,
    )
    from fanfold.nodes import (
        KindOutput,
        NodeKind,
        NodeKindRegistry,
        SubtaskCall,
        node_kinds,
        register_node_kind,
    )
    from fanfold.pattern import (
        parallel_process,
    )
    from fanfold.plan import (
        AggregationSettings,
        InputSpec,
        ModelSpec,
        SubTask,
        TaskPlan,
    )
    from fanfold.planning import (
        PlannerError,
        amake_plan,
        make_plan,
        plan_to_yaml,
    )
    from fanfold.runs import (
        GoalRun,
        PlanRun,
        RunState,
        aget_run,
        aopen_run,
        aresume_run,
        arun_plan,
        get_run,
        open_run,
        resume_run,
        run_plan,
        start_goal_run,
        start_run,
    )
    from fanfold.scheduling import (
        EVENT_TYPE,
        DurationStore,
        RateLimiter,
        RetryPolicy,
    )
    from fanfold.scheduling.batches import (
        BatchOptions,
    )
    from fanfold.scheduling.cache import (
        CacheError,
        ResultCache,
        default_cache_path,
    )
    from fanfold.scheduling.costs import (
        DEFAULT_PRICES,
        CallEstimate,
        PlanEstimate,
        Price,
        PriceError,
        PriceTable,
        UnknownPriceError,
        load_prices,
    )
    from fanfold.scheduling.shared_limits import (
        SharedLimitsError,
        SharedRateLimiter,
    )
    from fanfold.state import (
        RunTotals,
        SubtaskResult,
        TokenUsage,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
