"""Whether a chat model's reply is complete: cut-off and filtered replies are failures."""

from __future__ import annotations

from typing import Any

from fanfold.scheduling.calls import bill, billed_usage
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
