"""The loopback server's Batch API (`/v1/files`, `/v1/batches`), driven by the real openai SDK."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from fanfold.testing import BatchServerConfig, SimServer, SimServerConfig


@pytest.fixture
def server() -> Iterator[SimServer]:
    with SimServer(SimServerConfig(seed=3)) as srv:
        yield srv


def client(srv: SimServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=kwargs.pop("api_key", "sk-test"))


def request_line(custom_id: str, prompt: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "sim-model", "messages": [{"role": "user", "content": prompt}], **body},
    }


def upload(sdk: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return sdk.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id


def submit(sdk: openai.OpenAI, lines: list[dict[str, Any]]) -> Any:
    return sdk.batches.create(
        input_file_id=upload(sdk, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "t"},
    )


def wait(sdk: openai.OpenAI, batch_id: str, *, until: set[str], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in until or time.monotonic() > deadline:
            return batch
        time.sleep(0.02)


def jsonl(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = sdk.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_batch_answers_each_line_as_the_live_endpoint_would(server: SimServer) -> None:
    sdk = client(server)
    lines = [request_line(f"item-{i}", f"classify ticket {i}") for i in range(3)]
    batch = submit(sdk, lines)
    assert batch.status == "validating" or batch.status == "completed"
    assert batch.metadata == {"run": "t"}
    done = wait(sdk, batch.id, until={"completed"})
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (3, 3)
    assert done.error_file_id is None
    out = {row["custom_id"]: row for row in jsonl(sdk, done.output_file_id)}
    assert sorted(out) == ["item-0", "item-1", "item-2"]
    live = sdk.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "classify ticket 1"}]
    )
    body = out["item-1"]["response"]["body"]
    assert out["item-1"]["response"]["status_code"] == 200
    assert body["choices"][0]["message"]["content"] == live.choices[0].message.content
    assert body["usage"]["prompt_tokens"] == live.usage.prompt_tokens  # type: ignore[union-attr]
    assert server.batch_api.creations == 1
    assert server.batch_api.uploads == 1


def test_structured_output_lines_get_json_schema_replies(server: SimServer) -> None:
    sdk = client(server)
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    done = wait(
        sdk, submit(sdk, [request_line("a", "x", response_format=fmt)]).id, until={"completed"}
    )
    (row,) = jsonl(sdk, done.output_file_id)
    assert set(json.loads(row["response"]["body"]["choices"][0]["message"]["content"])) == {"label"}


def test_a_batch_walks_through_its_states_with_the_clock(server: SimServer) -> None:
    server.batch_api.update(validate_seconds=0.3, completion_delay=0.6, finalize_seconds=0.3)
    sdk = client(server)
    batch = submit(sdk, [request_line(f"i{i}", f"p{i}") for i in range(4)])
    seen = [batch.status]
    counts = []
    while seen[-1] != "completed":
        time.sleep(0.05)
        now = sdk.batches.retrieve(batch.id)
        counts.append(now.request_counts.completed if now.request_counts else 0)
        if now.status != seen[-1]:
            seen.append(now.status)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    assert counts == sorted(counts)  # lines finish one after another
    assert 0 < len(set(counts))


def test_per_line_errors_go_to_the_error_file_with_their_status(server: SimServer) -> None:
    server.batch_api.update(line_errors={"FLAKY": 500})
    server.update(fail_prompts={"BAD": 400})
    sdk = client(server)
    lines = [request_line("ok", "fine"), request_line("f", "FLAKY one"), request_line("b", "BAD")]
    done = wait(sdk, submit(sdk, lines).id, until={"completed"})
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    errors = {
        row["custom_id"]: row["response"]["status_code"] for row in jsonl(sdk, done.error_file_id)
    }
    assert errors == {"f": 500, "b": 400}
    assert [row["custom_id"] for row in jsonl(sdk, done.output_file_id)] == ["ok"]
    # The same request sent live succeeds: line_errors apply inside batches only.
    live = sdk.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "FLAKY one"}]
    )
    assert live.choices[0].message.content


def test_an_expired_batch_keeps_the_lines_that_finished(server: SimServer) -> None:
    server.batch_api.update(completion_delay=1.0, expire_after=0.5)
    sdk = client(server)
    batch = submit(sdk, [request_line(f"i{i}", f"p{i}") for i in range(4)])
    done = wait(sdk, batch.id, until={"expired", "completed"})
    assert done.status == "expired"
    finished = [row["custom_id"] for row in jsonl(sdk, done.output_file_id)]
    expired = jsonl(sdk, done.error_file_id)
    assert finished == ["i0", "i1"]
    assert [row["custom_id"] for row in expired] == ["i2", "i3"]
    assert {row["error"]["code"] for row in expired} == {"batch_expired"}


def test_a_cancelled_batch_keeps_what_finished_before_the_cancel(server: SimServer) -> None:
    server.batch_api.update(completion_delay=2.0, finalize_seconds=0.2)
    sdk = client(server)
    batch = submit(sdk, [request_line(f"i{i}", f"p{i}") for i in range(4)])
    time.sleep(0.6)
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    done = wait(sdk, batch.id, until={"cancelled"})
    assert done.status == "cancelled"
    assert [row["custom_id"] for row in jsonl(sdk, done.output_file_id)] == ["i0"]
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(batch.id)


def test_batches_are_listed_newest_first_with_their_input_file(server: SimServer) -> None:
    sdk = client(server)
    first = submit(sdk, [request_line("a", "one")])
    second = submit(sdk, [request_line("a", "two")])
    listed = list(sdk.batches.list(limit=1))  # the SDK pages through with `after`
    assert [b.id for b in listed] == [second.id, first.id]
    assert listed[1].input_file_id == first.input_file_id


def test_an_invalid_input_file_fails_the_batch_with_line_errors(server: SimServer) -> None:
    sdk = client(server)
    line = request_line("a", "x")
    batch = submit(sdk, [line, line, {**request_line("c", "y"), "url": "/v1/embeddings"}])
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("duplicate_custom_id", 2),
        ("invalid_url", 3),
    ]


def test_uploads_need_purpose_batch_and_the_api_key() -> None:
    with SimServer(SimServerConfig(api_key="sk-right"), batch=BatchServerConfig()) as srv:
        with pytest.raises(openai.AuthenticationError):
            upload(client(srv, api_key="sk-wrong"), [request_line("a", "x")])
        sdk = client(srv, api_key="sk-right")
        with pytest.raises(openai.BadRequestError, match="purpose"):
            sdk.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="assistants")
        with pytest.raises(openai.NotFoundError):
            sdk.batches.retrieve("batch-missing")
        assert srv.batch_api.creations == 0
