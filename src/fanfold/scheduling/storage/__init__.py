"""One storage layer for every store fanfold keeps (durations, the cache, shared limits,
checkpoints): a SQLite helper and a PostgreSQL helper behind one `Database` interface.

`open_database(target, ...)` opens a path as SQLite and a postgresql:// URL as
PostgreSQL, creates the store's tables and maps every failure to the store's own
`StoreError`, one line, the password masked. Telling the two apart (`is_postgres_url`)
and showing a target (`shown_target`) are defined here, once.
"""

from __future__ import annotations

from fanfold.errors import StoreError
from fanfold.scheduling.storage.common import (
    CORRUPT_SQLITE,
    QUICK_CHECK,
    SQLITE_HINT,
    Database,
    Schema,
    is_postgres_url,
    one_line,
    schema_probes,
    shown_target,
    sqlite_problem,
)
from fanfold.scheduling.storage.postgres import (
    PostgresDatabase,
    connect_error,
    connect_postgres,
    ensure_postgres_tables,
    postgres_sql,
)
from fanfold.scheduling.storage.sqlite import SqliteDatabase

__all__ = [
    "CORRUPT_SQLITE",
    "QUICK_CHECK",
    "SQLITE_HINT",
    "Database",
    "PostgresDatabase",
    "Schema",
    "SqliteDatabase",
    "connect_error",
    "connect_postgres",
    "ensure_postgres_tables",
    "is_postgres_url",
    "one_line",
    "open_database",
    "postgres_sql",
    "schema_probes",
    "shown_target",
    "sqlite_problem",
]


def open_database(
    target: str,
    *,
    what: str,
    error: type[StoreError],
    schema: Schema,
    quick_check: bool = False,
) -> Database:
    """A SQLite file (a path) or a PostgreSQL database (a postgresql:// URL), its tables made.

    Args:
        target: the path or URL.
        what: how messages name it, e.g. "durations store target".
        error: the `StoreError` subclass raised when it cannot be used.
        schema: the store's tables.
        quick_check: SQLite only: read every page now (for small files).

    Raises:
        StoreError: (`error`) one line naming the target, any password masked.
    """
    if is_postgres_url(target):
        return PostgresDatabase(target, what=what, error=error, schema=schema)
    return SqliteDatabase(target, what=what, error=error, schema=schema, quick_check=quick_check)
