"""Replanning a goal run: the judge's call, and what one round hands the next.

After a round's aggregate, `JudgeStep` asks a chat model whether the results achieve
the goal ("done") or another plan should run ("replan"); the call is priced, counted
against the run's budget and announced with lifecycle events (`"subtask": "judge"`).
A new round's planner is told why, and is offered the earlier results as run inputs
(`carried_inputs`); a subtask it repeats unchanged keeps its result (`reusable`).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from fanfold._text import content_text
from fanfold.errors import PlanError
from fanfold.graphs.planner_step import step_event
from fanfold.models.resolve import model_label
from fanfold.plan.models import TaskPlan
from fanfold.planning import prompts
from fanfold.planning.planner import extract_json
from fanfold.scheduling.cache import ResultCache, call_key
from fanfold.scheduling.costs import Budget, PriceTable, messages_tokens
from fanfold.scheduling.dispatcher import EventSink
from fanfold.state.results import RunTotals, SubtaskResult, TokenUsage

__all__ = [
    "JUDGE_EVENT_ID",
    "JudgeOutcome",
    "JudgeStep",
    "Replanning",
    "carried_inputs",
    "last_round",
    "replanning",
    "reusable",
    "round_entry",
]

JUDGE_EVENT_ID = "judge"
"""The `subtask` of the judge's lifecycle events."""
JUDGE_REPLY_TOKENS = 120
"""Expected tokens of the judge's reply (its call's estimate)."""
_NAME = re.compile(r"[^A-Za-z0-9_]")
_emit = functools.partial(step_event, step=JUDGE_EVENT_ID)


@dataclass
class JudgeOutcome:
    """The judge's verdict on one round, and what asking cost."""

    decision: str
    """"done" or "replan"."""
    reason: str
    usage: TokenUsage
    cost: float | None
    started_at: float
    finished_at: float
    called: bool = True
    """False when no call was made (no replan left, or the budget does not cover it)."""
    cached_usage: TokenUsage | None = None
    """The usage of the call the cache answered, when it did (usage is then 0)."""

    def as_record(self, round_number: int) -> dict[str, Any]:
        """The verdict as plain data, for the round's entry in the state's `rounds`."""
        return {
            "round": round_number,
            "decision": self.decision,
            "reason": self.reason,
            "judge_usage": self.usage.model_dump(),
            "judge_cost": self.cost,
            "judged": self.called,
        }


