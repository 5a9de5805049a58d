"""What every store shares: telling SQLite from PostgreSQL, printing a target without its
password, one-line reasons, and checking that a SQLite file is sound and of our schema.

Used by the durations store, the cache, shared limits and checkpoint opening.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from fanfold._secrets import mask_url, redact

__all__ = [
    "CORRUPT_SQLITE",
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
