"""The `fanfold` command line: a thin layer over the Python API."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, NoReturn, TextIO, TypeVar

import typer
from langchain_core.runnables import RunnableConfig
from typer.core import TyperGroup

from fanfold import __version__
from fanfold._secrets import mask_url, strip_password
from fanfold.checkpoints import is_postgres, open_checkpointer
from fanfold.drawing import DrawingError, plan_ascii, plan_dot, render
from fanfold.errors import PlanError
from fanfold.formatting import money
from fanfold.graphs.compile import compile_plan
from fanfold.graphs.estimate import estimate_plan
from fanfold.graphs.goal import compile_goal
from fanfold.nodes.registry import node_kinds
from fanfold.plan.graph import critical_path
from fanfold.plan.models import TaskPlan
from fanfold.planning import make_plan_with_usage, plan_to_yaml
from fanfold.progress import LiveProgress, PlainProgress, Progress
from fanfold.report import write_run_report
from fanfold.scheduling.budget import check_budget
from fanfold.scheduling.dispatcher import EVENT_TYPE
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.estimate_models import PlanEstimate
from fanfold.scheduling.prices import PriceTable, load_prices
from fanfold.scheduling.retry import RetryPolicy
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import RunTotals, SubtaskResult

EXIT_OK = 0
"""Every subtask and the aggregation succeeded."""
EXIT_ERROR = 1
"""A usage, plan, input or checkpoint error: nothing ran (one `Error:` line on stderr)."""
EXIT_INCOMPLETE = 3
"""The run finished, but a subtask failed or was skipped, or the aggregation failed."""

EXIT_STATUSES = f"""\b
Exit status:
  {EXIT_OK}  every subtask and the aggregation succeeded
  {EXIT_ERROR}  usage, plan, input or checkpoint error; nothing ran
  {EXIT_INCOMPLETE}  the run finished with failed or skipped subtasks, or a failed aggregation
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


def one_line_errors(command: F) -> F:
    """Turn library and usage errors into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (PlanError, CliError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=EXIT_ERROR) from exc

    return wrapper  # type: ignore[return-value]


def shown_target(target: str) -> str:
    """A checkpoint target fit to print: a database URL's password is masked."""
    return mask_url(target) if is_postgres(target) else target


def fanfold_home() -> Path:
    """The CLI's own folder: $FANFOLD_HOME, else ~/.fanfold."""
    return Path(os.environ.get("FANFOLD_HOME") or Path.home() / ".fanfold")


def default_store_path() -> Path:
    """Where the CLI keeps learned durations: $FANFOLD_HOME/fanfold.db (~/.fanfold)."""
    return fanfold_home() / "fanfold.db"


def home_prices_path() -> Path:
    """The prices file the CLI reads when it exists: $FANFOLD_HOME/prices.yaml."""
    return fanfold_home() / "prices.yaml"


def cli_prices(prices_file: str | Path | None) -> PriceTable:
    """The default prices, then $FANFOLD_HOME/prices.yaml if present, then --prices FILE.

    Raises:
        PriceError: a prices file is unreadable or holds an invalid entry.
    """
    table = PriceTable()
    home = home_prices_path()
    if home.is_file():
        table = table.merged(load_prices(home))
    if prices_file is not None:
        table = table.merged(load_prices(prices_file))
    return table


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
    data = _to_jsonable(result)
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


def _to_jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    return value


ProgressMode = Literal["live", "plain", "none"]


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal that can redraw a live view."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False
    return tty and os.environ.get("TERM") != "dumb"


def progress_mode(*, quiet: bool, as_json: bool) -> ProgressMode:
    """How a run shows progress: none with --quiet or --json, live on a terminal, else lines."""
    if quiet or as_json:
        return "none"
    return "live" if stderr_is_terminal() else "plain"


