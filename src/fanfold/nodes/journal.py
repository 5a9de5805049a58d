"""A journal of finished calls in the run's LangGraph store: nothing is billed twice.

On LangGraph Server there is no local cache file, and a worker that dies in the middle
of a map loses every finished item of it, because the map's node has not committed.
So each successful call of a checkpointed run (one with a thread id) is also written,
the moment it ends, to the run's `BaseStore`: the server's own store, the one given to
`compile_plan(store=...)`, or for an `InMemorySaver` without a store, an `InMemoryStore`
kept beside it. Entries sit under `("fanfold", "calls", <thread id>)`, keyed by the
cache's key (`fanfold.scheduling.cache.call_key`) in the cache's record form. A resumed
thread serves its finished calls from there: the same call is not requested again.

A map sent as a batch keeps its batch there too, under `("fanfold", "batches", <thread
id>)` keyed by the map's id: the input file's id (written before the batch is created),
the batch's id (written as soon as it exists) and its lines' custom_ids, so a resumed run
polls that batch instead of submitting another.

A store that fails never fails a run: a lookup that fails is a miss, a write that fails
is skipped (with a warning in the log).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from fanfold._secrets import redact
from fanfold.scheduling.cache import CachedCall, call_from_record, call_record
from fanfold.state.results import TokenUsage

__all__ = ["BATCHES", "NAMESPACE", "StoreJournal", "store_beside"]

_log = logging.getLogger(__name__)

NAMESPACE = ("fanfold", "calls")
"""The journal's namespace prefix; the thread id follows it."""
BATCHES = ("fanfold", "batches")
"""The namespace prefix of the batches a thread's maps were sent in."""

_beside: weakref.WeakKeyDictionary[Any, BaseStore] = weakref.WeakKeyDictionary()


def store_beside(checkpointer: Any) -> BaseStore | None:
    """The store a run with this checkpointer and no store of its own journals into.

    An `InMemorySaver` gets one `InMemoryStore` for as long as it lives (the two lose
    their data together); other checkpointers get none: give the graph a store on the
    same database (`compile_plan(store=...)`; the CLI and the server do).
    """
    if not isinstance(checkpointer, InMemorySaver):
        return None
    if checkpointer not in _beside:
        _beside[checkpointer] = InMemoryStore()
    return _beside[checkpointer]


class StoreJournal:
    """Finished calls of one thread in a LangGraph store (the cache's keys and records).

    Args:
        store: any `BaseStore`; a synchronous one is used from a worker thread.
        thread_id: the checkpointed thread the calls belong to.
    """

    def __init__(self, store: BaseStore, thread_id: str) -> None:
        self.store = store
        self.namespace = (*NAMESPACE, str(thread_id))
        self.batches = (*BATCHES, str(thread_id))
        self._sync = False

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if not self._sync:
            try:
                return await getattr(self.store, f"a{name}")(*args, **kwargs)
            except NotImplementedError:
                self._sync = True  # a synchronous store (SqliteStore): no async methods
        return await asyncio.to_thread(getattr(self.store, name), *args, **kwargs)

    async def get(self, key: str) -> CachedCall | None:
        """The journaled call for `key`, or None (also when the store cannot be read)."""
        try:
            item = await self._call("get", self.namespace, key)
        except Exception as exc:  # noqa: BLE001 - a broken store is a miss, not a failure
            _log.warning("fanfold journal: lookup failed: %s", redact(str(exc)))
            return None
        return None if item is None else call_from_record(item.value)

    async def put(
        self,
        key: str,
        output: Any,
        *,
        usage: TokenUsage,
        model: str | None = None,
        kind: str | None = None,
        subtask: str | None = None,
        seconds: float | None = None,
    ) -> bool:
        """Journal a successful call (written before this returns); False if not stored."""
        record = call_record(
            output, usage=usage, model=model, kind=kind, subtask=subtask, seconds=seconds
        )
        if record is None:
            return False
        try:
            await self._call("put", self.namespace, key, record, index=False)
        except Exception as exc:  # noqa: BLE001 - a broken store never fails a run
            _log.warning("fanfold journal: write failed: %s", redact(str(exc)))
            return False
        return True

    async def get_batch(self, sid: str) -> dict[str, Any] | None:
        """The batch map `sid` was sent in, as `put_batch` wrote it, or None."""
        try:
            item = await self._call("get", self.batches, sid)
        except Exception as exc:  # noqa: BLE001 - a broken store is a miss, not a failure
            _log.warning("fanfold journal: batch lookup failed: %s", redact(str(exc)))
            return None
        return None if item is None else dict(item.value)

    async def put_batch(self, sid: str, record: Mapping[str, Any]) -> bool:
        """Keep the batch map `sid` is sent in (written before this returns)."""
        try:
            await self._call("put", self.batches, sid, dict(record), index=False)
        except Exception as exc:  # noqa: BLE001 - a broken store never fails a run
            _log.warning("fanfold journal: batch write failed: %s", redact(str(exc)))
            return False
        return True
