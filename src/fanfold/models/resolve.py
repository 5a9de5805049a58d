"""Turn a model choice (None, a "provider:model" string, a ModelSpec or a chat model) into a
chat model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel

from fanfold.errors import (
    MissingCredentialsError,
    ModelResolutionError,
    UnknownModelSettingError,
    did_you_mean,
)
from fanfold.plan.model_spec import ModelSpec, check_model_choice

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
    if isinstance(model, ModelSpec):
        return model.name
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


def resolve_model(
    spec: str | ModelSpec | Mapping[str, Any] | BaseChatModel | None, **kwargs: Any
) -> BaseChatModel:
    """Return a chat model for `spec`.

    Args:
        spec: a chat model (returned as is), "simulated", a "provider:model" string for
            `init_chat_model`, a ModelSpec or mapping `{name: ..., <setting>: ...}` (or
            its JSON text) whose settings go to the model's constructor, or None for the
            default `openai:gpt-4o-mini`.
        kwargs: extra keyword arguments for the model's constructor.

    Raises:
        MissingCredentialsError: an OpenAI model is asked for but no key or base URL is set.
        UnknownModelSettingError: a setting is not a field of the model's class.
        ModelResolutionError: the string names no known provider or model.
    """
    if isinstance(spec, BaseChatModel):
        return spec
    spec = check_model_choice(spec)
    if isinstance(spec, ModelSpec):
        check_model_settings(spec)
        return resolve_model(spec.name, **{**spec.settings, **kwargs})
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

        return _construct(SimulatedChatModel, spec, kwargs)
    if provider == "openai" or (provider is None and name.startswith(("gpt-", "o1", "o3", "o4"))):
        return _openai(spec, name, **kwargs)
    try:
        from langchain.chat_models import init_chat_model

        with warnings.catch_warnings():
            # Some classes move unknown settings into model_kwargs with a warning: the
            # check below names them instead.
            warnings.simplefilter("ignore")
            model = init_chat_model(spec, **kwargs)
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
    _check_fields(type(model), spec, kwargs)
    return model


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
    # The reply's headers: a gateway's cost (x-litellm-response-cost) and the requests
    # left in the provider's window (x-ratelimit-remaining-requests).
    options["include_response_headers"] = True
    options.update(kwargs)
    if "http_async_client" not in options:
        from fanfold.models.http import loop_local_async_client

        options["http_async_client"] = loop_local_async_client(timeout=options["timeout"])
    _check_fields(ChatOpenAI, spec, kwargs)
    try:
        return ChatOpenAI(**options)
    except Exception as exc:
        raise ModelResolutionError(
            f"cannot create model {spec!r}: {type(exc).__name__}; check OPENAI_BASE_URL and the "
            "model name",
            model=spec,
        ) from exc


_NOT_SETTINGS = frozenset(
    {
        "name",
        "cache",
        "verbose",
        "callbacks",
        "tags",
        "metadata",
        "custom_get_token_ids",
        "rate_limiter",
        "callback_manager",
        "model",
        "model_name",
    }
)
"""Fields of every chat model that are not the provider's settings (or are the name)."""


def model_settings(cls: type[BaseChatModel]) -> list[str]:
    """The setting names a chat model class takes: its fields and their aliases."""
    names: list[str] = []
    for field_name, info in cls.model_fields.items():
        for name in (field_name, info.alias, info.validation_alias):
            if isinstance(name, str) and name not in _NOT_SETTINGS:
                names.append(name)
    return sorted(set(names))


def _check_fields(cls: type[BaseChatModel], spec: str, settings: Mapping[str, Any]) -> None:
    known = model_settings(cls)
    for key in settings:
        if key not in known and key not in _CONSTRUCTOR_ONLY:
            raise UnknownModelSettingError(
                f"model {spec!r}: unknown setting {key!r} for {cls.__name__}"
                f"{did_you_mean(key, known)}",
                model=spec,
                setting=key,
            )


_CONSTRUCTOR_ONLY = frozenset({"http_async_client", "http_client"})
"""Arguments fanfold itself passes that are not checked as settings."""


def _construct(cls: type[BaseChatModel], spec: str, settings: Mapping[str, Any]) -> BaseChatModel:
    _check_fields(cls, spec, settings)
    try:
        return cls(**settings)
    except Exception as exc:
        raise ModelResolutionError(
            f"cannot create model {spec!r}: {_first_line(exc)}", model=spec
        ) from exc


def check_model_settings(spec: ModelSpec) -> None:
    """Check a ModelSpec's settings against its class without creating the model (no key).

    Providers whose class is known without creating the model (OpenAI and the simulated
    model) are checked here; others when `resolve_model` creates them.

    Raises:
        UnknownModelSettingError: a setting is not a field of the model's class.
    """
    provider, name = _provider_of(spec.name)
    if provider == SIMULATED or (provider is None and name == SIMULATED):
        from fanfold.models.simulated import SimulatedChatModel

        _check_fields(SimulatedChatModel, spec.name, spec.settings)
    elif provider == "openai" or (provider is None and name.startswith(("gpt-", "o1", "o3", "o4"))):
        from langchain_openai import ChatOpenAI

        _check_fields(ChatOpenAI, spec.name, spec.settings)
