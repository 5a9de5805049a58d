"""Messages for subtasks and for the aggregation step, rendered from plain values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from fanfold.plan.models import SubTask
from fanfold.plan.template import placeholder_names, render

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


def items_text(name: str, items: Sequence[Any]) -> str:
    """A map's list of outputs as prompt text: one headed block per item, in item order.

    A failed item (None) is shown as such, so positions never shift.
    """
    if not items:
        return "(no items)"
    blocks = [
        f"#### {name}[{i}]\n{'(no result: this item failed)' if v is None else as_text(v)}"
        for i, v in enumerate(items)
    ]
    return "\n\n".join(blocks)


def subtask_prompt(
    subtask: SubTask,
    *,
    task: str,
    inputs: Mapping[str, Any],
    dependencies: Mapping[str, Any],
    maps: frozenset[str] | set[str] = frozenset(),
    item: Any = None,
    index: int | None = None,
) -> str:
    """Fill the subtask's template and append dependency outputs it did not place itself.

    Placeholders resolve to a dependency's output first, then a run input, then the
    plan's task description for `{task}`; in a map, `{item}` and `{index}` are the item
    and its position.

    Args:
        dependencies: each dependency's output.
        maps: the dependencies that are map subtasks; their lists render item by item.
    """
    values: dict[str, Any] = {"task": task, **inputs}
    values.update(
        {dep: items_text(dep, out) if dep in maps else out for dep, out in dependencies.items()}
    )
    if index is not None:
        values["item"] = item
        values["index"] = str(index)
    text = render(subtask.prompt, values, to_text=as_text)
    used = placeholder_names(subtask.prompt)
    context = [
        f"### {dep}\n{as_text(values[dep])}"
        for dep in dependencies
        if dep not in used and dep != subtask.map
    ]
    if context:
        text += "\n\n## Results from earlier subtasks\n\n" + "\n\n".join(context)
    if index is not None and "item" not in used:
        text += f"\n\n## Item {index}\n\n{as_text(item)}"
    return text


def system_text(subtask: SubTask, *, task: str) -> str:
    """The system message of one subtask: its own `system`, else the default for `task`."""
    return subtask.system or f"{DEFAULT_SYSTEM}\nOverall task: {task}"


def subtask_messages(subtask: SubTask, *, task: str, prompt: str) -> list[BaseMessage]:
    """System and user messages for one subtask."""
    return [SystemMessage(system_text(subtask, task=task)), HumanMessage(prompt)]


def aggregate_messages(
    *,
    task: str,
    done: Sequence[tuple[str, str]],
    missing: Sequence[tuple[str, str, str | None]],
    instructions: str | None = None,
    system: str | None = None,
) -> list[BaseMessage]:
    """Messages asking a model to combine the results and name what is missing.

    Args:
        done: (subtask id, output as text) for each result to combine, in plan order.
        missing: (subtask id, status, reason) for each subtask without a result.
    """
    shown = [f"### {sid}\n{text}" for sid, text in done]
    lines = [
        f"- {sid}: {status} ({reason or 'no reason given'})" for sid, status, reason in missing
    ]
    parts = [f"Task: {task}", "Results to combine:", "\n\n".join(shown) or "(none)"]
    if lines:
        parts += [
            "These subtasks produced no result; say briefly what is missing because of them:",
            "\n".join(lines),
        ]
    if instructions:
        parts.append(instructions)
    return [SystemMessage(system or AGGREGATE_SYSTEM), HumanMessage("\n\n".join(parts))]
