"""The SQLite helper: open a file, create its tables, map failures to one-line errors."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fanfold.errors import StoreError
from fanfold.scheduling.storage.common import (
    QUICK_CHECK,
    SQLITE_HINT,
    Schema,
    one_line,
    schema_probes,
    sqlite_problem,
)

__all__ = ["SqliteDatabase"]


class SqliteDatabase:
    """A SQLite file as a `Database`; its folder and tables are created if missing.

    Args:
        path: the file; ":memory:" works.
        what: how messages name it, e.g. "durations store target".
        error: the `StoreError` subclass raised when it cannot be used.
        schema: the tables to create and check (the columns reads need).
        wal: write-ahead log (a write is one append; readers in other processes never
            wait for it).
        quick_check: read every page now, so that damage shows at once (small files).
        autocommit: no implicit transactions (the caller writes BEGIN/COMMIT itself).
        timeout: seconds to wait for another process's write lock.
        hint: the fix a message suggests.

    Raises:
        StoreError: (`error`) the file cannot be created, is not a SQLite database, is
            damaged or has other tables; one line naming the file.
    """

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(
        self,
        path: str,
        *,
        what: str,
        error: type[StoreError],
        schema: Schema | None = None,
        wal: bool = False,
        quick_check: bool = False,
        autocommit: bool = False,
        timeout: float = 30.0,
        hint: str = SQLITE_HINT,
    ) -> None:
        self.target = path
        self._lock = threading.Lock()
        conn: sqlite3.Connection | None = None
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            options: dict[str, Any] = {"isolation_level": None} if autocommit else {}
            conn = sqlite3.connect(path, check_same_thread=False, timeout=timeout, **options)
            if wal and path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            if schema is not None:
                for statement in schema.statements():
                    conn.execute(statement)
                for table in schema.columns:
                    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                    for statement in schema.additions(table, present):
                        conn.execute(statement)
                if conn.in_transaction:
                    conn.commit()
            if quick_check:
                problem = sqlite_problem(conn.execute(QUICK_CHECK).fetchall())
                if problem is not None:
                    raise sqlite3.DatabaseError(problem)
            if schema is not None:
                for probe in schema_probes(schema.tables):
                    conn.execute(probe)
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            raise error(
                f"{what} {path!r}: cannot use it as a SQLite file: {one_line(exc)}; {hint}",
                setting="target",
                target=path,
            ) from exc
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        with self._lock:
            return self.conn.execute(sql, tuple(params)).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One write, committed."""
        with self._lock, self.conn:
            self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement per row, in one committed transaction."""
        with self._lock, self.conn:
            self.conn.executemany(sql, [tuple(row) for row in rows])

    def reason(self, exc: BaseException) -> str:
        """A failure's message on one line, secrets removed."""
        return one_line(exc)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.conn.close()
