"""The built-in node kinds, registered like any user kind."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from fanfold._text import message_text
from fanfold.models.caps import output_cap
from fanfold.nodes.registry import KindOutput, SubtaskCall, register_node_kind
from fanfold.nodes.replies import check_complete, incomplete_error
from fanfold.plan.schemas import WRAPPED_KEY, OutputMismatchError, tool_schema, validate_data
from fanfold.scheduling.calls import bill
from fanfold.state.results import TokenUsage


class StructuredOutputError(OutputMismatchError):
    """The model's reply did not match the subtask's output_schema."""


async def run_llm(call: SubtaskCall) -> KindOutput:
    """Ask the chat model; with an output_schema, return validated structured output.

    A schema for a list, a string or a number is asked for wrapped in an object (a tool
    call's arguments always are one) and unwrapped from the answer. A reply cut off or
    filtered is an IncompleteReplyError; a reply that does not match the schema is a
    StructuredOutputError; both carry the reply's usage, which the run counts.
    """
    if call.model is None:
        raise RuntimeError(f"subtask {call.subtask.id!r} has no model")
    schema = call.subtask.output_schema
    what = f"the reply to subtask {call.subtask.id!r}"
    cap = output_cap(call.model)
    if schema is None:
        reply = await call.model.ainvoke(call.messages, call.config)
        usage = TokenUsage.from_metadata(reply.usage_metadata)
        check_complete(reply, usage, what=what, cap=cap)
        return KindOutput(message_text(reply), usage)
    asked, wrapped = tool_schema(schema)
    structured = call.model.with_structured_output(asked, include_raw=True)
    try:
        answer: Any = await structured.ainvoke(call.messages, call.config)
    except Exception as exc:
        incomplete = incomplete_error(exc, what=what, cap=cap)
        if incomplete is None:
            raise
        raise incomplete from exc
    raw = answer.get("raw") if isinstance(answer, dict) else None
    usage = TokenUsage.from_metadata(raw.usage_metadata if isinstance(raw, AIMessage) else None)
    check_complete(raw, usage, what=what, cap=cap)
    parsed = answer.get("parsed") if isinstance(answer, dict) else None
    if answer.get("parsing_error") is not None or parsed is None:
        cause = answer.get("parsing_error")
        raise bill(
            StructuredOutputError(
                f"{what} does not match its output_schema: "
                f"{cause or 'no structured output returned'}"
            ),
            usage,
        )
    if wrapped:
        if not isinstance(parsed, dict) or WRAPPED_KEY not in parsed:
            raise bill(StructuredOutputError(f"{what} has no {WRAPPED_KEY!r} field"), usage)
        parsed = parsed[WRAPPED_KEY]
    try:
        return KindOutput(validate_data(schema, parsed, what=what), usage)
    except OutputMismatchError as exc:
        raise bill(StructuredOutputError(str(exc)), usage) from exc


async def run_template(call: SubtaskCall) -> str:
    """Return the rendered prompt itself: a formatting step with no model call."""
    return call.prompt


register_node_kind(
    "llm", run_llm, needs_model=True, description="Ask a chat model (the default kind)."
)
register_node_kind(
    "template",
    run_template,
    description="Render the prompt with its inputs and dependency outputs; no model call.",
)
