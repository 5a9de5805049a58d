"""Lifecycle events: what the dispatcher says about each call as it happens.

Events travel as plain dicts (`{"type": "fanfold.subtask", ...}`) on LangGraph's
`stream_mode="custom"` and in `--events` files; `LifecycleEvent` is their one typed
form, which every consumer (the run record, the live view, the CLI) reads them through.

Statuses, in the order a call goes through them:

- `started`: an attempt was sent to the provider (`attempt` counts them);
- `retrying`: that attempt failed and the call is in backoff for `delay` seconds
  (`reason` says why: "429 from the provider", "timeout", ...);
- `succeeded`, `failed`, `skipped`: the call is over.

A map sent as a provider batch also reports `batch` events (no `item`) whose `batch`
holds the batch's `id`, `status` (validating, in_progress, finalizing, completed,
expired, cancelled, failed) and request counts (`total`, `completed`, `failed`), each
time they change; its items' `started` events carry `batch: true`.

Between being ready (its dependencies done; for a map item, its map started) and its
next `started`, a call is queued: waiting for a concurrency slot or a rate limit
(`CallState` names these states for the views). A map's own `started` carries `items`
(how many); its items' events carry `item` and `id`. The aggregate step reports as
subtask `"aggregate"`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "AGGREGATE",
    "EVENT_TYPE",
    "CallState",
    "EventStatus",
    "LifecycleEvent",
    "parse_events",
]

EVENT_TYPE = "fanfold.subtask"
AGGREGATE = "aggregate"
"""The `subtask` of the aggregate step's events."""

EventStatus = Literal["started", "retrying", "succeeded", "failed", "skipped", "batch"]
CallState = Literal["queued", "backoff", "calling", "done"]
"""Where a call is: queued for a slot or a limit, in backoff before a retry, at the
provider, or over."""
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "skipped"})


class LifecycleEvent(BaseModel):
    """One lifecycle event of a subtask, a map item or the aggregate step."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["fanfold.subtask"] = "fanfold.subtask"
    subtask: str
    status: EventStatus
    time: float
    item: int | None = None
    id: str | None = None
    attempt: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    delay: float | None = None
    error: str | None = None
    reason: str | None = None
    priority: float | None = None
    items: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    cost_source: str | None = None
    cached: bool = False
    batch: dict[str, Any] | bool | None = None
    """On a `batch` event: the batch's id, status and counts; on a batched item's
    `started`: True."""

    @property
    def call(self) -> str:
        """The id of the call: `sid`, or `sid[i]` for a map item."""
        return self.id or (self.subtask if self.item is None else f"{self.subtask}[{self.item}]")

    @property
    def finished(self) -> bool:
        """Whether the call (or step) is over."""
        return self.status in FINISHED

    @property
    def begin(self) -> float:
        """When the attempt began: `started_at`, else the event's time."""
        return self.started_at if self.started_at is not None else self.time

    @classmethod
    def parse(cls, raw: Any) -> LifecycleEvent | None:
        """The event in `raw` (a dict, a model, or a `("custom", dict)` pair), else None."""
        if isinstance(raw, LifecycleEvent):
            return raw
        if isinstance(raw, tuple | list) and len(raw) == 2 and raw[0] == "custom":
            raw = raw[1]
        if not isinstance(raw, dict) or raw.get("type") != EVENT_TYPE:
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError:
            return None


def parse_events(raw: Iterable[Any]) -> list[LifecycleEvent]:
    """The lifecycle events among `raw` (other custom events are dropped), by time."""
    out = [e for e in (LifecycleEvent.parse(r) for r in raw) if e is not None]
    out.sort(key=lambda e: e.time)
    return out
