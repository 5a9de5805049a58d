"""Batch bookkeeping: which maps go through a provider's Batch API, and the files' forms.

A map sent as a batch makes one request line per item that is not in the cache: each
line carries the exact body the live call would send, under a `custom_id` made from the
call's cache key (`custom_id`), so results go back to their items by key, also in a
process that resumes the run. Nothing here does I/O (see `batch_client` for that).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BATCH_POLL_ENV",
    "BatchJournal",
    "BatchLine",
    "BatchOptions",
    "custom_id",
    "expired_line",
    "input_file",
    "read_results",
]

BATCH_POLL_ENV = "FANFOLD_BATCH_POLL"
"""Seconds between polls of a batch at most (the first poll comes sooner); default 60."""
TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
"""A batch's final statuses."""
NOT_RUN_STATUS = 410
"""The status given to a line the batch never ran (expired, cancelled, or a failed batch):
not transient, so the item fails and the map keeps its other items."""


@dataclass(frozen=True)
class BatchOptions:
    """How a run uses the Batch API.

    Attributes:
        every_map: send every `llm` map of at least `min_items` items as a batch (the
            command line's `--batch`); `batch: true` on a map sends it whatever its size.
        min_items: the fewest items for which `every_map` batches a map.
        poll_min: seconds before the first poll; the wait doubles up to `poll_max`.
        poll_max: the most seconds between two polls.
    """

    every_map: bool = False
    min_items: int = 100
    poll_min: float = 1.0
    poll_max: float = 60.0

    def __post_init__(self) -> None:
        if self.min_items < 1:
            raise ValueError(f"batch min_items must be at least 1, not {self.min_items}")

    @classmethod
    def from_env(cls, *, every_map: bool = False, min_items: int | None = None) -> BatchOptions:
        """Options with the poll interval from `$FANFOLD_BATCH_POLL` (seconds), if set."""
        poll = os.environ.get(BATCH_POLL_ENV)
        most = float(poll) if poll else cls.poll_max
        return cls(
            every_map=every_map,
            min_items=min_items if min_items is not None else cls.min_items,
            poll_min=min(cls.poll_min, most),
            poll_max=most,
        )

    def waits(self) -> Iterator[float]:
        """Seconds before each poll: `poll_min`, doubling, up to `poll_max`."""
        wait = self.poll_min
        while True:
            yield wait
            wait = min(wait * 2, self.poll_max)

    def batches(self, *, explicit: bool, count: int) -> bool:
        """Whether a map of `count` items goes as a batch (explicit: `batch: true`)."""
        return count > 0 and (explicit or (self.every_map and count >= self.min_items))


def custom_id(key: str) -> str:
    """A request line's `custom_id`: the call's cache key, shortened (128 bits)."""
    return key[:32]


@dataclass(frozen=True)
class BatchLine:
    """The answer to one request line: an HTTP status and the body the live call gets."""

    status: int
    body: Any


def expired_line(batch_id: str, status: str) -> BatchLine:
    """The answer for a line the batch `batch_id` never ran (it ended `status`)."""
    message = (
        f"batch {batch_id} {status} before this request ran; the item failed and the "
        "map's other items are kept: resume the run (fanfold resume) to send it again"
    )
    error = {"message": message, "type": "batch_error", "param": None, "code": f"batch_{status}"}
    return BatchLine(NOT_RUN_STATUS, {"error": error})


def input_file(lines: Mapping[str, tuple[str, Mapping[str, Any]]]) -> bytes:
    """The JSONL input file: one `{custom_id, method, url, body}` per line.

    Args:
        lines: custom_id -> (url path, request body).
    """
    rows = []
    for cid, (url, body) in lines.items():
        sent = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        rows.append(
            json.dumps(
                {"custom_id": cid, "method": "POST", "url": url, "body": sent},
                separators=(",", ":"),
                ensure_ascii=False,
            )
        )
    return ("\n".join(rows) + "\n").encode()


def read_results(*files: str) -> dict[str, BatchLine]:
    """Each line's answer in a batch's output and error files (JSONL texts), by custom_id.

    A line with no response (an expired line has only an `error`) is left out: the
    caller answers it as not run.
    """
    found: dict[str, BatchLine] = {}
    for text in files:
        for raw in text.splitlines():
            if not raw.strip():
                continue
            row = json.loads(raw)
            response = row.get("response")
            cid = row.get("custom_id")
            if not isinstance(cid, str) or not isinstance(response, dict):
                continue
            found[cid] = BatchLine(int(response.get("status_code") or 500), response.get("body"))
    return found


@runtime_checkable
class BatchJournal(Protocol):
    """Where a checkpointed run keeps its batches' ids (the call journal's store)."""

    async def get_batch(self, sid: str) -> dict[str, Any] | None: ...

    async def put_batch(self, sid: str, record: Mapping[str, Any]) -> bool: ...
