"""`fanfold show`: draw a plan's graph offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fanfold.cli._app import CliError, app, one_line_errors


@app.command()
@one_line_errors
def show(
    plan: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan file (YAML or JSON).")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="mermaid or ascii (plain), dot, svg, png, pdf or html (with the critical "
            "path, joins and maps; svg, png, pdf and html need Graphviz).",
        ),
    ] = "mermaid",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write to FILE (needed for png and pdf)."
        ),
    ] = None,
) -> None:
    """Draw a plan's graph offline, without running it.

    \b
    Formats:
      mermaid  (default) LangGraph's plain Mermaid flowchart, top to bottom: one box
               per subtask and an arrow per dependency, nothing more.
      ascii    LangGraph's plain ASCII boxes while the plan fits the terminal; past
               that, a layered listing (each subtask with its dependencies).
      dot      fanfold's own drawing as Graphviz DOT text (needs nothing installed):
               left to right, join points where branches wait for each other, the
               critical path in bold, map subtasks as stacked boxes.
      svg, png, pdf, html
               that drawing rendered by Graphviz (`dot` must be installed).

    \b
    Examples:
      fanfold show examples/research.yaml
      fanfold show examples/research.yaml --format ascii
      fanfold show examples/research.yaml --format dot
      fanfold show examples/research.yaml --format svg -o research.svg
    """
    from fanfold.drawing import plan_ascii, plan_dot, render
    from fanfold.graphs.compile import compile_plan
    from fanfold.plan.models import TaskPlan

    text_formats = ("mermaid", "ascii", "dot", "svg", "html")
    if format not in (*text_formats, "png", "pdf"):
        raise CliError(
            f"--format must be one of mermaid, ascii, dot, svg, png, pdf, html, not {format!r}"
        )
    if format in ("png", "pdf") and output is None:
        raise CliError(f"--format {format} is binary: write it to a file with -o FILE.{format}")
    graph = compile_plan(TaskPlan.from_file(plan), model="simulated")
    data: str | bytes
    if format == "mermaid":
        data = graph.get_graph().draw_mermaid()
    elif format == "ascii":
        data = plan_ascii(graph)
    else:
        data = render(plan_dot(graph), format)
    if output is None:
        typer.echo(data.decode() if isinstance(data, bytes) else data.rstrip("\n"))
        return
    try:
        if isinstance(data, bytes):
            output.write_bytes(data)
        else:
            output.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {str(output)!r}: {exc.strerror}") from exc
    typer.echo(f"wrote {output}", err=True)
