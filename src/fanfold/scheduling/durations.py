"""Durations recorded by earlier runs, kept in a SQLite file or a PostgreSQL database.

Figures are keyed by the plan's fingerprint, the model and the subtask id, so a changed
plan, prompt or model never reuses stale figures. `DurationStore.open(target)` takes a
path or a postgresql:// URL, so workers on several machines can learn from each other's
runs (in the same database as their shared rate limits, if they like). Both go through
`fanfold.scheduling.storage`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from fanfold.errors import StoreError
from fanfold.scheduling.storage import (
    Database,
    PostgresDatabase,
    Schema,
    SqliteDatabase,
    is_postgres_url,
)
from fanfold.state.results import SubtaskResult

__all__ = ["DurationStore", "DurationStoreError", "PostgresDurationStore", "StoreError"]

TABLE = "fanfold_durations"

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
_TABLES = Schema(SCHEMA, {TABLE: _COLUMNS}, "fanfold.scheduling.durations.SCHEMA")
_WHAT = "durations store target"
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
        # A small file: read it all, so that damage shows now, not mid-run.
        self._use(
            SqliteDatabase(
                str(path), what=_WHAT, error=DurationStoreError, schema=_TABLES, quick_check=True
            )
        )

    def _use(self, db: Database) -> None:
        self._db = db
        self.path = db.target
        self._warned = False

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

        A store that fails now (a damaged file, a lost database) gives none, with one
        warning: a run never stops for it.
        """
        try:
            rows = self._db.query(_LOAD, (plan, model))
        except self._db.errors as exc:
            self._damaged(exc)
            return {}
        return {subtask: float(seconds) for subtask, seconds in rows}

    def record(self, plan: str, model: str, durations: Mapping[str, float]) -> None:
        """Fold new observations into the running means (not into a damaged file)."""
        now = time.time()
        rows = [(plan, model, subtask, seconds, now) for subtask, seconds in durations.items()]
        if not rows:
            return
        try:
            self._db.executemany(_UPSERT, rows)
        except self._db.errors as exc:
            self._damaged(exc)

    def _damaged(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            _log.warning(
                f"warning: durations store {str(self.path)!r} cannot be used "
                f"({self._db.reason(exc)}); running without learned durations"
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
        self._db.close()


class PostgresDurationStore(DurationStore):
    """A DurationStore in a PostgreSQL database (table `fanfold_durations`).

    The table is created if missing. The connection is reopened once if it breaks.

    Raises:
        DurationStoreError: the database is unreachable, or the table is missing and the
            user may not create it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._use(PostgresDatabase(url, what=_WHAT, error=DurationStoreError, schema=_TABLES))
