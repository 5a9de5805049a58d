"""What calls cost: a price table, estimates before a run, and a budget during one.

Prices are USD per 1M tokens, input and output, per model label (what
`fanfold.models.resolve.model_label` gives: `gpt-4o-mini` for `openai:gpt-4o-mini`).
`DEFAULT_PRICES` covers common OpenAI models and the offline `simulated` model (free: a
known price of 0, not an unknown one); a prices file (`load_prices`) or a mapping passed
to `compile_plan(prices=...)` overrides or extends it. A model missing from the table has
an unknown cost (`None`), never 0.

`estimate_plan` says before a run how many calls a plan makes, how many tokens they use,
what they cost and how long the run takes, without calling any model. `Budget` tracks a
run's spending so the dispatcher stops sending calls before the run would pass its budget.

Nothing here imports LangGraph.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, Field

from fanfold._text import content_text
from fanfold.errors import PlanError, UnknownKindError
from fanfold.models.resolve import DEFAULT_MODEL, SIMULATED, model_label
from fanfold.plan.models import SubTask, TaskPlan, list_input
from fanfold.plan.prompts import AGGREGATE_SYSTEM, DEFAULT_SYSTEM, as_text, subtask_prompt
from fanfold.plan.template import render
from fanfold.scheduling.priorities import critical_path, remaining_paths
from fanfold.state.results import TokenUsage

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_CALL_SECONDS",
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_PRICES",
    "Budget",
    "BudgetError",
    "CallEstimate",
    "PlanEstimate",
    "Price",
    "PriceError",
    "PriceTable",
    "UnknownPriceError",
    "estimate_plan",
    "load_prices",
]

# -- prices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens for one model."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a call that read `input_tokens` and wrote `output_tokens`."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


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


class BudgetError(PlanError):
    """A budget cannot be enforced: not a number of USD, or a model has no price."""


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


def _price_of(model: str, value: Any, where: str) -> Price:
    if isinstance(value, Price):
        return value
    if not isinstance(value, Mapping):
        raise PriceError(
            f"{where}: the price of {model!r} must be a mapping like {{input: 0.15, output: 0.6}} "
            f"(USD per 1M tokens), not {type(value).__name__}"
        )
    extra = sorted(str(k) for k in value if k not in ("input", "output"))
    if extra:
        raise PriceError(
            f"{where}: the price of {model!r} has unknown keys {extra}; give only 'input' and "
            "'output' (USD per 1M tokens)"
        )
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
    return Price(numbers[0], numbers[1])


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

    def cost(self, model: str | None, usage: TokenUsage) -> float | None:
        """USD of a call's reported usage; None when the model has no price or the usage
        gives a total without its input/output split."""
        price = self.price(model)
        if price is None:
            return None
        if usage.total_tokens and not (usage.input_tokens or usage.output_tokens):
            # A total without its split is priced only when both directions cost the same.
            return price.cost(usage.total_tokens, 0) if price.input == price.output else None
        return price.cost(usage.input_tokens, usage.output_tokens)

    def estimate(self, model: str | None, input_tokens: int, output_tokens: int) -> float | None:
        """USD of a call expected to read and write these many tokens; None if unpriced."""
        price = self.price(model)
        return None if price is None else price.cost(input_tokens, output_tokens)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """The table as plain data (what `run_report(prices=...)` takes)."""
        return {m: {"input": p.input, "output": p.output} for m, p in sorted(self._prices.items())}

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
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
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


# -- token estimates ------------------------------------------------------------------------

CHARS_PER_TOKEN = 4
"""Characters a token, for estimating prompt sizes before a call (English prose)."""
DEFAULT_OUTPUT_TOKENS = 256
"""A reply's expected length when a subtask gives no `expected_output_tokens`."""
DEFAULT_CALL_SECONDS = 5.0
"""A call's expected duration when earlier runs recorded none and the subtask gives no
`expected_seconds`."""


def text_tokens(text: str) -> int:
    """Estimated tokens of `text`: its characters over CHARS_PER_TOKEN, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def messages_tokens(messages: Iterable[BaseMessage]) -> int:
    """Estimated input tokens of a call's messages (all their text, as `text_tokens`)."""
    return text_tokens("".join(content_text(m.content) for m in messages))


def output_tokens(subtask: SubTask) -> int:
    """A subtask's expected reply length in tokens."""
    if subtask.expected_output_tokens is not None:
        return subtask.expected_output_tokens
    return DEFAULT_OUTPUT_TOKENS


