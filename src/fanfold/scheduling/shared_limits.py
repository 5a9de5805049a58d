"""Rate limits shared by every process that uses the same store and endpoint key.

`RateLimiter` keeps its state in memory, so two runs in two processes (or on two
machines) against one provider each take the provider's whole limit. A
`SharedRateLimiter` has the same API (the dispatcher and `compile_plan(rate_limiter=...)`
use it unchanged) but keeps the state in a SQLite file (runs on one machine) or a
PostgreSQL database (workers on several machines):

* Concurrency slots are leases: rows with an expiry time. A process renews its leases
  while its calls run; a crashed process stops renewing, so its slots come back when
  its leases expire (at most `lease_seconds` after the crash).
* Requests per second: one shared schedule (`next_at`: the earliest start of the next
  request). Each granted slot reserves the next start, so all processes together keep
  to the pace. Starts are reserved at most PACE_HORIZON (0.5 s) ahead, so a slowed pace
  takes effect at once and a process that comes later is not queued behind another's
  whole backlog.
* Tokens per minute: one shared token bucket.
* The adaptive pace: a 429 seen by any process sets the shared pace to just under the
  success rate measured over all processes (one decrease per burst of 429s, however
  many processes see it); every success in any process probes it up a little. A slow
  start window (when no limit at all is given) is shared too.

Within a process, waiters still queue locally by priority: a background thread (the
"keeper") acquires shared slots for the process and hands each to the best local
waiter. Between processes, free slots (and starts within the horizon) go round-robin to
the processes that wait, the one that has waited longest first, so no process starves
another.

The keeper polls: with PostgreSQL it also LISTENs, and a process that frees slots
NOTIFYs, so waiters wake at once (the poll, every 0.1 s, only catches expired leases);
with SQLite it checks `PRAGMA data_version` (a cheap read that changes when another
process commits) every 2 ms while it waits, and re-reads the tables every 50 ms.
Times are the database's clock with PostgreSQL (machines' clocks may differ) and the
machine's with SQLite.

Every process should give the same limits for the same key; each applies its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import heapq
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fanfold.scheduling.durations import (
    StoreError,
    connect_postgres,
    ensure_postgres_tables,
    is_postgres_url,
    one_line,
    postgres_sql,
    shown_target,
)
from fanfold.scheduling.limits import Priority, RateLimiter, _negate

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA", "PaceState", "SharedLimitsError", "SharedRateLimiter"]

_log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 10.0
NOTIFY_CHANNEL = "fanfold_limits"

SCHEMA = """
CREATE TABLE IF NOT EXISTS fanfold_limit_state (
    endpoint TEXT PRIMARY KEY,
    rate DOUBLE PRECISION,
    next_at DOUBLE PRECISION NOT NULL,
    tokens DOUBLE PRECISION,
    tokens_at DOUBLE PRECISION NOT NULL,
    slow_window DOUBLE PRECISION,
    successes DOUBLE PRECISION NOT NULL,
    successes_at DOUBLE PRECISION NOT NULL,
    successes_since DOUBLE PRECISION NOT NULL,
    last_decrease DOUBLE PRECISION NOT NULL,
    rate_limited BIGINT NOT NULL,
    succeeded BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS fanfold_limit_leases (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS fanfold_limit_leases_endpoint
    ON fanfold_limit_leases (endpoint, expires);
CREATE TABLE IF NOT EXISTS fanfold_limit_holders (
    endpoint TEXT NOT NULL,
    holder TEXT NOT NULL,
    want BIGINT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (endpoint, holder)
)
"""
"""The tables, for an administrator to create once where users may not create tables.

* fanfold_limit_state: one row per endpoint key: the pace (`rate`, learned; NULL for
  none), the next start (`next_at`), the token bucket, the slow-start window, the decayed
  success count behind the measured rate, the last decrease, and counters.
* fanfold_limit_leases: one row per concurrency slot in use, until `expires`.
* fanfold_limit_holders: one row per open limiter: how many of its callers wait (`want`),
  since when it waits for its turn (`since`), and until when it counts as alive.
"""

TABLES = ["fanfold_limit_state", "fanfold_limit_leases", "fanfold_limit_holders"]

_STATE_COLUMNS = (
    "rate",
    "next_at",
    "tokens",
    "tokens_at",
    "slow_window",
    "successes",
    "successes_at",
    "successes_since",
    "last_decrease",
    "rate_limited",
    "succeeded",
)
_SELECT_STATE = f"SELECT {', '.join(_STATE_COLUMNS)} FROM fanfold_limit_state WHERE endpoint = ?"
_INSERT_STATE = (
    f"INSERT INTO fanfold_limit_state (endpoint, {', '.join(_STATE_COLUMNS)}) "
    f"VALUES (?, {', '.join('?' for _ in _STATE_COLUMNS)}) ON CONFLICT (endpoint) DO NOTHING"
)
_UPDATE_STATE = (
    f"UPDATE fanfold_limit_state SET {', '.join(f'{c} = ?' for c in _STATE_COLUMNS)} "
    "WHERE endpoint = ?"
)
_UPSERT_LEASE = (
    "INSERT INTO fanfold_limit_leases (id, endpoint, holder, expires) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET expires = excluded.expires"
)
_UPSERT_HOLDER = (
    "INSERT INTO fanfold_limit_holders (endpoint, holder, want, since, expires) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint, holder) DO UPDATE SET "
    "want = excluded.want, since = excluded.since, expires = excluded.expires"
)


class SharedLimitsError(StoreError):
    """The shared rate-limit store or a limit setting cannot be used."""


# -- the shared pace, as plain logic -------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """One process's limits and the adaptation constants (those of `RateLimiter`)."""

    max_concurrency: int | None = None
    requests_per_second: float | None = None
    tokens_per_minute: float | None = None
    adaptive: bool = True
    success_window: float = RateLimiter.SUCCESS_WINDOW
    decrease: float = RateLimiter.DECREASE
    increase: float = RateLimiter.INCREASE
    initial_window: int = RateLimiter.INITIAL_WINDOW
    max_window: int = RateLimiter.MAX_WINDOW

    @property
    def slow_start(self) -> bool:
        """Whether the shared slow-start window caps this process (nothing else bounds it)."""
        return self.adaptive and self.max_concurrency is None and self.requests_per_second is None


@dataclass
class PaceState:
    """One endpoint's shared pacing state (a row of fanfold_limit_state).

    The same rules as `RateLimiter`, applied to what all processes report. The
    measured success rate comes from an exponentially decayed count of successes
    (time constant `success_window`), so one row holds it.
    """

    rate: float | None = None
    """The learned pace, requests per second (None: nothing learned yet)."""
    next_at: float = 0.0
    """The earliest start of the next request."""
    tokens: float | None = None
    """The token budget left (None: full)."""
    tokens_at: float = 0.0
    window: float | None = float(RateLimiter.INITIAL_WINDOW)
    """The slow-start concurrency window (None: dropped, the pace decides)."""
    successes: float = 0.0
    """Decayed count of successes at `successes_at`."""
    successes_at: float = 0.0
    successes_since: float = 0.0
    """Start of the current stretch of successes (the measured rate's span)."""
    last_decrease: float = 0.0
    rate_limited: int = 0
    succeeded: int = 0

    @classmethod
    def fresh(cls, now: float, limits: Limits) -> PaceState:
        return cls(
            next_at=now,
            tokens_at=now,
            window=float(limits.initial_window),
            successes_at=now,
            successes_since=now,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> PaceState:
        values = dict(zip(_STATE_COLUMNS, row, strict=True))
        return cls(
            rate=_float_or_none(values["rate"]),
            next_at=float(values["next_at"]),
            tokens=_float_or_none(values["tokens"]),
            tokens_at=float(values["tokens_at"]),
            window=_float_or_none(values["slow_window"]),
            successes=float(values["successes"]),
            successes_at=float(values["successes_at"]),
            successes_since=float(values["successes_since"]),
            last_decrease=float(values["last_decrease"]),
            rate_limited=int(values["rate_limited"]),
            succeeded=int(values["succeeded"]),
        )

    def row(self) -> tuple[Any, ...]:
        return (
            self.rate,
            self.next_at,
            self.tokens,
            self.tokens_at,
            self.window,
            self.successes,
            self.successes_at,
            self.successes_since,
            self.last_decrease,
            self.rate_limited,
            self.succeeded,
        )

    # -- what a process applies ---------------------------------------------------------------

    def effective_rate(self, limits: Limits) -> float | None:
        """The pace this process keeps: the learned one, capped by its stated limit."""
        if limits.adaptive and self.rate is not None:
            if limits.requests_per_second is not None:
                return min(self.rate, limits.requests_per_second)
            return self.rate
        return limits.requests_per_second

    def cap(self, limits: Limits) -> int | None:
        """The concurrency in effect for this process (None: no cap)."""
        window = self.window if limits.slow_start else None
        known = [c for c in (limits.max_concurrency, window) if c is not None]
        return int(min(known)) if known else None

    def measured(self, now: float, limits: Limits) -> float | None:
        """Successes per second over the last few seconds, all processes together."""
        count = self._decayed(now, limits)
        span = now - self.successes_since
        if count < 1 or span <= 0.05:
            return None
        tau = limits.success_window
        return count / (tau * (1.0 - math.exp(-span / tau)))

    def _decayed(self, now: float, limits: Limits) -> float:
        age = max(0.0, now - self.successes_at)
        return self.successes * math.exp(-age / limits.success_window)

    # -- feedback ---------------------------------------------------------------------------

    def fold_successes(self, now: float, n: int, limits: Limits) -> None:
        """`n` calls succeeded: count them and probe the pace up."""
        if n <= 0:
            return
        self.succeeded += n
        count = self._decayed(now, limits)
        if count < 0.5:
            self.successes_since = now  # a new stretch after a quiet spell
        self.successes = count + n
        self.successes_at = now
        if self.window is not None:
            self.window += n
            if self.window >= limits.max_window:
                self.window = None
        if limits.adaptive and self.rate is not None:
            self.rate += limits.increase * n
            if limits.requests_per_second is not None:
                self.rate = min(self.rate, limits.requests_per_second)

    def fold_rate_limited(
        self, now: float, retry_afters: Sequence[float | None], limits: Limits
    ) -> bool:
        """429s: slow the shared pace to just under the measured rate, once per burst.

        Returns:
            Whether the pace was decreased.
        """
        if not retry_afters:
            return False
        self.rate_limited += len(retry_afters)
        if not limits.adaptive:
            return False
        self.window = None  # the pace decides from now on
        if now - self.last_decrease < 0.5:
            return False  # one decrease per burst of 429s, whichever process saw them
        self.last_decrease = now
        retry_after = max((r for r in retry_afters if r), default=None)
        measured = self.measured(now, limits)
        current = self.effective_rate(limits)
        if current is None:
            current = measured
        if measured is not None and current is not None:
            target = min(current, measured) * limits.decrease
        elif current is not None:
            target = current * 0.5
        elif retry_after:
            target = 1.0 / retry_after  # cold start: the spacing the server asks for
        else:
            target = 1.0
        self.rate = max(0.5, target)
        if retry_after:
            self.next_at = max(self.next_at, now + retry_after)
        return True

    def pace_room(self, now: float, horizon: float, limits: Limits) -> int | None:
        """How many more starts the pace lets be reserved within `horizon` seconds.

        None when no pace applies. Reserving no further ahead keeps a slowed pace
        effective at once, and lets every waiting process have its turn.
        """
        rate = self.effective_rate(limits)
        if rate is None:
            return None
        first = max(now, self.next_at)
        if first > now + horizon:
            return 0
        return int((now + horizon - first) * rate) + 1

    def reserve(self, now: float, tokens: int, limits: Limits) -> float:
        """Reserve the next start for one call; returns the seconds it waits for it."""
        delay = 0.0
        rate = self.effective_rate(limits)
        if rate is not None:
            start = max(now, self.next_at)
            self.next_at = start + 1.0 / rate
            delay = start - now
        budget = limits.tokens_per_minute
        if budget is not None and tokens:
            per_second = budget / 60.0
            level = budget if self.tokens is None else self.tokens
            level = min(budget, level + max(0.0, now - self.tokens_at) * per_second)
            level -= tokens
            self.tokens, self.tokens_at = level, now
            if level < 0:
                delay = max(delay, -level / per_second)
        return delay


def round_robin_share(free: int, queue: Sequence[tuple[int, bool]]) -> int:
    """How many of `free` slots this process takes.

    `queue` holds (callers waiting, is this process) per waiting process, longest
    waiting first; slots go one per process per round, in that order.
    """
    left = [want for want, _ in queue]
    mine = next((i for i, (_, me) in enumerate(queue) if me), None)
    if mine is None:
        return 0
    got = 0
    while free > 0 and any(left):
        for i, want in enumerate(left):
            if free <= 0:
                break
            if want > 0:
                left[i] -= 1
                free -= 1
                got += i == mine
    return got


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


# -- stores ---------------------------------------------------------------------------------------


class _Tx(Protocol):
    now: float
    commit: bool

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class _Store(Protocol):
    shown: str
    poll: float
    """Seconds between cheap checks for others' changes while callers wait for a slot."""
    force: float
    """Seconds between full reads while callers wait (expired leases commit nothing)."""

    def transaction(self, endpoint: str) -> contextlib.AbstractContextManager[_Tx]: ...

    def changed(self) -> bool: ...

    def notify(self, tx: _Tx, endpoint: str, holder: str) -> None: ...

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


class _SqliteStore:
    """The state in a SQLite file (WAL mode), for processes on one machine."""

    poll = 0.002
    force = 0.05

    def __init__(self, path: str) -> None:
        self.shown = path
        self._version: int | None = None
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc
        try:
            if path != ":memory:":
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            for statement in filter(str.strip, SCHEMA.split(";")):
                self.conn.execute(statement)
        except sqlite3.Error as exc:
            self.conn.close()
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> SharedLimitsError:
        return SharedLimitsError(
            f"shared limits target {self.shown!r}: cannot use it as a SQLite file: "
            f"{one_line(exc)}; pass a writable SQLite file path or a postgresql:// URL",
            setting="target",
            target=self.shown,
        )

    @contextlib.contextmanager
    def transaction(self, endpoint: str) -> Iterator[_Tx]:
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock: transactions take turns
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

    def notify(self, tx: _Tx, endpoint: str, holder: str) -> None:
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


class _PostgresStore:
    """The state in PostgreSQL, for workers on several machines; LISTEN/NOTIFY wakes them."""

    poll = 0.1
    force = 0.1

    def __init__(self, url: str, endpoint: str) -> None:
        self.url = url
        self.shown = shown_target(url)
        self._endpoint = endpoint
        self._notified = threading.Event()
        self._closed = threading.Event()
        self.on_notify: Any = None
        self.conn = self._connect()
        try:
            ensure_postgres_tables(
                self.conn,
                url,
                TABLES,
                SCHEMA,
                what="shared limits",
                error=SharedLimitsError,
                schema_name="fanfold.scheduling.shared_limits.SCHEMA",
            )
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
        return connect_postgres(self.url, what="shared limits", error=SharedLimitsError)

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
    def transaction(self, endpoint: str) -> Iterator[_Tx]:
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

    def notify(self, tx: _Tx, endpoint: str, holder: str) -> None:
        """Wake the other processes' keepers when this transaction commits."""
        tx.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, f"{endpoint}\n{holder}"))

    def recover(self) -> None:
        if self.conn.closed or self.conn.broken:
            with contextlib.suppress(psycopg_error()):
                self.conn.close()
            self.conn = self._connect()

    def close(self) -> None:
        self._closed.set()  # the listener closes its connection within 0.25 s
        self.conn.close()


def psycopg_error() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _lock_state(store: _Store, tx: _Tx, endpoint: str) -> Sequence[Any] | None:
    """Read (and with PostgreSQL lock) the endpoint's state row; sets `tx.now`."""
    if isinstance(store, _PostgresStore):
        row = tx.execute(_SELECT_STATE + " FOR UPDATE", (endpoint,)).fetchone()
        tx.now = float(tx.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
        return row
    return tx.execute(_SELECT_STATE, (endpoint,)).fetchone()


# -- the limiter ----------------------------------------------------------------------------------


@dataclass(order=True)
class _Ask:
    key: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[float] = field(compare=False)
    tokens: int = field(default=0, compare=False)
    granted: bool = field(default=False, compare=False)
    """Granted a slot, or given up (cancelled): no longer waiting."""


@dataclass
class _Work:
    want: int
    asks: list[int]
    releases: list[str]
    successes: int
    limited: list[float | None]
    held: list[str]
    renew: bool


@dataclass
class _Outcome:
    grants: list[tuple[str | None, float]]
    mono: float
    """time.monotonic() when the transaction read the clock (delays count from it)."""
    state: PaceState
    want_after: int
    retry_in: float
    """Seconds until the pace may let this process reserve another start."""


_OPEN: dict[tuple[Any, ...], SharedRateLimiter] = {}
_OPEN_LOCK = threading.Lock()


class SharedRateLimiter(RateLimiter):
    """A RateLimiter whose limits are shared by every process using the same store and key.

    Args:
        target: a SQLite file path (processes on one machine; created if missing) or a
            postgresql:// URL (workers on several machines). The tables are created if
            missing (see SCHEMA).
        key: the endpoint, e.g. "openai:gpt-4o-mini" or `endpoint_key(model)`; limiters
            with the same key in the same store share their limits.
        max_concurrency: most calls in flight, all processes together (None: no cap).
        requests_per_second: a known request-rate limit, all processes together.
        tokens_per_minute: a known token-rate limit, all processes together.
        adaptive: learn the pace from 429s (shared: a 429 anywhere slows everyone).
        lease_seconds: how long a slot stays taken without renewal; a crashed process's
            slots come back within this time. Held leases are renewed every quarter of it.

    Raises:
        SharedLimitsError: a bad path, an unreachable database, tables that are missing
            and may not be created, or a bad setting; one line naming the setting, any
            password masked.
    """

    PACE_HORIZON = 0.5
    """Seconds ahead a process may reserve request starts; later callers wait their turn."""

    def __init__(
        self,
        target: str | os.PathLike[str],
        key: str | Sequence[str],
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        try:
            super().__init__(
                max_concurrency=max_concurrency,
                requests_per_second=requests_per_second,
                tokens_per_minute=tokens_per_minute,
                adaptive=adaptive,
            )
        except ValueError as exc:
            setting = str(exc).split(" ", 1)[0]
            raise SharedLimitsError(str(exc), setting=setting) from exc
        if not isinstance(lease_seconds, int | float) or not 0 < lease_seconds < math.inf:
            raise SharedLimitsError(
                f"lease_seconds must be a positive number of seconds, not {lease_seconds!r}",
                setting="lease_seconds",
            )
        self.key = _key_text(key)
        target = os.fspath(target)
        if not target:
            raise SharedLimitsError(
                "the shared limits target is empty; pass a SQLite file path or a postgresql:// URL",
                setting="target",
            )
        self.target = shown_target(target)
        self.lease_seconds = float(lease_seconds)
        self.limits = Limits(
            max_concurrency=max_concurrency,
            requests_per_second=requests_per_second,
            tokens_per_minute=tokens_per_minute,
            adaptive=adaptive,
            success_window=self.SUCCESS_WINDOW,
            decrease=self.DECREASE,
            increase=self.INCREASE,
            initial_window=self.INITIAL_WINDOW,
            max_window=self.MAX_WINDOW,
        )
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.state = PaceState()
        """The shared state as of this process's last transaction."""
        self._renew_every = max(0.02, self.lease_seconds / 4)
        self._asks: list[_Ask] = []  # callers waiting, best first (a heap)
        self._live = 0  # callers waiting
        self._held: list[str] = []  # lease ids of callers holding a slot
        self._leaseless = 0  # callers holding a slot granted while no cap applied
        self._to_release: list[str] = []
        self._pending_successes = 0
        self._pending_limited: list[float | None] = []
        self._recorded_want = 0
        self._recorded_since = 0.0
        self._closed = False
        self._stop = False
        self._wake = threading.Event()
        self._db_lock = threading.Lock()
        self._store: _Store
        if is_postgres_url(target):
            pg = _PostgresStore(target, self.key)
            pg.on_notify = self._on_notify
            self._store = pg
        else:
            self._store = _SqliteStore(target)
        try:
            with self._db_lock:
                self._register()
        except Exception as exc:
            self._store.close()
            raise SharedLimitsError(
                f"shared limits target {self.target}: cannot use it: "
                f"{one_line(exc, target)}; check the path or URL and the rights on it",
                setting="target",
                target=self.target,
            ) from exc
        self._thread = threading.Thread(
            target=self._keep, name="fanfold-shared-limits", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str],
        key: str | Sequence[str],
        *,
        max_concurrency: int | None = None,
        requests_per_second: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> SharedRateLimiter:
        """Open a limiter on `target` (a path or a postgresql:// URL) for endpoint `key`."""
        return cls(
            target,
            key,
            max_concurrency=max_concurrency,
            requests_per_second=requests_per_second,
            tokens_per_minute=tokens_per_minute,
            adaptive=adaptive,
            lease_seconds=lease_seconds,
        )

    @classmethod
    def shared(cls, key: Any, **limits: Any) -> SharedRateLimiter:
        """The process-wide limiter for `key`, `target=` and these limits (opened once)."""
        target = limits.pop("target", None)
        if target is None:
            raise SharedLimitsError(
                "SharedRateLimiter.shared needs target=, a SQLite file path or a postgresql:// URL",
                setting="target",
            )
        full_key = (os.fspath(target), _key_text(key), tuple(sorted(limits.items())))
        with _OPEN_LOCK:
            limiter = _OPEN.get(full_key)
            if limiter is None or limiter.closed:
                limiter = _OPEN[full_key] = cls(target, key, **limits)
            return limiter

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SharedRateLimiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter({self.target!r}, {self.key!r}, "
            f"max_concurrency={self.max_concurrency}, "
            f"requests_per_second={self.requests_per_second}, "
            f"tokens_per_minute={self.tokens_per_minute}, adaptive={self.adaptive}, "
            f"lease_seconds={self.lease_seconds})"
        )

    # -- the RateLimiter API ------------------------------------------------------------------

    async def acquire(self, priority: Priority = 0.0, *, tokens: int = 0) -> None:
        """Wait for a shared slot and the shared pace; higher `priority` goes first here."""
        loop = asyncio.get_running_loop()
        ask = _Ask((_negate(priority), next(self._seq)), loop, loop.create_future(), tokens)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            heapq.heappush(self._asks, ask)
            self._live += 1
        self._wake.set()
        try:
            start = await ask.future
        except asyncio.CancelledError:
            with self._lock:
                granted = ask.granted
                if not granted:
                    ask.granted = True  # given up: the keeper skips it
                    self._live -= 1
            if granted:
                self.release()
            raise
        delay = start - time.monotonic()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        """Free a slot: its lease is deleted and the slot goes to the next waiter."""
        with self._lock:
            self.active = max(0, self.active - 1)
            if self._held:
                self._to_release.append(self._held.pop())
            elif self._leaseless:
                self._leaseless -= 1
        self._wake_soon()

    def _wake_soon(self) -> None:
        """Wake the keeper once the caller's callback is done.

        The dispatcher releases a slot and then reports the 429 that freed it; waking the
        keeper on the event loop's next turn lets one transaction see both, so the slot's
        next call is paced at the slowed rate (as RateLimiter's next `_pace` would be).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._wake.set()
            return
        loop.call_soon(self._wake.set)

    def record_success(self, tokens: int = 0) -> None:
        """A call succeeded: the shared pace is probed up (at the next transaction)."""
        with self._lock:
            self._pending_successes += 1

    def record_rate_limited(
        self, retry_after: float | None = None, *, max_pause: float | None = None
    ) -> None:
        """The provider answered 429: slow every process's pace (pausing at most `max_pause`)."""
        if retry_after is not None and max_pause is not None:
            retry_after = min(retry_after, max_pause)
        with self._lock:
            self.rate_limited += 1
            self._pending_limited.append(retry_after)
        self._wake.set()

    def close(self) -> None:
        """Stop the keeper, give back this process's leases and leave the store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = [a for a in self._asks if not a.granted]
            for ask in waiting:
                ask.granted = True
            self._live = 0
        atexit.unregister(self.close)
        for ask in waiting:
            with contextlib.suppress(RuntimeError):
                ask.loop.call_soon_threadsafe(_fail, ask.future, f"{self!r} was closed")
        self._stop = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with self._lock:  # the last feedback, and every lease this process still has
            last = _Work(
                want=0,
                asks=[],
                releases=[*self._held, *self._to_release],
                successes=self._pending_successes,
                limited=self._pending_limited,
                held=[],
                renew=False,
            )
            self._held, self._to_release, self._leaseless = [], [], 0
            self._pending_successes, self._pending_limited = 0, []
        with self._db_lock:
            try:
                self._sync(last)
                with self._store.transaction(self.key) as tx:
                    tx.execute(
                        "DELETE FROM fanfold_limit_holders WHERE endpoint = ? AND holder = ?",
                        (self.key, self.holder),
                    )
                    tx.commit = True
            except Exception as exc:  # the leases expire on their own
                _log.warning("shared limits: could not leave %s cleanly: %s", self.target, exc)
            finally:
                self._store.close()

    @property
    def waiting(self) -> int:
        """Callers of this process queued for a slot."""
        with self._lock:
            return self._live

    def snapshot(self) -> dict[str, Any]:
        """The shared state now: pace, slots in use, waiting processes, counters."""
        with self._db_lock, self._store.transaction(self.key) as tx:
            row = _lock_state(self._store, tx, self.key)
            state = PaceState.from_row(row) if row is not None else PaceState()
            in_use = tx.execute(
                "SELECT COUNT(*) FROM fanfold_limit_leases WHERE endpoint = ? AND expires >= ?",
                (self.key, tx.now),
            ).fetchone()[0]
            holders = tx.execute(
                "SELECT holder, want FROM fanfold_limit_holders WHERE endpoint = ? "
                "AND expires >= ?",
                (self.key, tx.now),
            ).fetchall()
        return {
            "rate": state.effective_rate(self.limits),
            "learned_rate": state.rate,
            "window": state.window,
            "slots_in_use": int(in_use),
            "holders": {h: int(w) for h, w in holders},
            "rate_limited": state.rate_limited,
            "succeeded": state.succeeded,
        }

    # -- the keeper thread --------------------------------------------------------------------

    def _on_notify(self, holder: str) -> None:
        if holder != self.holder:
            self._wake.set()

    def _register(self) -> None:
        """Join the store; reset the shared pace if nobody else is using it."""
        with self._store.transaction(self.key) as tx:
            row = _lock_state(self._store, tx, self.key)
            now = tx.now
            fresh = PaceState.fresh(now, self.limits)
            if row is None:
                tx.execute(_INSERT_STATE, (self.key, *fresh.row()))
                row = _lock_state(self._store, tx, self.key)
            others = tx.execute(
                "SELECT COUNT(*) FROM fanfold_limit_holders WHERE endpoint = ? AND expires >= ?",
                (self.key, now),
            ).fetchone()[0]
            leases = tx.execute(
                "SELECT COUNT(*) FROM fanfold_limit_leases WHERE endpoint = ? AND expires >= ?",
                (self.key, now),
            ).fetchone()[0]
            if not others and not leases:
                # A new start, as a new process's RateLimiter makes: yesterday's 429s
                # should not slow today's runs.
                tx.execute(_UPDATE_STATE, (*fresh.row(), self.key))
                self.state = fresh
            else:
                assert row is not None
                self.state = PaceState.from_row(row)
            tx.execute(_UPSERT_HOLDER, (self.key, self.holder, 0, now, now + self.lease_seconds))
            tx.commit = True
            self._recorded_since = now
        self.rate = self.state.effective_rate(self.limits)

    def _keep(self) -> None:
        next_renew = time.monotonic() + self._renew_every
        last_sync = 0.0
        blocked = False
        failures = 0
        next_try = 0.0  # when the pace lets a blocked process reserve again
        while True:
            now = time.monotonic()
            if blocked:
                timeout = min(self._store.poll, max(0.0, next_try - now))
            else:
                timeout = max(0.0, next_renew - now)
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop:
                return
            now = time.monotonic()
            renew = now >= next_renew
            with self._lock:
                work = self._take_work(renew)
            if not (
                work.releases
                or work.successes
                or work.limited
                or renew
                or work.want != self._recorded_want
            ):
                if not work.want:
                    blocked = False
                    continue
                # Waiting: read again only if someone committed, the pace allows another
                # start, or now and then (leases that expire commit nothing).
                with self._db_lock:
                    changed = self._store.changed()
                due = now >= next_try or now - last_sync >= self._store.force
                if not changed and not due:
                    continue
            try:
                with self._db_lock:
                    outcome = self._sync(work)
            except Exception as exc:
                failures += 1
                self._give_back(work)
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning(
                        "shared limits: %s failed (%d in a row), retrying: %s",
                        self.target,
                        failures,
                        one_line(exc),
                    )
                with self._db_lock, contextlib.suppress(Exception):
                    self._store.recover()
                self._wake.wait(min(1.0, 0.05 * failures))
                self._wake.set()
                continue
            failures = 0
            last_sync = now
            if renew:
                next_renew = now + self._renew_every
            self._hand_out(outcome)
            blocked = outcome.want_after > 0
            next_try = outcome.mono + outcome.retry_in

    def _take_work(self, renew: bool) -> _Work:
        """What the next transaction does (lock held)."""
        limit = self._live
        cap = self.state.cap(self.limits)
        if cap is not None:
            limit = min(limit, cap)
        rate = self.state.effective_rate(self.limits)
        if rate is not None:  # at most the starts within the pace horizon
            limit = min(limit, int(self.PACE_HORIZON * rate) + 2)
        best: list[_Ask] = []
        while len(best) < limit and self._asks:
            ask = heapq.heappop(self._asks)
            if not ask.granted:
                if ask.loop.is_closed():
                    ask.granted = True
                    self._live -= 1
                    continue
                best.append(ask)
        for ask in best:
            heapq.heappush(self._asks, ask)
        work = _Work(
            want=self._live,
            asks=[a.tokens for a in best],
            releases=self._to_release,
            successes=self._pending_successes,
            limited=self._pending_limited,
            held=list(self._held),
            renew=renew,
        )
        self._to_release, self._pending_successes, self._pending_limited = [], 0, []
        return work

    def _give_back(self, work: _Work) -> None:
        """A transaction failed: keep its feedback and releases for the next one."""
        with self._lock:
            self._to_release[:0] = work.releases
            self._pending_successes += work.successes
            self._pending_limited[:0] = work.limited

    def _sync(self, work: _Work) -> _Outcome:
        """One transaction: feedback, releases, expiry, renewal, then slots for waiters."""
        limits, key = self.limits, self.key
        with self._store.transaction(key) as tx:
            row = _lock_state(self._store, tx, key)
            mono = time.monotonic()
            now = tx.now
            if row is None:  # deleted under us: start afresh
                state = PaceState.fresh(now, limits)
                tx.execute(_INSERT_STATE, (key, *state.row()))
                _lock_state(self._store, tx, key)
            else:
                state = PaceState.from_row(row)
            changed = False
            freed = False
            window_before = state.window
            if work.successes:
                state.fold_successes(now, work.successes, limits)
                changed = True
                freed = state.window != window_before
            if work.limited:
                state.fold_rate_limited(now, work.limited, limits)
                changed = True
            if work.releases:
                tx.executemany(
                    "DELETE FROM fanfold_limit_leases WHERE id = ?", [(i,) for i in work.releases]
                )
                changed = freed = True
            expired = tx.execute(
                "DELETE FROM fanfold_limit_leases WHERE endpoint = ? AND expires < ?", (key, now)
            ).rowcount
            if expired and expired > 0:
                changed = freed = True
            if work.renew:
                expires = now + self.lease_seconds
                tx.executemany(_UPSERT_LEASE, [(i, key, self.holder, expires) for i in work.held])
                tx.execute(
                    "DELETE FROM fanfold_limit_holders WHERE endpoint = ? AND expires < ?",
                    (key, now - self.lease_seconds),
                )
                changed = True
            grants: list[tuple[str | None, float]] = []
            cap = state.cap(limits)
            free_left = 0
            others_wait = False
            retry_in = self._store.force
            if work.want and work.asks:
                free = state.pace_room(now, self.PACE_HORIZON, limits)
                if cap is not None:
                    in_use = tx.execute(
                        "SELECT COUNT(*) FROM fanfold_limit_leases WHERE endpoint = ?", (key,)
                    ).fetchone()[0]
                    slots = max(0, cap - int(in_use))
                    free = slots if free is None else min(free, slots)
                if free is None:
                    count = len(work.asks)
                else:
                    others = tx.execute(
                        "SELECT want, since, holder FROM fanfold_limit_holders "
                        "WHERE endpoint = ? AND holder <> ? AND want > 0 AND expires >= ?",
                        (key, self.holder, now),
                    ).fetchall()
                    others_wait = bool(others)
                    mine = self._recorded_since if self._recorded_want > 0 else now
                    queue = sorted(
                        [(float(s), str(h), int(w), False) for w, s, h in others]
                        + [(mine, self.holder, work.want, True)]
                    )
                    count = round_robin_share(free, [(w, me) for _, _, w, me in queue])
                    count = min(count, len(work.asks))
                    free_left = free - count
                expires = now + self.lease_seconds
                for tokens in work.asks[:count]:
                    delay = state.reserve(now, tokens, limits)
                    lease_id = None
                    if cap is not None:
                        lease_id = uuid.uuid4().hex
                        tx.execute(_UPSERT_LEASE, (lease_id, key, self.holder, expires))
                    grants.append((lease_id, delay))
            want_after = work.want - len(grants)
            if want_after and state.pace_room(now, self.PACE_HORIZON, limits) == 0:
                # Blocked by the pace: try again when the horizon reaches next_at.
                retry_in = min(retry_in, state.next_at - self.PACE_HORIZON - now)
            if grants or want_after == 0 or self._recorded_want == 0:
                since = now
            else:
                since = self._recorded_since
            if grants or work.renew or want_after != self._recorded_want:
                tx.execute(
                    _UPSERT_HOLDER, (key, self.holder, want_after, since, now + self.lease_seconds)
                )
                changed = True
            if changed:
                tx.execute(_UPDATE_STATE, (*state.row(), key))
                if freed or (free_left > 0 and others_wait):
                    self._store.notify(tx, key, self.holder)
            tx.commit = changed
        # Committed: remember what the store now says about this process.
        self._recorded_want = want_after
        self._recorded_since = since
        self.state = state
        self.rate = state.effective_rate(limits)
        return _Outcome(grants, mono, state, want_after, retry_in)

    def _hand_out(self, outcome: _Outcome) -> None:
        """Give the slots just acquired to the best waiters, in priority order."""
        again = False
        with self._lock:
            for lease_id, delay in outcome.grants:
                ask = self._pop_waiter()
                if ask is None:  # the waiters gave up meanwhile: return the slot
                    if lease_id is not None:
                        self._to_release.append(lease_id)
                    again = True
                    continue
                ask.granted = True
                self._live -= 1
                try:
                    ask.loop.call_soon_threadsafe(_grant, ask.future, outcome.mono + delay)
                except RuntimeError:  # its event loop is closed
                    if lease_id is not None:
                        self._to_release.append(lease_id)
                    again = True
                    continue
                self.active += 1
                if lease_id is not None:
                    self._held.append(lease_id)
                else:
                    self._leaseless += 1
        if again:
            self._wake.set()

    def _pop_waiter(self) -> _Ask | None:
        while self._asks:
            ask = heapq.heappop(self._asks)
            if not ask.granted and not ask.loop.is_closed():
                return ask
            if not ask.granted:
                ask.granted = True
                self._live -= 1
        return None


def _key_text(key: str | Sequence[str]) -> str:
    text = key if isinstance(key, str) else "|".join(str(part) for part in key)
    if not text:
        raise SharedLimitsError(
            "the shared limits key is empty; pass the endpoint, e.g. 'openai:gpt-4o-mini'",
            setting="key",
        )
    return text


def _grant(future: asyncio.Future[float], start: float) -> None:
    if not future.done():
        future.set_result(start)


def _fail(future: asyncio.Future[float], message: str) -> None:
    if not future.done():
        future.set_exception(RuntimeError(message))
