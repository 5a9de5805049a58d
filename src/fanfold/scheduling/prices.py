"""What calls cost: the one price table every part of fanfold reads.

Prices are USD per 1M tokens, input and output, per model label (what
`fanfold.models.resolve.model_label` gives: `gpt-4o-mini` for `openai:gpt-4o-mini`).
`DEFAULT_PRICES` covers common OpenAI models and the offline `simulated` model (free: a
known price of 0, not an unknown one); a prices file (`load_prices`) or a mapping passed
to `compile_plan(prices=...)` overrides or extends it. A model missing from the table has
an unknown cost (`None`), never 0. A dated snapshot (`gpt-4o-2024-08-06`) is priced like
its model.

Each price has a batch column too: what the same tokens cost through the provider's
Batch API (`batch: {input: ..., output: ...}` in a prices file); it defaults to half the
live price, as OpenAI and Anthropic charge.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fanfold.errors import PlanError
from fanfold.formatting import money
from fanfold.models.resolve import SIMULATED
from fanfold.plan.loader import safe_yaml
from fanfold.state.results import TokenUsage

__all__ = [
    "DEFAULT_PRICES",
    "Price",
    "PriceError",
    "PriceTable",
    "format_usd",
    "load_prices",
    "price_table",
]

format_usd = money
"""USD as fanfold prints it (`fanfold.formatting.money`)."""


BATCH_DISCOUNT = 0.5
"""A batch price, unless a table gives one: this share of the live price."""


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens for one model, live and (when not given: half) through a batch."""

    input: float
    output: float
    batch_input: float | None = None
    batch_output: float | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a call that read `input_tokens` and wrote `output_tokens`."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000

    @property
    def batch(self) -> Price:
        """The price of the same call sent in a batch."""
        return Price(
            self.input * BATCH_DISCOUNT if self.batch_input is None else self.batch_input,
            self.output * BATCH_DISCOUNT if self.batch_output is None else self.batch_output,
        )


# List prices (USD per 1M input / output tokens) at the time of writing; they change, so a
# prices file (`fanfold run --prices FILE`, `$FANFOLD_HOME/prices.yaml`) or
# `compile_plan(prices=...)` overrides any of them and adds others.
DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    # The offline model costs nothing: a known price of 0, not an unknown one.
    SIMULATED: Price(0.0, 0.0),
}

_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
"""A dated snapshot's suffix (`gpt-4o-2024-08-06`), priced like its model."""


class PriceError(PlanError):
    """A price table or prices file is invalid: unreadable, or an entry is not a price."""


def _price_of(model: str, value: Any, where: str) -> Price:
    if isinstance(value, Price):
        return value
    if not isinstance(value, Mapping):
        raise PriceError(
            f"{where}: the price of {model!r} must be a mapping like {{input: 0.15, output: 0.6}} "
            f"(USD per 1M tokens), not {type(value).__name__}"
        )
    extra = sorted(str(k) for k in value if k not in ("input", "output", "batch"))
    if extra:
        raise PriceError(
            f"{where}: the price of {model!r} has unknown keys {extra}; give only 'input', "
            "'output' (USD per 1M tokens) and 'batch' ({input: ..., output: ...})"
        )
    batch = value.get("batch")
    if batch is not None and not isinstance(batch, Mapping | Price):
        raise PriceError(
            f"{where}: the batch price of {model!r} must be a mapping like "
            f"{{input: 0.075, output: 0.3}} (USD per 1M tokens), not {type(batch).__name__}"
        )
    batched = None if batch is None else _price_of(model, batch, f"{where} (batch)")
    numbers: list[float] = []
    for key in ("input", "output"):
        raw = value.get(key)
        number = (
            float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else math.nan
        )
        if not math.isfinite(number) or number < 0:
            raise PriceError(
                f"{where}: the price of {model!r} needs {key!r} as a number of USD per 1M "
                f"tokens, at least 0 (got {raw!r})"
            )
        numbers.append(number)
    if batched is None:
        return Price(numbers[0], numbers[1])
    return Price(numbers[0], numbers[1], batched.input, batched.output)


