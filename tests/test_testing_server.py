"""The loopback OpenAI-compatible server, driven by the real ChatOpenAI / openai / httpx."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pydantic
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_openai import ChatOpenAI

from fanfold.testing import REPLY_PREFIX, SimServer, SimServerConfig
from fanfold.testing._faults import Dice


@contextmanager
def serving(**knobs: Any) -> Iterator[SimServer]:
    with SimServer(SimServerConfig(**knobs)) as srv:
        yield srv


def chat_model(srv: SimServer, *, timeout: float = 5.0, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="sim-model",
        base_url=srv.base_url,
        api_key=kwargs.pop("api_key", "sk-test"),
        max_retries=0,
        timeout=timeout,
        **kwargs,
    )


def chat_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "sim-model", "messages": [{"role": "user", "content": prompt}], **extra}


def raw_request(body: dict[str, Any], *headers: str) -> bytes:
    """A POST /v1/chat/completions request as bytes, with extra ``Name: value`` headers."""
    data = json.dumps(body).encode()
    head = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *headers,
    ]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + data


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (socket.timeout if it never does)."""
    out = b""
    while data := sock.recv(65536):
        out += data
    return out


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Status line, lower-cased headers and body of one raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, {k.lower(): v for k, v in headers.items()}, body


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def logged_problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records a clean server must not produce: warnings, errors, tracebacks."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING or r.exc_info
    ]


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=0, le=150)
    tags: list[str]


def test_plain_completion_returns_deterministic_reply_with_usage_metadata() -> None:
    with serving(reply_tokens=8) as srv:
        llm = chat_model(srv)
        first = llm.invoke("Summarise the quarterly report")
        second = llm.invoke("Summarise the quarterly report")
    assert isinstance(first.content, str)
    assert first.content.startswith(REPLY_PREFIX + "Summarise the quarterly report")
    assert first.content == second.content
    assert first.usage_metadata is not None
    assert first.usage_metadata["output_tokens"] == 8
    assert first.usage_metadata["input_tokens"] > 0
    assert first.response_metadata["model_name"] == "sim-model"
    assert first.response_metadata["finish_reason"] == "stop"


def test_reply_depends_on_seed() -> None:
    with serving(seed=1) as one, serving(seed=2) as two:
        assert chat_model(one).invoke("hello").content != chat_model(two).invoke("hello").content


def test_streaming_with_stream_usage_yields_token_chunks_and_usage() -> None:
    with serving(reply_tokens=6) as srv:
        llm = chat_model(srv, stream_usage=True)
        chunks = list(llm.stream("stream this please"))
        whole = llm.invoke("stream this please")
    texts = [c.content for c in chunks if c.content]
    assert len(texts) == 6
    assert "".join(str(t) for t in texts) == whole.content
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == 6


def test_raw_stream_is_chunked_sse_ending_with_usage_chunk_and_done() -> None:
    with serving(reply_tokens=3) as srv:
        body = chat_body("raw", stream=True, stream_options={"include_usage": True})
        response = httpx.post(f"{srv.base_url}/chat/completions", json=body)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])


def test_token_delay_paces_streamed_chunks() -> None:
    with serving(reply_tokens=5, token_delay=0.03) as srv:
        start = time.perf_counter()
        chunks = list(chat_model(srv).stream("slow"))
        elapsed = time.perf_counter() - start
    assert len([c for c in chunks if c.content]) == 5
    assert elapsed >= 4 * 0.03


def test_models_endpoint_lists_sim_model() -> None:
    with serving() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0)
        models = client.models.list()
    assert [m.id for m in models.data] == ["sim-model"]
    assert models.data[0].owned_by == "fanfold"


