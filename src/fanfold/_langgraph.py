"""Everything fanfold assumes about how LangGraph behaves inside, in one place.

fanfold uses only LangGraph's public modules, but a few behaviours it relies on are
not documented promises. Each is named here, used only through this module, and has
a contract test in `tests/test_langgraph_contract.py`, so a LangGraph upgrade that
changes one fails there, loudly, first:

1. `RUNTIME_KEY`: a node's config carries the run's `Runtime` (context, store, stream
   writer) under this `configurable` key; a subtask's call config keeps it so that
   `get_runtime()`, `get_stream_writer()` and `get_store()` work inside a node kind.
2. `PARENT_STREAM_KEY`: a graph running inside a parent graph that streams finds the
   parent's stream under this `configurable` key (so its custom events are wanted even
   when its own `stream_mode` has no "custom").
3. `subtask_call_config`: the "messages" stream and tracing attribute a chat model
   call to the node named by `langgraph_node`, in the namespace given by
   `langgraph_checkpoint_ns` and `langgraph_path`, so a call that starts before
   LangGraph runs its node still streams as that node's.
4. `adopt`: a compiled graph's `__dict__` rebuilds it under a subclass, as
   `Pregel.copy()` does for its own class.
5. `get_state()` values include the writes of the tasks that finished in an
   interrupted step (its pending writes), so a resumed run sees every result that
   LangGraph will not run again (`CompiledPlanGraph` relies on it when resuming).
6. A graph with no `context_schema` hands the `context=` object of a run to its nodes
   as it is (`get_runtime().context`), so fanfold's `RunContext` needs no schema that
   Studio and the server would try (and fail) to describe as JSON.
7. Custom channels (`fanfold.graphs.channels`): LangGraph builds a channel from a
   `BaseChannel` instance in a field's `Annotated` metadata, passes node writes and
   `Overwrite` values to its `update()`, stores `checkpoint()` in checkpoints, and
   rebuilds it with `from_checkpoint()`.
8. `stored_once`: a `DeltaChannel` (public, but beta in LangGraph 1.2) written once is
   snapshotted in the checkpoint of the step that wrote it and left out of every later
   checkpoint, which rebuild it from their ancestors (`get_state()`, resume, and a
   SQLite, PostgreSQL or in-memory saver alike); a checkpoint written before fanfold
   used it (the value stored as it is) still reads back.
9. `attempt_config` (in `fanfold.scheduling.calls`, which imports no LangGraph): the
   "messages" stream hands out the chat model call's metadata (its config's `metadata`)
   with each chunk, so the attempt number fanfold adds there (`ATTEMPT_KEY`) reaches
   the consumer beside `langgraph_node`.
10. `early_call_base`: a run's calls may start before LangGraph's first superstep, from
   the config the run was invoked with. What LangGraph would add for a node is added
   here: the run's `Runtime` (built the way `Pregel.stream` builds it: the parent run's
   merged in, its store when it has one), the namespace under the caller's
   `checkpoint_ns`, and the callback handlers `get_callback_manager_for_config` resolves
   (tracers), shared with the graph's own run because the graph is run with the same
   resolved manager. LangGraph's own stream handlers ("messages", "tools") are made
   inside `stream`, so a run that streams those starts at its first node instead
   (`starts_early`).
11. `open_step`: a state snapshot's `next` leaves out the open step's tasks whose writes
   are saved, while its `tasks` lists them all; resuming runs the step's other tasks
   (none, when all wrote) and goes on. A run killed after every task of a step wrote,
   but before the step's checkpoint, has an empty `next` and is still unfinished.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackManager, CallbackManager
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config
from langgraph.channels import DeltaChannel
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.types import StateSnapshot

from fanfold.scheduling.calls import ATTEMPT_KEY as ATTEMPT_KEY
from fanfold.scheduling.calls import attempt_config as attempt_config

RUNTIME_KEY = "__pregel_runtime"
PARENT_STREAM_KEY = "__pregel_stream"
CHECKPOINT_NS_KEY = "checkpoint_ns"
NS_SEP = "|"
STEP_TAG_PREFIX = "graph:step:"

G = TypeVar("G", bound=CompiledStateGraph)


def _last_write(value: Any, writes: Sequence[Any]) -> Any:
    """A DeltaChannel reducer that keeps the last write (batching-invariant, as required)."""
    return writes[-1]


def stored_once() -> DeltaChannel[Any]:
    """A last-value channel kept out of every checkpoint after the one that wrote it
    (assumption 8), for a large value written once, such as a run's inputs."""
    return DeltaChannel(_last_write, dict)