class Watch:
    """Where a run's lifecycle events go: the progress display and the --events file.

    Use as a context manager around the run; `feed` takes every lifecycle event.

    Args:
        mode: "live" (a rich view on stderr), "plain" (a line per finished subtask on
            stderr) or "none".
        events: a file to write every event to, one JSON object per line.
    """

    def __init__(
        self, mode: ProgressMode, events: Path | None = None, *, keep: bool = False
    ) -> None:
        self.mode = mode
        self._events_path = events
        self.kept: list[dict[str, Any]] | None = [] if keep else None
        """Every event, when a report will be written from them."""
        self._log: TextIO | None = None
        self._display: LiveProgress | PlainProgress | None = None
        if mode == "live":
            self._display = LiveProgress(Progress(started_at=time.time()))
        elif mode == "plain":
            self._display = PlainProgress(lambda line: typer.echo(line, err=True))

    def __enter__(self) -> Watch:
        if self._events_path is not None:
            try:
                self._log = self._events_path.open("w", encoding="utf-8")
            except OSError as exc:
                raise CliError(
                    f"cannot write events to {str(self._events_path)!r}: {exc.strerror}"
                ) from exc
        if self._display is not None:
            self._display.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._display is not None:
                self._display.__exit__(exc_type, exc, traceback)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    @property
    def live(self) -> bool:
        """Whether a live view is drawn (it wants the plan: `set_runtime`)."""
        return isinstance(self._display, LiveProgress)

    def set_runtime(self, runtime: Any, *, inputs: Mapping[str, Any] | None = None) -> None:
        """Tell the display the plan (its subtasks, maps and expected durations)."""
        if self._display is not None:
            self._display.set_runtime(runtime, inputs=inputs)

    def preload(
        self,
        results: Mapping[str, SubtaskResult],
        *,
        reused_items: Mapping[str, Iterable[Any]] | None = None,
    ) -> None:
        """Count results an earlier run left, which this run does not run again."""
        if self._display is not None:
            self._display.preload(results, reused_items=reused_items)

    def feed(self, event: dict[str, Any]) -> None:
        """Write one lifecycle event to the file (flushed at once) and show it."""
        if self.kept is not None:
            self.kept.append(event)
        if self._log is not None:
            try:
                self._log.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
                self._log.flush()
            except OSError as exc:
                self._log = None
                self.echo(
                    f"warning: stopped writing events to {str(self._events_path)!r}: "
                    f"{exc.strerror}",
                    err=True,
                )
        if self._display is not None:
            self._display.feed(event)

    def note(self, text: str) -> None:
        """Print a progress line on stderr (above the live view); nothing when quiet."""
        if self._display is not None:
            self._display.note(text)

    def echo(self, text: str, *, err: bool) -> None:
        """Print `text` whatever the progress mode, above the live view when one is drawn."""
        if isinstance(self._display, LiveProgress) and (err or sys.stdout.isatty()):
            self._display.note(text)
        else:
            typer.echo(text, err=err)


