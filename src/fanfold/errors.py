"""Every way a plan, its inputs or its model choice can be wrong.

One base class covers them all, so a caller catches a single type:

* PlanError (ValueError)
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
  + MissingInputError - a run lacks an input that a prompt needs.
  + UnknownInputError - a run is given an input the plan does not use.
  + MapInputError - a map's run input is not a list.
  + ModelResolutionError - a model string cannot be turned into a chat model.
    + MissingCredentialsError - the provider needs a key that is not configured.
    + UnknownModelSettingError - a model setting is not a field of the model's class.

Every message names the culprit and says how to fix it; the facts are also kept
as attributes so that code can act on them.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable, Sequence
from typing import Literal

__all__ = [
    "DependencyCycleError",
    "DuplicateSubtaskError",
    "EmptyPlanError",
    "InputInterface",
    "InvalidMapError",
    "InvalidOptionsError",
    "InvalidSubtaskIdError",
    "MissingCredentialsError",
    "MissingInputError",
    "MapInputError",
    "ModelResolutionError",
    "PlanError",
    "PlanFileError",
    "PlanValidationError",
    "SelfDependencyError",
    "UndeclaredDependencyError",
    "UnknownDependencyError",
    "UnknownInputError",
    "UnknownKindError",
    "UnknownModelSettingError",
]


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


class PlanError(ValueError):
    """Base class: the plan, its inputs or its model choice cannot run."""


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


class ModelResolutionError(PlanError):
    """A model string cannot be resolved to a chat model."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class MissingCredentialsError(ModelResolutionError):
    """The model's provider needs credentials that are not configured."""


class UnknownModelSettingError(ModelResolutionError):
    """A model setting (`model: {name: ..., <setting>: ...}`) is not a field of its class."""

    def __init__(self, message: str, *, model: str, setting: str) -> None:
        super().__init__(message, model=model)
        self.setting = setting
