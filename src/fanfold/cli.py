"""The `fanfold` command line: a thin layer over the Python API."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from fanfold.errors import PlanError
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.dispatcher import EVENT_TYPE
from fanfold.plan.models import TaskPlan
from fanfold.state.results import SubtaskResult

app = typer.Typer(
    help="Compile LLM subtask plans into greedy LangGraph graphs and run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(command: F) -> F:
    """Turn library and usage errors into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (PlanError, CliError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=1) from exc

    return wrapper  # type: ignore[return-value]


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


def _status_line(result: SubtaskResult) -> str:
    took = f"{result.duration:6.2f}s" if result.duration is not None else "     - "
    tokens = f"{result.usage.total_tokens:>6} tok" if result.usage.total_tokens else "          "
    note = f"  {result.error}" if result.error else ""
    return f"  {result.status:<9} {took} {tokens}  {result.id}{note}"


def _to_jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    return value


async def _run(graph: Any, inputs: dict[str, str], *, progress: bool) -> dict[str, Any]:
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        {"inputs": inputs}, stream_mode=["custom", "values"]
    ):
        if mode == "values":
            final = chunk
        elif progress and isinstance(chunk, dict) and chunk.get("type") == EVENT_TYPE:
            if chunk["status"] != "started":
                typer.echo(f"  {chunk['status']:<9} {chunk['subtask']}", err=True)
    return final


@app.command()
@one_line_errors
def run(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML or JSON).")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model: 'provider:model' or 'simulated'."),
    ] = None,
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Run input as key=value or key=@file; repeatable."),
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Most model calls in flight at once.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")] = False,
) -> None:
    """Run a plan and print each subtask's status, time and the aggregate.

    Examples:

        fanfold run examples/research.yaml --model simulated

        fanfold run plan.yaml -i topic="solar power" -i notes=@notes.txt --json
    """
    task_plan = TaskPlan.from_file(plan)
    graph = compile_plan(task_plan, model=model, max_concurrency=max_concurrency)
    inputs = parse_inputs(input or [])
    runtime = graph.fanfold_runtime
    assert runtime is not None
    task_text = runtime.task_text(runtime.run_inputs(inputs))
    state = asyncio.run(_run(graph, inputs, progress=not as_json))
    results: dict[str, SubtaskResult] = state.get("results", {})
    if as_json:
        payload = {
            "results": {sid: _to_jsonable(results[sid]) for sid in task_plan.ids if sid in results},
            "output": _to_jsonable(state.get("output")),
            "aggregate_error": state.get("aggregate_error"),
            "totals": _to_jsonable(state.get("totals")),
        }
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return
    typer.echo(f"Task: {task_text}")
    for sid in task_plan.ids:
        if sid in results:
            typer.echo(_status_line(results[sid]))
    totals = state.get("totals")
    if totals is not None:
        typer.echo(
            f"{totals.succeeded} succeeded, {totals.failed} failed, {totals.skipped} skipped "
            f"in {totals.wall_time:.2f}s, {totals.total_tokens} tokens"
        )
    if state.get("aggregate_error"):
        typer.echo(f"aggregation failed: {state['aggregate_error']}")
    output = state.get("output")
    if output is not None:
        typer.echo("\n" + (output if isinstance(output, str) else json.dumps(_to_jsonable(output))))


@app.command()
@one_line_errors
def show(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML or JSON).")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="mermaid or ascii.")
    ] = "mermaid",
) -> None:
    """Print a plan's graph as Mermaid text or ASCII art, without running it.

    Examples:

        fanfold show examples/research.yaml

        fanfold show examples/research.yaml --format ascii
    """
    if format not in ("mermaid", "ascii"):
        raise CliError(f"--format must be 'mermaid' or 'ascii', not {format!r}")
    graph = compile_plan(TaskPlan.from_file(plan), model="simulated")
    drawable = graph.get_graph()
    typer.echo(drawable.draw_mermaid() if format == "mermaid" else drawable.draw_ascii())


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
