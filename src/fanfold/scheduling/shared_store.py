"""Where shared limits live: the tables, and a SQLite or PostgreSQL store holding them.

`SharedRateLimiter` runs one transaction at a time through a store: SQLite (a file, for
processes on one machine; others see a commit through `PRAGMA data_version`) or
PostgreSQL (workers on several machines; LISTEN/NOTIFY wakes them, and the database's
clock is the one clock).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fanfold.errors import StoreError
from fanfold.scheduling.pacing import PaceState
from fanfold.scheduling.storage import (
    PostgresDatabase,
    Schema,
    SqliteDatabase,
    connect_postgres,
    is_postgres_url,
    one_line,
    postgres_sql,
    shown_target,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA", "TABLES", "Busy", "SharedLimitsError", "open_store"]

NOTIFY_CHANNEL = "fanfold_limits"


def _column_type(name: str) -> str:
    nullable = {"rate", "window", "ceiling", "tokens", "rtt", "quota_left"}
    integer = {
        "cut_seq",
        "granted",
        "rate_limited",
        "succeeded",
        "window_cuts",
        "rate_cuts",
        "pauses",
    }
    kind = "BIGINT" if name in integer else "DOUBLE PRECISION"
    # A default on each column: a process of an older release, which names fewer
    # columns, can still insert a row.
    return kind if name in nullable else f"{kind} NOT NULL DEFAULT 0"


STATE_COLUMNS = PaceState.columns()
_COLUMNS_SQL = ",\n    ".join(f'"{c}" {_column_type(c)}' for c in STATE_COLUMNS)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS fanfold_pace_state (
    endpoint TEXT PRIMARY KEY,
    {_COLUMNS_SQL}
);
CREATE TABLE IF NOT EXISTS fanfold_pace_leases (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS fanfold_pace_leases_endpoint
    ON fanfold_pace_leases (endpoint, expires);
CREATE TABLE IF NOT EXISTS fanfold_pace_holders (
    endpoint TEXT NOT NULL,
    holder TEXT NOT NULL,
    want BIGINT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (endpoint, holder)
)
"""
"""The tables, for an administrator to create once where users may not create tables.

* fanfold_pace_state: one row per endpoint key: the pacing policy's state
  (`fanfold.scheduling.pacing.PaceState`: the learned pace and window, the last start,
  pauses, the token bucket, the measured success rate, counters).
* fanfold_pace_leases: one row per call holding a slot, until `expires`; `seq` is the
  call's place in the order of starts.
* fanfold_pace_holders: one row per open limiter: how many of its callers wait (`want`),
  since when it waits for its turn (`since`), and until when it counts as alive.
"""

TABLES = ["fanfold_pace_state", "fanfold_pace_leases", "fanfold_pace_holders"]
_TABLES = Schema(
    SCHEMA,
    {
        "fanfold_pace_state": ("endpoint",),
        "fanfold_pace_leases": ("id", "endpoint", "holder", "expires", "seq"),
        "fanfold_pace_holders": ("endpoint", "holder", "want", "since", "expires"),
    },
    "fanfold.scheduling.shared_limits.SCHEMA",
    # A store made by an older release gains the policy's newer columns.
    columns={"fanfold_pace_state": {c: _column_type(c) for c in STATE_COLUMNS}},
)
_WHAT = "shared limits target"

_QUOTED = [f'"{c}"' for c in STATE_COLUMNS]
SELECT_STATE = f"SELECT {', '.join(_QUOTED)} FROM fanfold_pace_state WHERE endpoint = ?"
INSERT_STATE = (
    f"INSERT INTO fanfold_pace_state (endpoint, {', '.join(_QUOTED)}) "
    f"VALUES (?, {', '.join('?' for _ in _QUOTED)}) ON CONFLICT (endpoint) DO NOTHING"
)
UPDATE_STATE = (
    f"UPDATE fanfold_pace_state SET {', '.join(f'{c} = ?' for c in _QUOTED)} WHERE endpoint = ?"
)
UPSERT_LEASE = (
    "INSERT INTO fanfold_pace_leases (id, endpoint, holder, expires, seq) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET expires = excluded.expires"
)
UPSERT_HOLDER = (
    "INSERT INTO fanfold_pace_holders (endpoint, holder, want, since, expires) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint, holder) DO UPDATE SET "
    "want = excluded.want, since = excluded.since, expires = excluded.expires"
)


class SharedLimitsError(StoreError):
    """The shared rate-limit store or a limit setting cannot be used."""


