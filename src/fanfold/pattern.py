"""`parallel_process`: the Parallelization pattern's entry point, backed by a fanfold graph."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel

from fanfold.graphs.compile import compile_plan
from fanfold.nodes.registry import node_kinds
from fanfold.plan.models import SubTask, TaskPlan


def _as_subtask(item: Any) -> SubTask:
    """Accept a SubTask, a mapping, or the pattern's dataclass (id, content, type, dependencies).

    The pattern's `type` is a free-form label such as "analysis"; when it is not a
    registered node kind it becomes part of the system prompt, as in the pattern.
    """
    if isinstance(item, SubTask):
        return item
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
    return SubTask.model_validate(data)


async def parallel_process(
    task: str,
    subtasks: Iterable[Any],
    *,
    model: BaseChatModel | str | None = None,
    max_concurrent: int = 5,
) -> dict[str, Any]:
    """Run subtasks with dependencies concurrently and aggregate them, as in the pattern.

    Args:
        task: the overall task description.
        subtasks: SubTasks, mappings, or objects with the pattern's `id`, `content`,
            `type` and `dependencies` attributes.
        model: chat model or model string (default `openai:gpt-4o-mini`).
        max_concurrent: most model calls in flight at once.

    Returns:
        `{"output", "results", "metadata": {"total_tasks", "total_tokens",
        "successful_tasks", ...}}`; `results` is a list of SubtaskResult in plan order.

    Raises:
        PlanError: the subtasks do not form a valid plan, or the model cannot be resolved.
    """
    plan = TaskPlan(task=task, subtasks=[_as_subtask(s) for s in subtasks])
    graph = compile_plan(plan, model=model, max_concurrency=max_concurrent)
    state = await graph.ainvoke({"inputs": {}})
    totals = state["totals"]
    results = [state["results"][sid] for sid in plan.ids]
    return {
        "output": state["output"],
        "results": results,
        "metadata": {
            "total_tasks": totals.tasks,
            "total_tokens": totals.total_tokens,
            "successful_tasks": totals.succeeded,
            "failed_tasks": totals.failed,
            "skipped_tasks": totals.skipped,
            "wall_time": totals.wall_time,
        },
    }