class JudgeStep:
    """Asks a chat model whether a round's results achieve the goal.

    Args:
        model: the judge's chat model (the planner's).
        prices: prices its calls.
        budget: USD the whole run may spend (None: no limit).
    """

    def __init__(
        self,
        *,
        model: BaseChatModel,
        prices: PriceTable,
        budget: float | None,
        cache: ResultCache | None = None,
    ) -> None:
        self.model = model
        self.label = model_label(model)
        self.prices = prices
        self.budget = budget
        self.cache = cache

    async def run(
        self,
        goal: str,
        *,
        round_number: int,
        plan: TaskPlan,
        results: Mapping[str, SubtaskResult],
        output: Any,
        spent: float,
        config: RunnableConfig,
        emit: EventSink | None,
    ) -> JudgeOutcome:
        """Judge round `round_number`; `spent` is what the run has cost so far.

        A reply that is not a verdict counts as "done" (the run stops rather than spend
        more), and so does a budget that cannot cover the call (no call is made).
        """
        texts = {
            sid: (r.status, _as_text(r.output) if r.ok else r.error or "")
            for sid, r in results.items()
        }
        messages = [
            SystemMessage(prompts.JUDGE_SYSTEM),
            HumanMessage(
                prompts.judge_prompt(
                    goal,
                    round_number=round_number,
                    prompts_by_id={s.id: s.prompt for s in plan.subtasks},
                    results=texts,
                    output=_as_text(output),
                )
            ),
        ]
        started = time.time()
        key = call_key(model=self.model, messages=messages, kind="judge") if self.cache else None
        hit = self.cache.get(key) if self.cache is not None and key is not None else None
        if hit is not None and isinstance(hit.output, Mapping):
            decision, reason = str(hit.output.get("decision")), str(hit.output.get("reason"))
            outcome = JudgeOutcome(decision, reason, TokenUsage(), 0.0, started, time.time())
            outcome.cached_usage = hit.usage
            _emit(
                emit, "succeeded", started_at=started, finished_at=outcome.finished_at,
                duration=0.0, round=round_number, model=self.label, decision=decision,
                reason=reason, total_tokens=0, cost=0.0, cached=True,
            )  # fmt: skip
            return outcome
        estimate = self.prices.estimate(self.label, messages_tokens(messages), JUDGE_REPLY_TOKENS)
        if self.budget is not None:
            budget = Budget(self.budget, spent=spent)
            if budget.reserve(estimate or 0.0) is not None:
                reason = "the budget does not cover the judge's call; the run stops here"
                return _skipped(reason, started, emit, round_number)
        _emit(emit, "started", started_at=started, round=round_number, model=self.label)
        try:
            reply = await self.model.ainvoke(messages, config={**config, "run_name": "judge"})
        except Exception as exc:
            _emit(
                emit, "failed", started_at=started, finished_at=time.time(),
                error=str(exc), round=round_number, model=self.label,
            )  # fmt: skip
            raise
        usage = TokenUsage.from_metadata(getattr(reply, "usage_metadata", None))
        decision, reason = _verdict(reply)
        outcome = JudgeOutcome(
            decision, reason, usage, self.prices.cost(self.label, usage), started, time.time()
        )
        if self.cache is not None and key is not None:
            self.cache.put(
                key,
                {"decision": decision, "reason": reason},
                usage=usage,
                model=self.label,
                kind="judge",
                subtask=JUDGE_EVENT_ID,
                seconds=outcome.finished_at - started,
            )
        _emit(
            emit, "succeeded", started_at=started, finished_at=outcome.finished_at,
            duration=outcome.finished_at - started, round=round_number, model=self.label,
            decision=decision, reason=reason, total_tokens=usage.total_tokens,
            cost=outcome.cost,
        )  # fmt: skip
        return outcome


def last_round(round_number: int) -> JudgeOutcome:
    """The verdict of a round after which no replan is allowed: done, without a call."""
    now = time.time()
    reason = f"round {round_number} was the last one allowed (replan={round_number - 1})"
    return JudgeOutcome("done", reason, TokenUsage(), 0.0, now, now, called=False)


def _skipped(reason: str, started: float, emit: EventSink | None, round_number: int) -> Any:
    _emit(emit, "skipped", started_at=started, error=reason, round=round_number)
    return JudgeOutcome("done", reason, TokenUsage(), 0.0, started, time.time(), called=False)


def _verdict(reply: Any) -> tuple[str, str]:
    text = content_text(reply.content) if isinstance(reply, AIMessage) else str(reply)
    try:
        data = extract_json(text)
    except PlanError:
        data = None
    if not isinstance(data, Mapping) or data.get("decision") not in ("done", "replan"):
        return "done", "the judge's reply was not a verdict; the run stops here"
    return str(data["decision"]), str(data.get("reason") or "")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def carried_inputs(
    round_number: int, plan: TaskPlan, results: Mapping[str, SubtaskResult], output: Any
) -> tuple[dict[str, str], dict[str, str]]:
    """Round `round_number`'s results as run inputs of later rounds.

    Each succeeded subtask `sid` becomes input `r<round>_<sid>` (ids' '-' as '_'), and
    the combined output `r<round>_output`.

    Returns:
        (name -> description offered to the planner, name -> value).
    """
    described: dict[str, str] = {}
    values: dict[str, str] = {}
    for sid in plan.ids:
        result = results.get(sid)
        if result is None or not result.ok:
            continue
        name = f"r{round_number}_{_NAME.sub('_', sid)}"
        values[name] = _as_text(result.output)
        described[name] = f"the output of subtask {sid} in round {round_number}"
    if output is not None:
        name = f"r{round_number}_output"
        values[name] = _as_text(output)
        described[name] = f"the combined output of round {round_number}"
    return described, values


