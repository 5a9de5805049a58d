"""The loopback server's Batch API: `/v1/files` and `/v1/batches`, as OpenAI serves them.

A batch's life is computed from the clock, with no background task: it is `validating`
for `validate_seconds`, then `in_progress` while its lines finish one after another over
`completion_delay` seconds, then `finalizing` for `finalize_seconds`, then `completed`
with an output file (the lines that succeeded) and an error file (those that failed).
With `expire_after`, the lines not finished that many seconds after creation expire: the
batch ends `expired` with the finished lines in its output file and the rest in its
error file (code `batch_expired`). A cancelled batch keeps the lines finished before the
cancel. Each line is answered as `/v1/chat/completions` would answer its body.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from fanfold.testing._batches import (
    Batch,
    BatchFile,
    BatchServerConfig,
    line_answer,
    line_error,
)
from fanfold.testing._config import SimServerConfig
from fanfold.testing._replies import error_payload

__all__ = ["BatchAPI", "BatchServerConfig"]

_dumps = functools.partial(json.dumps, separators=(",", ":"))
_TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
_ENDPOINTS = frozenset({"/v1/chat/completions"})


class BatchAPI:
    """The `/v1/files` and `/v1/batches` endpoints of one SimServer, with counters.

    Args:
        config_of: gives the server's configuration (seed, replies, faults, API key).
        config: how batches behave.
    """

    def __init__(
        self,
        config_of: Callable[[], SimServerConfig],
        config: BatchServerConfig | None = None,
    ) -> None:
        self._config_of = config_of
        self._config = config or BatchServerConfig()
        self._lock = threading.Lock()
        self._files: dict[str, BatchFile] = {}
        self._batches: dict[str, Batch] = {}
        self._ids = itertools.count(1)
        self.creations = 0
        """Batches created (POST /v1/batches), the rejected ones not counted."""
        self.uploads = 0
        """Files uploaded."""
        self.downloads = 0
        """File contents downloaded."""
        self.retrievals = 0
        """Batch retrievals (polls)."""
        self.lines_answered = 0
        """Request lines answered with a completion, over every batch."""

    @property
    def config(self) -> BatchServerConfig:
        """The batch configuration in effect."""
        return self._config

    def update(self, **knobs: Any) -> BatchServerConfig:
        """Change batch knobs; batches created from now on follow them."""
        with self._lock:
            self._config = BatchServerConfig.model_validate({**self._config.model_dump(), **knobs})
            return self._config

    def batch_ids(self) -> list[str]:
        """Ids of every batch created, oldest first."""
        with self._lock:
            return list(self._batches)

    def status(self, batch_id: str) -> str:
        """A batch's status now."""
        with self._lock:
            return self._batches[batch_id].state(time.time())[0]

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """The request lines of a batch's input file, as uploaded."""
        with self._lock:
            data = self._files[self._batches[batch_id].input_file_id].data
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def cancel(self, batch_id: str) -> None:
        """Cancel a batch as its owner would from the provider's dashboard."""
        with self._lock:
            self._batches[batch_id].cancelled = time.time()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve the endpoints on `router` (trailing slashes accepted)."""
        router.add_post("/v1/files{slash:/*}", self._upload)
        router.add_get("/v1/files/{file_id}/content{slash:/*}", self._content)
        router.add_get("/v1/files/{file_id}{slash:/*}", self._file)
        router.add_post("/v1/batches{slash:/*}", self._create)
        router.add_get("/v1/batches{slash:/*}", self._list)
        router.add_get("/v1/batches/{batch_id}{slash:/*}", self._retrieve)
        router.add_post("/v1/batches/{batch_id}/cancel{slash:/*}", self._cancel)

    # -- helpers ---------------------------------------------------------------------------

    def _denied(self, request: web.Request) -> web.Response | None:
        key = self._config_of().api_key
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            return _error(401, "Incorrect API key provided.")
        return None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-sim{next(self._ids)}"

    # -- files -----------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        form = await request.post()
        upload = form.get("file")
        purpose = str(form.get("purpose") or "")
        if not isinstance(upload, web.FileField):
            return _error(400, "a multipart 'file' field is required")
        if purpose != "batch":
            return _error(400, f"purpose {purpose!r} is not supported here; use 'batch'")
        data = upload.file.read()
        with self._lock:
            created = BatchFile(self._new_id("file"), upload.filename, purpose, data, time.time())
            self._files[created.id] = created
            self.uploads += 1
            delay = self._config.upload_delay
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(created.as_dict(), dumps=_dumps)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        with self._lock:
            found = self._files.get(request.match_info["file_id"])
        if found is None:
            return _error(404, f"no file {request.match_info['file_id']!r}")
        return web.json_response(found.as_dict(), dumps=_dumps)

    async def _content(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        with self._lock:
            found = self._files.get(request.match_info["file_id"])
            self.downloads += 1
            delay = self._config.content_delay
        if found is None:
            return _error(404, f"no file {request.match_info['file_id']!r}")
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=found.data, content_type="application/octet-stream")

    # -- batches ---------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "request body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        endpoint = body.get("endpoint")
        if endpoint not in _ENDPOINTS:
            return _error(400, f"endpoint {endpoint!r} is not supported; use /v1/chat/completions")
        window = str(body.get("completion_window") or "")
        if window != "24h":
            return _error(400, f"completion_window {window!r} is not supported; use '24h'")
        with self._lock:
            source = self._files.get(str(body.get("input_file_id")))
            config = self._config
        if source is None or source.purpose != "batch":
            return _error(400, f"no batch input file {body.get('input_file_id')!r}")
        lines, errors = self._answer(source.data, endpoint)
        metadata = body.get("metadata")
        with self._lock:
            batch = Batch(
                id=self._new_id("batch"),
                input_file_id=source.id,
                endpoint=endpoint,
                completion_window=window,
                metadata=metadata if isinstance(metadata, dict) else None,
                created=time.time(),
                lines=lines,
                errors=errors,
                config=config,
            )
            self._batches[batch.id] = batch
            self.creations += 1
            payload = self._payload(batch)
        if config.create_delay:
            await asyncio.sleep(config.create_delay)
        return web.json_response(payload, dumps=_dumps)

    def _answer(
        self, data: bytes, endpoint: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Each line's answer, decided now; or validation errors."""
        config = self._config_of()
        batch_config = self._config
        lines: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                errors.append(line_error("invalid_json_line", "not valid JSON", number))
                continue
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            body = line.get("body") if isinstance(line, dict) else None
            if not isinstance(custom_id, str) or not isinstance(body, dict):
                errors.append(line_error("invalid_request", "needs custom_id and body", number))
                continue
            if custom_id in seen:
                errors.append(line_error("duplicate_custom_id", custom_id, number))
                continue
            seen.add(custom_id)
            if line.get("method") != "POST" or line.get("url") != endpoint:
                errors.append(line_error("invalid_url", f"use POST {endpoint}", number))
                continue
            if body.get("stream"):
                errors.append(line_error("invalid_request", "streaming is not allowed", number))
                continue
            lines.append(line_answer(custom_id, body, config, batch_config))
        if not lines and not errors:
            errors.append(line_error("empty_file", "the input file has no requests", None))
        return lines, errors

    def _payload(self, batch: Batch) -> dict[str, Any]:
        """The batch object now (call under the lock); writes its files once it ended."""
        now = time.time()
        status, done = batch.state(now)
        times = batch.times
        stamp = {
            "validating": "created_at",
            "in_progress": "in_progress_at",
            "finalizing": "finalizing_at",
            "completed": "completed_at",
            "expired": "expired_at",
            "cancelling": "cancelling_at",
            "cancelled": "cancelled_at",
            "failed": "failed_at",
        }[status]
        times.setdefault(stamp, now)
        if status in _TERMINAL and batch.files is None and not batch.errors:
            batch.files = self._write_results(batch, done, status)
        finished = batch.lines[:done]
        failed = sum(1 for line in finished if line["error"] is not None)
        if status == "expired":
            failed += len(batch.lines) - done
        output_file, error_file = batch.files or (None, None)
        payload: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": output_file,
            "error_file_id": error_file,
            "created_at": int(batch.created),
            "expires_at": int(batch.created + (batch.config.expire_after or 86400)),
            "request_counts": {
                "total": len(batch.lines),
                "completed": done - sum(1 for line in finished if line["error"] is not None),
                "failed": failed,
            },
            "metadata": batch.metadata,
        }
        for name in stamp, *times:
            if name != "created_at":
                payload[name] = int(times[name])
        return payload

    def _write_results(self, batch: Batch, done: int, status: str) -> tuple[str | None, str | None]:
        output: list[str] = []
        failures: list[str] = []
        for index, line in enumerate(batch.lines):
            request_id = f"batch_req_{batch.id}_{index}"
            if index >= done:
                if status != "expired":
                    continue  # a cancelled batch leaves unrun lines out of both files
                error = {
                    "code": "batch_expired",
                    "message": "This request could not be "
                    "executed before the completion window expired.",
                }
                failures.append(
                    _dumps(
                        {
                            "id": request_id,
                            "custom_id": line["custom_id"],
                            "response": None,
                            "error": error,
                        }
                    )
                )
                continue
            record = {
                "id": request_id,
                "custom_id": line["custom_id"],
                "response": line["response"],
                "error": None,
            }
            (failures if line["error"] is not None else output).append(_dumps(record))
            if line["error"] is None:
                self.lines_answered += 1
        ids: list[str | None] = []
        for rows, name in ((output, "output"), (failures, "errors")):
            if not rows:
                ids.append(None)
                continue
            made = BatchFile(
                self._new_id("file"),
                f"{batch.id}_{name}.jsonl",
                "batch_output",
                ("\n".join(rows) + "\n").encode(),
                time.time(),
            )
            self._files[made.id] = made
            ids.append(made.id)
        return ids[0], ids[1]

    async def _list(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        with self._lock:
            newest_first = list(reversed(self._batches.values()))
            if after is not None:
                ids = [b.id for b in newest_first]
                newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
            page = [self._payload(b) for b in newest_first[:limit]]
            more = len(newest_first) > limit
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": more,
            },
            dumps=_dumps,
        )

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        with self._lock:
            batch = self._batches.get(request.match_info["batch_id"])
            self.retrievals += 1
            payload = None if batch is None else self._payload(batch)
        if payload is None:
            return _error(404, f"no batch {request.match_info['batch_id']!r}")
        return web.json_response(payload, dumps=_dumps)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        with self._lock:
            batch = self._batches.get(request.match_info["batch_id"])
            if batch is None:
                return _error(404, f"no batch {request.match_info['batch_id']!r}")
            status, _ = batch.state(time.time())
            if status in _TERMINAL:
                return _error(409, f"batch {batch.id!r} is {status} and cannot be cancelled")
            batch.cancelled = time.time()
            return web.json_response(self._payload(batch), dumps=_dumps)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(error_payload(status, message), status=status, dumps=_dumps)
