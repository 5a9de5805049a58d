"""Checkpointers for durable CLI runs: SQLite files (embedded default) and PostgreSQL URLs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from fanfold._secrets import redact
from fanfold.errors import StoreError

STATE_TYPES = [
    ("fanfold.state.results", "SubtaskResult"),
    ("fanfold.state.results", "TokenUsage"),
    ("fanfold.state.results", "RunTotals"),
    ("fanfold.graphs.schema", "PlanState"),
    ("fanfold.state.schema", "PlanState"),  # where checkpoints before 0.1.1 name it
]


class CheckpointStoreError(StoreError):
    """The checkpoint store cannot be opened."""


def serializer() -> JsonPlusSerializer:
    """A checkpoint serializer that allows exactly fanfold's state types."""
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


def is_postgres(target: str) -> bool:
    """True for a PostgreSQL connection URL."""
    return target.startswith(("postgres://", "postgresql://"))


@contextlib.asynccontextmanager
async def open_checkpointer(target: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open an async checkpointer for a SQLite path or a PostgreSQL URL.

    Raises:
        CheckpointStoreError: the database cannot be opened.
    """
    if is_postgres(target):
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        stack = contextlib.AsyncExitStack()
        try:
            saver = await stack.enter_async_context(
                AsyncPostgresSaver.from_conn_string(target, serde=serializer())
            )
            await saver.setup()
        except (OSError, psycopg.OperationalError) as exc:
            await stack.aclose()
            reason = redact(" ".join(str(exc).split()))  # libpq messages span lines
            raise CheckpointStoreError(
                f"cannot connect to the checkpoint database: {reason}; check the URL"
            ) from exc
        async with stack:
            yield saver
        return
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    try:
        conn = await aiosqlite.connect(target)
    except Exception as exc:
        raise CheckpointStoreError(
            f"cannot open checkpoint file {target!r}: {exc}; check the path"
        ) from exc
    try:
        sqlite_saver = AsyncSqliteSaver(conn, serde=serializer())
        await sqlite_saver.setup()
        yield sqlite_saver
    finally:
        await conn.close()
