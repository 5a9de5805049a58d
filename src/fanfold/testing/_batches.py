"""The data behind the loopback Batch API: its configuration, files and batches (whose
life is computed from the clock), and the answer to one request line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fanfold.testing._config import SimServerConfig
from fanfold.testing._replies import (
    completion_payload,
    error_payload,
    last_user_text,
    limit_reply,
    plan_reply,
)

__all__ = ["BatchServerConfig", "line_answer", "line_error"]


class BatchServerConfig(BaseModel):
    """How the loopback server's batches behave: their timing, expiry and line errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validate_seconds: float = Field(0.0, ge=0.0, description="Seconds a batch is validating.")
    completion_delay: float = Field(
        0.0, ge=0.0, description="Seconds a batch is in progress; its lines finish evenly."
    )
    finalize_seconds: float = Field(0.0, ge=0.0, description="Seconds a batch is finalizing.")
    expire_after: float | None = Field(
        None,
        gt=0.0,
        description="Seconds after creation at which the lines not yet finished expire.",
    )
    line_errors: dict[str, int] = Field(
        default_factory=dict,
        description="A line whose last user message contains a key fails with that HTTP "
        "status inside a batch (the same request sent live succeeds).",
    )
    upload_delay: float = Field(0.0, ge=0.0, description="Seconds before answering an upload.")
    create_delay: float = Field(
        0.0, ge=0.0, description="Seconds before answering a batch creation (made already)."
    )
    content_delay: float = Field(
        0.0, ge=0.0, description="Seconds before answering a file-content download."
    )


@dataclass
class BatchFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": int(self.created),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created: float
    lines: list[dict[str, Any]]
    """Per request line: custom_id, response (status, body) or error."""
    errors: list[dict[str, Any]]
    """Validation errors: the batch failed before running."""
    config: BatchServerConfig
    cancelled: float | None = None
    files: tuple[str | None, str | None] | None = None
    """(output file id, error file id), once the batch ended."""
    times: dict[str, float] = field(default_factory=dict)

    def _finish_times(self) -> list[float]:
        n = len(self.lines)
        start = self.created + self.config.validate_seconds
        return [start + self.config.completion_delay * (i + 1) / n for i in range(n)]

    def state(self, now: float) -> tuple[str, int]:
        """(status, how many lines finished) at time `now`."""
        if self.errors:
            return "failed", 0
        config = self.config
        finish = self._finish_times()
        running = self.created + config.validate_seconds
        end = running + config.completion_delay
        done_by = sum(1 for t in finish if t <= now)
        if self.cancelled is not None:
            done = sum(1 for t in finish if t <= self.cancelled)
            if now < self.cancelled + config.finalize_seconds:
                return "cancelling", done
            return "cancelled", done
        if config.expire_after is not None:
            deadline = self.created + config.expire_after
            if now >= deadline and end > deadline:
                return "expired", sum(1 for t in finish if t <= deadline)
        if now < running:
            return "validating", 0
        if now < end:
            return "in_progress", done_by
        if now < end + config.finalize_seconds:
            return "finalizing", len(self.lines)
        return "completed", len(self.lines)


def line_error(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def line_answer(
    custom_id: str, body: dict[str, Any], config: SimServerConfig, batch: BatchServerConfig
) -> dict[str, Any]:
    """One line's response record (as the output or error file holds it)."""
    prompt = last_user_text(body)
    failures = {**config.fail_prompts, **batch.line_errors}
    for needle, status in failures.items():
        if needle in prompt:
            response = {
                "status_code": status,
                "request_id": f"req_{custom_id}",
                "body": error_payload(status, f"prompt matched {needle!r}"),
            }
            return {"custom_id": custom_id, "response": response, "error": status}
    reply = plan_reply(
        body,
        seed=config.seed,
        reply_tokens=config.reply_tokens,
        scripted=config.scripted,
        scripted_form=config.scripted_form,
        plans=config.plans,
    )
    reply = limit_reply(reply, body, config.finish_prompts)
    model = str(body.get("model") or "sim-model")
    completion = completion_payload(
        reply, model=model, id_=f"chatcmpl-batch-{custom_id[:24]}", created=int(time.time())
    )
    response = {"status_code": 200, "request_id": f"req_{custom_id}", "body": completion}
    return {"custom_id": custom_id, "response": response, "error": None}
