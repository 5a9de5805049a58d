"""Every error fanfold raises, in one tree rooted at `FanfoldError`.

Catch `FanfoldError` for anything fanfold refuses; catch a branch for one kind of
trouble. Each branch is also a `ValueError`, as every fanfold error was before the
branches existed. Classes defined in other modules are importable from here too.

* FanfoldError
  + PlanError (ValueError) - the plan or its inputs are wrong.
    + PlanValidationError - a field has the wrong type or shape (wraps pydantic).
    + PlanFileError - a plan file cannot be read or parsed (wraps OS/YAML/JSON errors).
    + EmptyPlanError - the plan has no subtasks.
    + InvalidSubtaskIdError - an id cannot be a graph node name, or is reserved.
    + DuplicateSubtaskError - two subtasks share an id.
    + UnknownDependencyError - a subtask depends on an id that is not in the plan.
    + SelfDependencyError - a subtask depends on itself.
    + DependencyCycleError - dependencies loop back (`a -> b -> a`).
    + UndeclaredDependencyError - a prompt names a subtask it does not depend on.
    + UnknownKindError - a subtask's `kind` is not a registered node kind.
    + InvalidOptionsError - a subtask's `options` do not suit its kind.
    + InvalidMapError - a subtask's `map` names itself, or neither an input nor a subtask.
    + InvalidOutputSchemaError - an output schema is invalid or cannot be asked for.
    + BatchNotSupportedError - a subtask asks for a batch it cannot be sent as.
    + MissingInputError - a run lacks an input that a prompt needs.
    + UnknownInputError - a run is given an input the plan does not use.
    + MapInputError - a map's run input is not a list.
    + PriceError - a prices file or price table entry is invalid (scheduling.prices).
    + PlannerError - the planner model gave no valid plan (planning.planner).
  + ProviderError (ValueError) - a model provider cannot be used.
    + ModelResolutionError - a model string cannot be turned into a chat model.
      + MissingCredentialsError - the provider needs a key that is not configured.
      + ModelNotAllowedError - a served graph's plan names a model the operator did not allow.
      + UnknownModelSettingError - a model setting is not a field of its chat model.
  + BudgetError (ValueError) - a budget cannot be enforced.
    + UnknownPriceError - a model the run calls has no price (scheduling.budget).
  + StoreError (ValueError) - a database or file fanfold keeps cannot be used.
    + CheckpointStoreError - the checkpoint database (checkpoints).
    + RunNotFoundError - no run with that id in the checkpoint (runs).
    + DurationStoreError - the learned-durations store (scheduling.durations).
    + CacheError - the cache of model calls (scheduling.cache).
    + SharedLimitsError - the shared rate-limit store or setting (scheduling.shared_limits).
  + DrawingError (ValueError) - a plan cannot be drawn as asked.
    + GraphvizNotFoundError - Graphviz's `dot` is not installed (drawing).
  + EventsFileError (OSError) - the run's events file cannot be written (runs).

Failures inside a run (a model error, a reply that does not match its schema) are
not raised: they are recorded in the subtask's result.

Every message names the culprit and says how to fix it; the facts are also kept
as attributes so that code can act on them.
"""

from __future__ import annotations

import difflib
import importlib
import shlex
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

__all__ = [
    "BatchNotSupportedError",
    "BudgetError",
    "CacheError",
    "CheckpointStoreError",
    "DependencyCycleError",
    "DrawingError",
    "DuplicateSubtaskError",
    "DurationStoreError",
    "EmptyPlanError",
    "EventsFileError",
    "FanfoldError",
    "GraphvizNotFoundError",
    "InputInterface",
    "InvalidMapError",
    "InvalidOptionsError",
    "InvalidOutputSchemaError",
    "InvalidSubtaskIdError",
    "MapInputError",
    "MissingCredentialsError",
    "MissingInputError",
    "ModelNotAllowedError",
    "ModelResolutionError",
    "PlanError",
    "PlanFileError",
    "PlanValidationError",
    "PlannerError",
    "PriceError",
    "ProviderError",
    "RunNotFoundError",
    "SelfDependencyError",
    "SharedLimitsError",
    "StoreError",
    "UndeclaredDependencyError",
    "UnknownDependencyError",
    "UnknownInputError",
    "UnknownKindError",
    "UnknownModelSettingError",
    "UnknownPriceError",
]

_ELSEWHERE = {
    "CacheError": "fanfold.scheduling.cache",
    "CheckpointStoreError": "fanfold.checkpoints",
    "DurationStoreError": "fanfold.scheduling.durations",
    "GraphvizNotFoundError": "fanfold.drawing",
    "PlannerError": "fanfold.planning.planner",
    "PriceError": "fanfold.scheduling.prices",
    "RunNotFoundError": "fanfold.runs.api",
    "SharedLimitsError": "fanfold.scheduling.shared_limits",
    "UnknownPriceError": "fanfold.scheduling.budget",
}
"""Errors defined beside the code that raises them, importable from here on first use."""