async def _stream(
    graph: Any,
    payload: Any,
    config: dict[str, Any],
    *,
    on_event: Callable[[dict[str, Any]], None] | None,
    nested: bool = False,
    on_values: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run `graph`, passing its lifecycle events to `on_event`; return its final state.

    With `nested`, the plan runs as a subgraph one level down (a goal graph's
    `run_plan`): its lifecycle events come from there, and the final state from the top.
    """
    final: dict[str, Any] = {}
    modes = ["custom", "values"]
    events_depth = 1 if nested else 0
    async for item in graph.astream(
        payload, config, stream_mode=modes, **({"subgraphs": True} if nested else {}), **options
    ):
        namespace, mode, chunk = item if nested else ((), *item)
        if mode == "values":
            if not namespace:
                final = chunk
                if on_values is not None:
                    on_values(chunk)
        elif (
            on_event is not None
            and len(namespace) == events_depth
            and isinstance(chunk, dict)
            and chunk.get("type") == EVENT_TYPE
        ):
            on_event(chunk)
    return final


def exit_status(state: dict[str, Any], plan: TaskPlan) -> int:
    """EXIT_OK when every subtask and the aggregation succeeded, else EXIT_INCOMPLETE."""
    results: dict[str, SubtaskResult] = state.get("results") or {}
    complete = all(sid in results and results[sid].ok for sid in plan.ids)
    aggregated = state.get("totals") is not None and not state.get("aggregate_error")
    return EXIT_OK if complete and aggregated else EXIT_INCOMPLETE


def _compile_options(options: dict[str, Any]) -> dict[str, Any]:
    """`compile_plan` keyword arguments from the CLI's run options.

    The CLI caches model calls unless the run said --no-cache (`"cache": False`); a run
    kept from before the cache existed has no such option and so uses the cache.
    """
    return {
        "model": options.get("model"),
        "max_concurrency": options.get("max_concurrency"),
        "requests_per_second": options.get("requests_per_second"),
        "retry": RetryPolicy(
            max_attempts=options.get("max_attempts") or RetryPolicy().max_attempts
        ),
        "durations": DurationStore.open(
            options.get("store") or os.environ.get("FANFOLD_DURATIONS") or default_store_path()
        ),
        "shared_limits": shared_limits_target(options.get("shared_limits")),
        "prices": cli_prices(options.get("prices")),
        "budget": options.get("budget"),
        "cache": options.get("cache", True) is not False,
        "input_interface": "cli",
    }


def shared_limits_target(kept: str | None) -> str | None:
    """The --shared-limits target of a run: as given, or as kept (without its password).

    A run keeps its target without the password; at resume, $FANFOLD_SHARED_LIMITS gives
    the password back when it names the same database, else the driver reads PGPASSWORD.
    """
    env = os.environ.get("FANFOLD_SHARED_LIMITS") or None
    if kept and env and strip_password(env) == strip_password(kept):
        return env
    return kept or env


def kept_options(options: dict[str, Any]) -> dict[str, Any]:
    """Run options fit to checkpoint: the --shared-limits URL without its password."""
    target = options.get("shared_limits")
    return {**options, "shared_limits": strip_password(target) if target else target}


def _compile(task_plan: TaskPlan, options: dict[str, Any]) -> Any:
    return compile_plan(task_plan, **_compile_options(options))


async def _execute(
    graph: Any,
    payload: Any,
    *,
    checkpoint: str | None,
    run_id: str | None,
    on_event: Callable[[dict[str, Any]], None] | None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if checkpoint is None:
        return await _stream(graph, payload, {}, on_event=on_event, **(options or {}))
    async with open_checkpointer(checkpoint) as saver:
        graph = graph.copy(update={"checkpointer": saver})
        config: dict[str, Any] = {"configurable": {"thread_id": run_id}}
        return await _stream(graph, payload, config, on_event=on_event, **(options or {}))


def _report(
    task_plan: TaskPlan,
    state: dict[str, Any],
    *,
    as_json: bool,
    task_text: str,
    extra: dict[str, Any] | None = None,
) -> None:
    results: dict[str, SubtaskResult] = state.get("results", {})
    if as_json:
        payload = {
            "results": {sid: _json_result(results[sid]) for sid in task_plan.ids if sid in results},
            "output": _to_jsonable(state.get("output")),
            "aggregate_error": state.get("aggregate_error"),
            "totals": _to_jsonable(state.get("totals")),
            **_to_jsonable(extra or {}),
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
        typer.echo("\n" + (output if isinstance(output, str) else json.dumps(_to_jsonable(output))))


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Model: 'provider:model', 'simulated', or JSON with settings such as "
        '\'{"name": "openai:gpt-4o-mini", "temperature": 0}\'.',
    ),
]
MaxConcurrencyOption = Annotated[
    int | None, typer.Option(min=1, metavar="N", help="Most model calls in flight at once.")
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print no progress on stderr (for scripts); errors, the run id and the report "
        "(or --json) still print.",
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE.html",
        help="Write a self-contained HTML run report (graph by status, timeline, tokens, "
        "cost, totals, speedup) that opens without a network.",
    ),
]

PricesOption = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        metavar="FILE",
        help="Prices file (YAML or JSON), 'MODEL: {input: USD, output: USD}' per 1M tokens, "
        "over the built-in table and $FANFOLD_HOME/prices.yaml.",
    ),
]
SharedLimitsOption = Annotated[
    str | None,
    typer.Option(
        "--shared-limits",
        metavar="TARGET",
        help="Share the provider's limits with every process using the same SQLite file "
        "or postgresql:// URL (default: $FANFOLD_SHARED_LIMITS; unset: this process only).",
    ),
]

BudgetOption = Annotated[
    float | None,
    typer.Option(
        "--budget",
        min=0,
        metavar="USD",
        help="Send no call that would take the run past USD (spent plus calls in flight); "
        "the rest are skipped with the reason 'budget', then the aggregate runs. Needs a "
        "price for every model.",
    ),
]
NoCacheOption = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Call the model for every subtask: neither read nor write the cache of model "
        "calls ($FANFOLD_CACHE, else $XDG_CACHE_HOME/fanfold/cache.db).",
    ),
]

EventsOption = Annotated[
    Path | None,
    typer.Option(
        "--events",
        metavar="FILE.jsonl",
        help="Write every lifecycle event (map items too) to FILE.jsonl as it happens, one "
        "JSON object per line. From Python, graph.astream(..., stream_mode='custom') "
        "yields the same events.",
    ),
]


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
    checkpoint: Annotated[
        str | None,
        typer.Option(
            metavar="TARGET",
            help="SQLite file or postgresql:// URL; makes the run resumable. "
            "PLAN only: for a goal, write the plan with `fanfold plan` first.",
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
    would cost more; --dry-run only prints the estimate.

    \b
    Examples:
      fanfold run examples/research.yaml --model simulated
      fanfold run plan.yaml -i topic="solar power" -i notes=@notes.txt --json
      fanfold run plan.yaml --checkpoint runs.db   # then: fanfold resume RUN_ID ...
      fanfold run --goal "Compare three note-taking apps for a small team" -m simulated
      fanfold run plan.yaml --quiet --events events.jsonl
      fanfold run plan.yaml --dry-run --prices prices.yaml
      fanfold run plan.yaml --budget 0.50
    """
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
        "max_attempts": max_attempts,
        "prices": str(prices.resolve()) if prices is not None else None,
        "budget": budget,
        "cache": not no_cache,
        "shared_limits": shared_limits,
    }
    if dry_run:
        if plan is None:
            raise CliError(
                "--dry-run needs a PLAN file: write the plan with `fanfold plan GOAL -o "
                "plan.yaml`, then run `fanfold run plan.yaml --dry-run`"
            )
        _print_estimate(plan, options, inputs=parse_inputs(input or []), as_json=as_json)
        raise typer.Exit(code=EXIT_OK)
    if goal is not None:
        if checkpoint is not None:
            raise CliError(
                "--checkpoint needs a PLAN file: write the plan with "
                "`fanfold plan GOAL -o plan.yaml`, then run `fanfold run plan.yaml --checkpoint "
                f"{shown_target(checkpoint)}`"
            )
        planner = {"attempts": plan_attempts, "max_subtasks": max_subtasks}
        _run_goal(
            goal,
            options,
            planner={k: v for k, v in planner.items() if v is not None},
            inputs=parse_inputs(input or []),
            show_plan=show_plan,
            as_json=as_json,
            watch=Watch(progress_mode(quiet=quiet, as_json=as_json), events),
        )
    if max_subtasks is not None or plan_attempts is not None:
        flag = "--max-subtasks" if max_subtasks is not None else "--plan-attempts"
        raise CliError(f"{flag} applies only with --goal; a PLAN file already has its subtasks")
    assert plan is not None
    task_plan = TaskPlan.from_file(plan)
    graph = _compile(task_plan, options)
    runtime = graph.fanfold_runtime
    inputs = parse_inputs(input or [])
    runtime.check_input_names(inputs)
    run_inputs = runtime.run_inputs(inputs)
    task_text = runtime.task_text(run_inputs)
    if show_plan:
        typer.echo(describe_critical_path(runtime), err=as_json)
    run_id = uuid.uuid4().hex[:12] if checkpoint else None
    if run_id:
        typer.echo(
            f"run id: {run_id}  (resume with: fanfold resume {run_id} "
            f"--checkpoint {shown_target(checkpoint or '')})",
            err=True,
        )
    payload = {
        "inputs": inputs,
        "run": {"plan": task_plan.model_dump(mode="json"), "options": kept_options(options)},
    }
    watch = Watch(progress_mode(quiet=quiet, as_json=as_json), events, keep=report is not None)
    watch.set_runtime(runtime, inputs=run_inputs)
    with watch:
        state = asyncio.run(
            _execute(graph, payload, checkpoint=checkpoint, run_id=run_id, on_event=watch.feed)
        )
    _report(task_plan, state, as_json=as_json, task_text=task_text)
    if report is not None:
        _write_report(report, state, runtime, watch, max_concurrency=max_concurrency)
    raise typer.Exit(code=exit_status(state, task_plan))


