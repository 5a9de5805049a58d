"""fanfold: compile LLM subtask plans into greedy, resumable LangGraph StateGraphs.

Import everything from here; the submodules are private.
"""

from fanfold.errors import (
    DependencyCycleError,
    DuplicateSubtaskError,
    EmptyPlanError,
    InvalidMapError,
    InvalidOptionsError,
    InvalidSubtaskIdError,
    MapInputError,
    MissingCredentialsError,
    MissingInputError,
    ModelResolutionError,
    PlanError,
    PlanFileError,
    PlanValidationError,
    SelfDependencyError,
    UndeclaredDependencyError,
    UnknownDependencyError,
    UnknownInputError,
    UnknownKindError,
    UnknownModelSettingError,
)
from fanfold.graphs import CompiledPlanGraph, compile_plan
from fanfold.graphs.estimate import estimate_plan
from fanfold.graphs.goal import compile_goal
from fanfold.models import DEFAULT_MODEL, resolve_model
from fanfold.models.simulated import SimulatedChatModel
from fanfold.nodes import (
    KindOutput,
    NodeKind,
    NodeKindRegistry,
    SubtaskCall,
    node_kinds,
    register_node_kind,
)
from fanfold.pattern import parallel_process
from fanfold.plan import AggregationSettings, InputSpec, ModelSpec, SubTask, TaskPlan
from fanfold.planning import PlannerError, amake_plan, make_plan, plan_to_yaml
from fanfold.scheduling import EVENT_TYPE, DurationStore, RateLimiter, RetryPolicy
from fanfold.scheduling.cache import CacheError, ResultCache, default_cache_path
from fanfold.scheduling.costs import (
    DEFAULT_PRICES,
    BudgetError,
    CallEstimate,
    PlanEstimate,
    Price,
    PriceError,
    PriceTable,
    UnknownPriceError,
    load_prices,
)
from fanfold.scheduling.shared_limits import SharedLimitsError, SharedRateLimiter
from fanfold.state import RunTotals, SubtaskResult, TokenUsage
from fanfold.state.schema import PlanState

__version__ = "0.1.0"

__all__ = [
    "AggregationSettings",
    "BudgetError",
    "CacheError",
    "CallEstimate",
    "CompiledPlanGraph",
    "DEFAULT_MODEL",
    "DEFAULT_PRICES",
    "DependencyCycleError",
    "DuplicateSubtaskError",
    "DurationStore",
    "EVENT_TYPE",
    "EmptyPlanError",
    "InputSpec",
    "InvalidMapError",
    "InvalidOptionsError",
    "InvalidSubtaskIdError",
    "KindOutput",
    "MapInputError",
    "MissingCredentialsError",
    "MissingInputError",
    "ModelResolutionError",
    "ModelSpec",
    "NodeKind",
    "NodeKindRegistry",
    "PlanError",
    "PlanEstimate",
    "PlanFileError",
    "PlanState",
    "PlanValidationError",
    "PlannerError",
    "Price",
    "PriceError",
    "PriceTable",
    "RateLimiter",
    "ResultCache",
    "RetryPolicy",
    "RunTotals",
    "SelfDependencyError",
    "SharedLimitsError",
    "SharedRateLimiter",
    "SimulatedChatModel",
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
    "amake_plan",
    "compile_goal",
    "compile_plan",
    "default_cache_path",
    "estimate_plan",
    "load_prices",
    "make_plan",
    "node_kinds",
    "parallel_process",
    "plan_to_yaml",
    "register_node_kind",
    "resolve_model",
]
