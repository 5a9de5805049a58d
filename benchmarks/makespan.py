"""Makespan over the critical path on seeded random DAGs: fanfold vs. superstep baselines.

For each DAG (0-3 dependencies per subtask, lognormal call durations with median 50 ms
and sigma 1) the same simulated model answers every subtask after its seeded duration.
Three runners are timed side by side in one process:

* fanfold: `compile_plan(...).ainvoke(...)` (greedy dispatcher inside a StateGraph);
* asyncio greedy: plain asyncio dataflow over the same calls (the floor: no graph);
* level loop: the pattern's `while ready: gather(ready)`;
* join-edge StateGraph: the same graph written by hand in LangGraph, one model call per node.

It prints makespan / critical path for each (median and worst over seeds).

    python benchmarks/makespan.py            # sizes 100 and 300, 3 seeds each
    python benchmarks/makespan.py --sizes 1000 --seeds 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import time
from typing import Annotated, Any

from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from fanfold import SimulatedChatModel, TaskPlan, compile_plan

_ID = re.compile(r"\[\[(\w+)\]\]")


def merge_results(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """The reducer a hand-written StateGraph would use: results merged by subtask id."""
    return {**(left or {}), **(right or {})}


def random_dag(n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Subtasks (each depending on 0-3 earlier ones) and their seeded durations."""
    rng = random.Random(seed)
    subtasks, durations = [], {}
    for i in range(n):
        sid = f"s{i}"
        k = rng.randint(0, min(3, i))
        deps = rng.sample([f"s{j}" for j in range(i)], k) if k else []
        subtasks.append({"id": sid, "prompt": f"[[{sid}]] work", "depends_on": deps})
        durations[sid] = 0.05 * rng.lognormvariate(0, 1.0)
    return subtasks, durations


def critical_path(subtasks: list[dict[str, Any]], durations: dict[str, float]) -> float:
    finish: dict[str, float] = {}
    for sub in subtasks:  # ids are in topological order by construction
        start = max((finish[d] for d in sub["depends_on"]), default=0.0)
        finish[sub["id"]] = start + durations[sub["id"]]
    return max(finish.values())


def model_for(durations: dict[str, float]) -> SimulatedChatModel:
    def latency(messages: list[BaseMessage]) -> float:
        human = next(m for m in reversed(messages) if isinstance(m, HumanMessage))
        match = _ID.search(str(human.content))
        return durations[match.group(1)] if match else 0.0

    return SimulatedChatModel(latency_fn=latency, output_tokens=8)


async def run_fanfold(subtasks: list[dict[str, Any]], model: SimulatedChatModel) -> float:
    graph = compile_plan(TaskPlan(task="bench", subtasks=subtasks), model=model, aggregator=None)
    start = time.perf_counter()
    state = await graph.ainvoke({"inputs": {}})
    elapsed = time.perf_counter() - start
    assert all(r.ok for r in state["results"].values()), "a subtask failed"
    return elapsed


async def run_level_loop(subtasks: list[dict[str, Any]], model: SimulatedChatModel) -> float:
    done: dict[str, str] = {}
    start = time.perf_counter()
    while len(done) < len(subtasks):
        ready = [
            s for s in subtasks if s["id"] not in done and all(d in done for d in s["depends_on"])
        ]
        replies = await asyncio.gather(*(model.ainvoke([HumanMessage(s["prompt"])]) for s in ready))
        for sub, reply in zip(ready, replies, strict=True):
            done[sub["id"]] = str(reply.content)
    return time.perf_counter() - start


async def run_asyncio_greedy(subtasks: list[dict[str, Any]], model: SimulatedChatModel) -> float:
    """Plain asyncio dataflow: one task per subtask that awaits only its own dependencies."""
    tasks: dict[str, asyncio.Task[Any]] = {}

    async def one(sub: dict[str, Any]) -> Any:
        for dep in sub["depends_on"]:
            await tasks[dep]
        return await model.ainvoke([HumanMessage(sub["prompt"])])

    start = time.perf_counter()
    for sub in subtasks:
        tasks[sub["id"]] = asyncio.ensure_future(one(sub))
    await asyncio.gather(*tasks.values())
    return time.perf_counter() - start


class State(TypedDict, total=False):
    results: Annotated[dict[str, Any], merge_results]


async def run_join_graph(subtasks: list[dict[str, Any]], model: SimulatedChatModel) -> float:
    builder = StateGraph(State)
    has_dependents: set[str] = set()
    for sub in subtasks:

        async def node(state: State, sub: dict[str, Any] = sub) -> dict[str, Any]:
            reply = await model.ainvoke([HumanMessage(sub["prompt"])])
            return {"results": {sub["id"]: reply.content}}

        builder.add_node(sub["id"], node)
        deps = sub["depends_on"]
        has_dependents.update(deps)
        if not deps:
            builder.add_edge(START, sub["id"])
        else:
            builder.add_edge(deps if len(deps) > 1 else deps[0], sub["id"])
    for sub in subtasks:
        if sub["id"] not in has_dependents:
            builder.add_edge(sub["id"], END)
    graph = builder.compile()
    start = time.perf_counter()
    await graph.ainvoke({"results": {}})
    return time.perf_counter() - start


RUNNERS = {
    "fanfold": run_fanfold,
    "asyncio greedy": run_asyncio_greedy,
    "level loop": run_level_loop,
    "join-edge StateGraph": run_join_graph,
}
TARGET = 1.03
"""fanfold's makespan at most this factor of plain asyncio greedy dataflow (median)."""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    print("makespan / critical path (lower is better; 1.00 is optimal)")
    print(f"{'subtasks':>8}  {'runner':<22} {'median':>7} {'worst':>7}   per seed")
    for n in args.sizes:
        ratios: dict[str, list[float]] = {name: [] for name in RUNNERS}
        for seed in range(args.seeds):
            subtasks, durations = random_dag(n, seed)
            cp = critical_path(subtasks, durations)
            model = model_for(durations)
            for name, runner in RUNNERS.items():
                ratios[name].append(await runner(subtasks, model) / cp)
        for name, values in ratios.items():
            per_seed = " ".join(f"{v:.2f}" for v in values)
            print(
                f"{n:>8}  {name:<22} {statistics.median(values):>7.2f} {max(values):>7.2f}"
                f"   {per_seed}"
            )
        base = statistics.median(ratios["fanfold"])
        for name in list(RUNNERS)[2:]:
            ratio = statistics.median(ratios[name]) / base
            print(f"{n:>8}  {name} is {ratio:.2f}x fanfold's makespan")
        versus = statistics.median(
            f / a for f, a in zip(ratios["fanfold"], ratios["asyncio greedy"], strict=True)
        )
        verdict = "met" if versus <= TARGET else "MISSED"
        print(
            f"{n:>8}  fanfold / asyncio greedy: {versus:.3f}x (median over seeds; "
            f"target <= {TARGET}x): {verdict}"
        )


if __name__ == "__main__":
    asyncio.run(main())
