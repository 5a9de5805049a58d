"""The plan: a task split into subtasks with dependencies (pydantic models)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
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

from fanfold.errors import (
    BatchNotSupportedError,
    InvalidOutputSchemaError,
    PlanError,
    PlanValidationError,
    did_you_mean,
)
from fanfold.plan.graph_checks import all_dependencies, check_graph, topological_order
from fanfold.plan.model_spec import ModelSpec, check_model_choice
from fanfold.plan.schemas import schema_problem
from fanfold.plan.template import placeholder_paths, placeholders


def _translate(exc: ValidationError, model: str, data: Any = None) -> PlanError:
    """Turn pydantic's ValidationError into the PlanError it carries, or a readable one.

    Args:
        exc: pydantic's error.
        model: the name of the model being validated.
        data: the input being validated, to name the subtask and suggest field names.
    """
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, PlanValidationError):
            if not err.get("loc"):
                return cause
            # A nested SubTask failed on its own: say which one, once.
            return PlanValidationError(
                f"invalid {model}: {_where(err, data)}: {_without_prefix(str(cause))}"
            )
        if isinstance(cause, PlanError):
            return cause
    errors = exc.errors()
    unknown = [e for e in errors if e.get("type") == "extra_forbidden"]
    if unknown:
        # A misspelt field also shows as a missing one; the unknown key says more.
        errors = unknown + [
            e for e in errors if e.get("type") not in ("extra_forbidden", "missing")
        ]
    lines = [_describe(err, model, data) for err in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return PlanValidationError(f"invalid {model}: " + "; ".join(lines) + more)


def _without_prefix(message: str) -> str:
    return message.split(": ", 1)[1] if message.startswith("invalid ") else message


def _describe(err: Any, model: str, data: Any) -> str:
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "extra_forbidden" and loc:
        key = str(loc[-1])
        parent = _where({"loc": loc[:-1], "input": _at(data, loc[:-1])}, data)
        known = _field_names(model, loc[:-1])
        hint = did_you_mean(key, known) or (
            f"; the fields are {', '.join(repr(k) for k in sorted(known))}" if known else ""
        )
        return f"{parent}: unknown field {key!r}{hint}"
    return f"{_where(err, data)}: {err.get('msg')}"


def _at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _field_names(model: str, loc: tuple[Any, ...]) -> list[str]:
    """Field names (and aliases) accepted at `loc` inside `model`."""
    if model == "SubTask" and not loc:
        target: type[BaseModel] = SubTask
    elif model == "TaskPlan" and not loc:
        target = TaskPlan
    elif model == "TaskPlan" and len(loc) == 2 and loc[0] == "subtasks":
        target = SubTask
    elif model == "TaskPlan" and len(loc) == 1 and loc[0] == "aggregation":
        target = AggregationSettings
    elif model == "TaskPlan" and len(loc) == 2 and loc[0] == "inputs":
        target = InputSpec
    else:
        return []
    names: list[str] = []
    for name, info in target.model_fields.items():
        names.append(name)
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names += [c for c in alias.choices if isinstance(c, str)]
    return list(dict.fromkeys(names))


def _where(err: Any, data: Any = None) -> str:
    loc = tuple(err.get("loc", ()))
    where = ".".join(str(p) for p in loc)
    item = err.get("input")
    if not (isinstance(item, dict) and isinstance(item.get("id"), str)) and loc:
        item = _at(data, loc[:2]) if loc[0] == "subtasks" else None
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return f"{where} (subtask {item['id']!r})"
    return where or "plan"


class _PlanModel(BaseModel):
    """Raise PlanError, never a bare pydantic ValidationError."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _translate(exc, type(self).__name__, data) from exc

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise _translate(exc, cls.__name__, obj) from exc

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
    model: str | ModelSpec | BaseChatModel | None = Field(
        None,
        description="A 'provider:model' string, or a mapping with the name and settings for "
        "the model's constructor: {name: openai:gpt-4o-mini, temperature: 0, max_tokens: 400}.",
    )
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
    cache: bool = Field(
        True,
        description="Whether this subtask's calls may be served from, and stored in, the "
        "persistent cache when the run has one (false: always call the model).",
    )
    batch: bool = Field(
        False,
        description="For a map of the llm kind: send its item calls as one provider batch "
        "(OpenAI's Batch API: half the price, answers within 24 hours).",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_choice(cls, value: Any) -> Any:
        return check_model_choice(value)

    @model_validator(mode="after")
    def _batch_needs_a_map(self) -> SubTask:
        if self.batch and self.map is None:
            raise BatchNotSupportedError(
                self.id, "only a map's item calls go as a batch (give it `map: LIST`)"
            )
        if self.batch and self.kind != "llm":
            raise BatchNotSupportedError(
                self.id, f"only the llm kind's calls go as a batch, not {self.kind!r}'s"
            )
        return self

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


def _model_shape(model: Any) -> Any:
    if isinstance(model, ModelSpec):
        return model.model_dump()
    return model if isinstance(model, str | None) else repr(model)


def list_input(value: Any) -> list[Any] | None:
    """A run input's value as the list a map runs over, or None when it is not one.

    A list or tuple is taken as it is; a string is read as JSON text of a list (how
    `--input name=[...]` and `@file.json` arrive from the command line).
    """
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None
    return None


class InputSpec(BaseModel):
    """A declared run input: a description and an optional default.

    In a plan file, a bare value is the default: `inputs: {city: Lisbon}` means
    `inputs: {city: {default: Lisbon}}`; `inputs: [city]` declares it with no default.
    """

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    default: Any = None


class AggregationSettings(BaseModel):
    """How the terminal node combines the results into `output`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    instructions: str | None = Field(
        None, description="Extra instructions for the combining prompt."
    )
    system: str | None = None
    model: str | ModelSpec | None = Field(
        None, description="The aggregate's model: a 'provider:model' string or a mapping."
    )
    enabled: bool = True
    output_schema: type[BaseModel] | dict[str, Any] | None = Field(
        None,
        description="A JSON Schema or pydantic model: `output` is then validated data of "
        "that type (a model aggregator answers through structured output).",
    )

    @field_validator("output_schema")
    @classmethod
    def _schema_is_an_object(cls, value: Any) -> Any:
        if isinstance(value, dict) and "title" not in value:
            value = {"title": "Output", **value}
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model_choice(cls, value: Any) -> Any:
        return check_model_choice(value)


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
                k: {} if v is None else v if isinstance(v, dict | InputSpec) else {"default": v}
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _check_graph(self) -> TaskPlan:
        check_graph(self.subtasks, self.inputs)
        self._check_field_placeholders()
        self._check_output_schemas()
        return self

    def _check_output_schemas(self) -> None:
        for sub in self.subtasks:
            problem = schema_problem(sub.output_schema) if sub.output_schema is not None else None
            if problem:
                raise InvalidOutputSchemaError(f"subtask {sub.id!r}", problem, subtask_id=sub.id)
        schema = self.aggregation.output_schema
        problem = schema_problem(schema) if schema is not None else None
        if problem:
            raise InvalidOutputSchemaError("the aggregation", problem, subtask_id=None)

    def _check_field_placeholders(self) -> None:
        """`{a.key}` needs a subtask with fields: a model's plain text answer has none."""
        text_answers = {
            s.id for s in self.subtasks if s.kind == "llm" and s.output_schema is None and not s.map
        }
        for sub in self.subtasks:
            for path in placeholder_paths(sub.prompt):
                name, _, key = path.partition(".")
                if key and name in text_answers:
                    field = key.split(".", 1)[0]
                    raise PlanValidationError(
                        f"subtask {sub.id!r} uses {{{path}}} in its prompt, but subtask "
                        f"{name!r} answers with text, which has no fields; write {{{name}}}, "
                        f"or give {name!r} an output_schema with a field {field!r}"
                    )

    @classmethod
    def coerce(cls, plan: TaskPlan | Mapping[str, Any] | str | Path) -> TaskPlan:
        """`plan` itself, the plan in a file at that path, or a mapping validated as one.

        Raises:
            PlanFileError: a path whose file is missing, unreadable or not YAML/JSON.
            PlanError: the content is not a valid plan.
        """
        if isinstance(plan, TaskPlan):
            return plan
        if isinstance(plan, str | Path):
            return cls.from_file(plan)
        return cls.model_validate(dict(plan))

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

    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each subtask's dependencies: `depends_on`, plus its map source if a subtask."""
        ids = set(self.ids)
        return {sub.id: all_dependencies(sub, ids) for sub in self.subtasks}

    def _input_users(self) -> list[tuple[str, str]]:
        """(user, input name) for every run input that the task, a prompt or a map reads."""
        ids = set(self.ids)
        users = [("task", name) for name in placeholders(self.task)]
        for sub in self.subtasks:
            users += [(sub.id, name) for name in sub.placeholders]
            if sub.map is not None:
                users.append((sub.id, sub.map))
        local = {"task", "item", "index"}
        return [(user, name) for user, name in users if name not in ids and name not in local]

    def input_names(self) -> list[str]:
        """Every run input the plan knows: the declared ones, then those its prompts use."""
        return list(dict.fromkeys([*self.inputs, *(name for _, name in self._input_users())]))

    def required_inputs(self) -> dict[str, list[str]]:
        """Map each run input that prompts or maps use (without a default) to its users."""
        needed: dict[str, list[str]] = {}
        for user, name in self._input_users():
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

        def shape_of(s: SubTask) -> dict[str, Any]:
            shape = {
                "id": s.id,
                "prompt": s.prompt,
                "kind": s.kind,
                "depends_on": s.depends_on,
                "model": _model_shape(s.model),
                "system": s.system,
                "output_schema": schema_of(s),
            }
            # Added only when set, so plans without them keep their fingerprints.
            if s.map is not None:
                shape["map"] = s.map
            if s.options:
                shape["options"] = s.options
            return shape

        payload = {"task": self.task, "subtasks": [shape_of(s) for s in self.subtasks]}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
