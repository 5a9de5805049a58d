"""The plan: a task split into subtasks with dependencies (pydantic models)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fanfold.errors import PlanError, PlanValidationError
from fanfold.plan.graph_checks import check_graph, topological_order
from fanfold.plan.template import placeholders


def _translate(exc: ValidationError, model: str) -> PlanError:
    """Turn pydantic's ValidationError into the PlanError it carries, or a readable one."""
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, PlanValidationError):
            # A nested SubTask failed on its own: say which one.
            return PlanValidationError(f"invalid {model}: {_where(err)}: {cause}")
        if isinstance(cause, PlanError):
            return cause
    lines = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or model
        lines.append(f"{where}: {err.get('msg')}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return PlanValidationError(f"invalid {model}: " + "; ".join(lines) + more)


def _where(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    data = err.get("input")
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return f"{loc} (subtask {data['id']!r})"
    return loc or "plan"


class _PlanModel(BaseModel):
    """Raise PlanError, never a bare pydantic ValidationError."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _translate(exc, type(self).__name__) from exc

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise _translate(exc, cls.__name__) from exc

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise _translate(exc, cls.__name__) from exc


class SubTask(_PlanModel):
    """One unit of work: a prompt template run by a node kind once its dependencies finish.

    Field aliases accept the Parallelization pattern's names: `content` for `prompt`,
    `type` for `kind` and `dependencies` for `depends_on`.
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid", arbitrary_types_allowed=True)

    id: str
    prompt: str = Field(validation_alias=AliasChoices("prompt", "content"))
    kind: str = Field("llm", validation_alias=AliasChoices("kind", "type"))
    depends_on: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("depends_on", "dependencies")
    )
    model: str | BaseChatModel | None = None
    system: str | None = None
    output_schema: type[BaseModel] | dict[str, Any] | None = None
    priority: float | None = Field(
        None, description="Explicit scheduling priority; higher starts first under a limit."
    )
    expected_seconds: float | None = Field(None, ge=0, description="Expected call duration hint.")
    expected_output_tokens: int | None = Field(None, ge=0, description="Expected reply length.")
    max_attempts: int | None = Field(None, ge=1, description="Attempt budget for this subtask.")
    map: str | None = Field(
        None,
        description="Run once per item of this list: a run input or a subtask whose output "
        "is a list (an implicit dependency). `{item}` and `{index}` render the item.",
    )
    allow_partial: bool = Field(
        False,
        description="For a map: dependents run even when some items failed (their outputs "
        "are None in the list).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Settings for the subtask's kind (a splitter's sizes)."
    )

    @field_validator("depends_on", mode="before")
    @classmethod
    def _single_dependency_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("output_schema")
    @classmethod
    def _schema_is_an_object(cls, value: Any) -> Any:
        if isinstance(value, dict) and "title" not in value:
            # LangChain names the structured-output tool after the schema's title.
            value = {"title": "Output", **value}
        return value

    @property
    def placeholders(self) -> list[str]:
        """Placeholder names used in the prompt template."""
        return placeholders(self.prompt)


class InputSpec(BaseModel):
    """A declared run input: a description and an optional default."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    default: str | None = None


class AggregationSettings(BaseModel):
    """How the terminal node combines the results when the aggregator is a model."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = Field(
        None, description="Extra instructions for the combining prompt."
    )
    system: str | None = None
    model: str | None = None
    enabled: bool = True


class TaskPlan(_PlanModel):
    """A task split into subtasks; validated as a DAG when built."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    task: str = Field(description="The overall job; may use run-input placeholders.")
    subtasks: list[SubTask]
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    aggregation: AggregationSettings = Field(default_factory=lambda: AggregationSettings())

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs_as_mapping(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, list | tuple):
            return {str(name): {} for name in value}
        if isinstance(value, dict):
            return {
                k: ({"description": v} if isinstance(v, str) else v if v is not None else {})
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _check_graph(self) -> TaskPlan:
        check_graph(self.subtasks)
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> TaskPlan:
        """Load a plan from a YAML or JSON file.

        Raises:
            PlanFileError: the file is missing, unreadable or not YAML/JSON.
            PlanError: the content is not a valid plan.
        """
        from fanfold.plan.loader import load_mapping

        return cls.model_validate(load_mapping(Path(path)))

    def subtask(self, subtask_id: str) -> SubTask:
        """Return the subtask with this id (KeyError if absent)."""
        for sub in self.subtasks:
            if sub.id == subtask_id:
                return sub
        raise KeyError(subtask_id)

    @property
    def ids(self) -> list[str]:
        """Subtask ids in plan order."""
        return [s.id for s in self.subtasks]

    def topological_order(self) -> list[str]:
        """Subtask ids with every dependency before its dependents."""
        return topological_order(self.subtasks)

    def required_inputs(self) -> dict[str, list[str]]:
        """Map each run input that prompts use (without a default) to the subtasks using it."""
        ids = set(self.ids)
        needed: dict[str, list[str]] = {}
        users = [("task", name) for name in placeholders(self.task)]
        users += [(sub.id, name) for sub in self.subtasks for name in sub.placeholders]
        for user, name in users:
            if name in ids or name == "task":
                continue
            spec = self.inputs.get(name)
            if spec is not None and spec.default is not None:
                continue
            if user not in needed.setdefault(name, []):
                needed[name].append(user)
        return needed

    def fingerprint(self) -> str:
        """A stable hash of everything that shapes the plan's calls."""

        def schema_of(sub: SubTask) -> Any:
            schema = sub.output_schema
            if isinstance(schema, type):
                return schema.model_json_schema()
            return schema

        payload = {
            "task": self.task,
            "subtasks": [
                {
                    "id": s.id,
                    "prompt": s.prompt,
                    "kind": s.kind,
                    "depends_on": s.depends_on,
                    "model": s.model if isinstance(s.model, str | None) else repr(s.model),
                    "system": s.system,
                    "output_schema": schema_of(s),
                }
                for s in self.subtasks
            ],
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
