"""How a shared limiter's slots change hands: on the caller's thread when it can, fairly
between processes, and without polling the store when only this process holds slots.

Two limiters on one store stand for two processes (each has its own connection and
keeper thread). Counts, not seconds: these hold on a busy machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanfold.scheduling.shared_keeper import Keeper
from fanfold.scheduling.shared_limits import SharedRateLimiter
from fanfold.scheduling.shared_store import SqliteStore
from fanfold.scheduling.shared_sync import Outcome, Work, fair_share


@pytest.fixture
def target(tmp_path: Path) -> str:
    return str(tmp_path / "limits.db")


@pytest.fixture
def key() -> Iterator[str]:
    yield f"test-endpoint-{uuid.uuid4().hex[:12]}"


async def queued(limiter: SharedRateLimiter, count: int) -> None:
    while limiter.waiting < count:
        await asyncio.sleep(0.002)


def record_grant_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The thread of each transaction that granted slots, from now on."""
    granted_on: list[threading.Thread] = []
    original = Keeper.sync

    def sync(self: Keeper, work: Work, **kwargs: Any) -> Outcome:
        outcome = original(self, work, **kwargs)
        if outcome.grants:
            granted_on.append(threading.current_thread())
        return outcome

    monkeypatch.setattr(Keeper, "sync", sync)
    return granted_on


async def handed_over_here(
    limiter: SharedRateLimiter, granted_on: list[threading.Thread], rounds: int
) -> int:
    """Rounds (of `rounds`) in which the slot the caller freed went to the next waiter
    on the caller's thread; the limiter has a window of one, held by the caller."""
    here = 0
    for _ in range(rounds):
        waiting = asyncio.create_task(limiter.acquire())
        await queued(limiter, 1)
        await asyncio.sleep(0.02)  # the keeper has seen the waiter
        granted_on.clear()
        limiter.release()
        await asyncio.wait_for(waiting, 5)
        here += granted_on == [threading.current_thread()]
    return here


