"""What every store shares: telling SQLite from PostgreSQL, printing a target without its
password, one-line reasons, and checking that a SQLite file is sound and of our schema.

Used by the durations store, the cache, shared limits and checkpoint opening (through
`fanfold.scheduling.storage`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fanfold._secrets import mask_url, redact

__all__ = [
    "CORRUPT_SQLITE",
    "SQLITE_HINT",
    "Database",
    "Schema",
    "is_postgres_url",
    "QUICK_CHECK",
    "one_line",
    "schema_probes",
    "shown_target",
    "sqlite_problem",
]

CORRUPT_SQLITE = (sqlite3.DatabaseError,)
"""What SQLite raises for a file that is not a database, is damaged, or of another
schema (`sqlite3.OperationalError` is a `DatabaseError` too)."""


def is_postgres_url(target: str) -> bool:
    """True for a PostgreSQL connection URL."""
    return target.startswith(("postgres://", "postgresql://"))


def shown_target(target: str) -> str:
    """A path or URL fit to print: a database URL's password is masked."""
    return mask_url(target) if is_postgres_url(target) else target


def one_line(exc: BaseException, target: str | None = None) -> str:
    """An exception's message on one line, secrets and the target's password removed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if target and is_postgres_url(target):
        text = text.replace(target, shown_target(target))
    return redact(text)


def schema_probes(tables: Mapping[str, Sequence[str]]) -> list[str]:
    """Statements that fail unless the database has these tables and columns."""
    return [
        f"SELECT {', '.join(columns)} FROM {table} LIMIT 0" for table, columns in tables.items()
    ]


QUICK_CHECK = "PRAGMA quick_check"
"""Reads every page (time grows with the file): for small stores; its single row is "ok"
for a sound file (see `sqlite_problem`)."""


def sqlite_problem(quick_check: Sequence[Sequence[object]]) -> str | None:
    """What `PRAGMA quick_check` found wrong, on one line; None for a sound file."""
    found = [str(row[0]) for row in quick_check if row]
    if found == ["ok"]:
        return None
    return "database disk image is malformed: " + "; ".join(found[:3])


SQLITE_HINT = "pass a writable SQLite file path or a postgresql:// URL"
"""The fix a message suggests when a SQLite file cannot be used."""


@dataclass(frozen=True)
class Schema:
    """A store's tables: their statements, the columns its reads need, and the name under
    which the statements are documented (messages point an administrator to it)."""

    sql: str
    tables: Mapping[str, Sequence[str]]
    name: str
    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per table, columns (name -> SQL type) added to a table made by an older release
    when they are missing; each type needs a default (or allows NULL)."""

    def statements(self) -> list[str]:
        """The statements one by one."""
        return [statement for statement in self.sql.split(";") if statement.strip()]

    def additions(self, table: str, present: Collection[str]) -> list[str]:
        """`ALTER TABLE` statements that add the table's columns missing from `present`."""
        wanted = self.columns.get(table, {})
        return [
            f'ALTER TABLE {table} ADD COLUMN "{name}" {kind}'
            for name, kind in wanted.items()
            if name not in present
        ]


class Database(Protocol):
    """A store's database, SQLite or PostgreSQL: one interface for both.

    SQL is written with SQLite's `?` placeholders (PostgreSQL receives `%s`). A failure
    to open is a one-line `StoreError`; a read or write that fails later raises one of
    `errors` (the driver's), for stores that carry on without it.
    """

    target: str
    """The path or URL as messages show it (a password masked)."""
    errors: tuple[type[Exception], ...]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def reason(self, exc: BaseException) -> str: ...

    def close(self) -> None: ...
