"""A chat model's cap on reply length: read it, or set it on a copy."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

_CAP_FIELDS = ("max_tokens", "max_output_tokens", "max_completion_tokens")
"""The fields chat model classes name their reply cap with (OpenAI, Anthropic, Google...)."""


def output_cap(model: BaseChatModel) -> int | None:
    """The most tokens `model` writes per reply, when it sets a cap itself."""
    fields = type(model).model_fields
    values = [getattr(model, name, None) for name in _CAP_FIELDS if name in fields]
    caps = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min(caps) if caps else None


def with_output_cap(model: BaseChatModel, tokens: int) -> BaseChatModel | None:
    """A copy of `model` that writes at most `tokens` per reply (sharing its clients), or
    None when its class has no cap setting."""
    fields = type(model).model_fields
    for name in _CAP_FIELDS:
        if name in fields:
            return model.model_copy(update={name: tokens})
    return None
