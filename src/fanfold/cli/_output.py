"""What the commands print: input parsing, a run's report, exit statuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from fanfold.cli._app import EXIT_INCOMPLETE, EXIT_OK, CliError
from fanfold.drawing import plan_dot, render
from fanfold.errors import DrawingError
from fanfold.formatting import money
from fanfold.plan.graph import critical_path
from fanfold.plan.models import TaskPlan
from fanfold.report import write_run_report
from fanfold.runs.api import is_complete
from fanfold.runs.watch import Watch
from fanfold.scheduling.estimate_models import PlanEstimate
from fanfold.state.results import RunTotals, SubtaskResult


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """Parse `key=value` and `key=@file` options into a mapping.

    Raises:
        CliError: a pair has no '=' or names a file that cannot be read.
    """
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--input {pair!r} must look like key=value or key=@file")
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                value = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise CliError(f"--input {key}: cannot read {str(path)!r}: {exc.strerror}") from exc
        values[key.strip()] = value
    return values


def parse_descriptions(pairs: list[str]) -> dict[str, str]:
    """Parse `name=description` (or a bare `name`) options into a mapping.

    Raises:
        CliError: a pair has no name.
    """
    described: dict[str, str] = {}
    for pair in pairs:
        name, _, description = pair.partition("=")
        if not name.strip():
            raise CliError(f"--input {pair!r} must look like name=description")
        described[name.strip()] = description.strip()
    return described


def exit_status(state: dict[str, Any], plan: TaskPlan) -> int:
    """EXIT_OK when every subtask and the aggregation succeeded, else EXIT_INCOMPLETE."""
    return EXIT_OK if is_complete(state, plan) else EXIT_INCOMPLETE


def describe_critical_path(runtime: Any) -> str:
    """The planned critical path, its expected length and where the estimates came from."""
    order, deps = runtime.order, runtime.dependencies
    path = critical_path(order, deps, runtime.remaining, runtime.expected)
    length = sum(runtime.expected[s] for s in path)
    hops = runtime.expected_source == "hops"
    shown = f"{len(path)} hops" if hops else f"{length:.2f}s expected"
    return f"critical path ({runtime.expected_source}): {' -> '.join(path)}  [{shown}]"


def _status_line(result: SubtaskResult) -> str:
    took = f"{result.duration:6.2f}s" if result.duration is not None else "     - "
    tokens = f"{result.usage.total_tokens:>6} tok" if result.usage.total_tokens else "          "
    if result.cached:
        cost = "cached"
    elif result.cost is None:
        cost = "cost unknown" if result.model is not None else ""
    elif result.cost == 0 and not result.usage.total_tokens:
        cost = ""
    else:
        cost = money(result.cost)
    note = f"  {result.error}" if result.error else ""
    return f"  {result.status:<9} {took} {tokens} {cost:>12}  {result.id}{note}"


def _json_result(result: SubtaskResult) -> Any:
    """A result as --json prints it: `cached` on every result and item, true or false."""
    data = to_jsonable(result)
    if isinstance(data, dict):
        data.setdefault("cached", False)
        for item in data.get("items") or []:
            if isinstance(item, dict):
                item.setdefault("cached", False)
    return data


def _cost_lines(totals: RunTotals) -> list[str]:
    """The run's cost (per model when there are several) and its cache hits."""
    if totals.cost is not None:
        cost = f"cost: {money(totals.cost)}"
    else:
        unknown = ", ".join(totals.unknown_cost_models)
        cost = f"cost: {money(totals.known_cost)} + unknown (no price for {unknown})"
    if len(totals.cost_by_model) > 1 or totals.unknown_cost_models:
        cost += " (" + ", ".join(f"{m} {money(c)}" for m, c in totals.cost_by_model.items()) + ")"
    lines = [cost]
    if totals.cached:
        lines.append(
            f"cache: {totals.cached} calls served from the cache, "
            f"{totals.cached_usage.total_tokens} tokens not billed again"
        )
    return lines


def to_jsonable(value: Any) -> Any:
    """`value` as JSON data (pydantic models dumped)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def print_report(
    task_plan: TaskPlan,
    state: dict[str, Any],
    *,
    as_json: bool,
    task_text: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Print a run's results, totals and output (or all of it as JSON)."""
    results: dict[str, SubtaskResult] = state.get("results", {})
    if as_json:
        payload = {
            "results": {sid: _json_result(results[sid]) for sid in task_plan.ids if sid in results},
            "output": to_jsonable(state.get("output")),
            "aggregate_error": state.get("aggregate_error"),
            "totals": to_jsonable(state.get("totals")),
            **to_jsonable(extra or {}),
        }
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return
    typer.echo(f"Task: {task_text}")
    for sid in task_plan.ids:
        if sid in results:
            typer.echo(_status_line(results[sid]))
    totals = state.get("totals")
    if totals is not None:
        items = f" ({totals.items} map items)" if totals.items else ""
        typer.echo(
            f"{totals.succeeded} succeeded, {totals.failed} failed, {totals.skipped} skipped"
            f"{items} in {totals.wall_time:.2f}s, {totals.total_tokens} tokens"
        )
        if totals.speedup is not None and totals.call_time > 0:
            typer.echo(
                f"speedup: {totals.speedup:.2f}x over running the calls one after another "
                f"({totals.call_time:.2f}s)"
            )
        for line in _cost_lines(totals):
            typer.echo(line)
    if state.get("aggregate_error"):
        typer.echo(f"aggregation failed: {state['aggregate_error']}")
    output = state.get("output")
    if output is not None:
        typer.echo("\n" + (output if isinstance(output, str) else json.dumps(to_jsonable(output))))


def write_report(
    path: Path, state: dict[str, Any], runtime: Any, watch: Watch, *, max_concurrency: int | None
) -> None:
    """Write the HTML run report, with Graphviz's picture of the graph when it is installed."""
    results = state.get("results") or {}
    graph_svg: str | None = None
    try:
        statuses = {sid: r.status for sid, r in results.items()}
        graph_svg = render(plan_dot(runtime, statuses=statuses, title=""), "svg").decode()
    except DrawingError:
        graph_svg = None  # the report draws its own simpler picture
    try:
        written = write_run_report(
            path,
            state,
            events=watch.kept or (),
            runtime=runtime,
            graph_svg=graph_svg,
            max_concurrency=max_concurrency,
            prices=runtime.prices.as_dict(),
        )
    except OSError as exc:
        raise CliError(f"cannot write the report to {str(path)!r}: {exc.strerror}") from exc
    typer.echo(f"report: {written}", err=True)


def budget_line(estimate: PlanEstimate, budget: float) -> str:
    """Whether an estimate fits a budget, in one line."""
    if estimate.unknown_price_models:
        unknown = ", ".join(estimate.unknown_price_models)
        return (
            f"budget {money(budget)}: cannot be enforced, no price for {unknown}; give one "
            "with --prices FILE"
        )
    assert estimate.cost is not None
    if estimate.cost <= budget:
        return f"budget {money(budget)}: the estimate ({money(estimate.cost)}) fits"
    return (
        f"budget {money(budget)}: the estimate ({money(estimate.cost)}) passes it; the run "
        "would stop sending calls before it does and skip the rest"
    )
