"""The typer app every command registers on, exit statuses, and one-line errors.

Only light modules are imported here, so `fanfold --version` and `--help` start fast;
each command imports the library when it runs.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from fanfold import __version__
from fanfold.errors import FanfoldError

EXIT_OK = 0
"""Every subtask and the aggregation succeeded."""
EXIT_ERROR = 1
"""A usage, plan, input or checkpoint error: nothing ran (one `Error:` line on stderr)."""
EXIT_INCOMPLETE = 3
"""The run finished, but a subtask failed or was skipped, or the aggregation failed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT) stopped the command: 128 + SIGINT, as shells report it."""

EXIT_STATUSES = f"""\b
Exit status:
  {EXIT_OK}  every subtask and the aggregation succeeded
  {EXIT_ERROR}  usage, plan, input or checkpoint error; nothing ran
  {EXIT_INCOMPLETE}  the run finished with failed or skipped subtasks, or a failed aggregation;
     also a budget too small for any call (nothing was sent)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a run with --checkpoint can be resumed
"""


# typer bundles its own click; its UsageError is the public BadParameter's base class.
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


class _Group(TyperGroup):
    """Usage errors exit with status 1, like every other error a user can fix."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except _UsageError as exc:
            exc.exit_code = EXIT_ERROR  # type: ignore[attr-defined]
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as exc:
            exc.exit_code = EXIT_ERROR  # type: ignore[attr-defined]
            raise


app = typer.Typer(
    cls=_Group,
    help="Compile LLM subtask plans into greedy LangGraph graphs and run them.",
    epilog=EXIT_STATUSES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"fanfold {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Compile LLM subtask plans into greedy LangGraph graphs and run them."""


F = TypeVar("F", bound=Callable[..., Any])


_resume_hint: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fanfold_resume_hint", default=None
)


def set_resume_hint(command: str) -> None:
    """Name the command that resumes the running command's run (printed on Ctrl-C)."""
    _resume_hint.set(command)


def one_line_errors(command: F) -> F:
    """Turn library and usage errors into one line on stderr and exit status 1, and
    Ctrl-C into one line (how to resume, when the run has a checkpoint) and status 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _resume_hint.set(None)
        try:
            return command(*args, **kwargs)
        except (FanfoldError, CliError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=EXIT_ERROR) from exc
        except KeyboardInterrupt as exc:
            hint = _resume_hint.get()
            typer.echo(f"interrupted; resume with: {hint}" if hint else "interrupted", err=True)
            raise typer.Exit(code=EXIT_INTERRUPTED) from exc
        finally:
            _resume_hint.reset(token)

    return wrapper  # type: ignore[return-value]
