"""The planner: ask a chat model to split a goal into a validated TaskPlan."""

from fanfold.planning.planner import (
    FanfoldPlan,
    FanfoldSubtask,
    PlannerError,
    amake_plan,
    amake_plan_with_usage,
    make_plan,
    make_plan_with_usage,
    plan_to_yaml,
)

__all__ = [
    "FanfoldPlan",
    "FanfoldSubtask",
    "PlannerError",
    "amake_plan",
    "amake_plan_with_usage",
    "make_plan",
    "make_plan_with_usage",
    "plan_to_yaml",
]
