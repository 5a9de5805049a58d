"""Read a plan file (YAML or JSON) into a mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fanfold.errors import PlanFileError


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
            data = yaml.safe_load(text)
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
        raise PlanFileError(
            f"plan file {str(path)!r} is not valid YAML{at}: {problem}", path=str(path)
        ) from exc
    if not isinstance(data, dict):
        raise PlanFileError(
            f"plan file {str(path)!r} must hold a mapping with 'task' and 'subtasks', "
            f"not {type(data).__name__}",
            path=str(path),
        ) from None
    return data
