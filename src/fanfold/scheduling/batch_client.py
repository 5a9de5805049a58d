"""One map's items sent through OpenAI's Batch API, with the real `openai` SDK.

Each item still runs its node kind as a live call would, with a copy of its model whose
HTTP transport does not send: it hands the request body to the map's `BatchRound` and
waits. Once every item has either handed in its body or finished without one (a cache
hit, a budget skip), the round uploads the bodies as a JSONL file (`files.create`,
purpose "batch"), creates the batch (`batches.create`), polls it with backoff, downloads
its output and error files, and answers each waiting request with its line's response.
So a batched item's reply is parsed, checked and validated by the very code a live reply
goes through, and its body is exactly the live call's.

Durability: with a journal (a checkpointed run), the input file's id is journaled before
the batch is created, and the batch's id as soon as it is; a resumed run finds a batch
made for the same calls (by its input file if the id was never journaled) and polls it
instead of submitting again.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from langchain_core.language_models import BaseChatModel

from fanfold._secrets import describe_error, redact
from fanfold.scheduling.batches import (
    NOT_RUN_STATUS,
    TERMINAL,
    BatchJournal,
    BatchLine,
    BatchOptions,
    custom_id,
    expired_line,
    input_file,
    read_results,
)
from fanfold.scheduling.limits import Permit, Priority

__all__ = ["UNLIMITED", "BatchRound", "batch_support"]

_log = logging.getLogger(__name__)

T = TypeVar("T")
EmitBatch = Callable[[dict[str, Any]], None]
"""Receives the batch's state: id, status and request counts."""

_LINE: contextvars.ContextVar[tuple[BatchRound, int, str] | None] = contextvars.ContextVar(
    "fanfold_batch_line", default=None
)
"""The round, item index and custom_id of the request the current task makes."""


def batch_support(model: BaseChatModel | None) -> str | None:
    """None when `model` can send batches; else why not (for an error message)."""
    if model is None:
        return "its kind calls no model"
    try:
        from langchain_openai import AzureChatOpenAI, ChatOpenAI
    except ImportError:  # pragma: no cover - langchain-openai is a dependency
        return "langchain-openai is not installed"
    if isinstance(model, ChatOpenAI) and not isinstance(model, AzureChatOpenAI):
        return None
    return (
        f"its model ({type(model).__name__}) has no Batch API fanfold can use; batches "
        "go through OpenAI's API (openai:... models, or an OpenAI-compatible server that "
        "serves /v1/batches)"
    )


class _Unlimited:
    """The limiter of a batched request: batches run outside the provider's rate limits."""

    max_concurrency: int | None = None
    requests_per_second: float | None = None
    tokens_per_minute: float | None = None
    adaptive = False
    rate_limited = 0
    rate: float | None = None
    window: int | None = None
    waiting = 0

    async def acquire(self, priority: Priority = 0.0, *, tokens: int = 0) -> Permit:
        return Permit(0, 0, time.monotonic())

    def release(self, permit: Permit | None = None) -> None:
        return None

    def record_success(
        self,
        tokens: int = 0,
        permit: Permit | None = None,
        *,
        remaining: int | None = None,
        refill_in: float | None = None,
    ) -> None:
        return None

    def record_rate_limited(
        self,
        retry_after: float | None = None,
        permit: Permit | None = None,
        *,
        max_pause: float | None = None,
    ) -> None:
        return None


UNLIMITED = _Unlimited()
"""The limiter batched requests wait on: it never makes them wait."""


class _Transport(httpx.AsyncBaseTransport):
    """Hands each request to the round of the task that makes it, instead of sending it."""

    def __init__(self, base_path: str) -> None:
        self.base_path = base_path.rstrip("/")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        slot = _LINE.get()
        if slot is None:
            raise RuntimeError("a batch model was called outside of its batch")
        round_, index, cid = slot
        path = request.url.path
        if path.startswith(self.base_path):
            path = path[len(self.base_path) :]
        body = json.loads(await request.aread())
        answer = await round_.line(index, cid, "/v1" + path, body)
        return httpx.Response(answer.status, json=answer.body, request=request)


