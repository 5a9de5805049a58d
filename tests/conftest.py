"""Shared fakes and fixtures: offline chat models that record what they are asked.

Nothing here reaches a provider: the autouse `isolated_env` fixture removes provider
keys and tracing settings from the environment for every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import var_child_runnable_config
from pydantic import PrivateAttr

from fanfold import SimulatedChatModel, TaskPlan

ROOT = Path(__file__).resolve().parent.parent
RESEARCH_PLAN = ROOT / "examples" / "research.yaml"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"

_PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "ANTHROPIC_API_KEY",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_API_KEY",
    "LANGSMITH_TRACING",
    "LANGSMITH_API_KEY",
)


def pytest_configure(config: pytest.Config) -> None:
    """Let the CLI processes the tests start take Ctrl-C.

    A shell starts a background job (`bash .ci/run &`) with SIGINT ignored, children
    inherit that, and a Python started with SIGINT ignored never raises
    KeyboardInterrupt: the Ctrl-C tests would then wait for a run that never stops.
    A handled signal is reset to the default in a child, so handling it here fixes that.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach a real provider or a tracing service, or write to ~/.fanfold or
    to the user's cache of model calls (~/.cache/fanfold): each test has its own."""
    for name in _PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FANFOLD_HOME", str(tmp_path / "fanfold-home"))
    monkeypatch.delenv("FANFOLD_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# -- the recording fake --------------------------------------------------------------------


class ScriptedFailure(RuntimeError):
    """Raised by EchoChatModel when a prompt's first line holds a `fail_on` marker."""


def message_text(message: BaseMessage) -> str:
    content = message.content
    return content if isinstance(content, str) else str(content)


@dataclass
class Call:
    """One model call, as the model saw it. Times are `time.time()` like lifecycle events."""

    messages: list[BaseMessage]
    node: str | None
    tags: list[str]
    metadata: dict[str, Any]
    started: float
    finished: float | None = None
    outcome: str = "running"  # then "replied", "failed" or "cancelled"
    reply: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def human(self) -> str:
        """Text of the last human message (the subtask's rendered prompt)."""
        humans = [m for m in self.messages if m.type == "human"]
        return message_text(humans[-1]) if humans else ""

    @property
    def system(self) -> str:
        """Text of the system message, or ""."""
        systems = [m for m in self.messages if m.type == "system"]
        return message_text(systems[0]) if systems else ""

    @property
    def first_line(self) -> str:
        return self.human.split("\n", 1)[0]


class EchoChatModel(BaseChatModel):
    """Replies `echo: <first line of the prompt>` and records every call it receives.

    The first line of the last human message is the call's key: `latencies`,
    `replies` and `fail_on` markers are looked up in it only, so a dependency's echoed
    output inside a dependent's prompt never changes the dependent's behaviour.

    Tracks calls in flight (and the most at once) across threads, and streams its
    reply word by word from `_astream`/`_stream`, the last chunk carrying usage.
    """

    latency: float = 0.0
    latencies: dict[str, float] = {}
    replies: dict[str, str] = {}
    fail_on: tuple[str, ...] = ()

    _calls: list[Call] = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _in_flight: int = PrivateAttr(0)
    _max_in_flight: int = PrivateAttr(0)

    @property
    def _llm_type(self) -> str:
        return "echo"

    # -- what the test reads -------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def calls_for(self, node: str) -> list[Call]:
        return [c for c in self.calls if c.node == node]

    def call_for(self, node: str) -> Call:
        """The single call made for graph node `node`."""
        found = self.calls_for(node)
        assert len(found) == 1, f"expected one call for {node!r}, got {len(found)}"
        return found[0]

    def reply_for(self, first_line: str) -> str:
        for marker, reply in self.replies.items():
            if marker in first_line:
                return reply
        return f"echo: {first_line}"

    # -- internals -----------------------------------------------------------------

    def _delay(self, key: str) -> float:
        for marker, seconds in self.latencies.items():
            if marker in key:
                return seconds
        return self.latency

    @contextlib.contextmanager
    def _recording(self, messages: list[BaseMessage], run_manager: Any) -> Iterator[Call]:
        metadata = dict(getattr(run_manager, "metadata", None) or {})
        if run_manager is None:
            # LangChain's astream/stream pass no run manager: read the caller's config.
            metadata = dict((var_child_runnable_config.get() or {}).get("metadata") or {})
        call = Call(
            messages=list(messages),
            node=metadata.get("langgraph_node"),
            tags=list(getattr(run_manager, "tags", None) or []),
            metadata=metadata,
            started=time.time(),
        )
        with self._lock:
            self._calls.append(call)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield call
        except Exception:
            call.outcome = "failed"
            raise
        except BaseException:
            call.outcome = "cancelled"
            raise
        else:
            call.outcome = "replied"
        finally:
            call.finished = time.time()
            with self._lock:
                self._in_flight -= 1

    def _answer(self, call: Call) -> str:
        key = call.first_line
        marker = next((m for m in self.fail_on if m in key), None)
        if marker is not None:
            raise ScriptedFailure(f"scripted failure on {marker!r}")
        call.reply = self.reply_for(key)
        return call.reply

    @staticmethod
    def _usage(messages: list[BaseMessage], reply: str) -> dict[str, int]:
        inp = sum(len(message_text(m).split()) for m in messages)
        out = len(reply.split())
        return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}

    def _result(self, messages: list[BaseMessage], reply: str) -> ChatResult:
        message = AIMessage(content=reply, usage_metadata=self._usage(messages, reply))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _pieces(self, messages: list[BaseMessage], reply: str) -> list[ChatGenerationChunk]:
        words = reply.split(" ")
        pieces = [w + " " for w in words[:-1]] + [words[-1]]
        chunks = [ChatGenerationChunk(message=AIMessageChunk(content=p)) for p in pieces[:-1]]
        last = AIMessageChunk(content=pieces[-1], usage_metadata=self._usage(messages, reply))
        return [*chunks, ChatGenerationChunk(message=last)]

    # -- LangChain hooks -----------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._recording(messages, run_manager) as call:
            time.sleep(self._delay(call.first_line))
            return self._result(messages, self._answer(call))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._recording(messages, run_manager) as call:
            await asyncio.sleep(self._delay(call.first_line))
            return self._result(messages, self._answer(call))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with self._recording(messages, run_manager) as call:
            time.sleep(self._delay(call.first_line))
            for chunk in self._pieces(messages, self._answer(call)):
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        with self._recording(messages, run_manager) as call:
            await asyncio.sleep(self._delay(call.first_line))
            for chunk in self._pieces(messages, self._answer(call)):
                await asyncio.sleep(0)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk


