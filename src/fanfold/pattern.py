"""`parallel_process`: the Parallelization pattern's entry point, backed by a fanfold graph."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic_core import to_jsonable_python

from fanfold.graphs.compile import compile_plan
from fanfold.nodes.registry import node_kinds
from fanfold.plan.models import SubTask, TaskPlan
from fanfold.state.results import SubtaskResult


def _as_subtask(item: Any) -> tuple[SubTask, str | None]:
    """Accept a SubTask, a mapping, or the pattern's dataclass (id, content, type, dependencies).

    The pattern's `type` is a free-form label such as "analysis"; when it is not a
    registered node kind it becomes part of the system prompt, as in the pattern.

    Returns:
        The subtask and its pattern label (None when the label is a node kind).
    """
    if isinstance(item, SubTask):
        return item, None
    if isinstance(item, Mapping):
        data = dict(item)
    else:
        data = {
            name: getattr(item, name)
            for name in ("id", "prompt", "content", "kind", "type", "depends_on", "dependencies")
            if hasattr(item, name)
        }
    label = data.get("type")
    if isinstance(label, str) and label not in node_kinds and "kind" not in data:
        data.pop("type")
        data.setdefault("system", f"Process this {label} task.")
        return SubTask.model_validate(data), label
    return SubTask.model_validate(data), None


def _task_result(result: SubtaskResult) -> dict[str, Any]:
    """The pattern's TaskResult as plain JSON data: `task_id`, `result` and `metadata`."""
    return {
        "task_id": result.task_id,
        "result": to_jsonable_python(result.result),
        "metadata": result.metadata,
    }


async def parallel_process(
    task: str,
    subtasks: Iterable[Any],
    *,
    model: BaseChatModel | str | None = None,
    max_concurrent: int = 5,
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run subtasks with dependencies concurrently and aggregate them, as in the pattern.

    A coroutine: `await parallel_process(...)`, or `asyncio.run(parallel_process(...))`.

    Args:
        task: the overall task description.
        subtasks: SubTasks, mappings, or objects with the pattern's `id`, `content`,
            `type` and `dependencies` attributes.
        model: chat model or model string (default `openai:gpt-4o-mini`).
        max_concurrent: most model calls in flight at once.
        inputs: run inputs for `{name}` placeholders in the task and the subtasks.

    Returns:
        The pattern's shape as plain JSON data (`json.dumps` takes it): `{"output",
        "results", "metadata": {"total_tasks", "total_tokens", "successful_tasks",
        ...}}`, where `results` lists one dict per subtask in plan order, with the
        pattern's `task_id`, `result` and `metadata` (type, tokens, status, attempts,
        model, duration and, if it failed or was skipped, error). When the subtasks
        are not a valid plan, an input is missing or the run cannot start,
        `{"error": message, "metadata": {"task_description", "total_tasks",
        "error_type"}}`, as in the pattern. For typed `SubtaskResult`s, use
        `compile_plan` and read the graph's state.
    """
    items = list(subtasks)
    try:
        converted = [_as_subtask(s) for s in items]
        labels = {sub.id: label for sub, label in converted if label is not None}
        plan = TaskPlan(task=task, subtasks=[sub for sub, _ in converted])
        graph = compile_plan(plan, model=model, max_concurrency=max_concurrent)
        state = await graph.ainvoke({"inputs": dict(inputs or {})})
    except Exception as exc:
        return {
            "error": str(exc),
            "metadata": {
                "task_description": task,
                "total_tasks": len(items),
                "error_type": type(exc).__name__,
            },
        }
    totals = state["totals"]
    results = [
        _task_result(
            state["results"][sid].model_copy(update={"kind": labels[sid]})
            if sid in labels
            else state["results"][sid]
        )
        for sid in plan.ids
    ]
    return {
        "output": to_jsonable_python(state["output"]),
        "results": results,
        "metadata": {
            "total_tasks": totals.tasks,
            "total_tokens": totals.total_tokens,
            "successful_tasks": totals.succeeded,
            "failed_tasks": totals.failed,
            "skipped_tasks": totals.skipped,
            "wall_time": totals.wall_time,
            "aggregate_error": state.get("aggregate_error"),
        },
    }
