"""What the dispatcher hands a node kind, and what it gets back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from fanfold.plan.models import SubTask
from fanfold.scheduling.gateway import NOTHING_SAID, ReplyReport
from fanfold.state.results import NO_USAGE, SubtaskResult, TokenUsage

ATTEMPT_KEY = "fanfold_attempt"
"""Metadata key of a call's attempt number (1 for the first), e.g. in the "messages" stream."""


def attempt_config(config: RunnableConfig, attempt: int) -> RunnableConfig:
    """`config` with the attempt number in its metadata, so a consumer of the "messages"
    stream can drop the partial tokens of a failed attempt (see `fanfold._langgraph`)."""
    metadata = {**(config.get("metadata") or {}), ATTEMPT_KEY: attempt}
    return {**config, "metadata": metadata}


@dataclass(frozen=True)
class SubtaskCall:
    """Everything a node kind needs to run one subtask (or one item of a map).

    Attributes:
        subtask: the subtask being run.
        task: the plan's overall task description.
        prompt: the rendered prompt, dependency context included.
        messages: the chat messages built from `system` and `prompt`.
        dependencies: results of the subtasks it depends on (all succeeded).
        inputs: the run's inputs.
        model: the resolved chat model (None for kinds that need none).
        config: the subtask's own config; it is also the ambient config while the kind
            runs, so runnables invoked without one are attributed to this subtask's node.
        attempt: 1 for the first try.
        item: for a map subtask, the item this call handles (else None).
        index: for a map subtask, the item's 0-based position (else None).
    """

    subtask: SubTask
    task: str
    prompt: str
    messages: list[BaseMessage]
    dependencies: Mapping[str, SubtaskResult]
    inputs: Mapping[str, Any]
    model: BaseChatModel | None
    config: RunnableConfig
    attempt: int = 1
    item: Any = None
    index: int | None = None


@dataclass(frozen=True)
class KindOutput:
    """A kind's result with its token usage (and what the reply said of its cost and the
    provider's limits); a kind may also return a bare value."""

    output: Any
    usage: TokenUsage = NO_USAGE
    report: ReplyReport = NOTHING_SAID


class KindRunner(Protocol):
    """What the dispatcher needs of a node kind (fanfold.NodeKind is one)."""

    @property
    def name(self) -> str: ...

    async def run(self, call: SubtaskCall) -> KindOutput: ...


def bill(exc: BaseException, usage: TokenUsage) -> BaseException:
    """Mark `exc`, raised after a reply the provider billed, with that reply's usage.

    The run counts it (tokens, cost and budget) although the call failed.
    """
    exc.usage = usage  # type: ignore[attr-defined]
    return exc


def billed_usage(exc: BaseException) -> TokenUsage | None:
    """The usage of the billed reply `exc` was raised after, if any (see `bill`)."""
    usage = getattr(exc, "usage", None)
    if isinstance(usage, TokenUsage):
        return usage
    # openai's LengthFinishReasonError and ContentFilterFinishReasonError keep the reply.
    counted = getattr(getattr(exc, "completion", None), "usage", None)
    prompt = getattr(counted, "prompt_tokens", None)
    completion = getattr(counted, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        return TokenUsage(
            input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
        )
    return None
