"""A chat model's cap on reply length: read it, or set it on a copy."""

from __future__ import annotations

import functools

from langchain_core.language_models import BaseChatModel

_CAP_FIELDS = ("max_tokens", "max_output_tokens", "max_completion_tokens")
"""The fields chat model classes name their reply cap with (OpenAI, Anthropic, Google...)."""


@functools.cache
def _cap_fields(cls: type[BaseChatModel]) -> tuple[str, ...]:
    """The reply-cap fields chat model class `cls` has (looked up once per class)."""
    fields = cls.model_fields
    return tuple(name for name in _CAP_FIELDS if name in fields)


def output_cap(model: BaseChatModel) -> int | None:
    """The most tokens `model` writes per reply, when it sets a cap itself."""
    cap: int | None = None
    for name in _cap_fields(type(model)):
        value = getattr(model, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            cap = value if cap is None else min(cap, value)
    return cap


def with_output_cap(model: BaseChatModel, tokens: int) -> BaseChatModel | None:
    """A copy of `model` that writes at most `tokens` per reply (sharing its clients), or
    None when its class has no cap setting."""
    fields = type(model).model_fields
    for name in _CAP_FIELDS:
        if name in fields:
            return model.model_copy(update={name: tokens})
    return None
