"""Turn a model choice (None, a "provider:model" string or a chat model) into a chat model."""

from __future__ import annotations

import os
from typing import Any

from langchain_core.language_models import BaseChatModel

from fanfold.errors import MissingCredentialsError, ModelResolutionError

DEFAULT_MODEL = "openai:gpt-4o-mini"
SIMULATED = "simulated"
DEFAULT_TIMEOUT = 60.0
"""Seconds before a request is abandoned; ChatOpenAI waits forever by default."""

_OPENAI_HINT = (
    "set OPENAI_API_KEY (and OPENAI_BASE_URL for any OpenAI-compatible server such as vLLM, "
    "Ollama or a gateway), or pass model='simulated' (--model simulated) to run offline"
)


def model_label(model: Any) -> str:
    """A short human-readable name for a chat model or model string."""
    if isinstance(model, str):
        return model
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _provider_of(spec: str) -> tuple[str | None, str]:
    if ":" in spec:
        provider, _, name = spec.partition(":")
        return provider.strip().lower(), name.strip()
    return None, spec.strip()


def resolve_model(spec: str | BaseChatModel | None, **kwargs: Any) -> BaseChatModel:
    """Return a chat model for `spec`.

    Args:
        spec: a chat model (returned as is), "simulated", a "provider:model" string for
            `init_chat_model`, or None for the default `openai:gpt-4o-mini`.
        kwargs: extra keyword arguments for the model's constructor.

    Raises:
        MissingCredentialsError: an OpenAI model is asked for but no key or base URL is set.
        ModelResolutionError: the string names no known provider or model.
    """
    if isinstance(spec, BaseChatModel):
        return spec
    if spec is None:
        spec = DEFAULT_MODEL
    if not isinstance(spec, str) or not spec.strip():
        raise ModelResolutionError(
            f"model must be a chat model or a 'provider:model' string, not {spec!r}; "
            "e.g. 'openai:gpt-4o-mini' or 'simulated'",
            model=str(spec),
        )
    provider, name = _provider_of(spec)
    if provider == SIMULATED and name:
        raise ModelResolutionError(
            f"model {spec!r}: the simulated model takes no model name; write 'simulated' "
            "(its seed, latency and reply length are set on fanfold.SimulatedChatModel)",
            model=spec,
        )
    if provider == SIMULATED or (provider is None and name == SIMULATED):
        from fanfold.models.simulated import SimulatedChatModel

        return SimulatedChatModel(**kwargs)
    if provider == "openai" or (provider is None and name.startswith(("gpt-", "o1", "o3", "o4"))):
        return _openai(spec, name, **kwargs)
    try:
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec, **kwargs)
    except ImportError as exc:
        raise ModelResolutionError(
            f"model {spec!r} needs a provider package that is not installed ({exc.name or exc}); "
            "install it, or use 'openai:<model>' with OPENAI_BASE_URL or 'simulated'",
            model=spec,
        ) from exc
    except Exception as exc:
        raise ModelResolutionError(
            f"cannot resolve model {spec!r}: {_first_line(exc)}; use a 'provider:model' "
            "string such as 'openai:gpt-4o-mini', or 'simulated'",
            model=spec,
        ) from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".:") if lines else type(exc).__name__


def _openai(spec: str, name: str, **kwargs: Any) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    key = kwargs.pop("api_key", None) or os.environ.get("OPENAI_API_KEY")
    base_url = kwargs.pop("base_url", None) or os.environ.get("OPENAI_BASE_URL")
    if not key and not base_url:
        raise MissingCredentialsError(
            f"model {spec!r} needs an API key: {_OPENAI_HINT}", model=spec
        )
    if not name:
        raise ModelResolutionError(
            f"model {spec!r} names no model; write it as 'openai:gpt-4o-mini'", model=spec
        )
    # fanfold's dispatcher is the one retry layer: the SDK's own retries would multiply it.
    options: dict[str, Any] = {"model": name, "timeout": DEFAULT_TIMEOUT, "max_retries": 0}
    if base_url:
        options["base_url"] = base_url
        # Custom servers only report usage in a stream when asked to.
        options["stream_usage"] = True
    # Local OpenAI-compatible servers often need no key, but the SDK insists on one.
    options["api_key"] = key or "unused"
    options.update(kwargs)
    if "http_async_client" not in options:
        from fanfold.models.http import loop_local_async_client

        options["http_async_client"] = loop_local_async_client(timeout=options["timeout"])
    try:
        return ChatOpenAI(**options)
    except Exception as exc:
        raise ModelResolutionError(
            f"cannot create model {spec!r}: {type(exc).__name__}; check OPENAI_BASE_URL and the "
            "model name",
            model=spec,
        ) from exc
