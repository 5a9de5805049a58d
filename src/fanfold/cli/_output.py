"""What the commands print: input parsing, a run's report, exit statuses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fanfold.cli._app import EXIT_INCOMPLETE, EXIT_OK, CliError
from fanfold.formatting import money, seconds
from fanfold.plan.graph import critical_path
from fanfold.plan.models import TaskPlan
from fanfold.runs.api import is_complete
from fanfold.runs.watch import Watch
from fanfold.scheduling.estimate_models import PlanEstimate
from fanfold.state.results import SubtaskResult

if TYPE_CHECKING:
    from fanfold.record import RecordTotals, RunRecord


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


def _cost_lines(totals: RecordTotals) -> list[str]:
    """The run's cost (per model when there are several) and its cache hits."""
    if totals.cost is not None:
        cost = f"cost: {money(totals.cost)}"
    else:
        unknown = ", ".join(totals.unknown_cost_models)
        cost = f"cost: {money(totals.known_cost)} + unknown (no price for {unknown})"
    priced = {m: c for m, c in totals.cost_by_model.items() if c is not None}
    if len(totals.cost_by_model) > 1 and priced:
        cost += " (" + ", ".join(f"{m} {money(c)}" for m, c in priced.items()) + ")"
    sources = totals.cost_sources
    if list(sources) == ["gateway"]:
        cost += ", as the gateway reported it"
    elif "gateway" in sources:
        cost += " (" + ", ".join(f"{n} from the {s}" for s, n in sorted(sources.items())) + ")"
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


def run_record(
    state: dict[str, Any],
    watch: Watch,
    *,
    runtime: Any = None,
    max_concurrency: int | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> RunRecord:
    """The run's record: the one that grew with the run's events, given its final state
    (what the live view showed, the summary, `--json` and the report all read it)."""
    return watch.record(state, runtime=runtime, max_concurrency=max_concurrency, inputs=inputs)


def print_record(task_plan: TaskPlan, record: RunRecord, *, as_json: bool) -> None:
    """Print the run: its record as JSON (--json), or a summary of it."""
    from fanfold.record import record_json

    if as_json:
        typer.echo(record_json(record))
        return
    typer.echo(f"Task: {record.title}")
    results = {sid: SubtaskResult.model_validate(data) for sid, data in record.results.items()}
    for sid in task_plan.ids:
        if sid in results:
            typer.echo(_status_line(results[sid]))
    totals = record.totals
    items = f" ({totals.items} map items)" if totals.items else ""
    typer.echo(
        f"{totals.succeeded} succeeded, {totals.failed} failed, {totals.skipped} skipped"
        f"{items} in {seconds(totals.wall_time) or '0 s'}, {totals.total_tokens} tokens"
    )
    if totals.speedup is not None:
        typer.echo(
            f"speedup: {totals.speedup:.2f}x ({seconds(totals.call_time)} at the provider "
            f"over {seconds(totals.wall_time)} of wall time)"
        )
    elif totals.calls:
        typer.echo("speedup: n/a (no call reached the provider: every call was cached)")
    for line in _cost_lines(totals):
        typer.echo(line)
    if record.aggregate_error:
        error = record.aggregate_error
        typer.echo(f"aggregation {'skipped' if error.startswith('budget:') else 'failed'}: {error}")
    output = record.output
    if output is not None:
        typer.echo("\n" + (output if isinstance(output, str) else json.dumps(to_jsonable(output))))


def write_report(path: Path, record: RunRecord) -> None:
    """Write the HTML run report of `record` (the record --json prints)."""
    from fanfold.report import render_record, write_html

    try:
        written = write_html(path, render_record(record))
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
