"""The built-in node kinds, registered like any user kind."""

from __future__ import annotations

from fanfold.models.caps import output_cap
from fanfold.nodes.registry import KindOutput, SubtaskCall, register_node_kind
from fanfold.nodes.replies import ask_model
from fanfold.plan.schemas import OutputMismatchError, validate_data
from fanfold.scheduling.calls import bill


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
    output, usage, report = await ask_model(
        call.model,
        call.messages,
        call.config,
        schema,
        what=what,
        cap=cap,
        mismatch=lambda cause: StructuredOutputError(
            f"{what} does not match its output_schema: {cause}"
        ),
    )
    if schema is None:
        return KindOutput(output, usage, report)
    try:
        return KindOutput(validate_data(schema, output, what=what), usage, report)
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