if TYPE_CHECKING:
    from fanfold.checkpoints import CheckpointStoreError
    from fanfold.drawing import GraphvizNotFoundError
    from fanfold.planning.planner import PlannerError
    from fanfold.runs.api import RunNotFoundError
    from fanfold.scheduling.budget import UnknownPriceError
    from fanfold.scheduling.cache import CacheError
    from fanfold.scheduling.durations import DurationStoreError
    from fanfold.scheduling.prices import PriceError
    from fanfold.scheduling.shared_limits import SharedLimitsError


def __getattr__(name: str) -> Any:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or ""."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


InputInterface = Literal["python", "cli", "server"]
"""Where a run's inputs come from, so that an error names the option of that interface."""


def input_example(name: str, interface: InputInterface, value: str | None = None) -> str:
    """How to pass run input `name` in `interface`; `value` is JSON text (default: a placeholder).

    For "doc": `inputs={"doc": ...}` (python), `--input doc=VALUE` (cli),
    `{"inputs": {"doc": ...}} (the "inputs" field of the run's input)` (server).
    """
    if interface == "cli":
        return f"--input {name}={shlex.quote(value) if value is not None else 'VALUE'}"
    data = f'{{"{name}": {value if value is not None else "..."}}}'
    if interface == "server":
        return f'{{"inputs": {data}}} (the "inputs" field of the run\'s input)'
    return f"inputs={data}"


class FanfoldError(Exception):
    """The root: fanfold refuses or cannot do what was asked (see the tree above)."""


class PlanError(FanfoldError, ValueError):
    """The plan or its inputs cannot run."""


class ProviderError(FanfoldError, ValueError):
    """A model provider cannot be used: an unknown model, missing credentials."""


class BudgetError(FanfoldError, ValueError):
    """A budget cannot be enforced: not a number of USD, or a model has no price."""


class StoreError(FanfoldError, ValueError):
    """A database or file fanfold keeps (checkpoints, durations, cache, shared limits)
    cannot be opened or used.

    Attributes:
        setting: the setting to fix, e.g. "target" (the path or URL).
        target: the path or URL, a password masked.
    """

    def __init__(self, message: str, *, setting: str = "target", target: str | None = None):
        super().__init__(message)
        self.setting = setting
        self.target = target


class DrawingError(FanfoldError, ValueError):
    """A plan cannot be drawn as asked: an unknown format, a failing `dot`, bad statuses."""


class EventsFileError(FanfoldError, OSError):
    """A run's events file cannot be opened for writing."""


class PlanValidationError(PlanError):
    """A plan field has the wrong type or shape."""


class PlanFileError(PlanError):
    """A plan file cannot be read or parsed."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class EmptyPlanError(PlanError):
    """The plan has no subtasks."""


class InvalidSubtaskIdError(PlanError):
    """A subtask id cannot be used as a graph node name."""

    def __init__(self, message: str, *, subtask_id: str) -> None:
        super().__init__(message)
        self.subtask_id = subtask_id


class DuplicateSubtaskError(PlanError):
    """Two or more subtasks share an id."""

    def __init__(self, subtask_id: str) -> None:
        super().__init__(
            f"subtask id {subtask_id!r} is used more than once; give each subtask a unique id"
        )
        self.subtask_id = subtask_id


class UnknownDependencyError(PlanError):
    """A subtask depends on an id that is not in the plan."""

    def __init__(self, subtask_id: str, dependency: str, known: Iterable[str]) -> None:
        hint = did_you_mean(dependency, known) or "; remove it or add a subtask with that id"
        super().__init__(f"subtask {subtask_id!r} depends on unknown subtask {dependency!r}{hint}")
        self.subtask_id = subtask_id
        self.dependency = dependency


class SelfDependencyError(PlanError):
    """A subtask lists itself in `depends_on`."""

    def __init__(self, subtask_id: str) -> None:
        super().__init__(
            f"subtask {subtask_id!r} depends on itself; remove {subtask_id!r} from its depends_on"
        )
        self.subtask_id = subtask_id


class DependencyCycleError(PlanError):
    """The dependencies form a cycle, so no subtask in it could ever start."""

    def __init__(self, cycle: Sequence[str]) -> None:
        path = " -> ".join([*cycle, cycle[0]])
        super().__init__(
            f"dependency cycle: {path} (each depends on the next); remove one of these "
            "dependencies so the plan is acyclic"
        )
        self.cycle = list(cycle)


class UndeclaredDependencyError(PlanError):
    """A prompt uses another subtask's output without depending on it."""

    def __init__(self, subtask_id: str, placeholder: str) -> None:
        super().__init__(
            f"subtask {subtask_id!r} uses {{{placeholder}}} in its prompt, which is the output "
            f"of subtask {placeholder!r}, but does not depend on it; "
            f"add {placeholder!r} to its depends_on"
        )
        self.subtask_id = subtask_id
        self.placeholder = placeholder


