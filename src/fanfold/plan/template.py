"""Prompt templates: `{name}` placeholders filled in one pass, braces in values kept verbatim.

`str.format` breaks on JSON in a template and would re-read braces that arrive in user
data, so templates are parsed with one regular expression: `{name}` is a placeholder
when `name` looks like an identifier (dashes allowed, as in subtask ids), `{{` and `}}`
are literal braces, and every other brace is left alone.

`{name.key}` reaches into a value: a key of a mapping, a field of an object, or a
position in a list (`{item.rows.0}`), so a map can write `{item.text}` for a split piece.
Text and numbers have no fields, and methods are not fields: `{a.upper}` is an error.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_SCALARS = (str, bytes, int, float, bool, type(None))
_TOKEN = re.compile(r"\{\{|\}\}|\{([^\W\d][\w-]*(?:\.[\w-]+)*)\}")


def placeholder_paths(template: str) -> list[str]:
    """Return `template`'s placeholders as written (`item.text`, `a`), in order of first use."""
    return list(dict.fromkeys(m.group(1) for m in _TOKEN.finditer(template) if m.group(1)))


def placeholders(template: str) -> list[str]:
    """Return the names that `template`'s placeholders start with, in order of first use.

    `{item.text}` counts as `item`: the name is what must exist (an input or a subtask).
    """
    return list(placeholder_names(template))


@functools.lru_cache(maxsize=4096)
def placeholder_names(template: str) -> tuple[str, ...]:
    """`placeholders(template)` as a tuple, parsed once per template (calls render the
    same templates again and again: every item of a map, every run of a graph)."""
    seen: dict[str, None] = {}
    for match in _TOKEN.finditer(template):
        if match.group(1) is not None:
            seen.setdefault(match.group(1).split(".", 1)[0], None)
    return tuple(seen)


class MissingFieldError(KeyError):
    """A `{name.key}` placeholder names a key the value does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """The value that placeholder `path` (`name` or `name.key.0`) names in `values`.

    Raises:
        KeyError: the name has no value.
        MissingFieldError: a key, attribute or position along the path is missing.
    """
    name, *keys = path.split(".")
    value = values[name]
    walked = name
    for key in keys:
        walked += f".{key}"
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, Sequence) and not isinstance(value, str) and key.isdigit():
            if int(key) >= len(value):
                raise MissingFieldError(f"{{{walked}}}: {name} has only {len(value)} items")
            value = value[int(key)]
        elif isinstance(value, _SCALARS):
            kind = "text" if isinstance(value, str | bytes) else type(value).__name__
            raise MissingFieldError(
                f"{{{walked}}}: {name} is {kind}, which has no fields; write {{{name}}}"
            )
        elif (
            not isinstance(value, Mapping)
            and not key.startswith("_")
            and hasattr(value, key)
            and not callable(getattr(value, key))
        ):
            value = getattr(value, key)
        else:
            raise MissingFieldError(f"{{{walked}}}: {name} has no {key!r}")
    return value


def render(template: str, values: Mapping[str, Any], *, to_text: Callable[[Any], str] = str) -> str:
    """Fill `template`'s placeholders from `values` in a single pass.

    Values are inserted as text and never parsed again, so braces or template syntax
    inside them reach the model unchanged.

    Raises:
        KeyError: a placeholder has no value (callers check inputs before rendering).
        MissingFieldError: a `{name.key}` placeholder names a missing key.
    """

    parts = []
    for text, path in _parsed(template):
        parts.append(text)
        if path is not None:
            parts.append(to_text(lookup(values, path)))
    return "".join(parts)


@functools.lru_cache(maxsize=4096)
def _parsed(template: str) -> tuple[tuple[str, str | None], ...]:
    """`template` as (literal text, placeholder path or None) pairs, parsed once: literal
    braces (`{{`, `}}`) already single, every other brace kept as written."""
    pairs: list[tuple[str, str | None]] = []
    text: list[str] = []
    start = 0
    for match in _TOKEN.finditer(template):
        text.append(template[start : match.start()])
        start = match.end()
        if match.group(1) is None:
            text.append(match.group(0)[0])
        else:
            pairs.append(("".join(text), match.group(1)))
            text = []
    text.append(template[start:])
    pairs.append(("".join(text), None))
    return tuple(pairs)
