"""Durations recorded by earlier runs, kept in a SQLite file or a PostgreSQL database.

Figures are keyed by the plan's fingerprint, the model and the subtask id, so a changed
plan, prompt or model never reuses stale figures. `DurationStore.open(target)` takes a
path or a postgresql:// URL, so workers on several machines can learn from each other's
runs (in the same database as their shared rate limits, if they like).

The store helpers at the bottom (`is_postgres_url`, `shown_target`, `connect_postgres`)
are shared with `fanfold.scheduling.shared_limits`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fanfold.errors import StoreError
from fanfold.scheduling.storage import (
    CORRUPT_SQLITE,
    QUICK_CHECK,
    is_postgres_url,
    one_line,
    schema_probes,
    shown_target,
    sqlite_problem,
)
from fanfold.state.results import SubtaskResult

if TYPE_CHECKING:
    import psycopg

__all__ = ["DurationStore", "DurationStoreError", "PostgresDurationStore", "StoreError"]

TABLE = "fanfold_durations"
_T = TypeVar("_T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fanfold_durations (
    plan TEXT NOT NULL,
    model TEXT NOT NULL,
    subtask TEXT NOT NULL,
    runs INTEGER NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plan, model, subtask)
)
"""

_UPSERT = """
INSERT INTO fanfold_durations (plan, model, subtask, runs, seconds, updated)
VALUES (?, ?, ?, 1, ?, ?)
ON CONFLICT (plan, model, subtask) DO UPDATE SET
    seconds = (fanfold_durations.seconds * fanfold_durations.runs + excluded.seconds)
        / (fanfold_durations.runs + 1),
    runs = fanfold_durations.runs + 1,
    updated = excluded.updated
"""

_COLUMNS = ("plan", "model", "subtask", "runs", "seconds", "updated")
_log = logging.getLogger("fanfold")

_LOAD = "SELECT subtask, seconds FROM fanfold_durations WHERE plan = ? AND model = ?"


class DurationStoreError(StoreError):
    """The durations store cannot be opened: a bad path, an unreachable database, ..."""