class BatchRound:
    """The batch of one map: collects its items' requests, submits, polls and answers.

    Args:
        sid: the map subtask.
        count: how many items the map has.
        options: poll intervals.
        journal: where the batch's ids are kept (a checkpointed run), or None.
        emit: receives the batch's state each time it changes, or None.
    """

    def __init__(
        self,
        sid: str,
        count: int,
        *,
        options: BatchOptions,
        journal: BatchJournal | None = None,
        emit: EmitBatch | None = None,
    ) -> None:
        self.sid = sid
        self.count = count
        self.options = options
        self.journal = journal
        self._emit = emit
        self._settled: set[int] = set()
        self._lines: dict[str, tuple[str, dict[str, Any]]] = {}
        self._answers: dict[str, asyncio.Future[BatchLine]] = {}
        self._models: dict[int, BaseChatModel] = {}
        self._api: Any = None  # openai.AsyncOpenAI for files and batches
        self._driver: asyncio.Task[None] | None = None
        self.open = True
        """Whether item requests still join this batch (a retry after it went out is live)."""
        self.state: dict[str, Any] = {"id": None, "status": "collecting", "total": 0}
        """The batch's id, status and request counts, as last seen."""
        self._files: dict[str, str | None] = {}
        self.submitted = 0
        self._uploaded: str | None = None
        """Batches this round created (0 when it adopted one made before a resume)."""

    # -- items --------------------------------------------------------------------------

    def model_for(self, model: BaseChatModel) -> BaseChatModel:
        """A copy of `model` whose requests join this batch (one per model)."""
        made = self._models.get(id(model))
        if made is None:
            root: Any = getattr(model, "root_async_client")  # noqa: B009 - ChatOpenAI's field
            base_path = httpx.URL(str(root.base_url)).path
            client = root.copy(
                http_client=httpx.AsyncClient(transport=_Transport(base_path)), max_retries=0
            )
            made = model.model_copy(
                update={
                    "root_async_client": client,
                    "async_client": client.chat.completions,
                    "disable_streaming": True,
                }
            )
            self._models[id(model)] = made
            if self._api is None:
                self._api = root.copy(max_retries=3)
        return made

    async def run(self, index: int, key: str, call: Awaitable[T]) -> T:
        """Await item `index`'s call (made with a model from `model_for`) as a batch line."""
        token = _LINE.set((self, index, custom_id(key)))
        try:
            return await call
        finally:
            _LINE.reset(token)
            self.settle(index)

    def settle(self, index: int) -> None:
        """Item `index` has handed in its request or needs none; the last one submits."""
        if index in self._settled:
            return
        self._settled.add(index)
        if len(self._settled) >= self.count and self._driver is None:
            self.open = False
            self._driver = asyncio.get_running_loop().create_task(
                self._drive(), name=f"fanfold:{self.sid}:batch"
            )

    async def line(self, index: int, cid: str, url: str, body: dict[str, Any]) -> BatchLine:
        """Hand in item `index`'s request; return the batch's answer to it."""
        answer = self._answers.get(cid)
        if answer is None:  # the same call twice in one map is one line
            self._lines[cid] = (url, body)
            answer = self._answers[cid] = asyncio.get_running_loop().create_future()
        self.settle(index)
        return await asyncio.shield(answer)

    def close(self) -> None:
        """Stop polling (the map is over or cancelled); unanswered lines stay unanswered."""
        if self._driver is not None and not self._driver.done():
            self._driver.cancel()

    async def aclose(self) -> None:
        """`close`, then wait (up to 10 s) for the driver to clean up: a run cancelled
        without a journal cancels its batch at the provider before it ends."""
        self.close()
        if self._driver is not None and not self._driver.done():
            await asyncio.wait({self._driver}, timeout=10.0)

    # -- the batch ----------------------------------------------------------------------

    async def _drive(self) -> None:
        if not self._lines:
            return
        try:
            answers = await self._submit_and_collect()
        except asyncio.CancelledError:
            await self._abandon()
            raise
        except Exception as exc:  # noqa: BLE001 - each item fails (or retries live) with it
            _log.warning("fanfold batch for %r failed: %s", self.sid, redact(str(exc)))
            status = getattr(exc, "status_code", None)
            status = status if isinstance(status, int) and status >= 400 else 502
            error = {"message": f"the batch failed: {describe_error(exc)}", "type": "batch_error"}
            answers = {cid: BatchLine(status, {"error": error}) for cid in self._lines}
        for cid, future in self._answers.items():
            if not future.done():
                future.set_result(answers.get(cid) or expired_line(str(self.state["id"]), "ended"))

    async def _submit_and_collect(self) -> dict[str, BatchLine]:
        batch = await self._adopt()
        if batch is None:
            batch = await self._submit()
        self._seen(batch)
        waits = self.options.waits()
        while batch.status not in TERMINAL:
            await asyncio.sleep(next(waits))
            batch = await self._api.batches.retrieve(batch.id)
            self._seen(batch)
        return await self._collect(batch)

    async def _adopt(self) -> Any:
        """The batch a run killed earlier made for these calls, if the journal has one."""
        if self.journal is None:
            return None
        record = await self.journal.get_batch(self.sid)
        if not record or record.get("collected") or not set(self._lines) <= set(record["ids"]):
            return None
        if record.get("batch_id"):
            return await self._api.batches.retrieve(record["batch_id"])
        batch = await self._made_from(record.get("file_id"))
        if batch is not None:
            await self._journal(batch_id=batch.id, file_id=batch.input_file_id)
        return batch

    async def _made_from(self, file_id: str | None) -> Any:
        """The batch made from an uploaded input file (its creation's answer was lost)."""
        if file_id is None:
            return None
        async for batch in self._api.batches.list(limit=100):
            if batch.input_file_id == file_id:
                return batch
        return None

    async def _submit(self) -> Any:
        data = input_file(self._lines)
        name = f"fanfold-{self.sid}.jsonl"
        uploaded = await self._api.files.create(file=(name, io.BytesIO(data)), purpose="batch")
        self._uploaded = uploaded.id
        await self._journal(file_id=uploaded.id)
        endpoints = {url for url, _ in self._lines.values()}
        batch = await self._api.with_options(max_retries=0).batches.create(
            input_file_id=uploaded.id,
            endpoint=endpoints.pop(),
            completion_window="24h",
            metadata={"fanfold_subtask": self.sid[:512]},
        )
        self.submitted += 1
        await self._journal(file_id=uploaded.id, batch_id=batch.id)
        return batch

    async def _journal(self, **fields: Any) -> None:
        if self.journal is None:
            return
        record = {"ids": sorted(self._lines), "collected": False, "time": time.time(), **fields}
        await self.journal.put_batch(self.sid, record)

    async def _collect(self, batch: Any) -> dict[str, BatchLine]:
        texts = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                texts.append((await self._api.files.content(file_id)).text)
        found = read_results(*texts)
        if batch.status == "failed":
            errors = getattr(batch.errors, "data", None) or []
            message = "; ".join(f"{e.code}: {e.message}" for e in errors) or "no reason given"
            error = {"message": f"batch {batch.id} failed: {message}", "type": "batch_error"}
            return {cid: BatchLine(NOT_RUN_STATUS, {"error": error}) for cid in self._lines}
        return {cid: found.get(cid) or expired_line(batch.id, batch.status) for cid in self._lines}

    async def finish(self) -> None:
        """The map is over and its items' results are kept: a resume makes a new batch."""
        if self.journal is not None and self.state["id"] is not None:
            await self._journal(batch_id=self.state["id"], collected=True)

    async def _abandon(self) -> None:
        """Cancelled: without a journal nobody can collect the batch, so cancel it."""
        batch_id = self.state["id"]
        if self.journal is not None or self.state["status"] in TERMINAL:
            return
        try:
            if batch_id is None:  # cancelled while the batch was being created
                made = await asyncio.shield(self._made_from(self._uploaded))
                if made is None:
                    return
                batch_id = made.id
            await asyncio.shield(self._api.batches.cancel(batch_id))
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            _log.warning("fanfold could not cancel batch %s: %s", batch_id, redact(str(exc)))

    def summary(self) -> dict[str, Any] | None:
        """The batch's ids, last status and counts (None when no batch went out)."""
        if self.state["id"] is None:
            return None
        return {**self.state, **self._files}

    def _seen(self, batch: Any) -> None:
        self._files = {
            "input_file_id": batch.input_file_id,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
        }
        counts = batch.request_counts
        state = {
            "id": batch.id,
            "status": batch.status,
            "total": counts.total if counts else len(self._lines),
            "completed": counts.completed if counts else 0,
            "failed": counts.failed if counts else 0,
        }
        if state != self.state:
            self.state = state
            if self._emit is not None:
                self._emit(dict(state))
