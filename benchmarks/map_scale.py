"""Map scale: one map subtask over 10,000 and 100,000 items vs. a plain asyncio.gather.

A plan with a single map subtask, `each`, runs once per item of the run input `docs`.
Every call goes to a zero-latency chat model (a BaseChatModel that returns an AIMessage
at once, defined below), so what is measured is the cost of orchestrating the items.
Two runners make the same calls to the same model, alternately, in one benchmark run:

* fanfold: `compile_plan(plan, model=..., aggregator=None).ainvoke({"inputs": {"docs": items}})`
  (no concurrency limit unless `--max-concurrency` is given);
* gather: `asyncio.gather(*(model.ainvoke(messages) for messages in prompts))`, with the
  system and user messages fanfold sends for each item, rendered before the clock starts.

Every measured run is a fresh process (`--child`) that first warms the same runner up
on 2,000 items (imports, LangGraph's first run, the shared rate limiter's slow start),
so that RSS growth is not hidden by memory an earlier run freed. For each size it
prints seconds, the cost per item (µs) and fanfold / gather (medians over `--runs`;
sizes of 50,000 and more run `--large-runs` times), and the peak RSS growth during each
runner's run (VmRSS sampled every 10 ms in a thread). Targets: fanfold / gather <= 2x
at every size; peak RSS growth of the fanfold run <= 1 GiB at 100,000. `--profile` (or
a missed time target) profiles one more fanfold run of 10,000 items (or the size
closest to it) with cProfile and prints the top costs per item.

    python benchmarks/map_scale.py              # 10000 (3 runs) and 100000 (once)
    python benchmarks/map_scale.py --quick      # 1000 and 10000, once each
    python benchmarks/map_scale.py --sizes 10000 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import io
import json
import pstats
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from fanfold import TaskPlan, compile_plan

TASK = "map scale benchmark"
TIME_TARGET = 2.0
RSS_TARGET_MB = 1024.0
RSS_TARGET_SIZE = 100_000
LARGE = 50_000
"""Sizes from here on run `--large-runs` times instead of `--runs`."""


class ZeroLatencyChatModel(BaseChatModel):
    """Answers every call at once with a short reply and token usage."""

    @property
    def _llm_type(self) -> str:
        return "zero-latency"

    def _reply(self) -> ChatResult:
        usage = {"input_tokens": 12, "output_tokens": 2, "total_tokens": 14}
        message = AIMessage(content="done ok", usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        return self._reply()

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, **kw: Any
    ) -> ChatResult:
        return self._reply()


def make_plan() -> TaskPlan:
    return TaskPlan.model_validate(
        {
            "task": TASK,
            "inputs": ["docs"],
            "subtasks": [{"id": "each", "prompt": "Summarise item {index}: {item}", "map": "docs"}],
        }
    )


def make_items(n: int) -> list[str]:
    return [f"document {i} about topic {i % 97}, part {i % 7}" for i in range(n)]


def rendered_messages(plan: TaskPlan, items: list[str]) -> list[list[BaseMessage]]:
    """The messages fanfold sends for each item (its default system message and prompt)."""
    from fanfold.plan.prompts import subtask_messages, subtask_prompt

    sub = plan.subtasks[0]
    return [
        subtask_messages(
            sub,
            task=TASK,
            prompt=subtask_prompt(
                sub, task=TASK, inputs={"docs": items}, dependencies={}, item=item, index=i
            ),
        )
        for i, item in enumerate(items)
    ]


# -- measuring -----------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples VmRSS in a thread; `growth` is the peak over the value at the start."""

    def __init__(self) -> None:
        self.start = rss_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.start


