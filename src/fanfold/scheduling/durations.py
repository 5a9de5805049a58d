"""Durations recorded by earlier runs, kept in a local SQLite file.

Figures are keyed by the plan's fingerprint, the model and the subtask id, so a changed
plan, prompt or model never reuses stale figures.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from fanfold.state.results import SubtaskResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fanfold_durations (
    plan TEXT NOT NULL,
    model TEXT NOT NULL,
    subtask TEXT NOT NULL,
    runs INTEGER NOT NULL,
    seconds REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (plan, model, subtask)
)
"""


class DurationStore:
    """Mean call durations per (plan fingerprint, model, subtask) in a SQLite file.

    Args:
        path: the SQLite file (created with its folder if missing); ":memory:" works.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock, self._conn:
            self._conn.execute(_SCHEMA)

    def load(self, plan: str, model: str) -> dict[str, float]:
        """Recorded mean seconds per subtask for this plan fingerprint and model."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT subtask, seconds FROM fanfold_durations WHERE plan = ? AND model = ?",
                (plan, model),
            ).fetchall()
        return {subtask: seconds for subtask, seconds in rows}

    def record(self, plan: str, model: str, durations: Mapping[str, float]) -> None:
        """Fold new observations into the running means."""
        now = time.time()
        with self._lock, self._conn:
            for subtask, seconds in durations.items():
                self._conn.execute(
                    """
                    INSERT INTO fanfold_durations (plan, model, subtask, runs, seconds, updated)
                    VALUES (?, ?, ?, 1, ?, ?)
                    ON CONFLICT (plan, model, subtask) DO UPDATE SET
                        seconds = (seconds * runs + excluded.seconds) / (runs + 1),
                        runs = runs + 1,
                        updated = excluded.updated
                    """,
                    (plan, model, subtask, seconds, now),
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
