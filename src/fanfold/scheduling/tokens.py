"""Token estimates before a call: prompts at CHARS_PER_TOKEN, replies at their hint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from fanfold._text import content_text
from fanfold.models.caps import output_cap
from fanfold.plan.model_spec import ModelSpec, check_model_choice
from fanfold.plan.models import SubTask
from fanfold.plan.prompts import AGGREGATE_SYSTEM

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "aggregate_input_tokens",
    "messages_tokens",
    "output_tokens",
    "reply_limit",
    "reply_tokens",
    "text_tokens",
]

CHARS_PER_TOKEN = 4
"""Characters a token, for estimating prompt sizes before a call (English prose)."""
DEFAULT_OUTPUT_TOKENS = 256
"""A reply's expected length when a subtask gives no `expected_output_tokens`."""


def text_tokens(text: str) -> int:
    """Estimated tokens of `text`: its characters over CHARS_PER_TOKEN, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def messages_tokens(messages: Iterable[BaseMessage]) -> int:
    """Estimated input tokens of a call's messages (all their text, as `text_tokens`)."""
    return text_tokens("".join(content_text(m.content) for m in messages))


def output_tokens(
    subtask: SubTask, model: Any = None, *, default: int = DEFAULT_OUTPUT_TOKENS
) -> int:
    """A subtask's expected reply length in tokens: `expected_output_tokens`, else
    `default`, never more than its model's `max_tokens` (`model`: the one it runs with
    when it names none itself)."""
    tokens = subtask.expected_output_tokens
    if tokens is None:
        tokens = default
    limit = reply_limit(subtask.model if subtask.model is not None else model)
    return tokens if limit is None else min(tokens, limit)


_REPLY_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
"""Model settings that cap a reply's length (OpenAI's and other providers' names)."""


def reply_limit(model: Any) -> int | None:
    """The most tokens a reply may have under a model's settings (`max_tokens`), or None.

    `model` is a ModelSpec (or its mapping or JSON text), a chat model, a string or None.
    """
    if not isinstance(model, BaseChatModel):
        model = check_model_choice(model)
    if isinstance(model, ModelSpec):
        values = [model.settings.get(name) for name in _REPLY_LIMITS]
    elif isinstance(model, BaseChatModel):
        return output_cap(model)
    else:
        return None
    caps = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min(caps) if caps else None


def aggregate_input_tokens(
    task: str,
    outputs: Mapping[str, tuple[int, int]],
    *,
    instructions: str | None = None,
    system: str | None = None,
) -> int:
    """Estimated input tokens of the aggregate call.

    Args:
        task: the plan's task text.
        outputs: subtask id -> (items, expected output tokens per item); items is 0 for
            a subtask that is not a map.
    """
    chars = len(system or AGGREGATE_SYSTEM) + len(f"Task: {task}\n\nResults to combine:\n\n")
    chars += len(instructions or "")
    for sid, (items, tokens) in outputs.items():
        chars += len(f"### {sid}\n\n\n")
        if items:
            chars += items * (tokens * CHARS_PER_TOKEN + len(f"#### {sid}[{items}]\n\n\n"))
        else:
            chars += tokens * CHARS_PER_TOKEN
    return -(-chars // CHARS_PER_TOKEN)


def reply_tokens(
    model: Any, expected: int | None = None, *, default: int = DEFAULT_OUTPUT_TOKENS
) -> int:
    """The reply length a call is reserved for: its model's own cap (`max_tokens`) when
    it sets one, else `expected`, else `default` (DEFAULT_OUTPUT_TOKENS).

    The run reserves a call's budget and rate-limit tokens against this size, and under a
    budget caps the call's reply at it; `estimate` counts the aggregate's reply so.
    `model` is a chat model, or (before it is resolved) its spec, as `reply_limit` takes.
    """
    cap = reply_limit(model) if model is not None else None
    if cap is not None:
        return cap
    return expected if expected is not None else default
