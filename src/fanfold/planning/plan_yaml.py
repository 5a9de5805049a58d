"""A TaskPlan written as YAML for review (`TaskPlan.from_file` loads it back)."""

from __future__ import annotations

from typing import Any

import yaml
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from fanfold.plan import SubTask, TaskPlan
from fanfold.plan.model_spec import ModelSpec

__all__ = ["plan_to_yaml"]


class _PlanDumper(yaml.SafeDumper):
    """SafeDumper with literal blocks for multi-line text and no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # PyYAML falls back to a quoted scalar itself when a literal block cannot hold the text.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlanDumper.add_representer(str, _represent_str)


def plan_to_yaml(plan: TaskPlan) -> str:
    """The plan as YAML for review; `TaskPlan.from_file` loads it back to an equal plan.

    Fields equal to their defaults are left out. A pydantic `output_schema` class is
    written as its JSON schema (it loads back as that dict).

    Raises:
        ValueError: a subtask holds a chat model object, which YAML cannot represent.
    """
    data: dict[str, Any] = {"task": plan.task}
    if plan.inputs:
        # Always the mapping form: what a bare value means differs between fanfold versions.
        data["inputs"] = {
            name: spec.model_dump(exclude_defaults=True) for name, spec in plan.inputs.items()
        }
    data["subtasks"] = [_subtask_data(sub) for sub in plan.subtasks]
    aggregation = plan.aggregation.model_dump(exclude_defaults=True)
    if aggregation:
        data["aggregation"] = aggregation
    return yaml.dump(
        data,
        Dumper=_PlanDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def _subtask_data(sub: SubTask) -> dict[str, Any]:
    out: dict[str, Any] = {"id": sub.id, "prompt": sub.prompt}
    for name, field in SubTask.model_fields.items():
        if name in out:
            continue
        value = getattr(sub, name)
        if value == field.get_default(call_default_factory=True):
            continue
        if name == "model" and isinstance(value, BaseChatModel):
            raise ValueError(
                f"subtask {sub.id!r} uses a chat model object, which YAML cannot hold; give "
                "it a model string such as 'openai:gpt-4o-mini' before writing the plan"
            )
        if name == "output_schema" and isinstance(value, type) and issubclass(value, BaseModel):
            value = value.model_json_schema()
        if isinstance(value, ModelSpec):
            value = value.model_dump()
        out[name] = value
    return out