async def measure(run: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(seconds, peak RSS growth in MB) of one run."""
    gc.collect()
    with PeakRss() as rss:
        start = time.perf_counter()
        await run()
        seconds = time.perf_counter() - start
    return seconds, rss.growth


# -- the runners ---------------------------------------------------------------------------


async def run_fanfold(graph: Any, items: list[str]) -> None:
    state = await graph.ainvoke({"inputs": {"docs": items}})
    result = state["results"]["each"]
    assert result.ok, result.error
    assert len(result.items) == len(items)


async def run_gather(model: BaseChatModel, messages: list[list[BaseMessage]]) -> None:
    replies = await asyncio.gather(*(model.ainvoke(m) for m in messages))
    assert len(replies) == len(messages)


async def profile_fanfold(graph: Any, items: list[str], top: int) -> str:
    n = len(items)
    profiler = cProfile.Profile()
    profiler.enable()
    start = time.perf_counter()
    await run_fanfold(graph, items)
    elapsed = time.perf_counter() - start
    profiler.disable()
    out = io.StringIO()
    out.write(
        f"cProfile of one fanfold run of {n} items ({elapsed:.2f}s wall, "
        f"{elapsed / n * 1e6:.0f} µs/item with the profiler's overhead)\n"
    )
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.split("site-packages/")[-1].split("/src/")[-1]
        rows.append((tottime, cumtime, calls, f"{where}:{line}({name})"))
    out.write("(calls/item counts each resumption of a coroutine as a call)\n")
    out.write(f"{'own µs/item':>11} {'cum µs/item':>11} {'calls/item':>10}  function\n")
    for tottime, cumtime, calls, label in sorted(rows, reverse=True)[:top]:
        out.write(
            f"{tottime / n * 1e6:>11.1f} {cumtime / n * 1e6:>11.1f} {calls / n:>10.2f}  {label}\n"
        )
    return out.getvalue()


def setup(max_concurrency: int | None) -> tuple[ZeroLatencyChatModel, TaskPlan, Any]:
    model = ZeroLatencyChatModel()
    plan = make_plan()
    graph = compile_plan(plan, model=model, aggregator=None, max_concurrency=max_concurrency)
    return model, plan, graph


async def child(runner: str, n: int, max_concurrency: int | None) -> None:
    """One measured run in this (fresh) process; prints its seconds and RSS growth as JSON.

    It first warms up the same runner on 2,000 items: imports, LangGraph's first run and
    the shared rate limiter's slow start.
    """
    model, plan, graph = setup(max_concurrency)
    warm, items = make_items(2_000), make_items(n)
    run: Callable[[], Awaitable[Any]]
    if runner == "fanfold":
        await run_fanfold(graph, warm)
        run = functools.partial(run_fanfold, graph, items)
    else:
        await run_gather(model, rendered_messages(plan, warm))
        run = functools.partial(run_gather, model, rendered_messages(plan, items))
    seconds, growth = await measure(run)
    print(json.dumps({"seconds": seconds, "rss_growth": growth}))


def measure_in_child(runner: str, n: int, max_concurrency: int | None) -> tuple[float, float]:
    command = [sys.executable, __file__, "--child", runner, "--sizes", str(n)]
    if max_concurrency is not None:
        command += ["--max-concurrency", str(max_concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{runner} over {n} items failed:\n{done.stderr}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured["seconds"], measured["rss_growth"]


# -- main ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3, help="runs per size below 50,000")
    parser.add_argument("--large-runs", type=int, default=1, help="runs per size from 50,000")
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="sizes 1000 and 10000, once each")
    parser.add_argument("--profile", action="store_true", help="cProfile one more fanfold run")
    parser.add_argument("--top", type=int, default=20, help="profile rows to print")
    parser.add_argument("--child", choices=["fanfold", "gather"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        await child(args.child, args.sizes[0], args.max_concurrency)
        return
    if args.quick:
        args.sizes, args.runs, args.large_runs = [1_000, 10_000], 1, 1
    sizes = sorted(set(args.sizes))

    results: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for n in sizes:
        repeats = args.runs if n < LARGE else args.large_runs
        results[n] = {"fanfold": [], "gather": []}
        for i in range(repeats):
            for runner in ("fanfold", "gather"):
                print(f"{runner} over {n} items, run {i + 1}/{repeats} ...", file=sys.stderr)
                results[n][runner].append(measure_in_child(runner, n, args.max_concurrency))

    limit = f"max_concurrency={args.max_concurrency}" if args.max_concurrency else "no limit"
    print(
        f"Map scale: one map subtask over N items, zero-latency chat model, {limit}.\n"
        "fanfold = compile_plan(...).ainvoke; gather = asyncio.gather of model.ainvoke over "
        "the same rendered messages.\nEach run in a fresh process after a 2000-item warm-up; "
        "times are medians over the runs, RSS +MB the largest peak growth during a run."
    )
    header = (
        f"{'items':>7} {'runs':>4} {'fanfold s':>9} {'gather s':>8} {'fanfold µs/item':>15} "
        f"{'gather µs/item':>14} {'fanfold/gather':>14} {'fanfold RSS +MB':>15} "
        f"{'gather RSS +MB':>14}"
    )
    print(header)
    print("-" * len(header))
    ratios: dict[int, float] = {}
    growth: dict[int, dict[str, float]] = {}
    for n in sizes:
        fan, plain = results[n]["fanfold"], results[n]["gather"]
        f_s = statistics.median(s for s, _ in fan)
        g_s = statistics.median(s for s, _ in plain)
        ratios[n] = f_s / g_s
        growth[n] = {"fanfold": max(g for _, g in fan), "gather": max(g for _, g in plain)}
        print(
            f"{n:>7} {len(fan):>4} {f_s:>9.2f} {g_s:>8.2f} {f_s / n * 1e6:>15.0f} "
            f"{g_s / n * 1e6:>14.0f} {ratios[n]:>13.2f}x {growth[n]['fanfold']:>15.0f} "
            f"{growth[n]['gather']:>14.0f}"
        )
    for n in sizes:
        print(
            f"fanfold/gather <= {TIME_TARGET:g}x at {n}: {verdict(ratios[n] <= TIME_TARGET)} "
            f"({ratios[n]:.2f}x)"
        )
    if RSS_TARGET_SIZE in growth:
        mb = growth[RSS_TARGET_SIZE]
        print(
            f"fanfold peak RSS growth <= {RSS_TARGET_MB:g} MB at {RSS_TARGET_SIZE}: "
            f"{verdict(mb['fanfold'] <= RSS_TARGET_MB)} ({mb['fanfold']:.0f} MB; "
            f"the plain gather: {mb['gather']:.0f} MB)"
        )
    if args.profile or any(r > TIME_TARGET for r in ratios.values()):
        n = min(sizes, key=lambda size: abs(size - 10_000))
        _model, _plan, graph = setup(args.max_concurrency)
        await run_fanfold(graph, make_items(2_000))
        print()
        print(await profile_fanfold(graph, make_items(n), args.top))


if __name__ == "__main__":
    asyncio.run(main())