@pytest.fixture
def echo() -> EchoChatModel:
    """A fresh recording model that answers at once."""
    return EchoChatModel()


@pytest.fixture
def echo_factory() -> Callable[..., EchoChatModel]:
    """Build recording models with `latency`, `latencies`, `replies` or `fail_on`."""
    return EchoChatModel


@pytest.fixture
def simulated() -> SimulatedChatModel:
    """The deterministic offline model with a tiny fixed latency."""
    return SimulatedChatModel(latency=0.002)


# -- plans ---------------------------------------------------------------------------------


def prompt_for(sid: str) -> str:
    """The default prompt of a subtask: its first line is its unique marker."""
    return f"[{sid}] do {sid}"


def build_plan(
    graph: Mapping[str, list[str]],
    *,
    task: str = "Test the plan",
    prompts: Mapping[str, str] | None = None,
    **fields: Any,
) -> TaskPlan:
    """A TaskPlan from `{id: [dependencies]}`, prompts `[id] do id` unless given."""
    prompts = dict(prompts or {})
    subtasks = [
        {"id": sid, "prompt": prompts.get(sid, prompt_for(sid)), "depends_on": list(deps)}
        for sid, deps in graph.items()
    ]
    return TaskPlan.model_validate({"task": task, "subtasks": subtasks, **fields})


@pytest.fixture
def make_plan() -> Callable[..., TaskPlan]:
    """Factory: `make_plan({"a": [], "b": ["a"]}, prompts=..., task=..., inputs=...)`."""
    return build_plan


# -- snapshots -----------------------------------------------------------------------------


def assert_matches_snapshot(name: str, text: str) -> None:
    """Compare `text` with tests/snapshots/<name>.

    A missing snapshot is written only when FANFOLD_UPDATE_SNAPSHOTS=1; otherwise a
    missing snapshot fails the test. An existing snapshot is never overwritten.
    """
    path = SNAPSHOTS / name
    update = os.environ.get("FANFOLD_UPDATE_SNAPSHOTS") == "1"
    if not path.exists():
        if not update:
            pytest.fail(
                f"snapshot {path} is missing; run with FANFOLD_UPDATE_SNAPSHOTS=1 to create it"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    stored = path.read_text(encoding="utf-8")
    assert text == stored, f"output differs from snapshot {path}"


@pytest.fixture
def snapshot() -> Callable[[str, str], None]:
    """`snapshot(name, text)`: assert `text` equals tests/snapshots/<name>."""
    return assert_matches_snapshot


@pytest.fixture
def research_plan_path() -> Path:
    return RESEARCH_PLAN


@pytest.fixture
def postgres_dsn() -> str:
    """The PostgreSQL server .ci/run starts (`FANFOLD_TEST_POSTGRES_DSN`); skipped without it
    outside CI."""
    dsn = os.environ.get("FANFOLD_TEST_POSTGRES_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "FANFOLD_TEST_POSTGRES_DSN is not set; .ci/run starts PostgreSQL and sets it"
            )
        pytest.skip("FANFOLD_TEST_POSTGRES_DSN is not set (.ci/run starts PostgreSQL)")
    return dsn