def reusable(
    previous: TaskPlan, results: Mapping[str, SubtaskResult], plan: TaskPlan
) -> dict[str, SubtaskResult]:
    """The results of `previous` that `plan` keeps: each subtask it repeats unchanged whose
    earlier result succeeded and whose dependencies are kept too (their outputs fill its
    prompt). A kept result shows as cached: its tokens were counted in its own round.
    """
    before = {s.id: s for s in previous.subtasks}
    candidates = {
        sub.id: sub
        for sub in plan.subtasks
        if sub.id in before
        and sub.id in results
        and results[sub.id].ok
        and results[sub.id].items is None
        and before[sub.id].model_dump() == sub.model_dump()
    }
    kept: dict[str, SubtaskResult] = {}
    grew = True
    while grew:  # a subtask is kept once every dependency it names is kept
        grew = False
        for sid, sub in candidates.items():
            needs = set(sub.depends_on) | ({sub.map} if sub.map in plan.ids else set())
            if sid not in kept and needs <= set(kept):
                result = results[sid]
                kept[sid] = result.model_copy(
                    update={
                        "cached": True,
                        "cached_usage": result.usage,
                        "usage": TokenUsage(),
                        "cost": 0.0,
                    }
                )
                grew = True
    return kept


@dataclass
class Replanning:
    """What a replanned round takes from the rounds before it (the state's `rounds`)."""

    round_number: int
    reason: str
    previous: TaskPlan
    results: dict[str, SubtaskResult]
    offered: dict[str, str]
    """Earlier results as run inputs, name -> description (every earlier round's)."""
    values: dict[str, str]
    """Earlier results as run inputs, name -> value."""
    earlier: RunTotals
    """The totals of the rounds so far, judge calls included."""

    def reused(self, plan: TaskPlan) -> dict[str, SubtaskResult]:
        """The earlier results `plan` keeps (see `reusable`)."""
        return reusable(self.previous, self.results, plan)


def replanning(rounds: list[dict[str, Any]] | None) -> Replanning | None:
    """The replan the state's `rounds` ask for, or None (a first round)."""
    if not rounds or rounds[-1].get("decision") != "replan":
        return None
    offered: dict[str, str] = {}
    values: dict[str, str] = {}
    for entry in rounds:
        plan = TaskPlan.model_validate(entry["plan"])
        results = _results(entry)
        described, given = carried_inputs(entry["round"], plan, results, entry.get("output"))
        offered.update(described)
        values.update(given)
    last = rounds[-1]
    return Replanning(
        round_number=len(rounds) + 1,
        reason=str(last.get("reason") or ""),
        previous=TaskPlan.model_validate(last["plan"]),
        results=_results(last),
        offered=offered,
        values=values,
        earlier=RunTotals.model_validate(last["totals"]),
    )


def round_entry(
    outcome: JudgeOutcome,
    round_number: int,
    *,
    plan: Any,
    results: Mapping[str, SubtaskResult],
    output: Any,
    totals: RunTotals,
) -> dict[str, Any]:
    """One round as plain data: its plan, results, output, totals and the verdict."""
    return {
        **outcome.as_record(round_number),
        "plan": plan,
        "results": {sid: r.model_dump(mode="json") for sid, r in results.items()},
        "output": output,
        "totals": totals.model_dump(mode="json"),
    }


def _results(entry: Mapping[str, Any]) -> dict[str, SubtaskResult]:
    return {
        sid: SubtaskResult.model_validate(data)
        for sid, data in (entry.get("results") or {}).items()
    }