def _write_report(
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


def _run_goal(
    goal: str,
    options: dict[str, Any],
    *,
    planner: dict[str, Any],
    inputs: dict[str, str],
    show_plan: bool,
    as_json: bool,
    watch: Watch,
) -> NoReturn:
    """`fanfold run --goal`: plan and run in one goal graph, then report like `run PLAN`."""
    graph = compile_goal(**planner, **_compile_options(options))
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
            runtime = _compile(task_plan, options).fanfold_runtime
            try:
                watch.set_runtime(runtime, inputs=runtime.run_inputs(inputs))
            except PlanError:
                watch.set_runtime(runtime)  # the run itself will say what is missing
            if show_plan:
                watch.echo(describe_critical_path(runtime), err=as_json)

    payload = {"goal": goal, "inputs": inputs}
    with watch:
        state = asyncio.run(
            _stream(graph, payload, {}, on_event=watch.feed, nested=True, on_values=announce)
        )
    task_plan = TaskPlan.model_validate(state["plan"])
    runtime = compile_plan(
        task_plan, model="simulated", aggregator=None, input_interface="cli"
    ).fanfold_runtime
    assert runtime is not None
    task_text = runtime.task_text(runtime.run_inputs(inputs))
    extra = {"goal": goal, "plan": state["plan"], "planner_usage": state.get("planner_usage")}
    _report(task_plan, state, as_json=as_json, task_text=task_text, extra=extra)
    raise typer.Exit(code=exit_status(state, task_plan))


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
      fanfold plan "Write a market brief on a product" -i product="the product" -o brief.yaml
      fanfold run brief.yaml -i product="home batteries"
    """
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
    calls that finished before the run stopped (they are in the cache, unless the run
    had --no-cache). The run's prices and budget apply again. Progress shows as with
    `fanfold run`; --events gets this run's events only.

    \b
    Examples:
      fanfold resume 3f2a9c1b7d4e --checkpoint runs.db
      fanfold resume 3f2a9c1b7d4e --checkpoint runs.db --quiet --events resumed.jsonl
    """
    if not is_postgres(checkpoint) and not Path(checkpoint).is_file():
        raise CliError(
            f"checkpoint file {checkpoint!r} does not exist; pass the --checkpoint that "
            "`fanfold run` used"
        )
    state = asyncio.run(_load_run(checkpoint, run_id))
    values = state.values
    run_info = values.get("run") or {}
    if "plan" not in run_info:
        raise CliError(
            f"run {run_id!r} not found in {shown_target(checkpoint)!r}; "
            "check the run id and --checkpoint"
        )
    task_plan = TaskPlan.model_validate(run_info["plan"])
    run_options = dict(run_info.get("options") or {})
    if no_cache:
        run_options["cache"] = False
    graph = _compile(task_plan, run_options)
    runtime = graph.fanfold_runtime
    run_inputs = runtime.run_inputs(values.get("inputs") or {})
    task_text = runtime.task_text(run_inputs)
    results = values.get("results") or {}
    unfinished = bool(state.next)
    failed = [sid for sid in task_plan.ids if sid not in results or not results[sid].ok]
    if not unfinished and not failed:
        typer.echo(f"run {run_id} already finished; nothing to resume", err=True)
        _report(task_plan, values, as_json=as_json, task_text=task_text)
        raise typer.Exit(code=exit_status(values, task_plan))
    payload: Any = None
    options: dict[str, Any] = {}
    # What this run will not run again: every checkpointed result when continuing; the
    # succeeded ones (and a failed map's succeeded items) when retrying.
    kept: dict[str, SubtaskResult] = dict(results)
    reused: dict[str, list[SubtaskResult]] = {}
    if unfinished:
        typer.echo(f"resuming run {run_id}: continuing where it stopped", err=True)
    else:
        payload, options = graph.retry_request(values)
        kept = {sid: r for sid, r in results.items() if r.ok}
        reused = {
            sid: [item for item in r.items if item.ok]
            for sid, r in results.items()
            if not r.ok and r.items
        }
        typer.echo(f"resuming run {run_id}: retrying {len(failed)} subtasks", err=True)
    watch = Watch(progress_mode(quiet=quiet, as_json=as_json), events, keep=report is not None)
    watch.set_runtime(runtime, inputs=run_inputs)
    watch.preload(kept, reused_items=reused)
    with watch:
        final = asyncio.run(
            _execute(
                graph,
                payload,
                checkpoint=checkpoint,
                run_id=run_id,
                on_event=watch.feed,
                options=options,
            )
        )
    _report(task_plan, final, as_json=as_json, task_text=task_text)
    if report is not None:
        concurrency = (run_info.get("options") or {}).get("max_concurrency")
        _write_report(report, final, runtime, watch, max_concurrency=concurrency)
    raise typer.Exit(code=exit_status(final, task_plan))


async def _load_run(checkpoint: str, run_id: str) -> Any:
    config: RunnableConfig = {"configurable": {"thread_id": run_id}}
    async with open_checkpointer(checkpoint) as saver:
        probe = compile_plan(
            TaskPlan.model_validate(
                {"task": "-", "subtasks": [{"id": "probe", "prompt": "-", "kind": "template"}]}
            ),
            checkpointer=saver,
            aggregator=None,
        )
        state = await probe.aget_state(config)
        run_info = state.values.get("run") or {}
        if "plan" not in run_info:
            return state
        # The probe has none of the run's nodes, so its `next` is always empty: read the
        # state again through a graph with the run's own nodes to see what is left to run.
        graph = compile_plan(
            TaskPlan.model_validate(run_info["plan"]),
            model="simulated",
            checkpointer=saver,
            aggregator=None,
        )
        return await graph.aget_state(config)


def plan_estimate(plan: Path, options: dict[str, Any], *, inputs: dict[str, str]) -> PlanEstimate:
    """`estimate_plan` with the CLI's options: its prices, learned durations and kinds."""
    task_plan = TaskPlan.from_file(plan)
    PlanRuntime(plan=task_plan, kinds={}, models={}).check_input_names(inputs)
    store = Path(options.get("store") or default_store_path())
    durations = DurationStore(store) if store.is_file() else None
    return estimate_plan(
        task_plan,
        inputs,
        model=options.get("model"),
        prices=cli_prices(options.get("prices")),
        durations=durations,
        max_concurrency=options.get("max_concurrency"),
        kinds=node_kinds,
    )


def _print_estimate(
    plan: Path, options: dict[str, Any], *, inputs: dict[str, str], as_json: bool
) -> None:
    estimate = plan_estimate(plan, options, inputs=inputs)
    budget = options.get("budget")
    if as_json:
        typer.echo(estimate.model_dump_json(indent=2))
        return
    for line in estimate.lines():
        typer.echo(line)
    if budget is not None:
        typer.echo(_budget_line(estimate, budget))


def _budget_line(estimate: PlanEstimate, budget: float) -> str:
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


@app.command()
@one_line_errors
def estimate(
    plan: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan file (YAML or JSON).")],
    model: ModelOption = None,
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="KEY=VALUE",
            help="Run input as key=value or key=@file; repeatable. A map's list counts its items.",
        ),
    ] = None,
    max_concurrency: MaxConcurrencyOption = None,
    prices: PricesOption = None,
    budget: BudgetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """Estimate a run before it runs: calls, tokens, cost and wall time; no model is called.

    Prompts are sized at 4 characters a token, with each dependency's reply at its
    expected_output_tokens (else 256); a call takes what earlier runs recorded, else its
    expected_seconds, else 5 s. No API key is needed. `fanfold run PLAN --dry-run` prints
    the same.

    \b
    Examples:
      fanfold estimate examples/research.yaml
      fanfold estimate plan.yaml -i items='["a", "b"]' --max-concurrency 4 --prices prices.yaml
    """
    check_budget(budget)
    options = {
        "model": model,
        "max_concurrency": max_concurrency,
        "prices": str(prices) if prices is not None else None,
        "budget": budget,
    }
    _print_estimate(plan, options, inputs=parse_inputs(input or []), as_json=as_json)


