"""Prompt templates: `{name}` placeholders filled in one pass, braces in values kept verbatim.

`str.format` breaks on JSON in a template and would re-read braces that arrive in user
data, so templates are parsed with one regular expression: `{name}` is a placeholder
when `name` looks like an identifier (dashes allowed, as in subtask ids), `{{` and `}}`
are literal braces, and every other brace is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_TOKEN = re.compile(r"\{\{|\}\}|\{([^\W\d][\w-]*)\}")


def placeholders(template: str) -> list[str]:
    """Return the placeholder names in `template`, in order of first use."""
    seen: dict[str, None] = {}
    for match in _TOKEN.finditer(template):
        if match.group(1) is not None:
            seen.setdefault(match.group(1), None)
    return list(seen)


def render(template: str, values: Mapping[str, Any], *, to_text: Callable[[Any], str] = str) -> str:
    """Fill `template`'s placeholders from `values` in a single pass.

    Values are inserted as text and never parsed again, so braces or template syntax
    inside them reach the model unchanged.

    Raises:
        KeyError: a placeholder has no value (callers check inputs before rendering).
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]
        return to_text(values[name])

    return _TOKEN.sub(substitute, template)
