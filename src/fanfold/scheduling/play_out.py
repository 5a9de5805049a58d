"""Play a plan's calls out in dependency order, as the dispatcher would, to time a run."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from fanfold.plan.graph import dependents

__all__ = ["play_out"]


def play_out(
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    jobs: Mapping[str, tuple[int, float]],
    remaining: Mapping[str, float],
    limit: int | None,
) -> float:
    """Seconds until every subtask is done: `jobs[sid]` = (calls, seconds a call).

    A subtask's calls may start once its dependencies are done; with `limit`, at most
    that many calls run at once and the subtask with the longest remaining path goes
    first (as the dispatcher orders them).
    """
    if not order:
        return 0.0
    finish: dict[str, float] = {}
    if limit is None:
        for sid in order:
            start = max((finish[d] for d in deps[sid]), default=0.0)
            count, seconds = jobs[sid]
            finish[sid] = start + (seconds if count else 0.0)
        return max(finish.values())
    position = {sid: i for i, sid in enumerate(order)}
    below = dependents(order, deps)
    waiting = {sid: len(deps[sid]) for sid in order}
    left = {sid: jobs[sid][0] for sid in order}
    unfinished = dict(left)
    ready: list[tuple[float, int, str]] = []
    running: list[tuple[float, int, str]] = []
    now = 0.0
    sequence = 0

    def done(sid: str) -> None:
        finish[sid] = now
        for child in below[sid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                release(child)

    def release(sid: str) -> None:
        if unfinished[sid] == 0:
            done(sid)
        else:
            heapq.heappush(ready, (-remaining[sid], position[sid], sid))

    for sid in order:
        if waiting[sid] == 0 and sid not in finish:
            release(sid)
    while ready or running:
        while ready and len(running) < limit:
            _, _, sid = ready[0]
            heapq.heappush(running, (now + jobs[sid][1], sequence, sid))
            sequence += 1
            left[sid] -= 1
            if left[sid] == 0:
                heapq.heappop(ready)
        end, _, sid = heapq.heappop(running)
        now = max(now, end)
        unfinished[sid] -= 1
        if unfinished[sid] == 0:
            done(sid)
    return max(finish.values(), default=0.0)