def test_unknown_path_is_404_wrong_method_405_and_unparseable_body_400_all_json() -> None:
    with serving() as srv, httpx.Client(base_url=srv.base_url) as client:
        missing = client.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "unknown path /v1/nope"
        wrong = client.get("/chat/completions")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        assert wrong.json()["error"]["message"] == "use POST"
        assert client.post("/models").json()["error"]["message"] == "use GET"
        assert client.head("/models").status_code == 405
        bad = client.post(
            "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_request_error"
        assert client.get("/models/").json()["data"][0]["id"] == "sim-model"
        assert client.post("/chat/completions/", json=chat_body("slash")).status_code == 200
        assert srv.status_counts() == {400: 1, 200: 1}


def test_keep_alive_reuses_the_connection_until_the_client_asks_to_close() -> None:
    with serving() as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        try:
            sockets = []
            for prompt in ("one", "two", "three"):
                conn.request(
                    "POST",
                    "/v1/chat/completions",
                    body=json.dumps(chat_body(prompt)),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                assert response.status == 200
                assert json.loads(response.read())["object"] == "chat.completion"
                sockets.append(conn.sock)
            assert sockets[0] is not None and sockets == [sockets[0]] * 3
        finally:
            conn.close()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as sock:
            sock.sendall(raw_request(chat_body("bye"), "Connection: close"))
            status, headers, body = split_response(read_until_closed(sock))
        assert status == "HTTP/1.1 200 OK"
        assert headers["connection"] == "close"
        assert len(body) == int(headers["content-length"])
        assert srv.requests_for("bye") == 1


async def test_hidden_concurrency_limit_answers_429_with_retry_after_headers() -> None:
    with serving(latency=0.2, rate_limit_concurrency=2) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=5) as client:
            responses = await asyncio.gather(
                *(client.post("/chat/completions", json=chat_body(f"job {i}")) for i in range(6))
            )
        assert sorted(r.status_code for r in responses) == [200, 200, 429, 429, 429, 429]
        limited = next(r for r in responses if r.status_code == 429)
        assert limited.headers["retry-after-ms"] == "200"
        assert limited.headers["retry-after"] == "1"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert limited.json()["error"]["type"] == "rate_limit_exceeded"
        assert srv.status_counts() == {200: 2, 429: 4}
        assert srv.max_in_flight >= 3


async def test_hidden_rps_limit_answers_429_immediately_with_time_until_next_token() -> None:
    with serving(latency=0.3, rate_limit_rps=2.0) as srv:  # burst defaults to 2
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=5) as client:

            async def burst(n: int) -> list[httpx.Response]:
                posts = (
                    client.post("/chat/completions", json=chat_body(f"q{i}")) for i in range(n)
                )
                return list(await asyncio.gather(*posts))

            responses = await burst(4)
            rejected = [r for r in responses if r.status_code == 429]
            assert len(rejected) == 2
            for r in rejected:
                assert r.elapsed.total_seconds() < 0.2  # rejections skip the latency
                assert 0 < int(r.headers["retry-after-ms"]) <= 500
                assert r.headers["retry-after"] == "1"
            assert all(r.elapsed.total_seconds() >= 0.3 for r in responses if r.status_code == 200)
            srv.update(retry_after_ms=2500)
            forced = next(r for r in await burst(3) if r.status_code == 429)
        assert forced.headers["retry-after-ms"] == "2500"
        assert forced.headers["retry-after"] == "3"


def test_injected_500_and_503_reach_the_client_as_server_errors() -> None:
    with serving(error_500_rate=1.0) as srv:
        llm = chat_model(srv)
        with pytest.raises(openai.InternalServerError) as err:
            llm.invoke("hi")
        assert err.value.status_code == 500
        srv.update(error_500_rate=0.0, error_503_rate=1.0)
        with pytest.raises(openai.InternalServerError) as err:
            llm.invoke("hi")
        assert err.value.status_code == 503
        assert srv.status_counts() == {500: 1, 503: 1}


def test_fail_prompts_answer_400_as_bad_request_error() -> None:
    with serving(fail_prompts={"BAD": 400}) as srv:
        llm = chat_model(srv)
        with pytest.raises(openai.BadRequestError):
            llm.invoke("this prompt is BAD")
        assert llm.invoke("this prompt is fine").content
        assert srv.status_counts() == {400: 1, 200: 1}


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_json_body_raises_in_the_client(stream: bool) -> None:
    with serving(malformed_rate=1.0) as srv:
        llm = chat_model(srv)
        # The openai SDK lets json.JSONDecodeError escape rather than wrapping it.
        with pytest.raises((json.JSONDecodeError, openai.APIError)):
            list(llm.stream("hi")) if stream else llm.invoke("hi")
        assert srv.status_counts() == {"malformed": 1}


@pytest.mark.parametrize("stream", [False, True])
def test_dropped_connection_raises_api_connection_error(stream: bool) -> None:
    with serving(drop_rate=1.0) as srv:
        llm = chat_model(srv)
        with pytest.raises(openai.APIConnectionError):
            list(llm.stream("hi")) if stream else llm.invoke("hi")
        assert srv.status_counts() == {"drop": 1}