class PriceTable:
    """Model label -> Price: the defaults, with overrides on top.

    Args:
        prices: model -> {"input": USD per 1M tokens, "output": USD per 1M tokens} (or a
            Price); these replace the defaults of the same name and add others.
        defaults: start from `DEFAULT_PRICES` (False: only the given prices).

    Raises:
        PriceError: an entry is not a valid price.
    """

    def __init__(self, prices: Mapping[str, Any] | None = None, *, defaults: bool = True) -> None:
        self._prices: dict[str, Price] = dict(DEFAULT_PRICES) if defaults else {}
        for model, value in (prices or {}).items():
            self._prices[str(model)] = _price_of(str(model), value, "prices")

    def merged(self, prices: Mapping[str, Any] | None) -> PriceTable:
        """A new table: this one with `prices` on top."""
        table = PriceTable(defaults=False)
        table._prices = dict(self._prices)
        for model, value in (prices or {}).items():
            table._prices[str(model)] = _price_of(str(model), value, "prices")
        return table

    def price(self, model: str | None) -> Price | None:
        """The price of a model label: exact, without a `provider:` prefix, or undated."""
        if model is None:
            return None
        for name in (model, model.split(":", 1)[-1]):
            if name in self._prices:
                return self._prices[name]
            undated = _DATED.sub("", name)
            if undated in self._prices:
                return self._prices[undated]
        return None

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def cost(self, model: str | None, usage: TokenUsage, *, batch: bool = False) -> float | None:
        """USD of a call's reported usage (at the batch price when `batch`); None when the
        model has no price or the usage gives a total without its input/output split."""
        price = self.price(model)
        if price is None:
            return None
        if batch:
            price = price.batch
        if usage.total_tokens and not (usage.input_tokens or usage.output_tokens):
            # A total without its split is priced only when both directions cost the same.
            return price.cost(usage.total_tokens, 0) if price.input == price.output else None
        return price.cost(usage.input_tokens, usage.output_tokens)

    def estimate(
        self, model: str | None, input_tokens: int, output_tokens: int, *, batch: bool = False
    ) -> float | None:
        """USD of a call expected to read and write these many tokens (at the batch price
        when `batch`); None if unpriced."""
        price = self.price(model)
        if price is None:
            return None
        return (price.batch if batch else price).cost(input_tokens, output_tokens)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The table as plain data (what `run_report(prices=...)` takes)."""
        return {
            m: {
                "input": p.input,
                "output": p.output,
                "batch": {"input": p.batch.input, "output": p.batch.output},
            }
            for m, p in sorted(self._prices.items())
        }

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models)"


def load_prices(path: str | Path) -> dict[str, Price]:
    """Read a prices file: YAML or JSON, `MODEL: {input: USD per 1M, output: USD per 1M}`.

    Raises:
        PriceError: the file cannot be read or parsed, or an entry is not a price.
    """
    path = Path(path)
    where = f"prices file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PriceError(f"{where} does not exist; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceError(f"cannot read {where}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else safe_yaml(text)
    except (ValueError, yaml.YAMLError) as exc:
        problem = " ".join(str(exc).split())
        raise PriceError(f"{where} is not valid YAML or JSON: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PriceError(
            f"{where} must hold a mapping of MODEL: {{input: ..., output: ...}}, "
            f"not {type(data).__name__}"
        )
    return {str(model): _price_of(str(model), value, where) for model, value in data.items()}


def price_table(prices: PriceTable | Mapping[str, Any] | str | Path | None) -> PriceTable:
    """A PriceTable from a table, a mapping, a prices file's path, or None (the defaults)."""
    if isinstance(prices, PriceTable):
        return prices
    if isinstance(prices, str | Path):
        return PriceTable(load_prices(prices))
    return PriceTable(prices)
