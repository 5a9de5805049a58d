"""Checkpointers for durable CLI runs: SQLite files (embedded default) and PostgreSQL URLs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.store.base import BaseStore

from fanfold.errors import StoreError
from fanfold.scheduling.storage import (
    CORRUPT_SQLITE,
    connect_error,
    is_postgres_url,
    one_line,
    schema_probes,
    shown_target,
)

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


is_postgres = is_postgres_url
"""Kept for callers of earlier versions: `fanfold.scheduling.storage.is_postgres_url`."""

_TABLES = {
    "checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id", "type", "checkpoint"),
    "writes": ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel"),
}
"""The columns fanfold's reads need, checked when a checkpoint file is opened."""


def _unusable(target: str, exc: BaseException) -> CheckpointStoreError:
    return CheckpointStoreError(
        f"checkpoint file {target!r} cannot be used: {one_line(exc)}; it is damaged or not "
        "a fanfold checkpoint: pass the file the run used, or a new file",
        setting="checkpoint",
        target=target,
    )


async def _check_sqlite(conn: Any) -> None:
    # No full read of the file (a checkpoint can be large): damage in a page shows when
    # the page is read, and `open_checkpointer` reports it then.
    for probe in schema_probes(_TABLES):
        async with conn.execute(probe):
            pass


@contextlib.asynccontextmanager
async def open_checkpointer(target: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open an async checkpointer for a SQLite path or a PostgreSQL URL.

    Raises:
        CheckpointStoreError: the database cannot be opened.
    """
    if is_postgres_url(target):
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
            raise connect_error(
                target,
                exc,
                what="checkpoint target",
                error=CheckpointStoreError,
                setting="checkpoint",
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
            f"cannot open checkpoint file {target!r}: {one_line(exc)}; check the path",
            setting="checkpoint",
            target=target,
        ) from exc
    try:
        sqlite_saver = AsyncSqliteSaver(conn, serde=serializer())
        try:
            await sqlite_saver.setup()
            await _check_sqlite(conn)
        except CORRUPT_SQLITE as exc:
            raise _unusable(target, exc) from exc
        try:
            yield sqlite_saver
        except CORRUPT_SQLITE as exc:  # damage found only when a page is read
            raise _unusable(target, exc) from exc
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def open_store(target: str) -> AsyncIterator[BaseStore]:
    """Open an async LangGraph store on the checkpoint's database (its own connection).

    A checkpointed run journals each finished call there (`fanfold.nodes.journal`).

    Raises:
        CheckpointStoreError: the database cannot be opened.
    """
    stack = contextlib.AsyncExitStack()
    try:
        if is_postgres_url(target):
            from langgraph.store.postgres.aio import AsyncPostgresStore

            store: Any = await stack.enter_async_context(
                AsyncPostgresStore.from_conn_string(target)
            )
        else:
            from langgraph.store.sqlite.aio import AsyncSqliteStore

            store = await stack.enter_async_context(AsyncSqliteStore.from_conn_string(target))
        await store.setup()
    except Exception as exc:
        await stack.aclose()
        shown = shown_target(target)
        raise CheckpointStoreError(
            f"cannot open the run's store on {shown}: {one_line(exc, target)}; check the target",
            setting="checkpoint",
            target=shown,
        ) from exc
    async with stack:
        yield store