async def test_a_freed_slot_goes_to_the_next_waiter_on_the_releasing_thread(
    target: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waking the keeper's thread costs up to a GIL switch interval (5 ms) per slot while
    # the event loop is busy; with SQLite the release's own thread takes the turn.
    granted_on = record_grant_threads(monkeypatch)
    with SharedRateLimiter.open(target, key, max_concurrency=1) as limiter:
        await limiter.acquire()
        # Now and then the keeper's thread holds the store when the slot is freed.
        assert await handed_over_here(limiter, granted_on, 8) >= 6


def test_a_release_on_a_loop_that_stopped_does_not_hold_back_later_ones(
    target: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted_on = record_grant_threads(monkeypatch)

    async def release_and_stop(limiter: SharedRateLimiter) -> None:
        permit = await limiter.acquire()
        loop = asyncio.get_running_loop()
        # The sync this release schedules would run on the loop's next turn: none comes.
        loop.call_soon(lambda: (limiter.release(permit), loop.stop()))
        await asyncio.Future()  # until the loop stops

    async def later(limiter: SharedRateLimiter) -> int:
        await asyncio.wait_for(limiter.acquire(), 5)  # the keeper reported that release
        await asyncio.sleep(0.1)
        return await handed_over_here(limiter, granted_on, 8)

    with SharedRateLimiter.open(target, key, max_concurrency=1) as limiter:
        stopped = asyncio.new_event_loop()
        with pytest.raises(RuntimeError, match="stopped"):
            stopped.run_until_complete(release_and_stop(limiter))
        stopped.close()
        assert asyncio.run(later(limiter)) >= 6


async def test_a_process_holding_every_slot_does_not_poll_while_its_callers_wait(
    target: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only another process's slot could come free without this one's own release.
    checks = 0
    original = SqliteStore.changed

    def changed(self: SqliteStore) -> bool:
        nonlocal checks
        checks += 1
        return original(self)

    monkeypatch.setattr(SqliteStore, "changed", changed)

    async def checks_while_waiting(limiter: SharedRateLimiter) -> int:
        nonlocal checks
        waiting = asyncio.create_task(limiter.acquire())
        await queued(limiter, 1)
        await asyncio.sleep(0.1)
        checks = 0
        await asyncio.sleep(0.5)  # polling every 2 ms: about 250 checks
        counted = checks
        limiter.release()
        await asyncio.wait_for(waiting, 5)
        limiter.release()
        return counted

    with SharedRateLimiter.open(target, key, max_concurrency=2) as limiter:
        await limiter.acquire()
        await limiter.acquire()
        alone = await checks_while_waiting(limiter)
        limiter.release()
    with (
        SharedRateLimiter.open(target, key, max_concurrency=2) as limiter,
        SharedRateLimiter.open(target, key, max_concurrency=2) as other,
    ):
        await other.acquire()  # another process holds a slot: it may free it any time
        await limiter.acquire()
        shared = await checks_while_waiting(limiter)
        other.release()
    assert alone <= 25, alone  # the store's full read every 50 ms: about 10
    assert shared > 2 * alone, (alone, shared)


async def test_a_process_below_its_even_share_takes_its_freed_slot_back(
    target: str, key: str
) -> None:
    # Handing it to the process that has waited longest instead would send most freed
    # slots across processes, each a wake-up and a transaction away.
    with (
        SharedRateLimiter.open(target, key, max_concurrency=2) as first,
        SharedRateLimiter.open(target, key, max_concurrency=2) as second,
    ):
        await first.acquire()
        await second.acquire()
        second_waits = asyncio.create_task(second.acquire())  # waits longest
        await queued(second, 1)
        await asyncio.sleep(0.1)
        first_waits = asyncio.create_task(first.acquire())
        await queued(first, 1)
        await asyncio.sleep(0.1)
        first.release()  # the first now holds none, the second one: below an even split
        await asyncio.wait_for(first_waits, 5)
        assert not second_waits.done()
        second.release()  # an even split again: the second's waiter goes on
        await asyncio.wait_for(second_waits, 5)
        first.release()
        second.release()


@pytest.mark.parametrize(
    ("free", "queue", "expected"),
    [
        (1, [(3, 1, False), (3, 0, True)], 1),  # I hold fewer: mine, though it waited less
        (1, [(3, 1, False), (3, 1, True)], 0),  # equal: the longest waiting first
        (3, [(5, 2, False), (5, 0, True)], 2),  # up to an even split, then in turns
        (4, [(5, 2, True), (5, 0, False), (1, 0, False)], 1),
        (2, [(0, 0, False), (4, 3, True)], 2),  # nobody else waits
    ],
)
def test_free_slots_go_to_the_process_holding_fewest(
    free: int, queue: list[tuple[int, int, bool]], expected: int
) -> None:
    assert fair_share(free, queue) == expected


@pytest.mark.parametrize(
    ("free", "queue", "expected"),
    [
        (1, [(3, 1, False), (3, 1, True)], 1),  # equal, each running one: I keep mine
        (1, [(3, 1, False), (3, 1, False), (3, 1, True)], 1),  # 4 over 3: the extra stays
        (1, [(3, 0, False), (3, 0, True)], 0),  # nobody holds one: turns, longest first
        (1, [(3, 0, False), (3, 1, True)], 0),  # another holds fewer: its
        (2, [(3, 1, False), (3, 1, True)], 1),  # then even again: one each
    ],
)
def test_a_process_that_frees_a_slot_keeps_it_among_equals_each_holding_one(
    free: int, queue: list[tuple[int, int, bool]], expected: int
) -> None:
    assert fair_share(free, queue, freed=True) == expected


async def test_the_slot_above_an_even_split_stays_with_the_process_that_freed_it(
    target: str, key: str
) -> None:
    # A window of 4 over 3 processes: handing the 4th slot to the process that has
    # waited longest leaves it idle while that process is woken, at every release.
    with (
        SharedRateLimiter.open(target, key, max_concurrency=4) as first,
        SharedRateLimiter.open(target, key, max_concurrency=4) as second,
        SharedRateLimiter.open(target, key, max_concurrency=4) as third,
    ):
        await first.acquire()
        await first.acquire()
        await second.acquire()
        await third.acquire()
        others_wait = [asyncio.create_task(x.acquire()) for x in (second, third)]
        await queued(second, 1)
        await queued(third, 1)
        await asyncio.sleep(0.1)  # they wait longest
        first_waits = asyncio.create_task(first.acquire())
        await queued(first, 1)
        await asyncio.sleep(0.1)
        first.release()  # one each left, each running a call: the first keeps its slot
        await asyncio.wait_for(first_waits, 5)
        assert not any(task.done() for task in others_wait)
        second.release()  # the second holds none: below an even split, it takes it back
        await asyncio.wait_for(others_wait[0], 5)
        assert not others_wait[1].done()
        third.release()
        await asyncio.wait_for(others_wait[1], 5)
        for limiter in (first, first, second, third):
            limiter.release()


def test_a_transaction_takes_the_write_lock_soon_after_another_process_frees_it(
    target: str,
) -> None:
    # SQLite's own busy handler sleeps ever longer (25 ms, then 50 and 100 ms) while
    # another connection holds the lock, though a transaction holds it for well under 1 ms.
    store = SqliteStore(target)
    other = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    late: list[float] = []

    def free_later(freed: list[float]) -> None:
        time.sleep(0.235)
        freed.append(time.monotonic())
        other.execute("COMMIT")

    try:
        for _ in range(3):
            other.execute("BEGIN IMMEDIATE")
            freed: list[float] = []
            thread = threading.Thread(target=free_later, args=(freed,))
            thread.start()
            with store.transaction("endpoint") as tx:
                late.append(time.monotonic() - freed[0])
                tx.commit = True
            thread.join()
    finally:
        other.close()
        store.close()
    assert sorted(late)[1] < 0.04, late  # SQLite's handler: about 0.09 s


async def test_a_waiting_process_reads_without_a_transaction_when_no_slot_came_free(
    target: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each transaction takes the write lock: a turn the processes that free slots wait for.
    transactions: dict[str, int] = {}
    original = Keeper.sync

    def sync(self: Keeper, work: Work, **kwargs: Any) -> Outcome:
        transactions[self.holder] = transactions.get(self.holder, 0) + 1
        return original(self, work, **kwargs)

    monkeypatch.setattr(Keeper, "sync", sync)
    with (
        SharedRateLimiter.open(target, key, max_concurrency=2) as busy,
        SharedRateLimiter.open(target, key, max_concurrency=2) as waiter,
    ):
        await busy.acquire()
        await busy.acquire()
        waiting = asyncio.create_task(waiter.acquire())
        await queued(waiter, 1)
        await asyncio.sleep(0.05)
        transactions.clear()
        queue = []
        for count in range(1, 21):  # each commits the busy process's longer queue
            queue.append(asyncio.create_task(busy.acquire()))
            await queued(busy, count)
            await asyncio.sleep(0.01)
        # The store's full read every 50 ms (about 5), not one per commit (20 more).
        assert transactions.get(waiter.holder, 0) <= 12, transactions
        assert transactions.get(busy.holder, 0) >= 15, transactions
        for task in queue:
            task.cancel()
        busy.release()
        busy.release()
        await asyncio.wait_for(waiting, 5)
        waiter.release()