class DurationStore:
    """Mean call durations per (plan fingerprint, model, subtask) in a SQLite file.

    Args:
        path: the SQLite file (created with its folder if missing); ":memory:" works.

    Raises:
        DurationStoreError: the file cannot be created or is not a SQLite database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            with self._lock, self._conn:
                self._conn.execute(SCHEMA)
                # A small file: read it all, so that damage shows now, not mid-run.
                problem = sqlite_problem(self._conn.execute(QUICK_CHECK).fetchall())
                if problem is not None:
                    raise sqlite3.DatabaseError(problem)
                for probe in schema_probes({"fanfold_durations": _COLUMNS}):
                    self._conn.execute(probe)
        except (OSError, sqlite3.Error) as exc:
            raise DurationStoreError(
                f"durations store target {self.path!r}: cannot use it as a SQLite file: "
                f"{one_line(exc)}; pass a writable SQLite file path or a postgresql:// URL",
                setting="target",
                target=self.path,
            ) from exc

    @classmethod
    def open(cls, target: str | Path) -> DurationStore:
        """A store in a SQLite file (a path) or a PostgreSQL database (a postgresql:// URL).

        Raises:
            DurationStoreError: the file or database cannot be used; one line, any
                password masked.
        """
        if isinstance(target, str) and is_postgres_url(target):
            return PostgresDurationStore(target)
        return cls(target)

    def load(self, plan: str, model: str) -> dict[str, float]:
        """Recorded mean seconds per subtask for this plan fingerprint and model.

        A file found damaged now gives none (with one warning): a run never stops for it.
        """
        try:
            with self._lock:
                rows = self._conn.execute(_LOAD, (plan, model)).fetchall()
        except CORRUPT_SQLITE as exc:
            self._damaged(exc)
            return {}
        return {subtask: seconds for subtask, seconds in rows}

    def record(self, plan: str, model: str, durations: Mapping[str, float]) -> None:
        """Fold new observations into the running means (not into a damaged file)."""
        now = time.time()
        rows = [(plan, model, subtask, seconds, now) for subtask, seconds in durations.items()]
        try:
            with self._lock, self._conn:
                self._conn.executemany(_UPSERT, rows)
        except CORRUPT_SQLITE as exc:
            self._damaged(exc)

    def _damaged(self, exc: BaseException) -> None:
        if not getattr(self, "_warned", False):
            self._warned = True
            _log.warning(
                f"warning: durations store {str(self.path)!r} cannot be used "
                f"({one_line(exc)}); running without learned durations"
            )

    def record_results(self, plan: str, model: str, results: Iterable[SubtaskResult]) -> None:
        """Record the durations of succeeded, single-attempt results."""
        self.record(
            plan,
            model,
            {
                r.id: r.duration
                for r in results
                if r.ok and r.attempts == 1 and r.duration is not None
            },
        )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


class PostgresDurationStore(DurationStore):
    """A DurationStore in a PostgreSQL database (table `fanfold_durations`).

    The table is created if missing. The connection is reopened once if it breaks.

    Raises:
        DurationStoreError: the database is unreachable, or the table is missing and the
            user may not create it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = shown_target(url)
        self._lock = threading.Lock()
        self._pg = connect_postgres(url, what="durations store", error=DurationStoreError)
        try:
            ensure_postgres_tables(
                self._pg,
                url,
                [TABLE],
                SCHEMA,
                what="durations store",
                error=DurationStoreError,
                schema_name="fanfold.scheduling.durations.SCHEMA",
            )
        except BaseException:
            self._pg.close()
            raise

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        import psycopg

        with self._lock:
            try:
                return work(self._pg)
            except psycopg.OperationalError:
                if not self._pg.closed and not self._pg.broken:
                    raise
            # The connection broke (a restarted server, a dropped socket): reopen once.
            self._pg = connect_postgres(self.url, what="durations store", error=DurationStoreError)
            return work(self._pg)

    def load(self, plan: str, model: str) -> dict[str, float]:
        def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(postgres_sql(_LOAD), (plan, model)).fetchall()

        return {subtask: float(seconds) for subtask, seconds in self._run(work)}

    def record(self, plan: str, model: str, durations: Mapping[str, float]) -> None:
        now = time.time()
        rows = [(plan, model, subtask, seconds, now) for subtask, seconds in durations.items()]
        if not rows:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(postgres_sql(_UPSERT), rows)

        self._run(work)

    def close(self) -> None:
        with self._lock:
            self._pg.close()


# -- store helpers (also used by shared_limits) ---------------------------------------------


def postgres_sql(sql: str) -> str:
    """SQLite-style `?` placeholders as psycopg's `%s`."""
    return sql.replace("?", "%s")


def connect_postgres(
    url: str, *, what: str, error: type[StoreError], autocommit: bool = True
) -> psycopg.Connection[Any]:
    """Connect to `url`, or raise `error` with one line naming the setting to fix."""
    import psycopg

    shown = shown_target(url)
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except (OSError, psycopg.Error) as exc:
        raise error(
            f"{what} target {shown}: cannot connect: {one_line(exc, url)}; check the URL "
            "(host, port, user, password, database) and that the server is running",
            setting="target",
            target=shown,
        ) from exc


def ensure_postgres_tables(
    conn: psycopg.Connection[Any],
    url: str,
    tables: list[str],
    schema: str,
    *,
    what: str,
    error: type[StoreError],
    schema_name: str,
) -> None:
    """Create the missing `tables` (the `schema` statements), or raise `error`.

    Tables that exist are used as they are, so a user without the right to create
    tables works once an administrator has run the schema.
    """
    import psycopg

    shown = shown_target(url)
    missing = list(tables)
    try:
        missing = [
            t for t in tables if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() == (None,)
        ]
        if not missing:
            return
        with conn.transaction():
            # One creator at a time: concurrent CREATE TABLE IF NOT EXISTS can collide.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('fanfold schema'))")
            for statement in filter(str.strip, schema.split(";")):
                conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as exc:
        user = conn.info.user
        raise error(
            f"{what} target {shown}: table {missing[0]} is missing and user {user!r} may "
            f"not create it ({one_line(exc, url)}); create the tables once as a user who may "
            f"(the statements are {schema_name}), or grant this user CREATE on the schema",
            setting="target",
            target=shown,
        ) from exc
    except psycopg.Error as exc:
        raise error(
            f"{what} target {shown}: cannot set up the tables: {one_line(exc, url)}; check "
            "the URL and the user's rights",
            setting="target",
            target=shown,
        ) from exc
