"""A persistent cache of model calls: the same call, across runs, is paid for once.

A call is identified by a key (`call_key`): a SHA-256 over the model (its class, its
identifying parameters such as the model name and temperature, its endpoint URL (an
Azure endpoint too) and a digest of its extra headers and query parameters; never an API
key or any other credential; a value that looks like a secret, such as a stop string,
counts as a digest), the node kind and its options, the output schema,
and the rendered messages. Only successful calls of kinds that call a model are stored,
each one the moment it ends, so a run killed before LangGraph committed a node's result
still finds that call's result on its next attempt.

The cache is a SQLite file: `$FANFOLD_CACHE` if set, else
`$XDG_CACHE_HOME/fanfold/cache.db`, else `~/.cache/fanfold/cache.db`. It holds, per key,
the output as JSON, the token usage of the call that made it, the model label, the kind,
the subtask id that first made it, the call's duration and when it was stored; no prompt
text and no secret. A broken or locked cache never fails a run: a lookup that fails is a
miss and a write that fails is skipped.

Nothing here imports LangGraph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, SecretStr

from fanfold._secrets import redact
from fanfold.errors import StoreError
from fanfold.plan.model_spec import SECRET_NAME
from fanfold.scheduling.storage import Schema, SqliteDatabase
from fanfold.state.results import TokenUsage

__all__ = [
    "CACHE_ENV",
    "CacheError",
    "CachedCall",
    "CallJournal",
    "ResultCache",
    "call_from_record",
    "call_key",
    "call_record",
    "default_cache_path",
    "model_identity",
]

_log = logging.getLogger(__name__)

CACHE_ENV = "FANFOLD_CACHE"
"""Environment variable naming the cache file, overriding the default location."""
KEY_VERSION = 1
"""Part of every key: a change to what a key covers starts a fresh cache."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS fanfold_cache (
    key TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    model TEXT,
    kind TEXT,
    subtask TEXT,
    seconds DOUBLE PRECISION,
    created DOUBLE PRECISION NOT NULL
)
"""

_PUT = """
INSERT OR REPLACE INTO fanfold_cache
    (key, output, input_tokens, output_tokens, total_tokens, model, kind, subtask, seconds,
     created)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_GET = (
    "SELECT output, input_tokens, output_tokens, total_tokens, model, seconds, created "
    "FROM fanfold_cache WHERE key = ?"
)

_TABLES = Schema(
    SCHEMA, {"fanfold_cache": ("key", "output", "created")}, "fanfold.scheduling.cache.SCHEMA"
)

_SECRET_NAME = SECRET_NAME
"""Parameter names whose values never enter a key (`max_tokens` is not one of them)."""


class CacheError(StoreError):
    """The cache file cannot be opened or created."""


def default_cache_path() -> Path:
    """`$FANFOLD_CACHE`, else `$XDG_CACHE_HOME/fanfold/cache.db`, else ~/.cache/fanfold/."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fanfold" / "cache.db"


@dataclass(frozen=True)
class CachedCall:
    """One stored call: its output (JSON data) and the usage of the call that made it."""

    output: Any
    usage: TokenUsage
    model: str | None
    seconds: float | None
    created: float


class ResultCache:
    """Successful model calls by key, in a SQLite file shared by runs and processes.

    Args:
        path: the SQLite file (created with its folder); None for `default_cache_path()`;
            ":memory:" for a cache that lasts as long as this object.

    Raises:
        CacheError: the file cannot be created or is not a SQLite database.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(default_cache_path() if path is None else path)
        # Write-ahead log: a write is then one append, durable when the process is killed
        # right after it, and never blocking readers in other processes.
        self._db = SqliteDatabase(
            self.path,
            what="cache file",
            error=CacheError,
            schema=_TABLES,
            wal=True,
            timeout=10,
            hint=f"set {CACHE_ENV} to a writable file, or turn the cache off "
            "(--no-cache, compile_plan(cache=False))",
        )

    def get(self, key: str) -> CachedCall | None:
        """The stored call for `key`, or None (also when the cache cannot be read)."""
        try:
            rows = self._db.query(_GET, (key,))
        except self._db.errors as exc:
            _log.warning("fanfold cache %s: lookup failed: %s", self.path, self._db.reason(exc))
            return None
        if not rows:
            return None
        output, inp, out, total, model, seconds, created = rows[0]
        try:
            value = json.loads(output)
        except ValueError:
            return None
        usage = TokenUsage(input_tokens=inp, output_tokens=out, total_tokens=total)
        return CachedCall(value, usage, model, seconds, created)

    def put(
        self,
        key: str,
        output: Any,
        *,
        usage: TokenUsage,
        model: str | None = None,
        kind: str | None = None,
        subtask: str | None = None,
        seconds: float | None = None,
    ) -> bool:
        """Store a successful call at once (committed before this returns).

        Returns:
            False when the output is not JSON data that reads back the same (it is not
            stored) or the write failed; True when stored.
        """
        data = stored_form(output)
        if data is _UNSTORABLE:
            return False
        row = (
            key,
            data,
            usage.input_tokens,
            usage.output_tokens,
            usage.total_tokens,
            model,
            kind,
            subtask,
            seconds,
            time.time(),
        )
        try:
            self._db.execute(_PUT, row)
        except self._db.errors as exc:
            _log.warning("fanfold cache %s: write failed: %s", self.path, self._db.reason(exc))
            return False
        return True

    def __len__(self) -> int:
        ((count,),) = self._db.query("SELECT COUNT(*) FROM fanfold_cache")
        return int(count)

    def clear(self) -> None:
        """Forget every stored call."""
        self._db.execute("DELETE FROM fanfold_cache")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __repr__(self) -> str:
        return f"ResultCache({self.path!r})"