class UnknownKindError(PlanError):
    """A subtask's kind is not a registered node kind."""

    def __init__(self, subtask_id: str, kind: str, known: Iterable[str]) -> None:
        known = sorted(known)
        hint = did_you_mean(kind, known) or (
            f"; use one of {', '.join(repr(k) for k in known)} or register it with "
            "fanfold.register_node_kind()"
        )
        super().__init__(f"subtask {subtask_id!r} has unknown kind {kind!r}{hint}")
        self.subtask_id = subtask_id
        self.kind = kind


class InvalidOptionsError(PlanError):
    """A subtask's `options` do not suit its kind (unknown key, wrong type or range)."""

    def __init__(self, message: str, *, subtask_id: str, option: str | None = None) -> None:
        super().__init__(message)
        self.subtask_id = subtask_id
        self.option = option


class InvalidMapError(PlanError):
    """A subtask's `map` names itself, or neither a declared input nor a subtask."""

    def __init__(self, message: str, *, subtask_id: str, source: str) -> None:
        super().__init__(message)
        self.subtask_id = subtask_id
        self.source = source


class BatchNotSupportedError(PlanError):
    """A subtask asks to go through a Batch API (`batch: true`, `--batch`) and cannot."""

    def __init__(self, subtask_id: str, reason: str) -> None:
        super().__init__(
            f"subtask {subtask_id!r} cannot be sent as a batch: {reason}; remove its "
            "`batch: true` (or run without --batch)"
        )
        self.subtask_id = subtask_id
        self.reason = reason


class InvalidOutputSchemaError(PlanError):
    """An `output_schema` is not valid JSON Schema, has a dangling `$ref`, or matches nothing."""

    def __init__(self, where: str, problem: str, *, subtask_id: str | None) -> None:
        super().__init__(f"the output_schema of {where} {problem}")
        self.subtask_id = subtask_id
        """The subtask whose schema it is; None for `aggregation.output_schema`."""


class MissingInputError(PlanError):
    """A run lacks an input that one or more prompts need."""

    def __init__(
        self, missing: dict[str, list[str]], *, interface: InputInterface = "python"
    ) -> None:
        parts = [
            f"{name!r} (used by {', '.join(repr(s) for s in users)})"
            for name, users in sorted(missing.items())
        ]
        first = sorted(missing)[0]
        super().__init__(
            f"missing run input {', '.join(parts)}; pass it as {input_example(first, interface)}"
        )
        self.missing = dict(missing)
        self.interface = interface


class UnknownInputError(PlanError):
    """A run is given an input that the plan neither declares nor uses."""

    def __init__(self, unknown: Iterable[str], known: Iterable[str]) -> None:
        unknown, known = sorted(unknown), sorted(known)
        first = unknown[0]
        listed = ", ".join(repr(k) for k in known) if known else "none"
        hint = did_you_mean(first, known)
        names = ", ".join(repr(u) for u in unknown)
        super().__init__(
            f"unknown run input {names}{hint} (the plan's inputs: {listed}); "
            "remove it, or declare it under 'inputs:' in the plan"
        )
        self.unknown = unknown
        self.known = known


class MapInputError(PlanError):
    """A map subtask's run input is not a list."""

    def __init__(
        self, subtask_id: str, source: str, value: object, *, interface: InputInterface = "python"
    ) -> None:
        example = input_example(source, interface, '["a", "b"]')
        super().__init__(
            f"subtask {subtask_id!r} maps over run input {source!r}, which must be a list, "
            f"not {type(value).__name__}; pass a list, such as {example}"
        )
        self.subtask_id = subtask_id
        self.source = source
        self.interface = interface


class ModelResolutionError(ProviderError):
    """A model string cannot be resolved to a chat model."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class ModelNotAllowedError(ModelResolutionError):
    """A plan sent to a served graph names a model, or settings, the operator did not allow."""


class MissingCredentialsError(ModelResolutionError):
    """The model's provider needs credentials that are not configured."""


class UnknownModelSettingError(ModelResolutionError):
    """A model setting (`model: {name: ..., <setting>: ...}`) is not a field of its class."""

    def __init__(self, message: str, *, model: str, setting: str) -> None:
        super().__init__(message, model=model)
        self.setting = setting
