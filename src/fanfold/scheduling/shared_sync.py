"""One transaction of a shared limiter: report feedback, free slots, take slots for waiters.

The keeper thread of each `SharedRateLimiter` runs `sync` whenever it has something to
report or callers wait. Under the row lock of its endpoint it folds the process's
successes and 429s into the shared `PaceState` (the pacing policy), deletes released and
expired leases, renews its own, and takes free slots and starts (within the pace
horizon) for its waiters, round-robin with the other waiting processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from fanfold.scheduling.pacing import PaceLimits, PaceState
from fanfold.scheduling.shared_store import (
    INSERT_STATE,
    UPDATE_STATE,
    UPSERT_HOLDER,
    UPSERT_LEASE,
    Store,
    Tx,
    lock_state,
)


@dataclass(frozen=True)
class Success:
    in_flight: int | None
    latency: float | None
    remaining: int | None = None
    refill_in: float | None = None


@dataclass(frozen=True)
class Limited:
    retry_after: float | None
    seq: int | None
    in_flight: int | None
    minute_left: float | None
    max_pause: float | None = None
    overtaken: int = 0
    """Calls of this process started after it and still in flight when its 429 came."""


@dataclass
class Work:
    """What one transaction reports and asks for."""

    want: int
    asks: list[int]
    """The tokens of each waiter the process would start now, best first."""
    releases: list[str]
    successes: list[Success]
    limited: list[Limited]
    held: list[tuple[str, int]]
    """(lease id, seq) of each call of this process holding a slot."""
    renew: bool


@dataclass(frozen=True)
class Grant:
    lease: str | None
    seq: int
    in_flight: int
    delay: float
    """Seconds from the transaction's read of the clock to the call's start."""


@dataclass
class Outcome:
    grants: list[Grant]
    mono: float
    """time.monotonic() when the transaction read the clock (delays count from it)."""
    state: PaceState
    want_after: int
    since: float
    retry_in: float
    """Seconds until the pace may let this process reserve another start."""
    others_hold: bool = True
    """Whether other processes hold slots (only they can free one for this process's
    waiters without waking it)."""


@dataclass(frozen=True)
class Member:
    """The process in the store: who it is, and what the store last heard from it."""

    key: str
    holder: str
    limits: PaceLimits
    lease_seconds: float
    horizon: float
    recorded_want: int
    recorded_since: float


def fair_share(free: int, queue: Sequence[tuple[int, int, bool]], *, freed: bool = False) -> int:
    """How many of `free` slots this process takes.

    `queue` holds (callers waiting, slots held, is this process) per waiting process,
    longest waiting first. Each slot goes to the process holding the fewest, the longest
    waiting first among equals: the window is split evenly, and a process that frees one
    of its slots while below its share takes it back itself (at once, with no other
    process to wake).

    `freed`: this process freed a slot in this transaction. Among equals that each hold
    a slot or more it goes first: it keeps the slot above an even split (4 over 3
    processes) rather than leave it idle while it migrates to a process that must be
    woken, while each of the others still has a call running. When nobody holds one,
    the slot goes round (turns: no process waits behind another's whole queue).
    """
    left = [want for want, _, _ in queue]
    held = [count for _, count, _ in queue]
    mine = next((i for i, (_, _, me) in enumerate(queue) if me), None)
    if mine is None:
        return 0
    got = 0
    while free > 0:
        waiting = [i for i, want in enumerate(left) if want > 0]
        if not waiting:
            break
        best = min(waiting, key=lambda i: (held[i], not (freed and i == mine and held[i]), i))
        left[best] -= 1
        held[best] += 1
        free -= 1
        got += best == mine
    return got


def round_robin_share(free: int, queue: Sequence[tuple[int, bool]]) -> int:
    """How many of `free` slots this process takes when no process holds any.

    `queue` holds (callers waiting, is this process) per waiting process, longest
    waiting first; slots go one per process per round, in that order (`fair_share`).
    """
    return fair_share(free, [(want, 0, me) for want, me in queue])


def sync(store: Store, me: Member, work: Work, *, wait: bool = True) -> Outcome:
    """One transaction: feedback, releases, expiry, renewal, then slots for waiters.

    With `wait=False` it raises `shared_store.Busy` at once if another process holds
    the store's lock.
    """
    limits, key = me.limits, me.key
    with store.transaction(key, wait=wait) as tx:
        row = lock_state(store, tx, key)
        mono, now = time.monotonic(), tx.now
        if row is None:  # deleted under us: start afresh
            state = PaceState.fresh(now, limits)
            tx.execute(INSERT_STATE, (key, *state.row()))
            lock_state(store, tx, key)
        else:
            state = PaceState.from_row(row)
        changed = freed = False
        cap_before = state.cap(limits)
        for success in work.successes:
            state.on_success(
                now,
                limits,
                in_flight=success.in_flight,
                latency=success.latency,
                remaining=success.remaining,
                refill_in=success.refill_in,
            )
        for limited in work.limited:
            state.on_rate_limited(
                now,
                limits,
                retry_after=limited.retry_after,
                in_flight=limited.in_flight,
                seq=limited.seq,
                minute_left=limited.minute_left,
                max_pause=limited.max_pause,
                overtaken=limited.overtaken,
            )
        if work.successes or work.limited:
            changed = True
            freed = (state.cap(limits) or 0) > (cap_before or 0)
        if work.releases:
            tx.executemany(
                "DELETE FROM fanfold_pace_leases WHERE id = ?", [(i,) for i in work.releases]
            )
            changed = freed = True
        expired = tx.execute(
            "DELETE FROM fanfold_pace_leases WHERE endpoint = ? AND expires < ?", (key, now)
        ).rowcount
        if expired and expired > 0:
            changed = freed = True
        if work.renew:
            expires = now + me.lease_seconds
            tx.executemany(
                UPSERT_LEASE, [(i, key, me.holder, expires, seq) for i, seq in work.held]
            )
            tx.execute(
                "DELETE FROM fanfold_pace_holders WHERE endpoint = ? AND expires < ?",
                (key, now - me.lease_seconds),
            )
            changed = True
        grants, free_left, others_wait, others_hold = _take_slots(tx, me, work, state, now)
        want_after = work.want - len(grants)
        retry_in = store.force
        horizon = state.booking_horizon(me.horizon, limits)
        if want_after and state.pace_room(now, horizon, limits) == 0:
            # Blocked by the pace: try again when the horizon reaches the next start.
            retry_in = min(retry_in, state.next_start(limits) - horizon - now)
        if grants or want_after == 0 or me.recorded_want == 0:
            since = now
        else:
            since = me.recorded_since
        if grants or work.renew or want_after != me.recorded_want:
            tx.execute(UPSERT_HOLDER, (key, me.holder, want_after, since, now + me.lease_seconds))
            changed = True
        if grants or changed:
            tx.execute(UPDATE_STATE, (*state.row(), key))
            if freed or (free_left > 0 and others_wait):
                store.notify(tx, key, me.holder)
        tx.commit = bool(grants) or changed
    return Outcome(grants, mono, state, want_after, since, retry_in, others_hold)


def _take_slots(
    tx: Tx, me: Member, work: Work, state: PaceState, now: float
) -> tuple[list[Grant], int, bool, bool]:
    """Slots and starts for this process's best waiters, its fair share of what is free;
    then what is left free, whether others wait and whether others hold slots."""
    limits, key = me.limits, me.key
    grants: list[Grant] = []
    if not (work.want and work.asks):
        return grants, 0, False, True
    cap = state.cap(limits)
    free = state.pace_room(now, state.booking_horizon(me.horizon, limits), limits)
    held = {
        str(holder): int(count)
        for holder, count in tx.execute(
            "SELECT holder, COUNT(*) FROM fanfold_pace_leases WHERE endpoint = ? GROUP BY holder",
            (key,),
        ).fetchall()
    }
    in_use = sum(held.values())
    # This process's own leases are the ones it holds (renewed, so none has expired).
    others_hold = in_use > len(work.held)
    if cap is not None:
        slots = max(0, cap - in_use)
        free = slots if free is None else min(free, slots)
    free_left = 0
    others_wait = False
    if free is None:
        count = len(work.asks)
    else:
        others = tx.execute(
            "SELECT want, since, holder FROM fanfold_pace_holders "
            "WHERE endpoint = ? AND holder <> ? AND want > 0 AND expires >= ?",
            (key, me.holder, now),
        ).fetchall()
        others_wait = bool(others)
        mine = me.recorded_since if me.recorded_want > 0 else now
        queue = sorted(
            [(float(s), str(h), int(w), False) for w, s, h in others]
            + [(mine, me.holder, work.want, True)]
        )
        queued = [(w, held.get(h, 0), me) for _, h, w, me in queue]
        count = fair_share(free, queued, freed=bool(work.releases))
        count = min(count, len(work.asks))
        free_left = free - count
    expires = now + me.lease_seconds
    for i, tokens in enumerate(work.asks[:count]):
        seq, delay = state.reserve(now, tokens, limits)
        lease_id = None
        if cap is not None:
            lease_id = uuid.uuid4().hex
            tx.execute(UPSERT_LEASE, (lease_id, key, me.holder, expires, seq))
        grants.append(Grant(lease_id, seq, in_use + i, delay))
    return grants, free_left, others_wait, others_hold
