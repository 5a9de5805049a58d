"""The built-in node kinds, registered like any user kind."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from fanfold._text import message_text
from fanfold.nodes.registry import KindOutput, SubtaskCall, register_node_kind
from fanfold.state.results import TokenUsage


class StructuredOutputError(ValueError):
    """The model's reply did not match the subtask's output_schema."""


async def run_llm(call: SubtaskCall) -> KindOutput:
    """Ask the chat model; with an output_schema, return validated structured output."""
    if call.model is None:
        raise RuntimeError(f"subtask {call.subtask.id!r} has no model")
    schema = call.subtask.output_schema
    if schema is None:
        reply = await call.model.ainvoke(call.messages, call.config)
        return KindOutput(message_text(reply), TokenUsage.from_metadata(reply.usage_metadata))
    structured = call.model.with_structured_output(schema, include_raw=True)
    answer: Any = await structured.ainvoke(call.messages, call.config)
    raw = answer.get("raw") if isinstance(answer, dict) else None
    usage = TokenUsage.from_metadata(raw.usage_metadata if isinstance(raw, AIMessage) else None)
    if answer.get("parsing_error") is not None or answer.get("parsed") is None:
        cause = answer.get("parsing_error")
        raise StructuredOutputError(
            f"reply does not match the output_schema of subtask {call.subtask.id!r}: "
            f"{cause or 'no structured output returned'}"
        )
    return KindOutput(answer["parsed"], usage)


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