class Busy(Exception):
    """Another process holds the store's lock now (a transaction that would not wait)."""


class Tx(Protocol):
    now: float
    commit: bool

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Store(Protocol):
    shown: str
    on_notify: Callable[[str], None] | None
    """Called (on another thread) with the holder whose commit another process announced."""
    poll: float
    """Seconds between cheap checks for others' changes while callers wait for a slot."""
    force: float
    """Seconds between full reads while callers wait (expired leases commit nothing)."""
    inline: bool
    """Whether a transaction is cheap enough to run on the caller's thread (a local file),
    when `transaction(..., wait=False)` finds the store free."""

    def transaction(
        self, endpoint: str, *, wait: bool = True
    ) -> contextlib.AbstractContextManager[Tx]:
        """A transaction; with `wait=False`, raise `Busy` at once if another holds the lock."""
        ...

    def lock_state(self, tx: Tx, endpoint: str) -> Sequence[Any] | None:
        """Read (and where the database can, lock) the endpoint's state row; sets `tx.now`."""
        ...

    def changed(self) -> bool: ...

    def peek(self, endpoint: str, now: float) -> tuple[Sequence[Any], int] | None:
        """The state row and the slots in use, read without taking the write lock (None:
        not cheaper than a transaction here, or no row)."""
        ...

    def notify(self, tx: Tx, endpoint: str, holder: str) -> None: ...

    def recover(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class _SqliteTx:
    conn: sqlite3.Connection
    now: float
    commit: bool = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, [tuple(r) for r in rows])


