"""Streaming a compiled graph to its final state, passing lifecycle events on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fanfold.checkpoints import open_checkpointer, open_store
from fanfold.scheduling.dispatcher import EVENT_TYPE

__all__ = ["EventHandler", "execute", "stream_run"]

EventHandler = Callable[[dict[str, Any]], None]
"""Takes each lifecycle event (`{"type": "fanfold.subtask", ...}`) as it happens."""


async def stream_run(
    graph: Any,
    payload: Any,
    config: dict[str, Any],
    *,
    on_event: EventHandler | None = None,
    nested: bool = False,
    on_values: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run `graph`, passing its lifecycle events to `on_event`; return its final state.

    With `nested`, the plan runs as a subgraph one level down (a goal graph's
    `run_plan`): its lifecycle events come from there (and from the planner node, for
    the planner and the subtasks it starts while the plan streams), and the final state
    from the top.
    """
    final: dict[str, Any] = {}
    modes = ["custom", "values"]
    events_depth = 1 if nested else 0
    async for item in graph.astream(
        payload, config, stream_mode=modes, **({"subgraphs": True} if nested else {}), **options
    ):
        namespace, mode, chunk = item if nested else ((), *item)
        if mode == "values":
            if not namespace:
                final = chunk
                if on_values is not None:
                    on_values(chunk)
        elif (
            on_event is not None
            and len(namespace) <= events_depth
            and isinstance(chunk, dict)
            and chunk.get("type") == EVENT_TYPE
        ):
            on_event(chunk)
    return final


async def execute(
    graph: Any,
    payload: Any,
    *,
    checkpoint: str | None,
    run_id: str | None,
    on_event: EventHandler | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream `graph` with a checkpointer on `checkpoint` (thread `run_id`), if given.

    Raises:
        CheckpointStoreError: the checkpoint database cannot be opened.
    """
    if checkpoint is None:
        return await stream_run(graph, payload, {}, on_event=on_event, **(options or {}))
    async with open_checkpointer(checkpoint) as saver, open_store(checkpoint) as store:
        # The store journals each finished call: a killed run's resume pays for none twice.
        graph = graph.copy(update={"checkpointer": saver, "store": store})
        config: dict[str, Any] = {"configurable": {"thread_id": run_id}}
        return await stream_run(graph, payload, config, on_event=on_event, **(options or {}))