def aggregate_input_tokens(
    task: str,
    outputs: Mapping[str, tuple[int, int]],
    *,
    instructions: str | None = None,
    system: str | None = None,
) -> int:
    """Estimated input tokens of the aggregate call.

    Args:
        task: the plan's task text.
        outputs: subtask id -> (items, expected output tokens per item); items is 0 for
            a subtask that is not a map.
    """
    chars = len(system or AGGREGATE_SYSTEM) + len(f"Task: {task}\n\nResults to combine:\n\n")
    chars += len(instructions or "")
    for sid, (items, tokens) in outputs.items():
        chars += len(f"### {sid}\n\n\n")
        if items:
            chars += items * (tokens * CHARS_PER_TOKEN + len(f"#### {sid}[{items}]\n\n\n"))
        else:
            chars += tokens * CHARS_PER_TOKEN
    return -(-chars // CHARS_PER_TOKEN)


def format_usd(value: float | None) -> str:
    """USD as fanfold prints it: "$0", "$0.000123", "$1.2345", or "unknown" for None."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


# -- the budget during a run -----------------------------------------------------------------


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
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """Whether a call has been refused (no call is sent after that)."""
        return self.stopped_at is not None

    def set_aside_for_aggregate(self, cost: float) -> None:
        """Hold back `cost` (replacing what was held before) for the aggregate's call."""
        with self._lock:
            self.set_aside = max(0.0, cost)

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


# -- estimates before a run ------------------------------------------------------------------

SecondsSource = Literal["learned", "hint", "default", "none"]


class CallEstimate(BaseModel):
    """The expected calls of one subtask (or of the aggregate step)."""

    id: str
    kind: str
    model: str | None = Field(description="The model label; None for a kind with no model.")
    calls: int | None = Field(
        description="Model calls; None for a map whose list is known only once the run has it."
    )
    input_tokens_per_call: int = 0
    output_tokens_per_call: int = 0
    input_tokens: int | None = Field(None, description="All its calls; None when calls is.")
    output_tokens: int | None = None
    cost_per_call: float | None = Field(None, description="USD; None when unpriced.")
    cost: float | None = Field(None, description="USD; None when unpriced or calls unknown.")
    seconds_per_call: float = 0.0
    seconds_source: SecondsSource = "none"
    items: int | None = Field(None, description="For a map: its items, when known.")


class PlanEstimate(BaseModel):
    """What a run of a plan is expected to take: calls, tokens, cost and wall time."""

    task: str
    subtasks: list[CallEstimate]
    aggregate: CallEstimate | None = None
    calls: int = Field(description="Model calls counted (maps whose list is known included).")
    unknown_maps: list[str] = Field(
        default_factory=list, description="Maps whose number of items is not known before the run."
    )
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = Field(
        None, description="USD for the counted calls; None when a model is unpriced."
    )
    known_cost: float = Field(0.0, description="USD over the calls with a known price.")
    cost_by_model: dict[str, float | None] = Field(default_factory=dict)
    unknown_price_models: list[str] = Field(default_factory=list)
    wall_time: float = Field(0.0, description="Expected seconds from start to the end.")
    critical_path: list[str] = Field(default_factory=list)
    critical_path_seconds: float = 0.0
    max_concurrency: int | None = None
    durations: str = Field(
        "default", description="Where call durations came from: learned, hint, default, mixed."
    )
    missing_inputs: list[str] = Field(
        default_factory=list, description="Inputs the run needs and the estimate did not have."
    )
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    default_seconds: float = DEFAULT_CALL_SECONDS
    chars_per_token: int = CHARS_PER_TOKEN

    @property
    def total_tokens(self) -> int:
        """Input and output tokens of the counted calls."""
        return self.input_tokens + self.output_tokens

    def fits(self, budget: float) -> bool | None:
        """Whether the estimated cost fits `budget` (None: the cost is unknown)."""
        return None if self.cost is None else self.cost <= budget

    def lines(self) -> list[str]:
        """The estimate as text, one line each, as `fanfold estimate` prints it."""
        out = [f"Estimate for: {self.task}"]
        width = max([len(c.id) for c in self.subtasks] + [9])
        for call in [*self.subtasks, *([self.aggregate] if self.aggregate else [])]:
            out.append("  " + _call_line(call, width))
        unknown = (
            f" + {len(self.unknown_maps)} map(s) whose items are known only during the run "
            f"({', '.join(self.unknown_maps)})"
            if self.unknown_maps
            else ""
        )
        out.append(f"calls: {self.calls}{unknown}")
        out.append(
            f"tokens: {self.input_tokens:,} in + {self.output_tokens:,} out = "
            f"{self.total_tokens:,} (prompts at {self.chars_per_token} characters a token; "
            f"replies: expected_output_tokens, else {self.default_output_tokens})"
        )
        out.append("cost: " + _cost_text(self))
        concurrency = (
            f"up to {self.max_concurrency} calls at once"
            if self.max_concurrency
            else "no concurrency limit"
        )
        out.append(
            f"wall time: ~{self.wall_time:.1f}s with {concurrency}; durations: {self.durations}"
            f" (default {self.default_seconds:g}s a call)"
        )
        if self.critical_path:
            out.append(
                f"critical path: {' -> '.join(self.critical_path)}  "
                f"[{self.critical_path_seconds:.1f}s]"
            )
        if self.missing_inputs:
            out.append(
                "inputs not given (their prompts are estimated without them): "
                + ", ".join(self.missing_inputs)
            )
        out.append("no model was called")
        return out


def _call_line(call: CallEstimate, width: int) -> str:
    model = call.model or "-"
    per_call = (
        f"{call.input_tokens_per_call:,} in + {call.output_tokens_per_call:,} out tokens, "
        f"{format_usd(call.cost_per_call)}, {call.seconds_per_call:.2f}s ({call.seconds_source})"
    )
    if call.model is None:
        return f"{call.id:<{width}}  {call.kind:<10} no model call"
    if call.calls is None:
        return f"{call.id:<{width}}  {call.kind:<10} {model}: calls unknown, per item: {per_call}"
    return (
        f"{call.id:<{width}}  {call.kind:<10} {model}: {call.calls} call(s), "
        f"{(call.input_tokens or 0) + (call.output_tokens or 0):,} tokens, "
        f"{format_usd(call.cost)}; per call: {per_call}"
    )


def _cost_text(estimate: PlanEstimate) -> str:
    models = ", ".join(f"{m} {format_usd(c)}" for m, c in sorted(estimate.cost_by_model.items()))
    if estimate.cost is not None:
        text = format_usd(estimate.cost)
    else:
        unknown = ", ".join(estimate.unknown_price_models)
        text = f"{format_usd(estimate.known_cost)} + unknown for {unknown}"
    extra = " (and the items of maps whose lists are unknown)" if estimate.unknown_maps else ""
    return f"{text}{extra}" + (f"  [{models}]" if models else "")


def model_spec_label(spec: BaseChatModel | str | None) -> str:
    """The label a model choice will have once resolved, without resolving it (no key)."""
    if isinstance(spec, BaseChatModel):
        return model_label(spec)
    text = (spec or DEFAULT_MODEL).strip()
    if text == SIMULATED:
        return SIMULATED
    return text.split(":", 1)[1].strip() if ":" in text else text


def _needs_model(kinds: Any, sub: SubTask) -> bool:
    if kinds is None:
        return True  # no registry known: count a call, the cautious guess for a cost
    if isinstance(kinds, Mapping):
        value = kinds.get(sub.kind, True)
        return bool(getattr(value, "needs_model", value))
    try:
        return bool(kinds.get(sub.kind).needs_model)
    except KeyError:
        names = kinds.names() if hasattr(kinds, "names") else []
        raise UnknownKindError(sub.id, sub.kind, names) from None


class _Lenient(dict[str, Any]):
    """Prompt values where a missing one renders as its own placeholder."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _prompt_chars(
    sub: SubTask,
    *,
    task: str,
    inputs: Mapping[str, Any],
    stand_ins: Mapping[str, Any],
    maps: frozenset[str],
    item: Any,
    index: int | None,
) -> int:
    """Characters of a subtask's messages, dependency outputs replaced by stand-ins."""
    system = sub.system or f"{DEFAULT_SYSTEM}\nOverall task: {task}"
    local = {"task", "item", "index", *inputs, *stand_ins}
    # An input the estimate was not given renders as its own placeholder.
    given = {**inputs, **{name: f"{{{name}}}" for name in sub.placeholders if name not in local}}
    try:
        prompt = subtask_prompt(
            sub,
            task=task,
            inputs=given,
            dependencies=stand_ins,
            maps=maps,
            item=item,
            index=index,
        )
    except Exception:  # noqa: BLE001 - a `{dep.key}` into a stand-in: count the parts
        prompt = sub.prompt + "".join(as_text(v) for v in stand_ins.values())
        if index is not None:
            prompt += as_text(item)
    return len(system) + len(prompt)


def estimate_plan(
    plan: Any,
    inputs: Mapping[str, Any] | None = None,
    *,
    model: BaseChatModel | str | None = None,
    aggregator: Any = True,
    prices: PriceTable | Mapping[str, Any] | str | Path | None = None,
    durations: Any = None,
    max_concurrency: int | None = None,
    kinds: Any = None,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    default_seconds: float = DEFAULT_CALL_SECONDS,
) -> PlanEstimate:
    """Estimate a run of `plan` before it runs: calls, tokens, cost and wall time.

    No model is called and none is resolved, so no API key is needed. Prompts are
    rendered with the given inputs and, for each dependency, a stand-in as long as its
    expected reply; tokens are characters over CHARS_PER_TOKEN; a reply is the subtask's
    `expected_output_tokens`, else `default_output_tokens`. A map over a run input counts
    one call per item; a map over a subtask's list is "unknown" (its per-item figures are
    given). A call takes the seconds earlier runs recorded in `durations` (a
    DurationStore), else the subtask's `expected_seconds`, else `default_seconds`; the
    wall time plays the calls out in dependency order, at most `max_concurrency` at once,
    longest remaining path first (a map whose list is unknown counts as one item).

    Args:
        plan: a TaskPlan, a mapping, a plan file's path, or a compiled graph (its
            resolved models are then used).
        inputs: the run's inputs (missing ones are noted, not an error).
        model: the model for subtasks that name none (as in `compile_plan`).
        aggregator: True (default) counts the aggregate's call when the plan aggregates
            with a model; None or False counts none; a model or model string counts it
            with that model; a callable counts none.
        prices: overrides of the default price table (a mapping or a prices file).
        durations: a DurationStore with earlier runs' durations, or None.
        max_concurrency: most calls in flight at once (None: no limit).
        kinds: the node-kind registry, which says which kinds call a model
            (`fanfold.estimate_plan` passes `fanfold.node_kinds` by default; None counts
            a call for every subtask, the cautious guess).

    Raises:
        PlanError: the plan is invalid, a kind unknown, or a price entry invalid.
    """
    runtime = getattr(plan, "fanfold_runtime", None) or (
        plan if hasattr(plan, "models") and hasattr(plan, "plan") else None
    )
    task_plan = runtime.plan if runtime is not None else TaskPlan.coerce(plan)
    table = price_table(prices) if runtime is None or prices is not None else runtime.prices
    registry = kinds
    subtasks = {s.id: s for s in task_plan.subtasks}
    order = task_plan.topological_order()
    deps = task_plan.dependencies()

    labels: dict[str, str | None] = {}
    for sub in task_plan.subtasks:
        if runtime is not None:
            resolved = runtime.models.get(sub.id)
            labels[sub.id] = model_label(resolved) if resolved is not None else None
        elif _needs_model(registry, sub):
            labels[sub.id] = model_spec_label(sub.model if sub.model is not None else model)
        else:
            labels[sub.id] = None
    aggregate_label: str | None = None
    if runtime is not None:
        if runtime.aggregate_model is not None:
            aggregate_label = model_label(runtime.aggregate_model)
    elif aggregator is True:
        if task_plan.aggregation.enabled:
            aggregate_label = model_spec_label(task_plan.aggregation.model or model)
    elif isinstance(aggregator, BaseChatModel | str):
        aggregate_label = model_spec_label(aggregator)

    values: dict[str, Any] = {
        name: spec.default for name, spec in task_plan.inputs.items() if spec.default is not None
    }
    values.update(inputs or {})
    missing = sorted(name for name in task_plan.required_inputs() if name not in values)
    task = render(task_plan.task, _Lenient({**values, "task": task_plan.task}), to_text=as_text)
    maps = frozenset(s.id for s in task_plan.subtasks if s.map is not None)

    used = sorted({label for label in labels.values() if label is not None})
    learned: dict[str, float] = {}
    if durations is not None:
        learned = durations.load(task_plan.fingerprint(), "+".join(used) or "none")

    # Items per map (None: known only during the run), in dependency order.
    items: dict[str, int | None] = {}
    for sid in order:
        sub = subtasks[sid]
        if sub.map is None:
            continue
        if sub.map in subtasks:
            items[sid] = items.get(sub.map) if sub.map in maps else None
        else:
            given = list_input(values.get(sub.map))
            items[sid] = len(given) if given is not None else None

    estimates: dict[str, CallEstimate] = {}
    sources: set[str] = set()
    for sid in order:
        sub = subtasks[sid]
        label = labels[sid]
        out_tokens = _expected_reply(sub, default_output_tokens)
        stand_ins: dict[str, Any] = {}
        for dep in deps[sid]:
            dep_tokens = _expected_reply(subtasks[dep], default_output_tokens)
            text = "x" * (dep_tokens * CHARS_PER_TOKEN)
            if dep in maps:
                stand_ins[dep] = [text] * (items.get(dep) or 1)
            else:
                stand_ins[dep] = text
        listed: list[Any] | None = None
        sample: Any = None
        if sub.map is not None and sub.map in subtasks:
            # An item of another subtask's list: a stand-in as long as its expected reply.
            tokens = _expected_reply(subtasks[sub.map], default_output_tokens)
            sample = "x" * (tokens * CHARS_PER_TOKEN)
        elif sub.map is not None:
            listed = list_input(values.get(sub.map))
        count = items.get(sid) if sub.map is not None else 1
        if label is None:
            chars_total, chars_one = 0, 0
        elif sub.map is None:
            chars_total = chars_one = _prompt_chars(
                sub,
                task=task,
                inputs=values,
                stand_ins=stand_ins,
                maps=maps,
                item=None,
                index=None,
            )
        elif listed is not None:
            chars_total = sum(
                _prompt_chars(
                    sub,
                    task=task,
                    inputs=values,
                    stand_ins=stand_ins,
                    maps=maps,
                    item=value,
                    index=i,
                )
                for i, value in enumerate(listed)
            )
            chars_one = chars_total // max(1, len(listed))
        else:
            chars_one = _prompt_chars(
                sub,
                task=task,
                inputs=values,
                stand_ins=stand_ins,
                maps=maps,
                item=sample,
                index=0,
            )
            chars_total = chars_one * (count or 0)
        in_one = -(-chars_one // CHARS_PER_TOKEN)
        source: SecondsSource
        if label is None:
            seconds, source = 0.0, "none"
        elif sid in learned:
            seconds, source = learned[sid], "learned"
        elif sub.expected_seconds is not None:
            seconds, source = sub.expected_seconds, "hint"
        else:
            seconds, source = default_seconds, "default"
        if label is not None:
            sources.add(source)
        per_call_cost = table.estimate(label, in_one, out_tokens) if label is not None else 0.0
        in_all: int | None
        out_all: int | None
        if label is None:
            in_all, out_all, cost = 0, 0, 0.0
        elif count is None:
            in_all, out_all, cost = None, None, None
        else:
            in_all = -(-chars_total // CHARS_PER_TOKEN)
            out_all = out_tokens * count
            cost = table.estimate(label, in_all, out_all)
        estimates[sid] = CallEstimate(
            id=sid,
            kind=sub.kind,
            model=label,
            calls=(0 if label is None else count),
            input_tokens_per_call=in_one if label is not None else 0,
            output_tokens_per_call=out_tokens if label is not None else 0,
            input_tokens=in_all,
            output_tokens=out_all,
            cost_per_call=per_call_cost,
            cost=cost,
            seconds_per_call=seconds,
            seconds_source=source,
            items=items.get(sid),
        )

    aggregate: CallEstimate | None = None
    if aggregate_label is not None:
        outputs = {
            sid: (
                (items.get(sid) or 1) if sid in maps else 0,
                _expected_reply(subtasks[sid], default_output_tokens),
            )
            for sid in order
        }
        settings = task_plan.aggregation
        agg_in = aggregate_input_tokens(
            task, outputs, instructions=settings.instructions, system=settings.system
        )
        agg_cost = table.estimate(aggregate_label, agg_in, default_output_tokens)
        aggregate = CallEstimate(
            id="aggregate",
            kind="aggregate",
            model=aggregate_label,
            calls=1,
            input_tokens_per_call=agg_in,
            output_tokens_per_call=default_output_tokens,
            input_tokens=agg_in,
            output_tokens=default_output_tokens,
            cost_per_call=agg_cost,
            cost=agg_cost,
            seconds_per_call=default_seconds,
            seconds_source="default",
        )
        sources.add("default")

    every = [*estimates.values(), *([aggregate] if aggregate is not None else [])]
    by_model: dict[str, float | None] = {}
    unknown_price: set[str] = set()
    for call in every:
        if call.model is None or call.calls == 0:
            continue
        if table.price(call.model) is None:
            unknown_price.add(call.model)
            by_model[call.model] = None
        elif call.cost is not None and by_model.get(call.model, 0.0) is not None:
            by_model[call.model] = (by_model.get(call.model) or 0.0) + call.cost
        elif call.model not in by_model:
            by_model[call.model] = 0.0
    known = sum(c for c in by_model.values() if c is not None)

    jobs = {
        sid: ((1 if e.calls is None else e.calls) if e.model is not None else 0, e.seconds_per_call)
        for sid, e in estimates.items()
    }
    weights = {sid: (seconds if count else 0.0) for sid, (count, seconds) in jobs.items()}
    remaining = remaining_paths(order, deps, weights)
    wall = _play_out(order, deps, jobs, remaining, max_concurrency)
    path = critical_path(order, deps, remaining, weights)
    path_seconds = sum(weights[s] for s in path)
    if aggregate is not None:
        wall += aggregate.seconds_per_call
        path_seconds += aggregate.seconds_per_call
        path = [*path, "aggregate"]

    return PlanEstimate(
        task=task,
        subtasks=[estimates[s.id] for s in task_plan.subtasks],
        aggregate=aggregate,
        calls=sum(c.calls or 0 for c in every if c.model is not None),
        unknown_maps=[
            sid for sid in order if labels[sid] is not None and estimates[sid].calls is None
        ],
        input_tokens=sum(c.input_tokens or 0 for c in every),
        output_tokens=sum(c.output_tokens or 0 for c in every),
        cost=None if unknown_price else known,
        known_cost=known,
        cost_by_model=by_model,
        unknown_price_models=sorted(unknown_price),
        wall_time=wall,
        critical_path=path,
        critical_path_seconds=path_seconds,
        max_concurrency=max_concurrency,
        durations=(sources.pop() if len(sources) == 1 else "mixed") if sources else "none",
        missing_inputs=missing,
        default_output_tokens=default_output_tokens,
        default_seconds=default_seconds,
    )


def _expected_reply(sub: SubTask, default: int) -> int:
    return sub.expected_output_tokens if sub.expected_output_tokens is not None else default


def _play_out(
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    jobs: Mapping[str, tuple[int, float]],
    remaining: Mapping[str, float],
    limit: int | None,
) -> float:
    """Seconds until every subtask is done: `jobs[sid]` = (calls, seconds a call).

    A subtask's calls may start once its dependencies are done; with `limit`, at most
    that many calls run at once and the subtask with the longest remaining path goes
    first (as the dispatcher orders them).
    """
    if not order:
        return 0.0
    finish: dict[str, float] = {}
    if limit is None:
        for sid in order:
            start = max((finish[d] for d in deps[sid]), default=0.0)
            count, seconds = jobs[sid]
            finish[sid] = start + (seconds if count else 0.0)
        return max(finish.values())
    position = {sid: i for i, sid in enumerate(order)}
    dependents: dict[str, list[str]] = {sid: [] for sid in order}
    waiting = {sid: len(deps[sid]) for sid in order}
    for sid in order:
        for dep in deps[sid]:
            dependents[dep].append(sid)
    left = {sid: jobs[sid][0] for sid in order}
    unfinished = dict(left)
    ready: list[tuple[float, int, str]] = []
    running: list[tuple[float, int, str]] = []
    now = 0.0
    sequence = 0

    def done(sid: str) -> None:
        finish[sid] = now
        for child in dependents[sid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                release(child)

    def release(sid: str) -> None:
        if unfinished[sid] == 0:
            done(sid)
        else:
            heapq.heappush(ready, (-remaining[sid], position[sid], sid))

    for sid in order:
        if waiting[sid] == 0 and sid not in finish:
            release(sid)
    while ready or running:
        while ready and len(running) < limit:
            _, _, sid = ready[0]
            heapq.heappush(running, (now + jobs[sid][1], sequence, sid))
            sequence += 1
            left[sid] -= 1
            if left[sid] == 0:
                heapq.heappop(ready)
        end, _, sid = heapq.heappop(running)
        now = max(now, end)
        unfinished[sid] -= 1
        if unfinished[sid] == 0:
            done(sid)
    return max(finish.values(), default=0.0)