def test_stall_longer_than_client_timeout_raises_api_timeout_error_and_stop_is_prompt() -> None:
    srv = SimServer(SimServerConfig(stall_rate=1.0, stall_seconds=5.0)).start()
    try:
        start = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            chat_model(srv, timeout=0.3).invoke("hi")
        assert time.perf_counter() - start < 2.0
        assert srv.status_counts() == {"stall": 1}
    finally:
        start = time.perf_counter()
        srv.stop()
        assert time.perf_counter() - start < 1.0


def test_stall_reads_the_request_says_nothing_then_closes_the_connection() -> None:
    with serving(stall_rate=1.0, stall_seconds=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as sock:
            start = time.perf_counter()
            sock.sendall(raw_request(chat_body("wait for it")))
            received = read_until_closed(sock)
            elapsed = time.perf_counter() - start
        assert received == b""
        assert 0.3 <= elapsed < 2.0
        assert srv.log[0].prompt == "wait for it"
        assert srv.status_counts() == {"stall": 1}


def test_drop_sends_headers_and_half_the_body_then_closes() -> None:
    with serving(drop_rate=1.0) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as sock:
            sock.sendall(raw_request(chat_body("cut me off")))
            status, headers, body = split_response(read_until_closed(sock))
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"].startswith("application/json")
        assert 0 < len(body) < int(headers["content-length"])
        assert body.startswith(b'{"id":"chatcmpl-sim')
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
        assert srv.status_counts() == {"drop": 1}


def test_dropped_stream_ends_mid_events_without_the_last_chunk() -> None:
    with serving(drop_rate=1.0, reply_tokens=6) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as sock:
            sock.sendall(raw_request(chat_body("cut the stream", stream=True)))
            status, headers, body = split_response(read_until_closed(sock))
        assert status == "HTTP/1.1 200 OK"
        assert headers["transfer-encoding"] == "chunked"
        assert body.count(b"data: {") == 4  # role + 6 tokens + finish = 8 events, half sent
        assert b"[DONE]" not in body
        assert not body.endswith(b"0\r\n\r\n")


def test_stop_closes_stalled_streaming_and_idle_connections_promptly_and_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    srv = SimServer(SimServerConfig(stall_rate=1.0, stall_seconds=30.0)).start()
    address = ("127.0.0.1", srv.port)
    with (
        socket.create_connection(address, timeout=3) as stalled,
        socket.create_connection(address, timeout=3) as streaming,
        socket.create_connection(address, timeout=3) as idle,
    ):
        try:
            stalled.sendall(raw_request(chat_body("stalled")))
            wait_for(lambda: srv.status_counts() == {"stall": 1})
            srv.update(stall_rate=0.0, token_delay=1.0, reply_tokens=20)
            streaming.sendall(raw_request(chat_body("streaming", stream=True)))
            assert streaming.recv(65536).startswith(b"HTTP/1.1 200 OK")
        finally:
            start = time.perf_counter()
            srv.stop()
            stop_took = time.perf_counter() - start
        assert stop_took < 1.0
        assert read_until_closed(stalled) == b""
        assert b"[DONE]" not in read_until_closed(streaming)
        assert read_until_closed(idle) == b""
    assert srv.status_counts() == {"stall": 1, 200: 1}
    assert logged_problems(caplog) == []


@pytest.mark.parametrize("stream", [False, True])
def test_client_hanging_up_early_is_not_logged_as_a_server_error(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(latency=0.1, token_delay=0.02, reply_tokens=10) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as sock:
            sock.sendall(raw_request(chat_body("going away", stream=stream)))
            if stream:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            else:
                wait_for(lambda: srv.request_count == 1)
        time.sleep(0.5)  # the server finishes the reply into a closed connection
        # The server still answers other clients.
        assert chat_model(srv).invoke("still there?").content
        assert srv.status_counts() == {200: 2}
    assert logged_problems(caplog) == []


def test_fault_first_attempts_only_lets_the_retry_succeed() -> None:
    with serving(error_503_rate=1.0, fault_first_attempts_only=True) as srv:
        with httpx.Client(base_url=srv.base_url) as client:
            statuses = [
                client.post("/chat/completions", json=chat_body("p")).status_code for _ in range(3)
            ]
        assert statuses == [503, 200, 200]
        assert srv.requests_for("p") == 3


def test_api_key_is_enforced_with_401() -> None:
    with serving(api_key="sk-right") as srv:
        with pytest.raises(openai.AuthenticationError):
            chat_model(srv, api_key="sk-wrong").invoke("hi")
        assert chat_model(srv, api_key="sk-right").invoke("hi").content
        assert srv.status_counts() == {401: 1, 200: 1}


def test_requests_for_log_and_reset_count_chat_requests() -> None:
    with serving() as srv:
        llm = chat_model(srv)
        for prompt in ["alpha task", "alpha task", "beta task"]:
            llm.invoke(prompt)
        assert srv.requests_for("alpha") == 2
        assert srv.requests_for("task") == 3
        assert srv.requests_for("gamma") == 0
        assert srv.request_count == 3
        assert [r.prompt for r in srv.log] == ["alpha task", "alpha task", "beta task"]
        assert all(r.outcome == 200 for r in srv.log)
        assert srv.max_in_flight == 1
        srv.reset()
        assert srv.request_count == 0 and srv.log == []


def test_a_reset_server_draws_the_same_faults_again() -> None:
    """Runners compared side by side after resets meet the same draws, not the next ones."""
    with serving(error_500_rate=0.5, seed=7) as srv:
        llm = chat_model(srv)

        def outcomes() -> list[int | str]:
            for i in range(16):
                with contextlib.suppress(openai.InternalServerError):
                    llm.invoke(f"question {i}")
            return [r.outcome for r in srv.log]

        first = outcomes()
        srv.reset()
        second = outcomes()
    assert 200 in first and 500 in first
    assert second == first


def test_structured_output_with_json_schema_method() -> None:
    with serving() as srv:
        person = chat_model(srv).with_structured_output(Person).invoke("describe someone")
    assert isinstance(person, Person)
    assert person.name and len(person.tags) >= 1


def test_structured_output_with_function_calling_method() -> None:
    with serving() as srv:
        structured = chat_model(srv).with_structured_output(Person, method="function_calling")
        person = structured.invoke("describe someone")
    assert isinstance(person, Person)


def test_bound_tools_get_tool_calls_until_a_tool_result_arrives() -> None:
    def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return "sunny"

    with serving() as srv:
        llm = chat_model(srv).bind_tools([lookup])
        message = llm.invoke("weather in Oslo?")
        assert message.tool_calls and message.tool_calls[0]["name"] == "lookup"
        assert isinstance(message.tool_calls[0]["args"]["city"], str)
        follow_up = llm.invoke(
            [
                ("user", "weather in Oslo?"),
                message,
                {"role": "tool", "content": "sunny", "tool_call_id": message.tool_calls[0]["id"]},
            ]
        )
        assert not follow_up.tool_calls and follow_up.content


def test_streamed_tool_call_aggregates_into_one_call() -> None:
    def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return "sunny"

    with serving() as srv:
        stream = chat_model(srv).bind_tools([lookup]).stream("weather in Oslo?")
        chunks = [c for c in stream if isinstance(c, AIMessageChunk)]
    merged = add_ai_message_chunks(chunks[0], *chunks[1:])
    assert [call["name"] for call in merged.tool_calls] == ["lookup"]


def test_lognormal_latency_draws_are_seeded() -> None:
    config = SimServerConfig(latency_median=0.05, latency_sigma=0.5, seed=7)
    first, second = Dice(7), Dice(7)
    draws = [first.latency(config) for _ in range(200)]
    assert draws == [second.latency(config) for _ in range(200)]
    assert 0.04 < sorted(draws)[100] < 0.06
    assert Dice(8).latency(config) != draws[0]


def test_stop_closes_the_socket_and_releases_the_port() -> None:
    srv = SimServer().start()
    port = srv.port
    assert chat_model(srv).invoke("hi").content  # leaves a pooled keep-alive connection
    srv.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with SimServer(port=port) as again:
        assert again.port == port
        assert chat_model(again).invoke("hi").content


def test_config_rejects_unknown_knobs_and_impossible_fault_rates() -> None:
    with pytest.raises(pydantic.ValidationError):
        SimServerConfig(error_500_rate=0.7, drop_rate=0.7)
    with serving() as srv:
        with pytest.raises(pydantic.ValidationError):
            srv.update(no_such_knob=1)
        assert srv.update(latency=0.01).latency == 0.01
        assert srv.config.latency == 0.01
