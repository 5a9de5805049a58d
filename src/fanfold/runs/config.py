"""A run's configuration: $FANFOLD_HOME, the environment variables, and the stored options.

The command line and `fanfold.runs` read settings the same way:

- `$FANFOLD_HOME` (default ~/.fanfold) holds the learned durations (`fanfold.db`) and an
  optional `prices.yaml` laid over the built-in prices;
- `$FANFOLD_DURATIONS` names another durations store (a file or a postgresql:// URL);
- `$FANFOLD_SHARED_LIMITS` shares the provider's limits with other processes.

Run options are plain JSON data, kept in a checkpoint so that a resumed run compiles the
same graph: `model`, `max_concurrency`, `requests_per_second`, `tokens_per_minute`,
`max_attempts`, `prices` (a file), `budget` (USD), `cache` (False for no cache),
`shared_limits`, `store`, `batch` (True: maps of `batch_min_items` items or more go
through the Batch API).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fanfold._secrets import strip_password
from fanfold.errors import InputInterface
from fanfold.scheduling.batches import BatchOptions
from fanfold.scheduling.durations import DurationStore, DurationStoreError
from fanfold.scheduling.prices import PriceTable, load_prices
from fanfold.scheduling.retry import RetryPolicy
from fanfold.scheduling.storage import is_postgres_url

__all__ = [
    "RUN_OPTIONS",
    "compile_options",
    "default_store_path",
    "durations_target",
    "fanfold_home",
    "home_prices_path",
    "kept_options",
    "open_durations",
    "run_prices",
    "shared_limits_target",
]

RUN_OPTIONS = (
    "model",
    "max_concurrency",
    "requests_per_second",
    "tokens_per_minute",
    "max_attempts",
    "prices",
    "budget",
    "cache",
    "shared_limits",
    "store",
    "batch",
    "batch_min_items",
)
"""The keys a run's options may have."""


def fanfold_home() -> Path:
    """fanfold's own folder: $FANFOLD_HOME, else ~/.fanfold."""
    return Path(os.environ.get("FANFOLD_HOME") or Path.home() / ".fanfold")


def default_store_path() -> Path:
    """Where learned durations are kept by default: $FANFOLD_HOME/fanfold.db (~/.fanfold)."""
    return fanfold_home() / "fanfold.db"


def home_prices_path() -> Path:
    """The prices file read when it exists: $FANFOLD_HOME/prices.yaml."""
    return fanfold_home() / "prices.yaml"


def run_prices(prices_file: str | Path | None = None) -> PriceTable:
    """The default prices, then $FANFOLD_HOME/prices.yaml if present, then `prices_file`.

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


def durations_target(store: str | Path | None = None) -> str | Path:
    """The durations store: `store`, else $FANFOLD_DURATIONS, else the default file."""
    return store or os.environ.get("FANFOLD_DURATIONS") or default_store_path()


def shared_limits_target(kept: str | None = None) -> str | None:
    """The shared-limits store of a run: as given, or as kept (without its password),
    else $FANFOLD_SHARED_LIMITS, else None.

    A run keeps its target without the password; at resume, $FANFOLD_SHARED_LIMITS gives
    the password back when it names the same database, else the driver reads PGPASSWORD.
    """
    env = os.environ.get("FANFOLD_SHARED_LIMITS") or None
    if kept and env and strip_password(env) == strip_password(kept):
        return env
    return kept or env


def kept_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Run options fit to checkpoint: the shared-limits URL without its password."""
    target = options.get("shared_limits")
    return {**options, "shared_limits": strip_password(target)} if target else dict(options)


def open_durations(target: str | Path) -> DurationStore | None:
    """The durations store at `target`; None, with one warning, when a SQLite file is
    damaged or unusable: learned durations only order calls, so a run never stops for them.

    Raises:
        DurationStoreError: a PostgreSQL store cannot be used (a setting to fix).
    """
    try:
        return DurationStore.open(target)
    except DurationStoreError as exc:
        if isinstance(target, str) and is_postgres_url(target):
            raise
        logging.getLogger("fanfold").warning(f"warning: {exc}; running without learned durations")
        return None


def compile_options(
    options: Mapping[str, Any], *, input_interface: InputInterface = "python"
) -> dict[str, Any]:
    """`compile_plan` keyword arguments for a run's options.

    Model calls are cached unless the options say `"cache": False`; a run kept from
    before the cache existed has no such option and so uses the cache. Input errors
    name the option of `input_interface` ("python", "cli" or "server").

    Raises:
        PriceError, DurationStoreError: a prices file or the durations store is unusable.
    """
    return {
        "model": options.get("model"),
        "max_concurrency": options.get("max_concurrency"),
        "requests_per_second": options.get("requests_per_second"),
        "tokens_per_minute": options.get("tokens_per_minute"),
        "retry": RetryPolicy(
            max_attempts=options.get("max_attempts") or RetryPolicy().max_attempts
        ),
        "durations": open_durations(durations_target(options.get("store"))),
        "shared_limits": shared_limits_target(options.get("shared_limits")),
        "prices": run_prices(options.get("prices")),
        "budget": options.get("budget"),
        "cache": options.get("cache", True) is not False,
        "batch": BatchOptions.from_env(
            every_map=bool(options.get("batch")), min_items=options.get("batch_min_items")
        ),
        "input_interface": input_interface,
    }