_UNSTORABLE: Any = object()


def call_record(
    output: Any,
    *,
    usage: TokenUsage,
    model: str | None = None,
    kind: str | None = None,
    subtask: str | None = None,
    seconds: float | None = None,
) -> dict[str, Any] | None:
    """A successful call as the cache stores it (its columns, as a mapping), or None when
    the output is not JSON data that reads back the same."""
    data = stored_form(output)
    if data is _UNSTORABLE:
        return None
    return {
        "output": data,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "model": model,
        "kind": kind,
        "subtask": subtask,
        "seconds": seconds,
        "created": time.time(),
    }


def call_from_record(record: Mapping[str, Any]) -> CachedCall | None:
    """The call a `call_record` mapping holds, or None when it cannot be read."""
    try:
        value = json.loads(record["output"])
        usage = TokenUsage(
            input_tokens=record["input_tokens"],
            output_tokens=record["output_tokens"],
            total_tokens=record["total_tokens"],
        )
        return CachedCall(
            value, usage, record.get("model"), record.get("seconds"), record["created"]
        )
    except (KeyError, TypeError, ValueError):
        return None


class CallJournal(Protocol):
    """Where a checkpointed run journals its finished calls (the cache's keys and records)."""

    async def get(self, key: str) -> CachedCall | None: ...

    async def put(
        self,
        key: str,
        output: Any,
        *,
        usage: TokenUsage,
        model: str | None = None,
        kind: str | None = None,
        subtask: str | None = None,
        seconds: float | None = None,
    ) -> bool: ...


def stored_form(output: Any) -> Any:
    """`output` as JSON text, or _UNSTORABLE when JSON would not give it back unchanged."""
    data = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return _UNSTORABLE
    if not isinstance(output, BaseModel) and json.loads(text) != output:
        return _UNSTORABLE  # tuples, non-string keys...: a hit would differ from the call
    return text


def revive(value: Any, schema: Any) -> Any:
    """A stored output as the call gave it: a pydantic schema's instance, else the data."""
    if isinstance(schema, type) and issubclass(schema, BaseModel) and isinstance(value, dict):
        return schema.model_validate(value)
    return value


# -- keys -----------------------------------------------------------------------------------


def _plain(value: Any) -> tuple[bool, Any]:
    """(keep, value): JSON data is kept; secrets, clients and other objects are not."""
    if isinstance(value, SecretStr):
        return False, None
    if value is None or isinstance(value, bool | int | float):
        return True, value
    if isinstance(value, str):
        # A value that looks like a secret still changes the answer (a stop string, say):
        # it enters the key as a digest, never as text.
        return True, value if redact(value) == value else {"sha256": _digest(value)}
    if isinstance(value, Mapping):
        kept = {}
        for name, inner in value.items():
            if _SECRET_NAME.search(str(name)):
                continue
            keep, plain = _plain(inner)
            if keep:
                kept[str(name)] = plain
        return True, kept
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return all(k for k, _ in items), [v for _, v in items]
    return False, None


def _endpoint(model: Any) -> str | None:
    for attr in ("openai_api_base", "azure_endpoint", "base_url", "api_base", "endpoint"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            parts = urlsplit(value)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            # No user, password, query or fragment: those may hold credentials.
            return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else value
    return None


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies a model's answers: its class, identifying params and endpoint.

    Parameters that name or hold a secret (API keys, tokens, headers), clients and any
    value that is not plain data are left out, so no key ever reaches a cache key.
    """
    cls = type(model)
    try:
        params = dict(getattr(model, "_identifying_params", {}) or {})
    except Exception:  # noqa: BLE001 - a model whose params cannot be read: its class only
        params = {}
    _, plain = _plain(params)
    identity = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": plain,
        "endpoint": _endpoint(model),
    }
    # Extra headers and query parameters sent with every request may select another
    # model version or deployment: they count, as a digest, credentials left out.
    sent = {}
    for attr in ("default_headers", "default_query"):
        value = getattr(model, attr, None)
        if isinstance(value, Mapping):
            kept = {str(k): v for k, v in value.items() if not _CREDENTIAL.search(str(k))}
            if kept:
                sent[attr] = _digest(json.dumps(kept, sort_keys=True, default=repr))
    if sent:
        identity["sent"] = sent
    return identity


_CREDENTIAL = re.compile(r"(?i)(key|secret|passw|credential|auth|cookie|token)")
"""Header and query parameter names that carry credentials, not choices of model."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _schema(schema: Any) -> Any:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return schema


def _message(message: BaseMessage) -> dict[str, Any]:
    return {"type": message.type, "content": message.content, "name": message.name}


def call_key(
    *,
    model: Any,
    messages: Sequence[BaseMessage],
    kind: str,
    output_schema: Any = None,
    options: Mapping[str, Any] | None = None,
    kind_function: Any = None,
) -> str:
    """The cache key of one call (a hex SHA-256).

    Args:
        model: the chat model (see `model_identity`).
        messages: the rendered messages, as sent.
        kind: the node kind's name ("aggregate" for the aggregate step).
        output_schema: the subtask's (or aggregation's) output schema.
        options: the subtask's kind options.
        kind_function: the kind's function, so a replaced kind misses the cache.
    """
    function = (
        f"{getattr(kind_function, '__module__', '')}.{getattr(kind_function, '__qualname__', '')}"
        if kind_function is not None
        else None
    )
    payload = {
        "version": KEY_VERSION,
        "model": model_identity(model),
        "kind": kind,
        "function": function,
        "options": dict(options or {}),
        "schema": _schema(output_schema),
        "messages": [_message(m) for m in messages],
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
