"""Output schemas: what a model is asked for, and checking what it answered.

Structured output goes through a tool call, whose arguments are always an object, so a
schema for a list (or a string, a number...) is asked for wrapped in one, and the
answer unwrapped. Answers to a JSON Schema are checked with `jsonschema`, answers to a
pydantic model by the model itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

WRAPPED_KEY = "value"
"""The property a non-object schema is wrapped under."""

Schema = type[BaseModel] | dict[str, Any]


class OutputMismatchError(ValueError):
    """An answer does not match its output schema."""


def tool_schema(schema: Schema) -> tuple[Schema, bool]:
    """The schema to ask a model for, and whether the answer must be unwrapped."""
    if isinstance(schema, type) or schema.get("type", "object") == "object":
        return schema, False
    inner = {k: v for k, v in schema.items() if k != "title"}
    wrapped = {
        "title": schema.get("title", "Output"),
        "type": "object",
        "properties": {WRAPPED_KEY: inner},
        "required": [WRAPPED_KEY],
    }
    return wrapped, True


def validate_data(schema: Schema, value: Any, *, what: str) -> Any:
    """`value` as validated data of `schema` (a pydantic instance, or checked JSON data).

    Args:
        what: names the output in the error, e.g. "the output of subtask 'outline'".

    Raises:
        OutputMismatchError: the value does not match.
    """
    if isinstance(schema, type):
        try:
            return value if isinstance(value, schema) else schema.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "output"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise OutputMismatchError(
                f"{what} does not match {schema.__name__}: {where}: {err.get('msg')}{more}"
            ) from exc
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "output"
        raise OutputMismatchError(
            f"{what} does not match its output_schema at {where}: {exc.message}"
        ) from exc
    return value
