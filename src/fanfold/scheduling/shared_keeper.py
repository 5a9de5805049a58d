"""The keeper: a background thread that syncs one process's shared limiter with the store.

`SharedRateLimiter` queues its callers locally; the keeper turns what they want into
transactions on the store (`shared_sync.sync`), then hands the slots it got back to the
limiter. It owns the store, its lock and the thread; the limiter gives it three
callbacks: what to do next (`take_work`), feedback to keep after a failed transaction
(`give_back`) and what the transaction granted (`hand_out`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fanfold.scheduling.pacing import PaceLimits, PaceState
from fanfold.scheduling.shared_store import (
    INSERT_STATE,
    UPDATE_STATE,
    UPSERT_HOLDER,
    Store,
    lock_state,
)
from fanfold.scheduling.shared_sync import Member, Outcome, Work, sync
from fanfold.scheduling.storage import one_line

__all__ = ["Keeper"]

_log = logging.getLogger("fanfold.scheduling.shared_limits")


class Keeper:
    """The store side of one process's `SharedRateLimiter`.

    Args:
        store: the open store (SQLite or PostgreSQL).
        key: the endpoint key.
        holder: this process's name among the store's holders.
        limits: the limits this process applies.
        lease_seconds: how long a slot stays taken without renewal.
        horizon: seconds ahead a process may reserve request starts.
        target: the store as shown in messages (passwords masked).
        take_work: the next transaction's work (called on the keeper's thread).
        give_back: keeps a failed transaction's feedback for the next one.
        hand_out: gives the slots a transaction granted to the waiters.
    """

    def __init__(
        self,
        store: Store,
        *,
        key: str,
        holder: str,
        limits: PaceLimits,
        lease_seconds: float,
        horizon: float,
        target: str,
        take_work: Callable[[bool], Work],
        give_back: Callable[[Work], None],
        hand_out: Callable[[Outcome], None],
    ) -> None:
        self.store = store
        self.key = key
        self.holder = holder
        self.limits = limits
        self.lease_seconds = lease_seconds
        self.horizon = horizon
        self.target = target
        self._take_work = take_work
        self._give_back = give_back
        self._hand_out = hand_out
        self.state = PaceState.fresh(0.0, limits)
        """The shared state as of this process's last transaction."""
        self.wake = threading.Event()
        self.stopping = False
        self.db_lock = threading.Lock()
        self._renew_every = max(0.02, lease_seconds / 4)
        self._recorded_want = 0
        self._recorded_since = 0.0
        # What the last transaction (on either thread) left: callers still waiting,
        # whether other processes hold slots, when the pace lets this process reserve again.
        self._blocked = False
        self._others_hold = True
        self._next_try = 0.0
        self._last_sync = 0.0
        store.on_notify = self._on_notify
        self._thread = threading.Thread(
            target=self._keep, name="fanfold-shared-limits", daemon=True
        )

    def start(self) -> None:
        """Start the keeper's thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waits up to 5 s unless called from it)."""
        self.stopping = True
        self.wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def leave(self, last: Work) -> None:
        """Send the last work, remove this holder and close the store (after `stop`)."""
        with self.db_lock:
            try:
                self.sync(last)
                with self.store.transaction(self.key) as tx:
                    tx.execute(
                        "DELETE FROM fanfold_pace_holders WHERE endpoint = ? AND holder = ?",
                        (self.key, self.holder),
                    )
                    tx.commit = True
            except Exception as exc:  # the leases expire on their own
                _log.warning("shared limits: could not leave %s cleanly: %s", self.target, exc)
            finally:
                self.store.close()

    def snapshot(self) -> dict[str, Any]:
        """The shared state now: pace, window, slots in use, waiting processes, counters."""
        with self.db_lock, self.store.transaction(self.key) as tx:
            row = lock_state(self.store, tx, self.key)
            state = PaceState.from_row(row) if row is not None else PaceState()
            in_use = tx.execute(
                "SELECT COUNT(*) FROM fanfold_pace_leases WHERE endpoint = ? AND expires >= ?",
                (self.key, tx.now),
            ).fetchone()[0]
            holders = tx.execute(
                "SELECT holder, want FROM fanfold_pace_holders WHERE endpoint = ? AND expires >= ?",
                (self.key, tx.now),
            ).fetchall()
        return {
            **state.describe(self.limits),
            "slots_in_use": int(in_use),
            "holders": {h: int(w) for h, w in holders},
        }

    def _on_notify(self, holder: str) -> None:
        if holder != self.holder:
            self.wake.set()

    def register(self) -> None:
        """Join the store; reset the shared state if nobody else is using it."""
        with self.store.transaction(self.key) as tx:
            row = lock_state(self.store, tx, self.key)
            now = tx.now
            fresh = PaceState.fresh(now, self.limits)
            if row is None:
                tx.execute(INSERT_STATE, (self.key, *fresh.row()))
                row = lock_state(self.store, tx, self.key)
            others = tx.execute(
                "SELECT COUNT(*) FROM fanfold_pace_holders WHERE endpoint = ? AND expires >= ?",
                (self.key, now),
            ).fetchone()[0]
            leases = tx.execute(
                "SELECT COUNT(*) FROM fanfold_pace_leases WHERE endpoint = ? AND expires >= ?",
                (self.key, now),
            ).fetchone()[0]
            if not others and not leases:
                # A new start, as a new process's RateLimiter makes: yesterday's 429s
                # should not slow today's runs.
                assert row is not None
                fresh.granted = PaceState.from_row(row).granted  # sequence numbers go on
                tx.execute(UPDATE_STATE, (*fresh.row(), self.key))
                self.state = fresh
            else:
                assert row is not None
                self.state = PaceState.from_row(row)
            tx.execute(UPSERT_HOLDER, (self.key, self.holder, 0, now, now + self.lease_seconds))
            tx.commit = True
            self._recorded_since = now

    def sync_now(self) -> bool:
        """One transaction on the caller's thread, if the store is free at once.

        A freed slot then goes to the next waiter without waking the keeper's thread
        (a wake-up can wait for the GIL a whole switch interval, 5 ms, while the event
        loop runs). False if the store is busy or remote, or the transaction failed: the
        keeper's thread does it then (wake it).
        """
        if not self.store.inline or self.stopping or not self.db_lock.acquire(blocking=False):
            return False
        try:
            work = self._take_work(False)
            try:
                outcome = self.sync(work, wait=False)
            except Exception:  # Busy, or a failure the keeper's thread retries and reports
                self._give_back(work)
                return False
        finally:
            self.db_lock.release()
        self._hand_out(outcome)
        return True

    def _keep(self) -> None:
        next_renew = time.monotonic() + self._renew_every
        failures = 0
        while True:
            now = time.monotonic()
            if self._blocked:
                # Waiting for a slot: check often whether another process freed one, if
                # any other holds one; else only now and then (a crashed process's
                # leases expire without a commit).
                poll = self.store.poll if self._others_hold else self.store.force
                timeout = min(poll, max(0.0, self._next_try - now))
            else:
                timeout = max(0.0, next_renew - now)
            self.wake.wait(timeout)
            self.wake.clear()
            if self.stopping:
                return
            now = time.monotonic()
            renew = now >= next_renew
            with self.db_lock:
                work = self._take_work(renew)
                if not (
                    work.releases
                    or work.successes
                    or work.limited
                    or renew
                    or work.want != self._recorded_want
                ):
                    if not work.want:
                        self._blocked = False
                        continue
                    # Waiting: read again only if someone committed, the pace allows
                    # another start, or now and then (leases that expire commit nothing).
                    changed = self.store.changed()
                    due = now >= self._next_try or now - self._last_sync >= self.store.force
                    if not changed and not due:
                        continue
                    if not due and self._nothing_free():
                        continue  # another process's commit left no slot free
                try:
                    outcome = self.sync(work)
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
                    with contextlib.suppress(Exception):
                        self.store.recover()
                    outcome = None
            if outcome is None:
                self.wake.wait(min(1.0, 0.05 * failures))
                self.wake.set()
                continue
            failures = 0
            if renew:
                next_renew = now + self._renew_every
            self._hand_out(outcome)

    def _nothing_free(self) -> bool:
        """Whether a read (no write lock, so no turn taken from the processes that write)
        shows every slot of the window in use (call it holding `db_lock`)."""
        peeked = self.store.peek(self.key, time.time())
        if peeked is None:
            return False
        row, in_use = peeked
        cap = PaceState.from_row(row).cap(self.limits)
        return cap is not None and in_use >= cap

    def sync(self, work: Work, *, wait: bool = True) -> Outcome:
        """One transaction (see `shared_sync.sync`); remembers what the store now says
        (call it holding `db_lock`)."""
        member = Member(
            key=self.key,
            holder=self.holder,
            limits=self.limits,
            lease_seconds=self.lease_seconds,
            horizon=self.horizon,
            recorded_want=self._recorded_want,
            recorded_since=self._recorded_since,
        )
        outcome = sync(self.store, member, work, wait=wait)
        self._recorded_want = outcome.want_after
        self._recorded_since = outcome.since
        self.state = outcome.state
        self._last_sync = time.monotonic()
        self._blocked = outcome.want_after > 0
        self._others_hold = outcome.others_hold
        self._next_try = outcome.mono + outcome.retry_in
        return outcome
