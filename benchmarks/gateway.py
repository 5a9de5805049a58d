"""fanfold behind a real LiteLLM proxy (issue 23): does its pacing recover?

A real LiteLLM proxy (`fanfold.testing.litellm`, as in tests/test_litellm_proxy.py) runs
on a loopback port with mock deployments that answer after 0.2 s; nothing leaves the
machine, and the gateway's own retries are off. Its command comes in
`FANFOLD_TEST_LITELLM` (or `--litellm`; `.ci/run` creates `.ci/litellm-venv`).

* concurrency: a `max_parallel_requests: 8` deployment (the 9th call in flight gets a
  429 with no hint), `--calls` independent calls (default 120), three runners side by
  side in one run: fanfold with nothing configured (a cold `RateLimiter()`), fanfold told
  the limit (`--max-concurrency 8`), and a plain ChatOpenAI `asyncio.gather` under a
  semaphore of 8 (the SDK's default retries). What the deployment allows is the faster
  baseline's wall time (the proxy's own work per call counts on busy cores); the ideal
  (calls / 8 x 0.2 s) is printed beside it.
* rpm: an `rpm: 30` deployment (LiteLLM counts per calendar minute and admits 29), 50
  calls started at least 20 s before a minute turns, so they cross one boundary. What
  the minute budget allows: the first minute's share at once, the rest as soon as the
  minute turns, ending one median call after the boundary.

For each runner: wall time, goodput (allowed time / wall time), the share of requests
answered 429, calls lost, and where fanfold's costs came from, with the targets
(goodput >= 0.90, <= 5% 429s, 0 lost, costs from the gateway) and met/MISSED beside
fanfold's. `--runs N` prints medians of N runs.

    FANFOLD_TEST_LITELLM=.ci/litellm-venv/bin/litellm python benchmarks/gateway.py
    python benchmarks/gateway.py --runs 3 --cases concurrency
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from langchain_openai import ChatOpenAI

from fanfold import SubtaskResult, TaskPlan, compile_plan, resolve_model
from fanfold.scheduling.limits import RateLimiter
from fanfold.testing.litellm import DELAY, INSTALL, LiteLLMProxy, deployment, litellm_command

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 8
RPM = 30
RPM_CALLS = 50
GOODPUT_TARGET = 0.90
SHARE_429_TARGET = 0.05


@dataclass
class Outcome:
    """One runner's run: wall time, requests, 429s, calls lost, cost sources."""

    wall: float
    requests: int
    throttled: int
    lost: int
    costs: str
    allowed: float = 0.0
    """Seconds the deployment needs for these calls (set once the baselines are in)."""


def plan_of(n: int) -> TaskPlan:
    subtasks = [{"id": f"s{i}", "prompt": f"item {i}"} for i in range(n)]
    return TaskPlan.model_validate({"task": "Through the gateway", "subtasks": subtasks})


def cost_sources(results: dict[str, SubtaskResult]) -> str:
    counts = Counter(str(r.cost_source) for r in results.values())
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{source} {n}" for source, n in counts.most_common())


async def run_fanfold(
    proxy: LiteLLMProxy, model: str, n: int, limiter: RateLimiter
) -> tuple[Outcome, dict[str, SubtaskResult]]:
    chat = resolve_model(f"openai:{model}", base_url=proxy.base_url, api_key=proxy.key)
    graph = compile_plan(plan_of(n), model=chat, aggregator=None, rate_limiter=limiter)
    started = time.perf_counter()
    final = await graph.ainvoke({"inputs": {}})
    wall = time.perf_counter() - started
    results: dict[str, SubtaskResult] = final["results"]
    outcome = Outcome(
        wall=wall,
        requests=sum(r.attempts for r in results.values()),
        throttled=limiter.rate_limited,
        lost=sum(1 for r in results.values() if not r.ok),
        costs=cost_sources(results),
    )
    return outcome, results


async def run_plain(proxy: LiteLLMProxy, model: str, n: int) -> Outcome:
    """ChatOpenAI with its default retries, `asyncio.gather` under a semaphore of 8."""
    statuses: Counter[int] = Counter()

    async def count(response: httpx.Response) -> None:
        statuses[response.status_code] += 1

    async with httpx.AsyncClient(event_hooks={"response": [count]}, timeout=60) as client:
        chat = ChatOpenAI(
            model=model, base_url=proxy.base_url, api_key=proxy.key, http_async_client=client
        )
        gate = asyncio.Semaphore(CONCURRENCY)

        async def call(i: int) -> object:
            async with gate:
                return await chat.ainvoke(f"item {i}")

        started = time.perf_counter()
        replies = await asyncio.gather(*(call(i) for i in range(n)), return_exceptions=True)
        wall = time.perf_counter() - started
    return Outcome(
        wall=wall,
        requests=sum(statuses.values()),
        throttled=statuses[429],
        lost=sum(1 for r in replies if isinstance(r, BaseException)),
        costs="- (not computed)",
    )


