"""The PostgreSQL helper: connect, create the tables, map failures to one-line errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from fanfold.errors import StoreError
from fanfold.scheduling.storage.common import Schema, one_line, shown_target

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "PostgresDatabase",
    "connect_error",
    "connect_postgres",
    "ensure_postgres_tables",
    "postgres_sql",
]

_T = TypeVar("_T")


def postgres_sql(sql: str) -> str:
    """SQLite-style `?` placeholders as psycopg's `%s`."""
    return sql.replace("?", "%s")


def connect_error(
    url: str, exc: BaseException, *, what: str, error: type[StoreError], setting: str = "target"
) -> StoreError:
    """`error` for a failed connection: one line, naming the setting, the password masked."""
    shown = shown_target(url)
    return error(
        f"{what} {shown}: cannot connect: {one_line(exc, url)}; check the URL "
        "(host, port, user, password, database) and that the server is running",
        setting=setting,
        target=shown,
    )


def connect_postgres(
    url: str, *, what: str, error: type[StoreError], autocommit: bool = True
) -> psycopg.Connection[Any]:
    """Connect to `url`, or raise `error` with one line naming the setting to fix."""
    import psycopg

    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except (OSError, psycopg.Error) as exc:
        raise connect_error(url, exc, what=what, error=error) from exc


def ensure_postgres_tables(
    conn: psycopg.Connection[Any], url: str, schema: Schema, *, what: str, error: type[StoreError]
) -> None:
    """Create the schema's missing tables, or raise `error` (one line).

    Tables that exist are used as they are, so a user without the right to create
    tables works once an administrator has run the schema.
    """
    import psycopg

    shown = shown_target(url)
    tables = list(schema.tables)
    missing = tables
    try:
        missing = [
            t for t in tables if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() == (None,)
        ]
        if missing:
            with conn.transaction():
                # One creator at a time: concurrent CREATE TABLE IF NOT EXISTS can collide.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('fanfold schema'))")
                for statement in schema.statements():
                    conn.execute(statement)
        missing = []
        _add_missing_columns(conn, schema)
    except psycopg.errors.InsufficientPrivilege as exc:
        user = conn.info.user
        lack = (
            f"table {missing[0]} is missing and user {user!r} may not create it"
            if missing
            else f"a table lacks columns of this release and user {user!r} may not add them"
        )
        raise error(
            f"{what} {shown}: {lack} ({one_line(exc, url)}); create the tables once as a "
            f"user who may (the statements are {schema.name}), or grant this user CREATE on "
            "the schema",
            setting="target",
            target=shown,
        ) from exc
    except psycopg.Error as exc:
        raise error(
            f"{what} {shown}: cannot set up the tables: {one_line(exc, url)}; check "
            "the URL and the user's rights",
            setting="target",
            target=shown,
        ) from exc


def _add_missing_columns(conn: psycopg.Connection[Any], schema: Schema) -> None:
    """Add the columns a newer release declares to tables an older release created."""
    for table in schema.columns:
        # pg_attribute, not information_schema: the latter hides columns the user may not use.
        rows = conn.execute(
            "SELECT attname FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (table,),
        ).fetchall()
        additions = schema.additions(table, {row[0] for row in rows})
        if not additions:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('fanfold schema'))")
            for statement in additions:
                conn.execute(statement.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS"))


class PostgresDatabase:
    """A PostgreSQL database as a `Database`; the schema's tables are created if missing.

    The connection (autocommit) is reopened once when it breaks (a restarted server, a
    dropped socket).

    Args:
        url: a postgresql:// URL.
        what: how messages name it, e.g. "durations store target".
        error: the `StoreError` subclass raised when it cannot be used.
        schema: the tables to create.

    Raises:
        StoreError: (`error`) the server is unreachable, or a table is missing and the
            user may not create it; one line, the password masked.
    """

    def __init__(
        self, url: str, *, what: str, error: type[StoreError], schema: Schema | None = None
    ) -> None:
        import psycopg

        self.url = url
        self.target = shown_target(url)
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self._what, self._error = what, error
        self._lock = threading.Lock()
        self.conn = connect_postgres(url, what=what, error=error)
        if schema is not None:
            try:
                ensure_postgres_tables(self.conn, url, schema, what=what, error=error)
            except BaseException:
                self.conn.close()
                raise

    def reconnect(self) -> None:
        """Open a new connection in place of a broken one."""
        import psycopg

        if not self.conn.closed:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = connect_postgres(self.url, what=self._what, error=self._error)

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        import psycopg

        with self._lock:
            try:
                return work(self.conn)
            except psycopg.OperationalError:
                if not self.conn.closed and not self.conn.broken:
                    raise
            self.reconnect()
            return work(self.conn)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        return self._run(lambda conn: conn.execute(postgres_sql(sql), tuple(params)).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One write, committed."""
        self._run(lambda conn: conn.execute(postgres_sql(sql), tuple(params)))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement per row, in one committed transaction."""
        if not rows:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(postgres_sql(sql), [tuple(row) for row in rows])

        self._run(work)

    def reason(self, exc: BaseException) -> str:
        """A failure's message on one line, secrets and the URL's password removed."""
        return one_line(exc, self.url)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.conn.close()