class SqliteStore:
    """The state in a SQLite file (WAL mode), for processes on one machine."""

    poll = 0.002
    force = 0.05
    inline = True
    LOCK_RETRY = 0.0002
    """Seconds between the first tries for the write lock (doubling up to LOCK_RETRY_MAX)."""
    LOCK_RETRY_MAX = 0.002

    def __init__(self, path: str) -> None:
        self.shown = path
        self.on_notify: Callable[[str], None] | None = None
        self._version: int | None = None
        db = SqliteDatabase(
            path, what=_WHAT, error=SharedLimitsError, schema=_TABLES, wal=True, autocommit=True
        )
        self.conn = db.conn
        # Waiting for another process's write lock is done here, not by SQLite's busy
        # handler: that sleeps 1, 2, 5, 10, 15, 20, 25 ms ... between tries, while a
        # transaction holds the lock for well under a millisecond.
        self._timeout = int(self.conn.execute("PRAGMA busy_timeout").fetchone()[0]) / 1000.0
        self.conn.execute("PRAGMA busy_timeout = 0")

    def _begin(self, wait: bool) -> None:
        """Take the file's write lock (BEGIN IMMEDIATE): transactions take turns."""
        delay, deadline = self.LOCK_RETRY, None
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                if not wait:
                    raise Busy(str(exc)) from exc
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._timeout
                elif now >= deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, self.LOCK_RETRY_MAX)

    @contextlib.contextmanager
    def transaction(self, endpoint: str, *, wait: bool = True) -> Iterator[Tx]:
        self._begin(wait)
        tx = _SqliteTx(self.conn, time.time())
        try:
            yield tx
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT" if tx.commit else "ROLLBACK")

    def changed(self) -> bool:
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._version
        self._version = version
        return bool(changed)

    def peek(self, endpoint: str, now: float) -> tuple[Sequence[Any], int] | None:
        """The state row and the slots in use: reads, which never wait for the writer."""
        row = self.conn.execute(SELECT_STATE, (endpoint,)).fetchone()
        if row is None:
            return None
        in_use = self.conn.execute(
            "SELECT COUNT(*) FROM fanfold_pace_leases WHERE endpoint = ? AND expires >= ?",
            (endpoint, now),
        ).fetchone()[0]
        return row, int(in_use)

    def lock_state(self, tx: Tx, endpoint: str) -> Sequence[Any] | None:
        """The state row (BEGIN IMMEDIATE already holds the file's write lock)."""
        row: Sequence[Any] | None = tx.execute(SELECT_STATE, (endpoint,)).fetchone()
        return row

    def notify(self, tx: Tx, endpoint: str, holder: str) -> None:
        """Others see the commit through `PRAGMA data_version`."""

    def recover(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


@dataclass
class _PostgresTx:
    cur: psycopg.Cursor[Any]
    now: float = 0.0
    commit: bool = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cur.execute(postgres_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.cur.executemany(postgres_sql(sql), [tuple(r) for r in rows])


class PostgresStore:
    """The state in PostgreSQL, for workers on several machines; LISTEN/NOTIFY wakes them."""

    poll = 0.1
    force = 0.1
    inline = False  # a round trip per statement: the keeper's thread waits for them

    def __init__(self, url: str, endpoint: str) -> None:
        self.url = url
        self.shown = shown_target(url)
        self._endpoint = endpoint
        self._notified = threading.Event()
        self._closed = threading.Event()
        self.on_notify: Callable[[str], None] | None = None
        self._db = PostgresDatabase(url, what=_WHAT, error=SharedLimitsError, schema=_TABLES)
        self.conn = self._db.conn
        try:
            self._check_rights()
            self._listener = self._connect()
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            self.conn.close()
            raise
        self._thread = threading.Thread(
            target=self._listen, name="fanfold-shared-limits-listen", daemon=True
        )
        self._thread.start()

    def _connect(self) -> psycopg.Connection[Any]:
        return connect_postgres(self.url, what=_WHAT, error=SharedLimitsError)

    def _check_rights(self) -> None:
        """Fail now, with one line, if the user may read but not write the tables."""
        import psycopg

        try:
            with self.conn.transaction():
                for table in TABLES:
                    self.conn.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE NOWAIT")
        except psycopg.errors.LockNotAvailable:
            pass  # someone holds a stronger lock for a moment: the rights are there
        except psycopg.Error as exc:
            raise SharedLimitsError(
                f"shared limits target {self.shown}: user {self.conn.info.user!r} may not "
                f"write the tables ({one_line(exc, self.url)}); grant that user SELECT, "
                f"INSERT, UPDATE and DELETE on {', '.join(TABLES)}",
                setting="target",
                target=self.shown,
            ) from exc

    def _listen(self) -> None:
        """Wake the keeper on the other processes' NOTIFYs (a thread; it owns `_listener`)."""
        import psycopg

        while not self._closed.is_set():
            try:
                for notice in self._listener.notifies(timeout=0.25):
                    endpoint, _, holder = notice.payload.partition("\n")
                    if endpoint == self._endpoint and self.on_notify is not None:
                        self._notified.set()
                        self.on_notify(holder)
            except psycopg.Error:
                if self._closed.is_set():
                    break
                time.sleep(0.5)
                with contextlib.suppress(psycopg.Error, StoreError):
                    self._listener.close()
                    self._listener = self._connect()
                    self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with contextlib.suppress(psycopg.Error):
            self._listener.close()

    @contextlib.contextmanager
    def transaction(self, endpoint: str, *, wait: bool = True) -> Iterator[Tx]:
        import psycopg

        with self.conn.transaction() as block, self.conn.cursor() as cur:
            tx = _PostgresTx(cur)
            yield tx
            if not tx.commit:
                raise psycopg.Rollback(block)

    def changed(self) -> bool:
        if self._notified.is_set():
            self._notified.clear()
            return True
        return False

    def peek(self, endpoint: str, now: float) -> tuple[Sequence[Any], int] | None:
        """None: a NOTIFY already means a slot was freed."""
        return None

    def lock_state(self, tx: Tx, endpoint: str) -> Sequence[Any] | None:
        """The state row, locked until the transaction ends; `tx.now` is the database's clock."""
        row: Sequence[Any] | None = tx.execute(SELECT_STATE + " FOR UPDATE", (endpoint,)).fetchone()
        tx.now = float(tx.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
        return row

    def notify(self, tx: Tx, endpoint: str, holder: str) -> None:
        """Wake the other processes' keepers when this transaction commits."""
        tx.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, f"{endpoint}\n{holder}"))

    def recover(self) -> None:
        if self.conn.closed or self.conn.broken:
            self._db.reconnect()
            self.conn = self._db.conn

    def close(self) -> None:
        self._closed.set()  # the listener closes its connection within 0.25 s
        self.conn.close()


def lock_state(store: Store, tx: Tx, endpoint: str) -> Sequence[Any] | None:
    """Read (and with PostgreSQL lock) the endpoint's state row; sets `tx.now`."""
    return store.lock_state(tx, endpoint)


def open_store(target: str, endpoint: str, *, postgres: bool | None = None) -> Store:
    """A store on a SQLite file or a postgresql:// URL."""
    if is_postgres_url(target) if postgres is None else postgres:
        return PostgresStore(target, endpoint)
    return SqliteStore(target)
