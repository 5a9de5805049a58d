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
    """The schema to ask a model for, and whether the answer must be unwrapped.

    A tool's arguments are an object with properties; any other schema (a list, an
    `enum`, an `anyOf`, an object without properties) is asked for wrapped in one.
    """
    if isinstance(schema, type) or (
        schema.get("type", "object") == "object" and isinstance(schema.get("properties"), dict)
    ):
        return schema, False
    inner = {k: v for k, v in schema.items() if k != "title"}
    wrapped = {
        "title": schema.get("title", "Output"),
        "type": "object",
        "properties": {WRAPPED_KEY: inner},
        "required": [WRAPPED_KEY],
    }
    return wrapped, True


def schema_problem(schema: Schema) -> str | None:
    """What makes a JSON Schema unusable as an output schema, with the fix; None if usable.

    Checked: the schema against its metaschema (`{type: nonsense}`), every `$ref`
    (local only, and it must resolve), and a schema that no value can match.
    """
    if isinstance(schema, type):
        return None
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top"
        return (
            f"is not a valid JSON Schema at {where}: {exc.message}; write a JSON Schema, "
            "e.g. {type: object, properties: {title: {type: string}}}"
        )
    for ref in _refs(schema):
        if not ref.startswith("#"):
            return (
                f"has $ref {ref!r}, which is not in the schema; fanfold fetches no schemas, "
                "so define it under $defs and write '#/$defs/NAME'"
            )
        if not _resolves(schema, ref):
            return f"has $ref {ref!r}, which names nothing in the schema; define it under $defs"
    if schema.get("not") in ({}, True):
        return "matches no value ('not: {}' rejects everything); remove the 'not'"
    return None


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                found.append(item["$ref"])
            stack.extend(v for k, v in item.items() if k not in ("enum", "const", "examples"))
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _resolves(schema: dict[str, Any], ref: str) -> bool:
    from urllib.parse import unquote

    target: Any = schema
    pointer = unquote(ref[1:])
    for part in pointer.split("/")[1:] if pointer else []:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and key in target:
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            return False
    return True


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
