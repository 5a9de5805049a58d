"""The graph state every fanfold node reads and writes."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, Field, WithJsonSchema, create_model
from pydantic.json_schema import SkipJsonSchema

from fanfold._langgraph import stored_once
from fanfold.graphs.channels import ModelValueChannel, OutputTypes, ResultsChannel
from fanfold.state.results import RunTotals, SubtaskResult


class SubtaskNodeInput(TypedDict, total=False):
    """What a subtask node reads: a plain dict, so LangGraph does not rebuild (and
    revalidate) the whole PlanState, results included, for every node of every step."""

    inputs: dict[str, Any]
    results: dict[str, SubtaskResult]


class PlanState(BaseModel):
    """State of one plan run.

    `inputs` come from the caller, each subtask node adds its entry to `results`, and the
    aggregate node writes `output`, `totals` and, if aggregation failed, `aggregate_error`.
    Results and totals are kept as plain data in checkpoints (see `graphs.channels`);
    the inputs are stored in the first checkpoint only, however many steps the run takes.
    """

    inputs: Annotated[dict[str, Any], stored_once()] = Field(default_factory=dict)
    run: dict[str, Any] = Field(
        default_factory=dict,
        description="Caller's notes about the run; `fanfold run --checkpoint` keeps the plan "
        "and options here so `fanfold resume` can rebuild the graph.",
    )
    results: Annotated[dict[str, SubtaskResult], ResultsChannel()] = Field(default_factory=dict)
    output: Any = None
    aggregate_error: str | None = None
    totals: Annotated[RunTotals | None, ModelValueChannel(RunTotals)] = None


def plan_state_schema(
    output_types: OutputTypes | None = None, output_model: type[BaseModel] | None = None
) -> type[PlanState]:
    """PlanState, or a subclass whose channels revive the plan's pydantic outputs.

    Args:
        output_types: subtask id -> pydantic class of that subtask's output.
        output_model: the pydantic class of the aggregate's `output`.
    """
    if not output_types and output_model is None:
        return PlanState
    fields: dict[str, Any] = {}
    if output_types:
        fields["results"] = (
            Annotated[dict[str, SubtaskResult], ResultsChannel(output_types=output_types)],
            Field(default_factory=dict),
        )
    if output_model is not None:
        fields["output"] = (
            Annotated[output_model | None, ModelValueChannel(output_model)],
            None,
        )
    schema: type[PlanState] = create_model("PlanState", __base__=PlanState, **fields)
    return schema


class PlanOutput(BaseModel):
    """What a plan's graph returns: the aggregate, every result, the totals."""

    output: Any = None
    results: dict[str, SubtaskResult] = Field(default_factory=dict)
    totals: RunTotals | None = None
    aggregate_error: str | None = Field(
        None, description="Why the aggregation failed, when it did; the results are kept."
    )


def plan_input_schema(inputs: dict[str, dict[str, Any]], required: list[str]) -> type[BaseModel]:
    """The input a caller sends: the run inputs, described one by one.

    The keys fanfold itself writes when a run starts (`results`, `run`, and the
    aggregate's) stay out of the JSON schema, so Studio's form and the server's schema
    endpoint show only `inputs`.

    Args:
        inputs: input name -> its JSON schema (type, description, default).
        required: the inputs without a default.
    """
    shown = {
        "type": "object",
        "title": "Inputs",
        "properties": inputs,
        "required": sorted(required),
        "additionalProperties": True,
    }
    fields: dict[str, Any] = {
        "inputs": (
            Annotated[dict[str, Any], WithJsonSchema(shown)],
            Field(default_factory=dict, description="The run inputs, name -> value."),
        ),
        **{key: (_HIDDEN, None) for key in HIDDEN_INPUT_KEYS},
    }
    model: type[BaseModel] = create_model("PlanInput", **fields)
    return model


_HIDDEN: Any = SkipJsonSchema[Any]  # type: ignore[misc]  # a pydantic annotation, not a class
HIDDEN_INPUT_KEYS = ("run", "results", "output", "totals", "aggregate_error")
"""State keys a run's input may carry that callers do not write themselves."""
