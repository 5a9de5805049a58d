"""A model named with settings for its constructor: `{name: openai:gpt-4o-mini, temperature: 0}`.

A plan's `model:` (a subtask's, `aggregation.model`) is a "provider:model" string or such
a mapping; `--model` takes the mapping as JSON text. The settings are checked against the
chat model class's fields when the model is resolved (`fanfold.resolve_model`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from fanfold.errors import PlanValidationError

__all__ = ["SECRET_NAME", "ModelSpec", "check_model_choice"]

SECRET_NAME = re.compile(r"(?i)(key|secret|passw|credential|auth|header|cookie|^token$|_token$)")
"""Setting names that may hold a secret (`max_tokens` is not one): never in a plan or a key."""

_EXAMPLE = "{name: openai:gpt-4o-mini, temperature: 0}"


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class ModelSpec(BaseModel):
    """A model name with settings for its constructor (`temperature`, `max_tokens`, ...).

    Written flat, as in a plan file: `ModelSpec.model_validate({"name": "openai:gpt-4o-mini",
    "temperature": 0})`; `model_dump()` gives that mapping back. Settings are plain data
    and hold no secret (API keys come from the provider's environment variables).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    settings: dict[str, Any] = {}

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _readable(exc) from exc

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise _readable(exc) from exc

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, data: Any) -> Any:
        if isinstance(data, ModelSpec) or not isinstance(data, Mapping):
            return data
        data = dict(data)
        if set(data) <= {"name", "settings"} and isinstance(data.get("settings"), Mapping):
            return data  # ModelSpec(name=..., settings={...})
        if "name" not in data:
            raise PlanValidationError(
                f"a model mapping needs a 'name', e.g. {_EXAMPLE}; got keys "
                + ", ".join(repr(str(k)) for k in data)
            )
        name = data.pop("name")
        return {"name": name, "settings": data}

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if not self.name.strip():
            raise PlanValidationError(f"a model's name is empty; e.g. {_EXAMPLE}")
        for key, value in self.settings.items():
            if key in ("model", "model_name"):
                raise PlanValidationError(
                    f"model {self.name!r}: setting {key!r} repeats the name; the model is "
                    "named by 'name' alone"
                )
            if SECRET_NAME.search(key):
                raise PlanValidationError(
                    f"model {self.name!r}: setting {key!r} would put a secret in the plan; "
                    "set the provider's environment variable (such as OPENAI_API_KEY) instead"
                )
            if not _plain(value):
                raise PlanValidationError(
                    f"model {self.name!r}: setting {key!r} must be plain data (a number, "
                    f"string, list or mapping), not {type(value).__name__}; pass a chat model "
                    "object for anything else"
                )
        return self

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}

    def __str__(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


def _readable(exc: ValidationError) -> PlanValidationError:
    errors = exc.errors()
    for err in errors:
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, PlanValidationError):
            return cause
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "model"
    return PlanValidationError(f"invalid model mapping: {where}: {first.get('msg')}")


def check_model_choice(value: Any) -> Any:
    """A plan's `model:` value as a string, a ModelSpec, a chat model or None.

    A mapping becomes a ModelSpec; text that starts with `{` is read as JSON for one (how
    `--model` gives settings on the command line).

    Raises:
        PlanValidationError: anything else, or a mapping that is not a valid ModelSpec.
    """
    if value is None or isinstance(value, ModelSpec):
        return value
    if isinstance(value, str):
        if value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise PlanValidationError(
                    f"model {value!r} is not valid JSON: {exc}; write it as "
                    '\'{"name": "openai:gpt-4o-mini", "temperature": 0}\''
                ) from exc
        else:
            return value
    if isinstance(value, Mapping):
        return ModelSpec.model_validate(value)
    if _is_chat_model(value):
        return value
    raise PlanValidationError(
        f"expected a 'provider:model' string such as 'openai:gpt-4o-mini', a mapping "
        f"with a name and settings such as {_EXAMPLE}, or a chat model; "
        f"got {type(value).__name__} {value!r}"
    )


def _is_chat_model(value: Any) -> bool:
    from langchain_core.language_models import BaseChatModel

    return isinstance(value, BaseChatModel)
