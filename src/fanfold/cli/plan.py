"""`fanfold plan`: ask a model to split a goal into subtasks and write the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fanfold.cli._app import CliError, app, one_line_errors
from fanfold.cli._options import ModelOption


@app.command("plan")
@one_line_errors
def plan_goal(
    goal: Annotated[str, typer.Argument(metavar="GOAL", help="The job to plan, in plain words.")],
    model: ModelOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write the plan here, not to stdout."),
    ] = None,
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="NAME=DESCRIPTION",
            help="A run input the plan may use, and what it holds; repeatable.",
        ),
    ] = None,
    max_subtasks: Annotated[
        int, typer.Option(min=1, metavar="N", help="The most subtasks the plan may have.")
    ] = 12,
    attempts: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Model calls allowed; a rejected plan is sent back to fix."
        ),
    ] = 3,
) -> None:
    """Ask a model to split a goal into subtasks and write the plan for review.

    The plan is YAML that `fanfold run PLAN` takes: read it, edit it, then run it.
    Exit status 1 (one `Error:` line) when no reply was a valid plan within --attempts.

    \b
    Examples:
      fanfold plan "Compare three note-taking apps for a small team" -m simulated
      fanfold plan "Brief on a product" -i product="the product" -m simulated -o brief.yaml
      fanfold run brief.yaml -i product="home batteries" -m simulated
    """
    from fanfold.cli._output import parse_descriptions
    from fanfold.planning import make_plan_with_usage, plan_to_yaml

    if output is not None and not output.parent.is_dir():
        # Before any model call, rather than after paying for the plan.
        raise CliError(f"cannot write the plan to {str(output)!r}: its folder does not exist")
    task_plan, usage = make_plan_with_usage(
        goal,
        model=model,
        attempts=attempts,
        inputs=parse_descriptions(input or []),
        max_subtasks=max_subtasks,
    )
    text = plan_to_yaml(task_plan)
    summary = f"planned {len(task_plan.ids)} subtasks ({usage.total_tokens} planner tokens)"
    if output is None:
        typer.echo(text, nl=False)
        typer.echo(summary, err=True)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write the plan to {str(output)!r}: {exc.strerror}") from exc
    typer.echo(f"{summary}; wrote {output}; run it with: fanfold run {output}", err=True)
