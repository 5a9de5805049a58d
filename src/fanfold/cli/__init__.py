"""The `fanfold` command line: one module per command, each a thin layer over the library.

Every command parses its options, calls the library (`fanfold.runs` for runs) and
prints. Only typer is imported up front, so `--version` and `--help` start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from fanfold.cli import estimate, plan, report, resume, run, serve_sim, show  # noqa: F401
from fanfold.cli._app import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUSES,
    CliError,
    app,
    one_line_errors,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STATUSES",
    "CliError",
    "app",
    "main",
    "one_line_errors",
]

_MOVED = {
    "Watch": "fanfold.runs.watch",
    "ProgressMode": "fanfold.runs.watch",
    "progress_mode": "fanfold.runs.watch",
    "stderr_is_terminal": "fanfold.runs.watch",
    "fanfold_home": "fanfold.runs.config",
    "default_store_path": "fanfold.runs.config",
    "home_prices_path": "fanfold.runs.config",
    "shown_target": "fanfold.scheduling.storage",
    "parse_inputs": "fanfold.cli._output",
    "parse_descriptions": "fanfold.cli._output",
    "exit_status": "fanfold.cli._output",
    "describe_critical_path": "fanfold.cli._output",
    "plan_estimate": "fanfold.cli.estimate",
}
"""Names this module held before it became a package, and where they live now."""


def __getattr__(name: str) -> Any:
    if name == "cli_prices":
        return importlib.import_module("fanfold.runs.config").run_prices
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def main() -> None:
    """Console-script entry point."""
    app()
