"""fanfold: compile LLM subtask plans into greedy, resumable LangGraph StateGraphs.

Import everything from here; the submodules are private.
"""

from fanfold.durations import DurationStore
from fanfold.errors import (
    DependencyCycleError,
    DuplicateSubtaskError,
    EmptyPlanError,
    InvalidOptionsError,
    InvalidSubtaskIdError,
    MissingCredentialsError,
    MissingInputError,
    ModelResolutionError,
    PlanError,
    PlanFileError,
    PlanValidationError,
    SelfDependencyError,
    UndeclaredDependencyError,
    UnknownDependencyError,
    UnknownKindError,
)
from fanfold.graphs import EVENT_TYPE, CompiledPlanGraph, compile_plan
from fanfold.graphs.limits import RateLimiter
from fanfold.graphs.retry import RetryPolicy
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
from fanfold.plan import AggregationSettings, InputSpec, SubTask, TaskPlan
from fanfold.state import PlanState, RunTotals, SubtaskResult, TokenUsage

__version__ = "0.1.0"

__all__ = [
    "AggregationSettings",
    "CompiledPlanGraph",
    "DEFAULT_MODEL",
    "DependencyCycleError",
    "DuplicateSubtaskError",
    "DurationStore",
    "EVENT_TYPE",
    "EmptyPlanError",
    "InputSpec",
    "InvalidOptionsError",
    "InvalidSubtaskIdError",
    "KindOutput",
    "MissingCredentialsError",
    "MissingInputError",
    "ModelResolutionError",
    "NodeKind",
    "NodeKindRegistry",
    "PlanError",
    "PlanFileError",
    "PlanState",
    "PlanValidationError",
    "RateLimiter",
    "RetryPolicy",
    "RunTotals",
    "SelfDependencyError",
    "SimulatedChatModel",
    "SubTask",
    "SubtaskCall",
    "SubtaskResult",
    "TaskPlan",
    "TokenUsage",
    "UndeclaredDependencyError",
    "UnknownDependencyError",
    "UnknownKindError",
    "__version__",
    "compile_plan",
    "node_kinds",
    "parallel_process",
    "register_node_kind",
    "resolve_model",
]
