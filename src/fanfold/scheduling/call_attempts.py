"""One call of a subtask (or of one map item), with retries, cache, journal and budget."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

from fanfold._secrets import describe_error
from fanfold.models.caps import output_cap, with_output_cap
from fanfold.plan.models import SubTask
from fanfold.plan.prompts import subtask_prompt, system_text
from fanfold.plan.template import MissingFieldError
from fanfold.scheduling.batch_client import UNLIMITED
from fanfold.scheduling.cache import call_key, revive
from fanfold.scheduling.calls import KindOutput, SubtaskCall, attempt_config, billed_usage
from fanfold.scheduling.dispatch_state import DispatchState, cost_source, item_id
from fanfold.scheduling.limits import Limiter, Permit, minute_left
from fanfold.scheduling.retry import Failure, classify, is_timeout
from fanfold.scheduling.tokens import messages_tokens, reply_tokens
from fanfold.state.results import NO_USAGE, Status, SubtaskResult, TokenUsage


class CallAttempts(DispatchState):
    """Runs one call until it succeeds or gives up."""

    # -- one call, with retries ---------------------------------------------------------

    async def _attempts(
        self,
        sid: str,
        deps: dict[str, SubtaskResult],
        *,
        item: Any = None,
        index: int | None = None,
    ) -> SubtaskResult:
        """Run one call (a subtask, or one item of a map) until it succeeds or gives up."""
        runtime = self.runtime
        subtask = runtime.subtasks[sid]
        model = runtime.models.get(sid)
        label = runtime.labels.get(sid)
        limiter = runtime.limiters[sid]
        policy = runtime.retry
        budget = subtask.max_attempts or policy.max_attempts
        priority_rank = runtime.priorities[sid]
        priority = self._priority(sid)
        rid = sid if index is None else item_id(sid, index)
        try:
            prompt = subtask_prompt(
                subtask,
                task=self.task,
                inputs=self.inputs,
                dependencies={dep: res.output for dep, res in deps.items()},
                maps=runtime.maps,
                item=item,
                index=index,
            )
        except MissingFieldError as exc:
            failed = SubtaskResult(
                id=rid,
                status="failed",
                error=f"cannot render the prompt of {rid!r}: {exc}",
                finished_at=time.time(),
                model=label,
                priority=priority,
                kind=subtask.kind,
                index=index,
                cost=0.0,  # no call was made
            )
            return self._report(failed, sid, index)
        messages = [self._system_message(subtask), HumanMessage(prompt)]
        cache_key: str | None = None
        cached = runtime.cache if subtask.cache else None
        batch = self._batches.get(sid) if index is not None else None
        if model is not None and (
            cached is not None or self.journal is not None or batch is not None
        ):
            cache_key = call_key(
                model=model,
                messages=messages,
                kind=subtask.kind,
                output_schema=subtask.output_schema,
                options=subtask.options,
                kind_function=getattr(runtime.kinds[sid], "function", None),
            )
            hit = cached.get(cache_key) if cached is not None else None
            if hit is None and self.journal is not None:
                hit = await self.journal.get(cache_key)
            if hit is not None:
                now = time.time()
                served = SubtaskResult(
                    id=rid,
                    status="succeeded",
                    output=revive(hit.output, subtask.output_schema),
                    started_at=now,
                    finished_at=now,
                    attempts=0,
                    model=label,
                    priority=priority,
                    kind=subtask.kind,
                    index=index,
                    cost=0.0,
                    cached=True,
                    cached_usage=hit.usage,
                )
                return self._report(served, sid, index)
        # One estimate of the call's size, for the rate limiter and the budget alike.
        reply_cap = reply_tokens(model, subtask.expected_output_tokens)
        input_tokens = messages_tokens(messages)
        tokens = input_tokens + reply_cap
        if self.budget is not None and model is not None:
            model = self._capped(sid, model, reply_cap)
        ambient = var_child_runnable_config.get() or self._call_config(sid, index)
        if "run_name" in ambient:  # it names the call's own run, not its children's
            ambient = {k: v for k, v in ambient.items() if k != "run_name"}  # type: ignore[assignment]
        # What this call has billed and cost so far, failed attempts included.
        tally = _Tally(rid, label, priority, subtask.kind, index)
        attempt = 0
        batched = False  # whether the current attempt goes out in the map's batch
        error = ""
        while True:
            attempt += 1
            # A map's first attempts go out as one batch, outside the rate limits.
            batched = batch is not None and batch.open and attempt == 1 and cache_key is not None
            limiter = UNLIMITED if batched else runtime.limiters[sid]
            permit = await limiter.acquire(priority_rank, tokens=tokens)
            reserved: float | None = None  # USD set aside in the budget for this attempt
            if self.budget is not None and label is not None:
                expected = (
                    runtime.prices.estimate(label, input_tokens, reply_cap, batch=batched) or 0.0
                )
                refusal = self.budget.reserve(expected)
                if refusal is not None:
                    limiter.release(permit)
                    attempt -= 1  # no call was made
                    if attempt == 0:
                        skipped = tally.result("skipped", attempt, error=refusal)
                        return self._report(skipped, sid, index)
                    error = f"{error} (not retried: {refusal})"
                    return self._report(tally.result("failed", attempt, error=error), sid, index)
                reserved = expected
            started = time.time()
            tally.started_at = tally.started_at or started
            if self._emit_event is not None:
                self._emit(
                    sid,
                    "started",
                    index,
                    started_at=started,
                    attempt=attempt,
                    priority=priority,
                    **({"batch": True} if batched else {}),
                )
            # The attempt's own config is also the ambient one while the kind runs, less
            # its run_name (which names this call's run, not its children's).
            own = attempt_config(ambient, attempt)
            call = SubtaskCall(
                subtask=subtask,
                task=self.task,
                prompt=prompt,
                messages=messages,
                dependencies=deps,
                inputs=self.inputs,
                model=model,
                config={**own, "run_name": rid},
                attempt=attempt,
                item=item,
                index=index,
            )
            try:
                if batched and batch is not None and model is not None and cache_key is not None:
                    lined = dataclasses.replace(call, model=batch.model_for(model))
                    kind_run = _run_kind(runtime.kinds[sid], lined, own)
                    outcome = await batch.run(index or 0, cache_key, kind_run)
                else:
                    # As _run_kind, without a coroutine of its own.
                    token = var_child_runnable_config.set(own)
                    try:
                        outcome = await runtime.kinds[sid].run(call)
                    finally:
                        var_child_runnable_config.reset(token)
            except Exception as exc:
                tally.count(self, billed_usage(exc) or NO_USAGE, reserved, batched=batched)
                failure = classify(exc)
                if failure.rate_limited:  # before the slot goes to the next caller
                    limiter.record_rate_limited(
                        failure.retry_after, permit, max_pause=policy.max_backoff
                    )
                limiter.release(permit)
                error = describe_error(exc)
                delay = policy.wait(attempt, failure.retry_after, minute_left=minute_left())
                too_long = delay is None
                if failure.transient and attempt < budget and delay is not None:
                    self._emit(
                        sid,
                        "retrying",
                        index,
                        attempt=attempt,
                        error=error,
                        reason=_retry_reason(failure, exc),
                        delay=delay,
                        priority=priority,
                    )
                    await asyncio.sleep(delay)
                    continue
                if too_long:
                    error = (
                        f"{error} (the provider asked to wait {failure.retry_after:.0f} s "
                        f"before a retry, longer than the retry policy's max_backoff of "
                        f"{policy.max_backoff:g} s; gave up after {_attempts(attempt)}: rerun "
                        "later, or allow longer waits with RetryPolicy(max_backoff=...))"
                    )
                elif failure.transient:
                    error = f"{error} (gave up after {_attempts(attempt)})"
                if is_timeout(exc):
                    error += _gateway_retrying_note(limiter)
                return self._report(tally.result("failed", attempt, error=error), sid, index)
            report = outcome.report
            limiter.record_success(
                outcome.usage.total_tokens,
                permit,
                remaining=report.remaining_requests,
                refill_in=report.refill_in(started),
            )
            tally.count(self, outcome.usage, reserved, report.cost, batched=batched)
            done = tally.result("succeeded", attempt, output=outcome.output)
            if cache_key is not None:
                # Stored now, before LangGraph commits the node: a run killed from here on
                # still finds this call on its next attempt.
                record: dict[str, Any] = {
                    "usage": outcome.usage,
                    "model": label,
                    "kind": subtask.kind,
                    "subtask": rid,
                    "seconds": done.duration,
                }
                if cached is not None:
                    cached.put(cache_key, outcome.output, **record)
                if self.journal is not None:
                    await self.journal.put(cache_key, outcome.output, **record)
            # Free the slot only after the dependents this result unblocks have queued:
            # they wake from this task's done callbacks, registered before this one. A
            # result that unblocks none frees it now (the next caller then need not wait
            # for this task's done callbacks, a loop iteration later on a busy loop).
            this_task = asyncio.current_task()
            if this_task is None or index is not None or not self._dependents.get(sid):
                limiter.release(permit)
            else:
                this_task.add_done_callback(functools.partial(_release, limiter, permit))
            return self._report(done, sid, index)

    def _capped(self, sid: str, model: BaseChatModel, tokens: int) -> BaseChatModel:
        """`model` capped at `tokens` per reply under a budget (one copy per subtask), so
        no reply costs more than its reservation; a model that caps itself is kept."""
        if output_cap(model) is not None:
            return model
        capped = self._capped_models.get(sid)
        if capped is None:
            capped = self._capped_models[sid] = with_output_cap(model, tokens) or model
        return capped

    def _system_message(self, subtask: SubTask) -> SystemMessage:
        """The subtask's system message, built once per run for each text (every item of
        a map, and every subtask with the same system text, shares it)."""
        text = system_text(subtask, task=self.task)
        message = self._systems.get(text)
        if message is None:
            message = self._systems[text] = SystemMessage(text)
        return message


class _Tally:
    """What one call's attempts have billed and cost so far, and its result's fixed fields
    (one object per call, where closures would hold a cell per variable)."""

    __slots__ = (
        "billed",
        "index",
        "kind",
        "label",
        "priority",
        "rid",
        "sources",
        "spent",
        "started_at",
    )

    def __init__(
        self, rid: str, label: str | None, priority: float, kind: str, index: int | None
    ) -> None:
        self.rid = rid
        self.label = label
        self.priority = priority
        self.kind = kind
        self.index = index
        self.started_at: float | None = None  # when the first attempt started
        self.billed = NO_USAGE  # every billed reply of this call, failed attempts included
        self.spent: float | None = 0.0
        self.sources: set[str] | None = None  # where the attempts' costs came from

    def count(
        self,
        state: DispatchState,
        usage: TokenUsage,
        reserved: float | None,
        said: float | None = None,
        *,
        batched: bool,
    ) -> None:
        """Add one attempt's billed usage to the call and swap its reservation for what
        it cost: what the gateway `said`, else the price table's figure."""
        label = self.label
        source: str | None = None
        if said is not None:
            cost: float | None = said
            source = "gateway"
        elif not (usage.input_tokens or usage.output_tokens or usage.total_tokens):
            cost = 0.0  # nothing billed (a 429, a timeout): known to be free
        else:
            cost = 0.0 if label is None else state.runtime.prices.cost(label, usage, batch=batched)
            if label is not None and (usage.total_tokens or cost):
                source = "price table"
        if source is not None:
            if self.sources is None:
                self.sources = set()
            self.sources.add(source)
        self.billed = self.billed + usage
        spent = self.spent
        self.spent = None if spent is None or cost is None else spent + cost
        if state.budget is not None and reserved is not None:
            state.budget.settle(reserved, cost)

    def result(self, status: Status, attempts: int, **fields: Any) -> SubtaskResult:
        """The call's result: `status` after `attempts` attempts, with `fields` set."""
        return SubtaskResult(
            id=self.rid,
            status=status,
            started_at=self.started_at,
            finished_at=time.time(),
            attempts=attempts,
            model=self.label,
            priority=self.priority,
            kind=self.kind,
            index=self.index,
            usage=self.billed,
            cost=self.spent,
            cost_source=cost_source(self.sources) if self.sources else None,
            **fields,
        )