async def concurrency_case(proxy: LiteLLMProxy, n: int) -> dict[str, Outcome]:
    cold, _ = await run_fanfold(proxy, "conc8", n, RateLimiter())
    told, _ = await run_fanfold(
        proxy, "conc8-told", n, RateLimiter(max_concurrency=CONCURRENCY)
    )
    plain = await run_plain(proxy, "conc8-plain", n)
    allowed = min(told.wall, plain.wall)
    for outcome in (cold, told, plain):
        outcome.allowed = allowed
    return {
        "fanfold, nothing configured": cold,
        "fanfold --max-concurrency 8": told,
        "ChatOpenAI gather, semaphore 8": plain,
    }


async def rpm_case(proxy: LiteLLMProxy, n: int) -> dict[str, Outcome]:
    # LiteLLM counts rpm per calendar minute: start far enough from the next minute that
    # the first minute's share fits before it.
    left = 60 - time.time() % 60
    if left < 20:
        await asyncio.sleep(left + 0.5)
    started = time.time()
    boundary = (started // 60 + 1) * 60
    outcome, results = await run_fanfold(proxy, "rpm30", n, RateLimiter())
    calls = sorted(r.duration or 0.0 for r in results.values())
    outcome.allowed = boundary + max(DELAY, calls[len(calls) // 2]) - started
    return {"fanfold, nothing configured": outcome}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def median_outcome(runs: list[Outcome]) -> Outcome:
    def med(get: Callable[[Outcome], float]) -> float:
        return statistics.median(get(o) for o in runs)

    return Outcome(
        wall=med(lambda o: o.wall),
        requests=round(med(lambda o: o.requests)),
        throttled=round(med(lambda o: o.throttled)),
        lost=round(med(lambda o: o.lost)),
        costs=" / ".join(sorted({o.costs for o in runs})),
        allowed=med(lambda o: o.allowed),
    )


def print_case(title: str, runs: list[dict[str, Outcome]]) -> None:
    print(title)
    header = (
        f"  {'runner':<32}{'wall s':>8}{'allowed s':>11}{'goodput':>9}  {'target':<13}"
        f"{'429s':>7}  {'target':<12}{'lost':>5}  {'target':<9}cost source"
    )
    print(header)
    for name in runs[0]:
        outcome = median_outcome([run[name] for run in runs])
        # Goodput per run, then the median: each run has its own allowed time.
        goodput = statistics.median(run[name].allowed / run[name].wall for run in runs)
        share = outcome.throttled / outcome.requests if outcome.requests else 0.0
        if name.startswith("fanfold"):
            targets = (
                f"{'>= 0.90 ' + verdict(goodput >= GOODPUT_TARGET):<13}",
                f"{'<= 5% ' + verdict(share <= SHARE_429_TARGET):<12}",
                f"{'0 ' + verdict(outcome.lost == 0):<9}",
            )
        else:
            targets = (f"{'baseline':<13}", f"{'':<12}", f"{'':<9}")
        print(
            f"  {name:<32}{outcome.wall:>8.2f}{outcome.allowed:>11.2f}{goodput:>9.2f}  "
            f"{targets[0]}{share:>7.1%}  {targets[1]}{outcome.lost:>5}  {targets[2]}"
            f"{outcome.costs}"
        )


async def warm_up(proxy: LiteLLMProxy, models: list[str]) -> None:
    """One call to each deployment, so no runner pays the proxy's first-call costs."""
    for model in models:
        chat = ChatOpenAI(model=model, base_url=proxy.base_url, api_key=proxy.key)
        await chat.ainvoke("warm up")


async def main(args: argparse.Namespace, proxy: LiteLLMProxy) -> None:
    await warm_up(proxy, ["conc8", "conc8-told", "conc8-plain"])
    if "concurrency" in args.cases:
        runs = [await concurrency_case(proxy, args.calls) for _ in range(args.runs)]
        ideal = args.calls / CONCURRENCY * DELAY
        print_case(
            f"concurrency: max_parallel_requests {CONCURRENCY}, {args.calls} calls of "
            f"{DELAY:g} s, gateway retries off; median of {args.runs} run(s); "
            f"ideal {ideal:.2f} s, allowed = the faster baseline",
            runs,
        )
    if "rpm" in args.cases:
        runs = [await rpm_case(proxy, RPM_CALLS) for _ in range(args.runs)]
        print_case(
            f"rpm: rpm {RPM} (LiteLLM admits {RPM - 1} a minute), {RPM_CALLS} calls across "
            f"one minute boundary; median of {args.runs} run(s); allowed = the first "
            "minute's share, then the rest as the minute turns",
            runs,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1, help="runs per case (medians)")
    parser.add_argument(
        "--cases", nargs="+", choices=["concurrency", "rpm"], default=["concurrency", "rpm"]
    )
    parser.add_argument("--calls", type=int, default=120, help="calls in the concurrency case")
    parser.add_argument("--litellm", help="the proxy's `litellm` command")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    command = arguments.litellm or litellm_command(ROOT)
    if command is None or not Path(command).exists():
        sys.exit(f"the LiteLLM proxy is not installed: {INSTALL}")
    models = [
        deployment("conc8", max_parallel_requests=CONCURRENCY),
        deployment("conc8-told", max_parallel_requests=CONCURRENCY),
        deployment("conc8-plain", max_parallel_requests=CONCURRENCY),
        deployment("rpm30", rpm=RPM),
    ]
    with LiteLLMProxy(command, models) as gateway:
        asyncio.run(main(arguments, gateway))
