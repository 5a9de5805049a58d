"""Read a plan file (YAML or JSON) into a mapping.

YAML aliases (`*name`) reuse an anchored value without copying it, so a few hundred
bytes of nested aliases stand for billions of values ("billion laughs") that exhaust
memory wherever the data is walked. `safe_yaml` counts what aliases add before
building anything and refuses more than `MAX_ALIAS_EXPANSION` values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fanfold.errors import PlanFileError

MAX_ALIAS_EXPANSION = 100_000
"""The most YAML values that aliases may add to a document, all uses counted."""


class AliasExpansionError(yaml.MarkedYAMLError):
    """YAML aliases expand too far, or an alias refers to a value that contains it."""


def safe_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, refusing a document whose aliases expand too far.

    Raises:
        AliasExpansionError: an alias refers to a value that contains it, or aliases
            add more than `MAX_ALIAS_EXPANSION` values.
        yaml.YAMLError: the text is not valid YAML.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node) -> None:
    sizes: dict[int, int] = {}  # node id -> values it expands to, itself included
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise AliasExpansionError(
                None,
                None,
                "an alias refers to a value that contains it; write it out",
                node.start_mark,
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    added = size(root) - len(sizes)  # every use counted, less the values written out
    if added > MAX_ALIAS_EXPANSION:
        raise AliasExpansionError(
            None,
            None,
            f"its aliases (*name) expand to more than {MAX_ALIAS_EXPANSION:,} values "
            "(nested aliases multiply); write the repeated parts out, or alias less",
            root.start_mark,
        )


def load_mapping(path: Path) -> dict[str, Any]:
    """Return the top-level mapping of a YAML or JSON plan file.

    Raises:
        PlanFileError: the file cannot be read, parsed, or is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PlanFileError(
            f"plan file {str(path)!r} does not exist; check the path", path=str(path)
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"cannot read plan file {str(path)!r}: {exc}", path=str(path)) from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = safe_yaml(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(
            f"plan file {str(path)!r} is not valid JSON (line {exc.lineno}, column "
            f"{exc.colno}): {exc.msg}",
            path=str(path),
        ) from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        what = "is refused" if isinstance(exc, AliasExpansionError) else "is not valid YAML"
        raise PlanFileError(
            f"plan file {str(path)!r} {what}{at}: {problem}", path=str(path)
        ) from exc
    if not isinstance(data, dict):
        raise PlanFileError(
            f"plan file {str(path)!r} must hold a mapping with 'task' and 'subtasks', "
            f"not {type(data).__name__}",
            path=str(path),
        ) from None
    return data
