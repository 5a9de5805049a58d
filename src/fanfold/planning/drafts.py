"""The planner's draft schema (`FanfoldPlan`) and turning a draft into a checked TaskPlan."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fanfold.errors import PlanValidationError, did_you_mean
from fanfold.plan import TaskPlan
from fanfold.plan.template import placeholders
from fanfold.planning import prompts

__all__ = ["FanfoldPlan", "FanfoldSubtask", "plan_from_data"]

_MAP_PLACEHOLDERS = frozenset({"item", "index"})


class FanfoldSubtask(BaseModel):
    """One subtask: a prompt that runs once its dependencies have finished."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Short unique id: letters, digits, '_' and '-'.")
    prompt: str = Field(
        description="The complete prompt; {id} inserts that subtask's output, {name} a run input."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Ids whose outputs this prompt needs; empty for an independent subtask.",
    )
    map: str | None = Field(
        None,
        description="Run once per item of this list (a run input or a subtask's list output); "
        "{item} is the item. Only for lists known at run time.",
    )


class FanfoldPlan(BaseModel):
    """A fanfold plan: the overall task and the subtasks that do it."""

    model_config = ConfigDict(title=prompts.SCHEMA_NAME, extra="forbid")

    task: str = Field(description="One sentence that states the overall job.")
    subtasks: list[FanfoldSubtask]


def plan_from_data(data: Any, *, inputs: Mapping[str, str], max_subtasks: int) -> TaskPlan:
    """Validate a reply's plan data as a TaskPlan, with the planner's extra checks.

    Beyond TaskPlan's own checks, every placeholder must name a subtask, a listed run
    input, `{task}`, or `{item}`/`{index}` in a map subtask (a typo would otherwise become
    a required run input), and `map` must name a run input or a subtask.

    Raises:
        PlanError: the first problem found.
    """
    if not isinstance(data, Mapping):
        raise PlanValidationError(
            f"the plan must be a JSON object with 'task' and 'subtasks', not {type(data).__name__}"
        )
    try:
        draft = FanfoldPlan.model_validate(data)
    except ValidationError as exc:
        raise _draft_error(exc) from exc
    if len(draft.subtasks) > max_subtasks:
        raise PlanValidationError(
            f"the plan has {len(draft.subtasks)} subtasks, more than the limit of "
            f"{max_subtasks}; merge related subtasks"
        )
    subtasks = [sub.model_dump(exclude_none=True) for sub in draft.subtasks]
    # Declare every offered input while validating, since a map may name one.
    offered = {name: {"description": text} for name, text in inputs.items()}
    plan = TaskPlan.model_validate({"task": draft.task, "subtasks": subtasks, "inputs": offered})
    used = _check_references(plan, inputs)
    if used == set(inputs):
        return plan
    # The plan declares only the inputs it uses, so the review file lists just those.
    declared = {name: spec for name, spec in offered.items() if name in used}
    return TaskPlan.model_validate({"task": draft.task, "subtasks": subtasks, "inputs": declared})


def _check_references(plan: TaskPlan, inputs: Mapping[str, str]) -> set[str]:
    """Check placeholder and map names; return the run inputs the plan uses."""
    ids = set(plan.ids)
    known = sorted(ids | set(inputs))
    used: set[str] = set()

    def check(owner: str, name: str, mapped: bool) -> None:
        if name in ids or name == "task" or (mapped and name in _MAP_PLACEHOLDERS):
            return
        if name in inputs:
            used.add(name)
            return
        if name in _MAP_PLACEHOLDERS:
            raise PlanValidationError(
                f"{owner} uses {{{name}}} but has no map; set map to the list it runs over, "
                f"or remove {{{name}}}"
            )
        allowed = ", ".join(f"{{{k}}}" for k in [*known, "task"])
        raise PlanValidationError(
            f"{owner} uses {{{name}}}, which is neither a subtask id nor a run input"
            f"{did_you_mean(name, known)}; placeholders may be {allowed}; write a literal "
            "brace as {{ or }}"
        )

    for name in placeholders(plan.task):
        check("the task", name, False)
    for sub in plan.subtasks:
        for name in sub.placeholders:
            check(f"subtask {sub.id!r}", name, sub.map is not None)
        if sub.map is None:
            continue
        if sub.map == sub.id:
            raise PlanValidationError(
                f"subtask {sub.id!r} maps over itself; set map to a run input or another "
                "subtask whose output is a list"
            )
        if sub.map in inputs:
            used.add(sub.map)
        elif sub.map not in ids:
            raise PlanValidationError(
                f"subtask {sub.id!r} maps over {sub.map!r}, which is neither a run input nor "
                f"a subtask{did_you_mean(sub.map, known)}; set map to one of them or remove it"
            )
    return used


def _draft_error(exc: ValidationError) -> PlanValidationError:
    """A readable PlanValidationError for a reply that does not fit the plan schema."""
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "plan"
        problems.append(f"{where}: {err.get('msg')}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return PlanValidationError(
        "the plan does not fit the schema: " + "; ".join(problems) + more + "; use only the "
        "fields task and subtasks (id, prompt, depends_on, map)"
    )
