"""Messages for subtasks and for the aggregation step."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from fanfold.plan.models import SubTask
from fanfold.plan.template import placeholders, render
from fanfold.state.results import SubtaskResult

DEFAULT_SYSTEM = (
    "You are one worker in a larger job. Complete only the subtask you are given, "
    "clearly and concisely."
)
AGGREGATE_SYSTEM = "Combine these task results into a coherent output."


def as_text(value: Any) -> str:
    """Render an output as prompt text: strings as-is, structures as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=2)
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def subtask_prompt(
    subtask: SubTask,
    *,
    task: str,
    inputs: Mapping[str, Any],
    dependencies: Mapping[str, SubtaskResult],
) -> str:
    """Fill the subtask's template and append dependency outputs it did not place itself.

    Placeholders resolve to a dependency's output first, then a run input, then the
    plan's task description for `{task}`.
    """
    values: dict[str, Any] = {"task": task, **inputs}
    values.update({dep: res.output for dep, res in dependencies.items()})
    text = render(subtask.prompt, values, to_text=as_text)
    used = set(placeholders(subtask.prompt))
    context = [
        f"### {dep}\n{as_text(res.output)}" for dep, res in dependencies.items() if dep not in used
    ]
    if context:
        text += "\n\n## Results from earlier subtasks\n\n" + "\n\n".join(context)
    return text


def subtask_messages(subtask: SubTask, *, task: str, prompt: str) -> list[BaseMessage]:
    """System and user messages for one subtask."""
    system = subtask.system or f"{DEFAULT_SYSTEM}\nOverall task: {task}"
    return [SystemMessage(system), HumanMessage(prompt)]


def aggregate_messages(
    *,
    task: str,
    order: list[str],
    results: Mapping[str, SubtaskResult],
    instructions: str | None = None,
    system: str | None = None,
) -> list[BaseMessage]:
    """Messages asking a model to combine the results and name what is missing."""
    done = [f"### {sid}\n{as_text(results[sid].output)}" for sid in order if results[sid].ok]
    missing = [
        f"- {sid}: {results[sid].status} ({results[sid].error or 'no reason given'})"
        for sid in order
        if not results[sid].ok
    ]
    parts = [f"Task: {task}", "Results to combine:", "\n\n".join(done) or "(none)"]
    if missing:
        parts += [
            "These subtasks produced no result; say briefly what is missing because of them:",
            "\n".join(missing),
        ]
    if instructions:
        parts.append(instructions)
    return [SystemMessage(system or AGGREGATE_SYSTEM), HumanMessage("\n\n".join(parts))]
