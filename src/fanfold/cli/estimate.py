"""`fanfold estimate`: calls, tokens, cost and wall time of a plan, before it runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fanfold.cli._app import app, one_line_errors
from fanfold.cli._options import BudgetOption, MaxConcurrencyOption, ModelOption, PricesOption

if TYPE_CHECKING:
    from fanfold.scheduling.estimate_models import PlanEstimate


def plan_estimate(plan: Path, options: dict[str, Any], *, inputs: dict[str, str]) -> PlanEstimate:
    """`estimate_plan` with a run's options: its prices, learned durations and kinds."""
    from fanfold.graphs.estimate import estimate_plan
    from fanfold.nodes.registry import node_kinds
    from fanfold.plan.models import TaskPlan
    from fanfold.runs.config import default_store_path, open_durations, run_prices
    from fanfold.scheduling.runtime import PlanRuntime

    task_plan = TaskPlan.from_file(plan)
    PlanRuntime(plan=task_plan, kinds={}, models={}).check_input_names(inputs)
    store = Path(options.get("store") or default_store_path())
    durations = open_durations(store) if store.is_file() else None
    return estimate_plan(
        task_plan,
        inputs,
        model=options.get("model"),
        prices=run_prices(options.get("prices")),
        durations=durations,
        max_concurrency=options.get("max_concurrency"),
        kinds=node_kinds,
    )


def print_estimate(
    plan: Path, options: dict[str, Any], *, inputs: dict[str, str], as_json: bool
) -> None:
    """Print a plan's estimate (and whether it fits --budget), as text or JSON."""
    from fanfold.cli._output import budget_line

    estimate = plan_estimate(plan, options, inputs=inputs)
    budget = options.get("budget")
    if as_json:
        typer.echo(estimate.model_dump_json(indent=2))
        return
    for line in estimate.lines():
        typer.echo(line)
    if budget is not None:
        typer.echo(budget_line(estimate, budget))


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
    from fanfold.cli._output import parse_inputs
    from fanfold.scheduling.budget import check_budget

    check_budget(budget)
    options = {
        "model": model,
        "max_concurrency": max_concurrency,
        "prices": str(prices) if prices is not None else None,
        "budget": budget,
    }
    print_estimate(plan, options, inputs=parse_inputs(input or []), as_json=as_json)
