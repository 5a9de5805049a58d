"""The goal graph's state and input: a goal or a plan, the plan that ran, its results.

`goal_or_plan_input` settles what a new run's input asks for; `check_models` refuses
a plan that chooses a model the graph does not allow.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypedDict

from fanfold._langgraph import stored_once
from fanfold.errors import ModelNotAllowedError, PlanValidationError
from fanfold.graphs.channels import ModelValueChannel, ResultsChannel
from fanfold.plan.model_spec import ModelSpec
from fanfold.plan.models import TaskPlan
from fanfold.state.results import RunTotals, SubtaskResult, TokenUsage

__all__ = [
    "GoalInput",
    "GoalOutput",
    "GoalState",
    "check_models",
    "goal_or_plan_input",
]

_PLAN_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Plan",
    "description": "A plan as JSON data (a plan file's fields: task, inputs, subtasks, "
    "aggregation), run as given without planning; give it instead of a goal.",
    "additionalProperties": True,
}


class GoalInput(TypedDict, total=False):
    """What a goal graph is invoked with: a `goal` or a `plan` (not both), and `inputs`."""

    goal: Annotated[str, Field(description="The job to plan and run, in plain words.")]
    """The job to plan and run, in plain words."""
    plan: Annotated[dict[str, Any], WithJsonSchema(_PLAN_JSON_SCHEMA)]
    """A plan as JSON data (what `TaskPlan.model_validate` takes): run without planning."""
    inputs: Annotated[
        dict[str, Any], Field(description="The run inputs, name -> value, as the plan names them.")
    ]
    """Run inputs, name -> value. The planner is offered every name given here."""
    run: Annotated[dict[str, Any], SkipJsonSchema()]
    """How the run API started the run (`fanfold.runs`): the goal, its options and the
    planner's, kept in the checkpoint so that a resume needs only the run id. Not shown
    in the JSON schema, and refused from a served graph's callers."""
    rounds: Annotated[list[dict[str, Any]], SkipJsonSchema()]
    """Set empty by every new run (see `goal_or_plan_input`); not for callers."""


class GoalOutput(TypedDict, total=False):
    """What a goal graph returns; checkpoints hold all of it as plain data."""

    goal: str | None
    """The goal that was planned; None when the run was given a plan."""
    plan: dict[str, Any] | None
    """The plan that ran, as JSON data (`TaskPlan.model_validate` rebuilds it): the one
    the planner made, or the one the input gave."""
    results: Annotated[dict[str, SubtaskResult], ResultsChannel()]
    """Subtask id -> SubtaskResult, as `compile_plan`'s graph returns them."""
    output: Any
    """The aggregate of the results (None without aggregation or when it failed)."""
    totals: Annotated[RunTotals | None, ModelValueChannel(RunTotals)]
    """Counts, tokens, cost and wall time of the run, the planner's calls included."""
    aggregate_error: str | None
    planner_usage: Annotated[TokenUsage | None, ModelValueChannel(TokenUsage)]
    """Tokens of every planner call, rejected plans included; None when the run was given
    a plan."""
    rounds: list[dict[str, Any]] | None
    """A replanning run's rounds (`compile_goal(replan=N)`), each as plain data: `round`,
    `plan`, `results`, `output`, `totals` (the run's so far), the judge's `decision`
    ("done" or "replan") and `reason`, `judge_usage`, `judge_cost` and `judged` (False
    when no call was made). None without replanning."""


class GoalState(GoalOutput, total=False):
    """The state of a goal graph: its output plus the run inputs (stored once)."""

    inputs: Annotated[dict[str, Any], stored_once()]


def _given_goal(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def goal_or_plan_input(input: Any, *, served: bool = False, replans: bool = False) -> Any:
    """A goal graph's input with the goal or the plan it gives made explicit.

    An input that resumes (None, a `Command`) is returned as it is, and so is one with
    neither a goal nor a plan (it runs again what the thread holds). A blank goal next
    to a plan counts as no goal, so a form that sends empty fields still works. With
    `replans` (a graph that replans), a new run starts with no rounds.

    Raises:
        PlanValidationError: the input gives both a goal and a plan, or its plan is not
            a mapping or does not validate as a TaskPlan.
    """
    if not isinstance(input, Mapping):
        return input
    extra = sorted(set(input) - (set(GoalInput.__annotations__) - {"run", "rounds"}))
    if served and extra:
        raise PlanValidationError(
            f"a run's input holds only 'goal' or 'plan', and 'inputs', not "
            f"{', '.join(repr(k) for k in extra)}; fanfold writes results, output and "
            'totals itself. Send {"goal": "...", "inputs": {...}} or {"plan": {...}, '
            '"inputs": {...}}'
        )
    if input.get("inputs") is not None and not isinstance(input["inputs"], Mapping):
        raise PlanValidationError(
            f"a run's inputs must be a mapping of input name -> value, not "
            f"{type(input['inputs']).__name__}; pass {{'inputs': {{'topic': ...}}}}"
        )
    goal, plan = input.get("goal"), input.get("plan")
    if plan is None or (isinstance(plan, Mapping) and not plan):
        given = dict(input)
        if "goal" in given or "plan" in given:
            given["plan"] = None
        if replans:
            given["rounds"] = []  # a new run: no earlier round is replanned
        return given
    if _given_goal(goal):
        raise PlanValidationError(
            "the input gives both a goal and a plan; give either a 'goal' to plan or a "
            "'plan' to run as it is, not both"
        )
    if not isinstance(plan, Mapping):
        raise PlanValidationError(
            f"the input's plan must be a plan as JSON data (a mapping with a plan file's "
            f"fields: task, subtasks, ...), not {type(plan).__name__}"
        )
    checked = TaskPlan.model_validate(dict(plan)).model_dump(mode="json")
    given = {**input, "goal": None, "plan": checked}
    return {**given, "rounds": []} if replans else given


def check_models(plan: TaskPlan, allowed: Collection[str]) -> None:
    """Refuse a plan whose subtasks or aggregation choose a model not in `allowed`.

    Raises:
        ModelNotAllowedError: naming the first such subtask and model.
    """
    choices = [(f"subtask {s.id!r}", s.model) for s in plan.subtasks]
    choices.append(("the aggregation", plan.aggregation.model))
    for who, choice in choices:
        if choice is None:
            continue
        if isinstance(choice, ModelSpec):
            name = choice.name
            if choice.settings:
                raise ModelNotAllowedError(
                    f"{who} gives model settings ({', '.join(sorted(choice.settings))}); "
                    f"this server's operator chooses them: remove them, or remove 'model'",
                    model=name,
                )
        else:
            name = choice if isinstance(choice, str) else type(choice).__name__
        if name not in allowed:
            listed = ", ".join(repr(m) for m in sorted(allowed))
            raise ModelNotAllowedError(
                f"{who} asks for model {name!r}, which this server does not allow (allowed: "
                f"{listed}); remove its 'model' to use the server's model",
                model=name,
            )
