"""Node kinds: what a subtask does once its dependencies are done.

A kind is an async function over a `SubtaskCall`. The built-in kinds ("llm",
"template") register through the same `register_node_kind` that users call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, overload

from fanfold.plan.models import SubTask
from fanfold.scheduling.calls import KindOutput, SubtaskCall

__all__ = [
    "KindFunction",
    "KindOutput",
    "KindValidator",
    "NodeKind",
    "NodeKindRegistry",
    "SubtaskCall",
    "node_kinds",
    "register_node_kind",
]


KindFunction = Callable[[SubtaskCall], Awaitable[Any] | Any]
KindValidator = Callable[[SubTask], None]
"""Checks a subtask of this kind when the plan is compiled; raises PlanError if it is wrong."""


@dataclass(frozen=True)
class NodeKind:
    """A registered kind: its name, function and whether it needs a chat model."""

    name: str
    function: KindFunction
    needs_model: bool = False
    description: str = ""
    validate: KindValidator | None = None
    local: bool = False
    """Its function is sync, cheap and needs no network, so `estimate` runs it (for
    example a splitter, to count the items of the map over its pieces)."""

    async def run(self, call: SubtaskCall) -> KindOutput:
        """Run the kind; a sync function runs in a worker thread."""
        if inspect.iscoroutinefunction(self.function):
            value = await self.function(call)
        else:
            value = await asyncio.to_thread(self.function, call)
            if inspect.isawaitable(value):
                value = await value
        return value if isinstance(value, KindOutput) else KindOutput(value)


class NodeKindRegistry:
    """Name -> NodeKind; `compile_plan` looks up each subtask's `kind` here."""

    def __init__(self) -> None:
        self._kinds: dict[str, NodeKind] = {}

    @overload
    def register(
        self,
        name: str,
        function: KindFunction,
        *,
        needs_model: bool = ...,
        description: str = ...,
        validate: KindValidator | None = ...,
        replace: bool = ...,
        local: bool = ...,
    ) -> NodeKind: ...

    @overload
    def register(
        self,
        name: str,
        function: None = None,
        *,
        needs_model: bool = ...,
        description: str = ...,
        validate: KindValidator | None = ...,
        replace: bool = ...,
        local: bool = ...,
    ) -> Callable[[KindFunction], KindFunction]: ...

    def register(
        self,
        name: str,
        function: KindFunction | None = None,
        *,
        needs_model: bool = False,
        description: str = "",
        validate: KindValidator | None = None,
        replace: bool = False,
        local: bool = False,
    ) -> NodeKind | Callable[[KindFunction], KindFunction]:
        """Register a node kind; use directly or as a decorator.

        Args:
            name: the value subtasks put in `kind`.
            function: async (or sync) function taking a SubtaskCall and returning the
                output or a KindOutput.
            needs_model: resolve a chat model for subtasks of this kind.
            validate: called with each subtask of this kind when a plan is compiled;
                raises a PlanError for wrong settings (e.g. bad `options`).
            replace: allow replacing an existing kind of the same name.
            local: the function is sync, cheap and needs no network: `fanfold estimate`
                runs it when its prompt's values are given (splitters are).

        Raises:
            ValueError: the name is taken and `replace` is false.
        """
        if function is None:

            def decorator(fn: KindFunction) -> KindFunction:
                self.register(
                    name,
                    fn,
                    needs_model=needs_model,
                    description=description,
                    validate=validate,
                    replace=replace,
                    local=local,
                )
                return fn

            return decorator
        if not name or not isinstance(name, str):
            raise ValueError("a node kind needs a non-empty string name")
        if name in self._kinds and not replace:
            raise ValueError(
                f"node kind {name!r} is already registered; pass replace=True to override it"
            )
        kind = NodeKind(
            name,
            function,
            needs_model=needs_model,
            description=description,
            validate=validate,
            local=local,
        )
        self._kinds[name] = kind
        return kind

    def unregister(self, name: str) -> None:
        """Remove a kind (KeyError if absent)."""
        del self._kinds[name]

    def get(self, name: str) -> NodeKind:
        """Return the kind registered under `name` (KeyError if absent)."""
        return self._kinds[name]

    def names(self) -> list[str]:
        """Registered kind names, sorted."""
        return sorted(self._kinds)

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


node_kinds = NodeKindRegistry()
"""The process-wide registry that `compile_plan` uses unless given another."""


def register_node_kind(
    name: str,
    function: KindFunction | None = None,
    *,
    needs_model: bool = False,
    description: str = "",
    validate: KindValidator | None = None,
    replace: bool = False,
    local: bool = False,
) -> Any:
    """Register a node kind in the default registry (also usable as a decorator)."""
    return node_kinds.register(
        name,
        function,
        needs_model=needs_model,
        description=description,
        validate=validate,
        replace=replace,
        local=local,
    )
