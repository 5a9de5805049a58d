"""Options several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
BatchOption = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="Send every map of at least --batch-min-items items through the provider's "
        "Batch API: half the price, answers within 24 hours (maps with `batch: true` go "
        "as a batch anyway).",
    ),
]
BatchMinItemsOption = Annotated[
    int,
    typer.Option("--batch-min-items", min=1, metavar="N", help="With --batch: the fewest items."),
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
JsonOption = Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")]
