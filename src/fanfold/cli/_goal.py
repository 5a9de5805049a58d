"""Goal runs on the command line: `run --goal` (checkpointed or not) and their resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from fanfold.cli._app import set_resume_hint

if TYPE_CHECKING:
    from fanfold.runs.goal_runs import GoalRun
    from fanfold.runs.watch import Watch


def run_goal(
    goal: str,
    options: dict[str, Any],
    *,
    planner: dict[str, Any],
    inputs: dict[str, str],
    checkpoint: str | None,
    show_plan: bool,
    as_json: bool,
    watch: Watch,
    report: Path | None = None,
    max_concurrency: int | None = None,
) -> NoReturn:
    """`fanfold run --goal`: plan and run in one goal graph, then report like `run PLAN`."""
    from fanfold.runs.goal_runs import start_goal_run
    from fanfold.scheduling.storage import shown_target

    prepared = start_goal_run(
        goal,
        inputs,
        checkpoint=checkpoint,
        options=options,
        planner=planner,
        input_interface="cli",
    )
    if prepared.run_id:
        target = shown_target(checkpoint or "")
        resume_command = f"fanfold resume {prepared.run_id} --checkpoint {target}"
        typer.echo(f"run id: {prepared.run_id}  (resume with: {resume_command})", err=True)
        set_resume_hint(resume_command)
    finish_goal(
        prepared,
        show_plan=show_plan,
        as_json=as_json,
        watch=watch,
        report=report,
        max_concurrency=max_concurrency,
    )


def finish_goal(
    prepared: GoalRun,
    *,
    show_plan: bool,
    as_json: bool,
    watch: Watch,
    report: Path | None = None,
    max_concurrency: int | None = None,
) -> NoReturn:
    """Run (or resume) a goal run with progress, print its record and exit with its status."""
    from fanfold.cli._output import (
        describe_critical_path,
        exit_status,
        print_record,
        run_record,
        to_jsonable,
        write_report,
    )
    from fanfold.errors import PlanError
    from fanfold.graphs.compile import compile_plan
    from fanfold.plan.models import TaskPlan
    from fanfold.runs.config import compile_options

    cli_options = compile_options(prepared.options, input_interface="cli")
    inputs = prepared.inputs
    planned: list[TaskPlan] = []

    def announce(values: dict[str, Any]) -> None:
        if planned or not values.get("plan"):
            return
        task_plan = TaskPlan.model_validate(values["plan"])
        planned.append(task_plan)
        usage = values.get("planner_usage")
        tokens = f", {usage.total_tokens} planner tokens" if usage else ""
        ids = ", ".join(task_plan.ids)
        watch.note(f"  planned   {len(task_plan.ids)} subtasks{tokens}: {ids}")
        if show_plan or watch.live:
            runtime = compile_plan(task_plan, **cli_options).fanfold_runtime
            assert runtime is not None
            try:
                watch.set_runtime(runtime, inputs=runtime.run_inputs(inputs))
            except PlanError:
                watch.set_runtime(runtime)  # the run itself will say what is missing
            if show_plan:
                watch.echo(describe_critical_path(runtime), err=as_json)

    with watch:
        state = prepared.run(on_event=watch.feed, on_values=announce)
    task_plan = TaskPlan.model_validate(state["plan"])
    # No runtime: the record reads the plan (and its aggregation) from state["plan"].
    record = run_record(state, watch, max_concurrency=max_concurrency, inputs=inputs)
    record.goal = prepared.goal
    record.plan = to_jsonable(state["plan"])
    record.planner_usage = state.get("planner_usage")
    record.rounds = state.get("rounds") or None
    if record.rounds and not as_json:
        for entry in record.rounds:
            verdict = entry["decision"] if entry["judged"] else f"{entry['decision']} (no call)"
            typer.echo(f"round {entry['round']}: {verdict}: {entry['reason']}", err=True)
    print_record(task_plan, record, as_json=as_json)
    if report is not None:
        write_report(report, record)
    raise typer.Exit(code=exit_status(state, task_plan))