def describe_critical_path(runtime: Any) -> str:
    """The planned critical path, its expected length and where the estimates came from."""
    order, deps = runtime.order, runtime.dependencies
    path = critical_path(order, deps, runtime.remaining, runtime.expected)
    length = sum(runtime.expected[s] for s in path)
    hops = runtime.expected_source == "hops"
    shown = f"{len(path)} hops" if hops else f"{length:.2f}s expected"
    return f"critical path ({runtime.expected_source}): {' -> '.join(path)}  [{shown}]"


@app.command("serve-sim")
@one_line_errors
def serve_sim(
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port on 127.0.0.1 (0 picks a free one).")
    ] = 8000,
    latency: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds per reply.")] = 0.05,
    rps: Annotated[
        float | None, typer.Option(metavar="RPS", help="Hidden requests-per-second limit.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(metavar="N", help="Hidden concurrent-request limit.")
    ] = None,
    error_rate: Annotated[
        float, typer.Option(metavar="SHARE", help="Share of requests answered 500.")
    ] = 0.0,
) -> None:
    """Serve a simulated OpenAI-compatible API on loopback for load-testing plans.

    \b
    Examples:
      fanfold serve-sim --port 8000 --rps 20
      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 fanfold run plan.yaml -m openai:sim-model
    """
    from fanfold.testing import SimServer, SimServerConfig

    config = SimServerConfig(
        latency=latency,
        rate_limit_rps=rps,
        rate_limit_concurrency=concurrency,
        error_500_rate=error_rate,
    )
    server = SimServer(config, port=port).start()
    typer.echo(f"serving on {server.base_url} (Ctrl-C to stop)", err=True)
    server.serve_forever()


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
            help="mermaid, ascii, dot, svg, png, pdf or html (svg, png, pdf and html need "
            "Graphviz).",
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

    Laid out left to right, with join points, the critical path in bold and map subtasks
    as stacked boxes. ASCII turns into a layered listing once a plan is past what fits.

    \b
    Examples:
      fanfold show examples/research.yaml
      fanfold show examples/research.yaml --format ascii
      fanfold show examples/research.yaml --format svg -o research.svg
    """
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
