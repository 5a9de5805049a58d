"""Whether a chat model's reply is complete: cut-off and filtered replies are failures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig

from fanfold._text import message_text
from fanfold.plan.schemas import WRAPPED_KEY, Schema, tool_schema
from fanfold.scheduling.calls import bill, billed_usage
from fanfold.scheduling.gateway import ReplyReport, report_of
from fanfold.state.results import TokenUsage

CUT_OFF = frozenset({"length", "max_tokens", "MAX_TOKENS"})
"""finish/stop reasons of a reply cut off at its token cap (OpenAI, Anthropic, Google)."""
FILTERED = frozenset(
    {"content_filter", "refusal", "SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST"}
)
"""finish/stop reasons of a reply the provider filtered or refused."""


class IncompleteReplyError(ValueError):
    """The model's reply was cut off at its token cap or filtered by the provider.

    Not retried (the same call gets the same cap and the same filter) and never cached;
    the reply's usage is counted.

    Attributes:
        reason: the provider's finish reason, e.g. "length" or "content_filter".
        usage: the tokens the provider billed for the reply.
    """

    def __init__(self, message: str, *, reason: str, usage: TokenUsage) -> None:
        super().__init__(message)
        self.reason = reason
        bill(self, usage)


def finish_reason(message: Any) -> str | None:
    """The reply's finish (or stop) reason, as the provider named it."""
    metadata = getattr(message, "response_metadata", None)
    if not isinstance(metadata, dict):
        return None
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    return str(reason) if reason else None


_SDK_ERRORS = {
    "LengthFinishReasonError": "length",
    "ContentFilterFinishReasonError": "content_filter",
}
"""openai's errors for a parsed reply that was cut off or filtered, by class name."""


def incomplete_error(exc: BaseException, *, what: str, cap: int | None) -> Exception | None:
    """The IncompleteReplyError an SDK's own cut-off or filter error stands for, if any."""
    reason = _SDK_ERRORS.get(type(exc).__name__)
    if reason is None:
        return None
    try:
        _raise_incomplete(reason, billed_usage(exc) or TokenUsage(), what=what, cap=cap)
    except IncompleteReplyError as incomplete:
        return incomplete
    return None


def check_complete(message: Any, usage: TokenUsage, *, what: str, cap: int | None = None) -> None:
    """Raise IncompleteReplyError when `message` was cut off or filtered.

    Args:
        what: names the reply in the error, e.g. "the reply to subtask 'a'".
        cap: the call's reply cap in tokens, when known (named in the error).
    """
    reason = finish_reason(message)
    if reason is not None:
        _raise_incomplete(reason, usage, what=what, cap=cap)


def _raise_incomplete(reason: str, usage: TokenUsage, *, what: str, cap: int | None) -> None:
    if reason in CUT_OFF:
        at = f"its {cap}-token cap" if cap else "the model's token cap"
        raise IncompleteReplyError(
            f"{what} was cut off at {at} (finish reason {reason!r}); raise the subtask's "
            "expected_output_tokens (a budgeted run caps each reply there) or the model's "
            "max_tokens",
            reason=reason,
            usage=usage,
        )
    if reason in FILTERED:
        raise IncompleteReplyError(
            f"{what} was filtered by the provider (finish reason {reason!r}); change the "
            "prompt or the model",
            reason=reason,
            usage=usage,
        )


async def ask_model(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    config: RunnableConfig,
    schema: Schema | None,
    *,
    what: str,
    cap: int | None,
    mismatch: Callable[[str], Exception],
) -> tuple[Any, TokenUsage, ReplyReport]:
    """One model call: its text, or its structured answer unwrapped but not yet validated,
    with its usage and what the reply said of itself (cost, requests left).

    A schema for a list, a string or a number is asked for wrapped in an object (a tool
    call's arguments always are one) and unwrapped from the answer.

    Raises:
        IncompleteReplyError: the reply was cut off or filtered (its usage billed).
        Exception: `mismatch(cause)`, billed with the reply's usage, when the reply holds
            no structured output of the schema.
    """
    if schema is None:
        reply = await model.ainvoke(list(messages), config)
        usage = TokenUsage.from_metadata(reply.usage_metadata)
        check_complete(reply, usage, what=what, cap=cap)
        return message_text(reply), usage, report_of(reply)
    asked, wrapped = tool_schema(schema)
    structured = model.with_structured_output(asked, include_raw=True)
    try:
        answer: Any = await structured.ainvoke(list(messages), config)
    except Exception as exc:
        incomplete = incomplete_error(exc, what=what, cap=cap)
        if incomplete is None:
            raise
        raise incomplete from exc
    raw = answer.get("raw") if isinstance(answer, dict) else None
    usage = TokenUsage.from_metadata(raw.usage_metadata if isinstance(raw, AIMessage) else None)
    check_complete(raw, usage, what=what, cap=cap)
    parsed = answer.get("parsed") if isinstance(answer, dict) else None
    cause = answer.get("parsing_error") if isinstance(answer, dict) else None
    if cause is not None or parsed is None:
        raise bill(mismatch(str(cause or "no structured output returned")), usage)
    if wrapped:
        if not isinstance(parsed, dict) or WRAPPED_KEY not in parsed:
            raise bill(mismatch(f"no {WRAPPED_KEY!r} field"), usage)
        parsed = parsed[WRAPPED_KEY]
    return parsed, usage, report_of(raw)
