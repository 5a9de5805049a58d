"""`fanfold resume`: finish an interrupted run, or retry a finished run's failures."""

from __future__ import annotations

from typing import Annotated

import typer

from fanfold.cli._app import EXIT_STATUSES, app, one_line_errors, set_resume_hint
from fanfold.cli._options import EventsOption, NoCacheOption, QuietOption, ReportOption


@app.command(epilog=EXIT_STATUSES)
@one_line_errors
def resume(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="The run id that `fanfold run` printed.")
    ],
    checkpoint: Annotated[
        str,
        typer.Option(metavar="TARGET", help="The SQLite file or postgresql:// URL the run used."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")] = False,
    quiet: QuietOption = False,
    events: EventsOption = None,
    report: ReportOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Finish an interrupted run, or retry the failed subtasks of a finished one.

    Subtasks whose results were checkpointed are not requested again, and neither are
    calls that finished before the run stopped (the run's store journals them). A goal
    run (`run --goal --checkpoint`) keeps the plan it had made: no second planner call.
    The run's prices and budget apply again. Progress shows as with
    `fanfold run`; --events gets this run's events only.

    \b
    Examples:
      fanfold resume RUN_ID --checkpoint runs.db   # the id `fanfold run --checkpoint` printed
      fanfold resume RUN_ID --checkpoint runs.db --quiet --events resumed.jsonl
    """
    from fanfold.cli._goal import finish_goal
    from fanfold.cli._output import exit_status, print_record, run_record, write_report
    from fanfold.runs.api import open_run
    from fanfold.runs.goal_runs import GoalRun
    from fanfold.runs.watch import Watch, progress_mode
    from fanfold.scheduling.storage import shown_target

    prepared = open_run(
        run_id, checkpoint, cache=False if no_cache else None, input_interface="cli"
    )
    if isinstance(prepared, GoalRun):
        if prepared.mode == "finished":
            typer.echo(f"run {run_id} already finished; nothing to resume", err=True)
        else:
            set_resume_hint(f"fanfold resume {run_id} --checkpoint {shown_target(checkpoint)}")
            kept = "with its plan" if prepared.plan is not None else "planning again"
            typer.echo(f"resuming goal run {run_id}: continuing {kept}", err=True)
        finish_goal(
            prepared,
            show_plan=False,
            as_json=as_json,
            watch=Watch(progress_mode(quiet=quiet, as_json=as_json), events),
            report=report,
            max_concurrency=prepared.options.get("max_concurrency"),
        )
    task_plan = prepared.plan
    if prepared.mode == "finished":
        typer.echo(f"run {run_id} already finished; nothing to resume", err=True)
        concurrency = prepared.options.get("max_concurrency")
        done = run_record(
            prepared.values,
            Watch("none"),
            runtime=prepared.runtime,
            max_concurrency=concurrency,
            inputs=prepared.inputs,
        )
        print_record(task_plan, done, as_json=as_json)
        if report is not None:
            write_report(report, done)
        raise typer.Exit(code=exit_status(prepared.values, task_plan))
    set_resume_hint(f"fanfold resume {run_id} --checkpoint {shown_target(checkpoint)}")
    if prepared.mode == "continue":
        typer.echo(f"resuming run {run_id}: continuing where it stopped", err=True)
    else:
        failed = len(task_plan.ids) - len([s for s in task_plan.ids if s in prepared.kept])
        typer.echo(f"resuming run {run_id}: retrying {failed} subtasks", err=True)
    watch = Watch(progress_mode(quiet=quiet, as_json=as_json), events)
    watch.set_runtime(prepared.runtime, inputs=prepared.inputs)
    watch.preload(prepared.kept, reused_items=prepared.reused_items)
    with watch:
        final = prepared.run(on_event=watch.feed)
    concurrency = prepared.options.get("max_concurrency")
    record = run_record(
        final,
        watch,
        runtime=prepared.runtime,
        max_concurrency=concurrency,
        inputs=prepared.inputs,
    )
    print_record(task_plan, record, as_json=as_json)
    if report is not None:
        write_report(report, record)
    raise typer.Exit(code=exit_status(final, task_plan))
