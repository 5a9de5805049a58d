"""When a run's processes ran: its start and end, its sessions and the gaps between them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fanfold.scheduling.events import LifecycleEvent
from fanfold.state.results import RunTotals, SubtaskResult

__all__ = ["EPS", "MIN_GAP", "RunClock"]

EPS = 1e-3
"""Slack (seconds) when matching events to a result's time window."""
MIN_GAP = 5e-4
"""Queued stretches shorter than this are not kept."""


class RunClock:
    """The run's time: `t0`, `end`, `sessions` (one per process) and `gaps` between them.

    A resumed run has two sessions: what an earlier process finished, and this one from
    its first event. The time between is "not running" and counts in no duration.
    """

    def __init__(
        self,
        results: Mapping[str, SubtaskResult],
        events: Sequence[LifecycleEvent],
        aggregate_events: Sequence[LifecycleEvent],
        totals_in: RunTotals | None,
    ) -> None:
        times: list[float] = []
        finishes: list[float] = []
        for res in results.values():
            for r in [res, *(res.items or [])]:
                times += [t for t in (r.started_at, r.finished_at) if t is not None]
                if r.finished_at is not None:
                    finishes.append(r.finished_at)
        event_times = [e.time for e in events] + [e.time for e in aggregate_events]
        self.t0 = min(times + event_times, default=0.0)
        self.t_last = max(times + event_times, default=self.t0)
        wall = totals_in.wall_time if totals_in is not None else 0.0
        # This process's share: from its first event, else from the end less its wall time.
        ends = max(finishes, default=self.t_last)
        if events:
            current = min(e.time for e in events)
        elif wall > 0:
            current = ends - wall
        else:
            current = self.t0
        current = max(self.t0, current)
        earlier = [
            (r.started_at or r.finished_at, r.finished_at)
            for res in results.values()
            for r in [res, *(res.items or [])]
            if r.finished_at is not None and r.finished_at < current - EPS
        ]
        self.end = max(self.t_last, current + wall)
        self.sessions: list[tuple[float, float]] = []
        if earlier:
            first = min(s for s, _ in earlier if s is not None)
            last = max(e for _, e in earlier if e is not None)
            self.sessions.append((first, last))
            self.sessions.append((current, self.end))
        else:
            self.sessions.append((self.t0, self.end))
        self.gaps = [
            (a[1], b[0])
            for a, b in zip(self.sessions, self.sessions[1:], strict=False)
            if b[0] > a[1]
        ]

    def running(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which a process was running."""
        total = max(0.0, end - start)
        for lo, hi in self.gaps:
            total -= max(0.0, min(end, hi) - max(start, lo))
        return max(0.0, total)
