"""Channels that keep fanfold's typed values as plain data in writes and checkpoints.

A checkpointer deserializes only the classes it knows (LangGraph warns about, and will
block, unregistered ones), so nothing of fanfold's own types may reach it. Nodes write
results as plain dicts, these channels store plain dicts and checkpoint them as they
are, and `get()` gives the typed view (`SubtaskResult`, `RunTotals`, and the plan's
pydantic output schemas), built once per value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

from langgraph.channels import BaseChannel
from langgraph.errors import InvalidUpdateError
from langgraph.types import Overwrite
from pydantic import BaseModel

from fanfold.state.results import ResultData, SubtaskResult

OVERWRITE_KEY = "__overwrite__"
"""The JSON form of `Overwrite` (`{"__overwrite__": value}`), as LangGraph's API sends it."""

OutputTypes = Mapping[str, type[BaseModel]]


def result_data(value: Any) -> dict[str, Any]:
    """A result as plain data, whether it arrives as a SubtaskResult or as a mapping.

    A dict is kept as it is (writes are never changed afterwards), so a node's
    `ResultData` keeps the object it was made from.
    """
    if isinstance(value, SubtaskResult):
        return value.to_state()
    if isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidUpdateError(
        f"a 'results' entry must be a SubtaskResult or a mapping, not {type(value).__name__}"
    )


def _overwritten(value: Any) -> tuple[bool, Any]:
    if isinstance(value, Overwrite):
        return True, value.value
    if isinstance(value, Mapping) and len(value) == 1 and OVERWRITE_KEY in value:
        return True, value[OVERWRITE_KEY]
    return False, None


def _revive_output(output: Any, schema: type[BaseModel] | None, *, is_list: bool) -> Any:
    if schema is None or output is None:
        return output
    if is_list and isinstance(output, list):
        return [schema.model_validate(v) if isinstance(v, Mapping) else v for v in output]
    return schema.model_validate(output) if isinstance(output, Mapping) else output


class ResultsChannel(BaseChannel[dict[str, SubtaskResult], Any, dict[str, dict[str, Any]]]):
    """`results`: merged by subtask id (a newer result wins); `Overwrite` replaces them all.

    Args:
        typ: the annotated value type.
        key: the state key.
        output_types: subtask id -> the pydantic class of its output, so structured
            outputs come back as instances after a checkpoint round trip.
    """

    __slots__ = ("output_types", "_data", "_typed", "_stale")

    def __init__(
        self, typ: Any = dict, key: str = "", *, output_types: OutputTypes | None = None
    ) -> None:
        super().__init__(typ, key)
        self.output_types: dict[str, type[BaseModel]] = dict(output_types or {})
        self._data: dict[str, dict[str, Any]] = {}
        self._typed: dict[str, SubtaskResult] = {}
        self._stale: set[str] | None = set()
        """Ids written since the typed view was made; None: remake it entirely."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResultsChannel) and other.output_types == self.output_types

    @property
    def ValueType(self) -> Any:
        return self.typ

    @property
    def UpdateType(self) -> Any:
        return self.typ

    def _empty(self) -> Self:
        return self.__class__(self.typ, self.key, output_types=self.output_types)

    def copy(self) -> Self:
        twin = self._empty()
        # Shared, never mutated: an update replaces them.
        twin._data, twin._typed, twin._stale = self._data, self._typed, self._stale
        return twin

    def from_checkpoint(self, checkpoint: Any) -> Self:
        twin = self._empty()
        if isinstance(checkpoint, Mapping):
            twin._data = {sid: result_data(v) for sid, v in checkpoint.items()}
            twin._stale = None
        return twin

    def update(self, values: Sequence[Any]) -> bool:
        if not values:
            return False
        data = self._data
        written: set[str] | None = set(self._stale) if self._stale is not None else None
        overwritten = False
        for value in values:
            is_overwrite, replacement = _overwritten(value)
            if is_overwrite:
                if overwritten:
                    raise InvalidUpdateError("'results' received more than one Overwrite in a step")
                overwritten = True
                data = {sid: result_data(v) for sid, v in (replacement or {}).items()}
                written = None  # everything is new
            elif not overwritten:
                new = {sid: result_data(v) for sid, v in (value or {}).items()}
                data = {**data, **new}
                if written is not None:
                    written.update(new)
        self._data, self._stale = data, written
        return True

    def get(self) -> dict[str, SubtaskResult]:
        # Only the entries written since the last read are revived (one C-level merge
        # per step, not a Python loop over every result).
        if self._stale is None:
            self._typed = {sid: self._revive(sid, d) for sid, d in self._data.items()}
            self._stale = set()
        elif self._stale:
            fresh = {sid: self._revive(sid, self._data[sid]) for sid in self._stale}
            self._typed = {**self._typed, **fresh}
            self._stale = set()
        return self._typed

    def is_available(self) -> bool:
        return True

    def checkpoint(self) -> dict[str, dict[str, Any]]:
        return self._data

    def _revive(self, sid: str, data: dict[str, Any]) -> SubtaskResult:
        typed = data.typed if isinstance(data, ResultData) else None
        if typed is not None:
            return typed  # the node's own result: its outputs are already typed
        result = SubtaskResult.model_validate(data)
        schema = self.output_types.get(sid)
        if schema is None:
            return result
        updates: dict[str, Any] = {
            "output": _revive_output(result.output, schema, is_list=result.items is not None)
        }
        if result.items is not None:
            updates["items"] = [
                item.model_copy(
                    update={"output": _revive_output(item.output, schema, is_list=False)}
                )
                for item in result.items
            ]
        return result.model_copy(update=updates)


class ModelValueChannel(BaseChannel[Any, Any, Any]):
    """A last-value channel for one pydantic model (or None), stored as plain data.

    Args:
        model: the class of the value.
        key: the state key.
    """

    __slots__ = ("model", "_data", "_typed")

    def __init__(self, model: type[BaseModel], key: str = "") -> None:
        super().__init__(model, key)
        self.model = model
        self._data: dict[str, Any] | None = None
        self._typed: BaseModel | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelValueChannel) and other.model is self.model

    @property
    def ValueType(self) -> Any:
        return self.model | None

    @property
    def UpdateType(self) -> Any:
        return self.model | None

    def copy(self) -> Self:
        twin = self.__class__(self.model, self.key)
        twin._data, twin._typed = self._data, self._typed
        return twin

    def from_checkpoint(self, checkpoint: Any) -> Self:
        twin = self.__class__(self.model, self.key)
        # Anything else is LangGraph's marker for "never written".
        if isinstance(checkpoint, Mapping | BaseModel):
            twin._data = self._as_data(checkpoint)
        return twin

    def update(self, values: Sequence[Any]) -> bool:
        if not values:
            return False
        if len(values) != 1:
            raise InvalidUpdateError(f"{self.key!r} can receive only one value per step")
        value = values[0]
        is_overwrite, replacement = _overwritten(value)
        self._data = self._as_data(replacement if is_overwrite else value)
        self._typed = None
        return True

    def get(self) -> Any:
        if self._data is None:
            return None
        if self._typed is None:
            self._typed = self.model.model_validate(self._data)
        return self._typed

    def is_available(self) -> bool:
        return True

    def checkpoint(self) -> Any:
        return self._data

    def _as_data(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if isinstance(value, BaseModel):
            return value.model_dump()
        if isinstance(value, Mapping):
            return dict(value)
        raise InvalidUpdateError(
            f"{self.key!r} must be a {self.model.__name__}, a mapping or None, "
            f"not {type(value).__name__}"
        )
