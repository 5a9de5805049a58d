"""`fanfold report`: render a saved run record as the HTML run report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fanfold.cli._app import CliError, app, one_line_errors


@app.command("report")
@one_line_errors
def report(
    record: Annotated[
        Path,
        typer.Argument(
            metavar="RUN.json",
            help="A run record, as `run --json` prints it (or a report, which embeds one).",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="The HTML file to write.")
    ] = Path("report.html"),
) -> None:
    """Render a saved run record as the HTML run report.

    The record is what `fanfold run --json` prints (save it with `> run.json`), or the
    one an earlier report embeds.

    \b
    Examples:
      fanfold run plan.yaml --quiet --report first.html
      fanfold report first.html -o report.html
    """
    from fanfold.cli._output import write_report
    from fanfold.record import load_record

    try:
        loaded = load_record(record)
    except OSError as exc:
        raise CliError(f"cannot read {str(record)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        problem = " ".join(str(exc).split())[:300]
        raise CliError(
            f"{str(record)!r} is not a run record ({problem}); write one with "
            "`fanfold run PLAN --json > run.json`"
        ) from exc
    write_report(output, loaded)