def _retry_reason(failure: Failure, exc: BaseException) -> str:
    """Why a call is retried, in a few words: "429 from the provider", "timeout"."""
    if failure.status is not None:
        return f"{failure.status} from the provider"
    name = type(exc).__name__
    return "timeout" if "timeout" in name.lower() else name


def _gateway_retrying_note(limiter: Limiter) -> str:
    """What a timeout may mean when the endpoint has been answering 429s."""
    if not limiter.rate_limited:
        return ""
    return (
        f"; the endpoint answered {limiter.rate_limited} 429s in this run, so a gateway "
        "(such as the LiteLLM proxy) may be retrying the call internally until it times out: "
        "turn its retries off (num_retries: 0 in its config) and fanfold paces the 429s itself"
    )


def _release(limiter: Limiter, permit: Permit, _task: object) -> None:
    limiter.release(permit)


async def _run_kind(kind: Any, call: SubtaskCall, ambient: RunnableConfig) -> KindOutput:
    """Run `kind` with `ambient` (the attempt's config less its run_name) as the ambient
    config (see SubtaskCall)."""
    token = var_child_runnable_config.set(ambient)
    try:
        output: KindOutput = await kind.run(call)
        return output
    finally:
        var_child_runnable_config.reset(token)


def _attempts(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"
