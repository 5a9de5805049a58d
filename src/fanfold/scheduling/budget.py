"""A run's spending under a limit in USD: checked before each call is sent."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from fanfold.errors import BudgetError
from fanfold.formatting import money as format_usd

__all__ = ["Budget", "BudgetError", "UnknownPriceError", "check_budget"]


class UnknownPriceError(BudgetError):
    """A budget was set, but a model the run calls has no price.

    Attributes:
        models: model label -> the subtasks (or "aggregate") that use it.
    """

    def __init__(self, models: Mapping[str, Sequence[str]]) -> None:
        self.models = {label: list(users) for label, users in models.items()}
        named = "; ".join(
            f"{label!r} (used by {', '.join(users)})" for label, users in self.models.items()
        )
        super().__init__(
            f"a budget needs a price for every model the run calls, and there is none for "
            f"{named}; add it to a prices file (--prices FILE, or $FANFOLD_HOME/prices.yaml) "
            "or compile_plan(prices=...) as MODEL: {input: USD per 1M tokens, output: USD "
            "per 1M tokens}"
        )


def check_budget(budget: Any) -> float | None:
    """The budget as USD, or None for no budget.

    Raises:
        BudgetError: not a finite number of USD at least 0.
    """
    if budget is None:
        return None
    if (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or not (math.isfinite(budget) and budget >= 0)
    ):
        raise BudgetError(f"the budget must be a number of USD, at least 0, not {budget!r}")
    return float(budget)


class Budget:
    """One run's spending under a limit in USD.

    Before a call is sent, `reserve` sets its estimated cost aside, and refuses it if the
    cost spent so far, plus the estimates of the calls in flight, plus this one would pass
    the limit. Once it refuses a call it refuses every later one, so a run stops sending
    calls at that point instead of slipping cheaper ones in. `settle` swaps a finished
    call's estimate for what it cost.

    Args:
        limit: USD the run may spend.
        spent: USD already spent (results kept from an earlier attempt at the run).
    """

    def __init__(self, limit: float, *, spent: float = 0.0) -> None:
        self.limit = limit
        self.spent = spent
        self.in_flight = 0.0
        self.set_aside = 0.0
        """USD held back for the aggregate's call, which always runs."""
        self.refused = 0
        self.stopped_at: float | None = None
        self.starved: str | None = None
        """Why no call is sent at all, when the budget cannot hold the aggregate's share."""
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """Whether a call has been refused (no call is sent after that)."""
        return self.stopped_at is not None

    def set_aside_for_aggregate(self, cost: float) -> None:
        """Hold back `cost` (replacing what was held before) for the aggregate's call."""
        with self._lock:
            self.set_aside = max(0.0, cost)

    def hold_for_aggregate(self, cost: float) -> None:
        """Set aside `cost` for the aggregate's call as the run starts.

        When the budget cannot even hold that, no call is sent at all (every `reserve`
        and `reserve_aggregate` is refused with the reason).
        """
        with self._lock:
            self.set_aside = max(0.0, cost)
            if self.spent + self.set_aside > self.limit * (1 + 1e-9):
                self.stopped_at = self.spent
                self.starved = (
                    f"budget: the {format_usd(self.limit)} budget cannot cover the aggregate's "
                    f"estimated {format_usd(self.set_aside)}"
                    + (f" on top of {format_usd(self.spent)} spent" if self.spent else "")
                    + ", so no call is sent; raise the budget to at least "
                    f"{format_usd(self.spent + self.set_aside)} and more for the subtasks"
                )

    def reserve_aggregate(self, estimate: float) -> str | None:
        """Set the aggregate's call's estimate aside in place of what was held for it.

        The aggregate still runs after the budget stopped the subtasks' calls, within
        what was held for it. None when it fits, else why it was refused.
        """
        with self._lock:
            self.set_aside = 0.0
            if self.starved is not None:
                return self.starved
            if self.spent + self.in_flight + estimate <= self.limit * (1 + 1e-9):
                self.in_flight += estimate
                return None
            self.refused += 1
            return (
                f"budget: the aggregate's call, estimated at {format_usd(estimate)}, would "
                f"pass the {format_usd(self.limit)} budget ({format_usd(self.spent)} spent)"
            )

    def reserve(self, estimate: float) -> str | None:
        """Set a call's estimated cost aside; None when it fits, else why it was refused."""
        with self._lock:
            committed = self.spent + self.in_flight + self.set_aside
            if self.stopped_at is None and committed + estimate <= self.limit * (1 + 1e-9):
                self.in_flight += estimate
                return None
            if self.stopped_at is None:
                self.stopped_at = committed
            self.refused += 1
            if self.starved is not None:
                return self.starved
            return (
                f"budget: a call estimated at {format_usd(estimate)} would pass the "
                f"{format_usd(self.limit)} budget ({format_usd(self.spent)} spent, "
                f"{format_usd(self.in_flight)} in flight, {format_usd(self.set_aside)} set "
                "aside for the aggregate)"
                if self.refused == 1
                else f"budget: the run stopped sending calls before it would pass the "
                f"{format_usd(self.limit)} budget"
            )

    def settle(self, estimate: float, cost: float | None) -> None:
        """A reserved call finished: it cost `cost` (None: unknown, count the estimate)."""
        with self._lock:
            self.in_flight = max(0.0, self.in_flight - estimate)
            self.spent += estimate if cost is None else cost
