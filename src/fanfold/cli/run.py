"""`fanfold run`: run a plan (or plan a goal first) and print each subtask's result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fanfold.cli._app import (
    EXIT_OK,
    EXIT_STATUSES,
    CliError,
    app,
    one_line_errors,
    set_resume_hint,
)
from fanfold.cli._options import (
    BatchMinItemsOption,
    BatchOption,
    BudgetOption,
    EventsOption,
    MaxConcurrencyOption,
    ModelOption,
    NoCacheOption,
    PricesOption,
    QuietOption,
    ReportOption,
    SharedLimitsOption,
)


@app.command(epilog=EXIT_STATUSES)
@one_line_errors
def run(
    plan: Annotated[
        Path | None,
        typer.Argument(metavar="PLAN", help="Plan file (YAML or JSON); or give --goal."),
    ] = None,
    goal: Annotated[
        str | None,
        typer.Option(
            "--goal",
            "-g",
            metavar="GOAL",
            help="Plan this goal with the model, then run the plan (instead of PLAN).",
        ),
    ] = None,
    model: ModelOption = None,
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="KEY=VALUE",
            help="Run input as key=value or key=@file; repeatable.",
        ),
    ] = None,
    max_concurrency: MaxConcurrencyOption = None,
    requests_per_second: Annotated[
        float | None,
        typer.Option("--rps", min=0.001, metavar="RPS", help="Provider's request-rate limit."),
    ] = None,
    tokens_per_minute: Annotated[
        float | None,
        typer.Option(
            "--tpm",
            min=1,
            metavar="TPM",
            help="Provider's token-rate limit, tokens per minute: each call reserves its "
            "prompt and reply cap, and waits when the minute's tokens are spent.",
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Attempts per subtask for transient errors."),
    ] = None,
    max_subtasks: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="With --goal: the most subtasks the plan may have (12)."
        ),
    ] = None,
    plan_attempts: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="With --goal: planner calls allowed for a valid plan (3)."
        ),
    ] = None,
    replan: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="With --goal: after the aggregate, a judge call may ask for a new plan, "
            "at most N times (0).",
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            metavar="TARGET",
            help="SQLite file or postgresql:// URL; makes the run (a goal's too) resumable.",
        ),
    ] = None,
    show_plan: Annotated[
        bool, typer.Option("--critical-path", help="Print the planned critical path first.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")] = False,
    quiet: QuietOption = False,
    events: EventsOption = None,
    report: ReportOption = None,
    prices: PricesOption = None,
    budget: BudgetOption = None,
    no_cache: NoCacheOption = False,
    shared_limits: SharedLimitsOption = None,
    batch: BatchOption = False,
    batch_min_items: BatchMinItemsOption = 100,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the expected calls, tokens, cost and wall time (as `fanfold "
            "estimate`) and exit without calling any model.",
        ),
    ] = False,
) -> None:
    """Run a plan (or plan a goal first) and print each subtask's status and output.

    With --goal the model first splits the goal into a plan (as `fanfold plan` does;
    every --input name is offered to it), then the plan runs in the same graph and the
    report lists the planned subtasks; --json adds the plan. Pass PLAN or --goal, not both.

    Progress goes to stderr: a live view on a terminal, else one line per finished
    subtask; none with --quiet or --json.

    Each result shows what it cost (--prices FILE adds or overrides prices). Successful
    model calls are cached across runs, so a repeated call costs nothing and shows as
    cached; --no-cache turns that off. --budget USD stops sending calls before the run
    would cost more; --dry-run only prints the estimate. --batch sends big maps through
    the provider's Batch API at half the price (with --checkpoint, a killed run's resume
    collects the same batch).

    \b
    Examples:
      fanfold run examples/research.yaml --model simulated
      fanfold run plan.yaml -i topic="solar power" -i notes=@notes.txt --json
      fanfold run plan.yaml --checkpoint runs.db   # then: fanfold resume RUN_ID ...
      fanfold run --goal "Compare three note-taking apps for a small team" -m simulated
      fanfold run --goal "Compare three note-taking apps" -m simulated --checkpoint runs.db
      fanfold run --goal "Compare three note-taking apps" -m simulated --replan 1
      fanfold run plan.yaml --quiet --events events.jsonl
      fanfold run plan.yaml --dry-run --prices prices.yaml
      fanfold run plan.yaml --budget 0.50
      fanfold run plan.yaml --batch --checkpoint runs.db
    """
    from fanfold.cli._goal import run_goal
    from fanfold.cli._output import (
        describe_critical_path,
        exit_status,
        parse_inputs,
        print_record,
        run_record,
        write_report,
    )
    from fanfold.cli.estimate import print_estimate
    from fanfold.plan.models import TaskPlan
    from fanfold.runs.api import start_run
    from fanfold.runs.watch import Watch, progress_mode
    from fanfold.scheduling.budget import check_budget
    from fanfold.scheduling.storage import shown_target

    if plan is not None and goal is not None:
        raise CliError("give a PLAN file or --goal, not both")
    if plan is None and goal is None:
        raise CliError(
            "give a PLAN file or --goal GOAL, e.g. `fanfold run plan.yaml` or "
            "`fanfold run --goal 'Compare three note-taking apps'`"
        )
    check_budget(budget)
    options = {
        "model": model,
        "max_concurrency": max_concurrency,
        "requests_per_second": requests_per_second,
        "tokens_per_minute": tokens_per_minute,
        "max_attempts": max_attempts,
        "prices": str(prices.resolve()) if prices is not None else None,
        "budget": budget,
        "cache": not no_cache,
        "shared_limits": shared_limits,
        "batch": batch,
        "batch_min_items": batch_min_items,
    }
    if dry_run:
        if plan is None:
            raise CliError(
                "--dry-run needs a PLAN file: write the plan with `fanfold plan GOAL -o "
                "plan.yaml`, then run `fanfold run plan.yaml --dry-run`"
            )
        print_estimate(plan, options, inputs=parse_inputs(input or []), as_json=as_json)
        raise typer.Exit(code=EXIT_OK)
    if goal is not None:
        planner = {"attempts": plan_attempts, "max_subtasks": max_subtasks, "replan": replan}
        run_goal(
            goal,
            options,
            checkpoint=checkpoint,
            planner={k: v for k, v in planner.items() if v is not None},
            inputs=parse_inputs(input or []),
            show_plan=show_plan,
            as_json=as_json,
            watch=Watch(progress_mode(quiet=quiet, as_json=as_json), events),
            report=report,
            max_concurrency=max_concurrency,
        )
    goal_only = {"--max-subtasks": max_subtasks, "--plan-attempts": plan_attempts}
    goal_only["--replan"] = replan
    flag = next((name for name, value in goal_only.items() if value is not None), None)
    if flag is not None:
        raise CliError(f"{flag} applies only with --goal; a PLAN file already has its subtasks")
    assert plan is not None
    task_plan = TaskPlan.from_file(plan)
    prepared = start_run(
        task_plan,
        parse_inputs(input or []),
        checkpoint=checkpoint,
        options=options,
        strict_inputs=True,
        input_interface="cli",
    )
    runtime = prepared.runtime
    if show_plan:
        typer.echo(describe_critical_path(runtime), err=as_json)
    if prepared.run_id:
        resume_command = (
            f"fanfold resume {prepared.run_id} --checkpoint {shown_target(checkpoint or '')}"
        )
        typer.echo(f"run id: {prepared.run_id}  (resume with: {resume_command})", err=True)
        set_resume_hint(resume_command)
    watch = Watch(progress_mode(quiet=quiet, as_json=as_json), events)
    watch.set_runtime(runtime, inputs=prepared.inputs)
    with watch:
        state = prepared.run(on_event=watch.feed)
    record = run_record(
        state, watch, runtime=runtime, max_concurrency=max_concurrency, inputs=prepared.inputs
    )
    print_record(task_plan, record, as_json=as_json)
    if report is not None:
        write_report(report, record)
    raise typer.Exit(code=exit_status(state, task_plan))
