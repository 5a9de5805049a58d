"""Orchestration cost per subtask: fanfold vs. a bare StateGraph vs. plain asyncio.

Every runner makes the same calls to the same zero-latency chat model (a BaseChatModel
that answers at once), on seeded random DAGs whose subtasks have 0-3 dependencies:

* fanfold: `compile_plan(plan, aggregator=None).ainvoke(...)`;
* bare StateGraph: the same edges written by hand (join edges, one node per subtask,
  each node awaiting the model), results merged by a dict reducer;
* plain asyncio greedy: one task per subtask that awaits its dependencies' tasks.

It prints milliseconds per subtask (median over repeats), fanfold / bare, and the
targets: fanfold at most 1.15x the bare StateGraph at every size; cost per subtask at
10000 at most 1.5x the cost at 100; validate + compile at 5000 in at most 1.0 s; peak
RSS growth during a 5000-subtask run at most 150 MB.

    python benchmarks/overhead.py                    # 100, 1000, 5000, 10000
    python benchmarks/overhead.py --sizes 100 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import subprocess
import sys
import time
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from map_scale import PeakRss, ZeroLatencyChatModel
from typing_extensions import TypedDict

from fanfold import TaskPlan, compile_plan


def random_dag(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    subtasks = []
    for i in range(n):
        k = rng.randint(0, min(3, i))
        deps = [f"s{j}" for j in rng.sample(range(i), k)]
        subtasks.append({"id": f"s{i}", "prompt": f"work on step {i}", "depends_on": deps})
    return subtasks


def merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class BareState(TypedDict, total=False):
    results: Annotated[dict[str, Any], merge]


def bare_graph(subtasks: list[dict[str, Any]], model: BaseChatModel) -> Any:
    builder = StateGraph(BareState)
    has_dependents: set[str] = set()
    for sub in subtasks:
        sid, prompt = sub["id"], sub["prompt"]

        async def node(state: BareState, sid: str = sid, prompt: str = prompt) -> BareState:
            reply = await model.ainvoke([HumanMessage(prompt)])
            return {"results": {sid: reply.content}}

        builder.add_node(sid, node)
    for sub in subtasks:
        deps = sub["depends_on"]
        has_dependents.update(deps)
        if not deps:
            builder.add_edge(START, sub["id"])
        else:
            builder.add_edge(deps if len(deps) > 1 else deps[0], sub["id"])
    sinks = [s["id"] for s in subtasks if s["id"] not in has_dependents]
    builder.add_edge(sinks, END)
    return builder.compile()


async def run_asyncio(subtasks: list[dict[str, Any]], model: BaseChatModel) -> None:
    tasks: dict[str, asyncio.Task[Any]] = {}

    async def one(sub: dict[str, Any]) -> Any:
        for dep in sub["depends_on"]:
            await tasks[dep]
        return await model.ainvoke([HumanMessage(sub["prompt"])])

    for sub in subtasks:
        tasks[sub["id"]] = asyncio.ensure_future(one(sub))
    await asyncio.gather(*tasks.values())


async def time_it(coro: Any) -> float:
    gc.collect()
    start = time.perf_counter()
    await coro
    return time.perf_counter() - start


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rss-of", choices=["fanfold", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        await measure_rss(args.rss_of, args.sizes[0], args.seed)
        return
    model = ZeroLatencyChatModel()
    per_subtask: dict[int, dict[str, float]] = {}
    print("ms per subtask (median of repeats; lower is better)")
    print(f"{'subtasks':>8}  {'bare':>8}  {'fanfold':>8}  {'asyncio':>8}  {'fanfold/bare':>12}")
    for n in args.sizes:
        subtasks = random_dag(n, args.seed)
        plan = TaskPlan.model_validate({"task": "bench", "subtasks": subtasks})
        graph = compile_plan(plan, model=model, aggregator=None)
        bare = bare_graph(subtasks, model)
        times: dict[str, list[float]] = {"bare": [], "fanfold": [], "asyncio": []}
        for _ in range(args.repeats):
            # Interleaved, so drift on a shared machine hits every runner alike.
            times["bare"].append(await time_it(bare.ainvoke({"results": {}})))
            times["fanfold"].append(await time_it(graph.ainvoke({"inputs": {}})))
            times["asyncio"].append(await time_it(run_asyncio(subtasks, model)))
        ms = {k: statistics.median(v) / n * 1000 for k, v in times.items()}
        per_subtask[n] = ms
        ratio = ms["fanfold"] / ms["bare"]
        print(
            f"{n:>8}  {ms['bare']:>8.3f}  {ms['fanfold']:>8.3f}  {ms['asyncio']:>8.3f}"
            f"  {ratio:>11.2f}x"
        )

    print()
    worst = max(per_subtask[n]["fanfold"] / per_subtask[n]["bare"] for n in per_subtask)
    print(
        f"fanfold / bare StateGraph, worst size: {worst:.2f}x (target <= 1.15x): "
        f"{verdict(worst <= 1.15)}"
    )
    if 100 in per_subtask and 10000 in per_subtask:
        growth = per_subtask[10000]["fanfold"] / per_subtask[100]["fanfold"]
        print(
            f"fanfold cost per subtask at 10000 / at 100: {growth:.2f}x (target <= 1.5x): "
            f"{verdict(growth <= 1.5)}"
        )

    n = 5000
    subtasks = random_dag(n, args.seed)
    compile_times, bare_times = [], []
    for _ in range(args.repeats):
        gc.collect()
        start = time.perf_counter()
        plan = TaskPlan.model_validate({"task": "bench", "subtasks": subtasks})
        compile_plan(plan, model=model, aggregator=None)
        compile_times.append(time.perf_counter() - start)
        gc.collect()
        start = time.perf_counter()
        bare_graph(subtasks, model)
        bare_times.append(time.perf_counter() - start)
    took, bare_took = statistics.median(compile_times), statistics.median(bare_times)
    print(
        f"validate + compile at {n}: {took:.2f} s (bare StateGraph build + compile "
        f"{bare_took:.2f} s; target <= 1.0 s): {verdict(took <= 1.0)}"
    )

    # A fresh process per runner: in this one the heap has already grown to the largest
    # run above, so a 5000-subtask run would reuse that memory and show no growth.
    growth = {runner: rss_in_subprocess(runner, n, args.seed) for runner in ("fanfold", "bare")}
    print(
        f"peak RSS growth during a {n}-subtask run (fresh process): {growth['fanfold']:.0f} MB "
        f"(bare StateGraph {growth['bare']:.0f} MB; target <= 150 MB): "
        f"{verdict(growth['fanfold'] <= 150)}"
    )


def rss_in_subprocess(runner: str, n: int, seed: int) -> float:
    """Peak RSS growth (MB) of one run, measured in a child process."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-of", runner, "--sizes", str(n), "--seed", str(seed)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


async def measure_rss(runner: str, n: int, seed: int) -> None:
    """Print the peak RSS growth (MB) of one compiled run; the compile is not counted."""
    model = ZeroLatencyChatModel()
    subtasks = random_dag(n, seed)
    if runner == "fanfold":
        plan = TaskPlan.model_validate({"task": "bench", "subtasks": subtasks})
        graph = compile_plan(plan, model=model, aggregator=None)
        run_input: dict[str, Any] = {"inputs": {}}
    else:
        graph = bare_graph(subtasks, model)
        run_input = {"results": {}}
    gc.collect()
    with PeakRss() as rss:
        await graph.ainvoke(run_input)
    print(f"{rss.growth:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