def adopt(compiled: CompiledStateGraph, cls: type[G], **extra: Any) -> G:
    """Rebuild `compiled` as an instance of its subclass `cls` (assumption 4).

    `compile()` has validated the graph already; validating again would double the
    compile time of a large plan.
    """
    attrs = {k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"}
    attrs.update(extra)
    return cls(**attrs, auto_validate=False)


def events_wanted(config: RunnableConfig | None, stream_mode: Any) -> bool:
    """Whether anyone reads "custom" events of this run (assumption 2)."""
    modes = [stream_mode] if isinstance(stream_mode, str) else list(stream_mode or [])
    if "custom" in modes:
        return True
    return PARENT_STREAM_KEY in ((config or {}).get("configurable") or {})


LANGGRAPH_STREAM_MODES = frozenset({"messages", "tools"})
"""Stream modes whose callback handler LangGraph makes inside `stream` (assumption 10)."""
PARENT_NS_KEY = "__fanfold_parent_ns"
"""Private key of `early_call_base`: the namespace the run's nodes run under."""


def starts_early(config: RunnableConfig | None, stream_mode: Any) -> bool:
    """Whether a run's calls may start before its first node (assumption 10): neither
    the run nor a caller's handler streams what LangGraph's own handlers stream."""
    modes = [stream_mode] if isinstance(stream_mode, str) else list(stream_mode or [])
    if LANGGRAPH_STREAM_MODES & set(modes):
        return False
    callbacks = (config or {}).get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        handlers: list[Any] = [*callbacks.handlers, *callbacks.inheritable_handlers]
    else:
        handlers = list(callbacks or [])
    return not any(type(h).__module__.startswith("langgraph.") for h in handlers)


def resolved_callbacks(config: RunnableConfig) -> RunnableConfig:
    """`config` with its callbacks resolved once (tracers from the environment added), so
    the graph's run and the calls that start before its first node share the handlers."""
    manager = get_callback_manager_for_config(config)
    if not manager.handlers and not manager.inheritable_handlers:
        return config
    return {**config, "callbacks": manager}


def early_call_base(
    config: RunnableConfig,
    *,
    context: Any,
    store: BaseStore | None,
    stream_writer: Any,
) -> RunnableConfig:
    """What a node of this run would be configured with, built from the run's own config
    before LangGraph runs any node (assumption 10); `subtask_call_config` takes it as base.

    Args:
        config: the config the run was invoked with (its callbacks resolved).
        context: the run's context object (what `get_runtime().context` gives a node).
        store: the graph's own store (a parent run's store wins, as in LangGraph).
        stream_writer: where `get_stream_writer()` writes from inside a call.
    """
    config = ensure_config(config)
    configurable = dict(config.get("configurable") or {})
    parent = configurable.get(RUNTIME_KEY)
    runtime: Runtime[Any] = Runtime(
        context=context,
        store=parent.store if isinstance(parent, Runtime) else store,
        stream_writer=stream_writer,
    )
    if isinstance(parent, Runtime):
        runtime = parent.merge(runtime)
    configurable[RUNTIME_KEY] = runtime
    configurable[PARENT_NS_KEY] = str(configurable.get(CHECKPOINT_NS_KEY) or "")
    return {**config, "configurable": configurable}


def subtask_call_config(
    base: RunnableConfig,
    sid: str,
    *,
    run_id: uuid.UUID,
    index: int | None = None,
    item_id: str | None = None,
) -> RunnableConfig:
    """A config that reports a call as subtask `sid`'s own (assumptions 1 and 3).

    The call usually starts before LangGraph runs the node, so it is parented to the
    graph run and carries the metadata LangGraph gives that node's own calls.

    Args:
        base: the config of the node that created the run's dispatcher, or the run's
            own config made ready by `early_call_base`.
        sid: the subtask.
        run_id: the graph run's id (the parent of the call's runs).
        index: for an item of a map, its position (also in the metadata).
        item_id: for an item of a map, its id such as `analyse[3]`.
    """
    metadata = dict(base.get("metadata") or {})
    early_ns = (base.get("configurable") or {}).get(PARENT_NS_KEY)
    if early_ns is not None:  # the run's own config (early_call_base)
        parent_ns = [early_ns] if early_ns else []
    else:  # a node's config
        parent_ns = str(metadata.get("langgraph_checkpoint_ns", "")).split(NS_SEP)[:-1]
    checkpoint_ns = NS_SEP.join([*parent_ns, f"{sid}:{uuid.uuid4()}"])
    metadata.update(
        {
            "langgraph_node": sid,
            "langgraph_triggers": (f"branch:to:{sid}",),
            "langgraph_path": ("__pregel_pull", sid),
            "langgraph_checkpoint_ns": checkpoint_ns,
            "checkpoint_ns": checkpoint_ns,
            "fanfold_subtask": sid,
        }
    )
    if index is not None:
        metadata["fanfold_item"] = index
        metadata["fanfold_item_id"] = item_id
    metadata.pop("langgraph_step", None)
    tags = [t for t in (base.get("tags") or []) if not t.startswith(STEP_TAG_PREFIX)]
    tags.append(f"fanfold:subtask:{sid}")
    configurable = {
        k: v
        for k, v in (base.get("configurable") or {}).items()
        if not k.startswith("__") or k == RUNTIME_KEY
    }
    configurable[CHECKPOINT_NS_KEY] = checkpoint_ns
    config: RunnableConfig = {
        "metadata": metadata,
        "tags": tags,
        "configurable": configurable,
        "run_name": sid if item_id is None else item_id,
    }
    callbacks = base.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        handlers = list(callbacks.inheritable_handlers)
        inherited = [t for t in callbacks.inheritable_tags if not t.startswith(STEP_TAG_PREFIX)]
        config["callbacks"] = CallbackManager(
            handlers=handlers,
            inheritable_handlers=handlers,
            parent_run_id=run_id,
            tags=inherited,
            inheritable_tags=inherited,
            metadata={},
            inheritable_metadata={},
        )
    else:  # a list, or none (a run started before its first node, with no handlers)
        config["callbacks"] = callbacks or None
    return config


def open_step(snapshot: StateSnapshot) -> tuple[str, ...]:
    """The nodes of a thread's open step: empty once the run has finished (assumption 11).

    Unlike `snapshot.next`, this counts the step's tasks whose writes are already saved,
    so a run killed between its tasks' writes and the step's checkpoint is unfinished.
    """
    return tuple(task.name for task in snapshot.tasks)
