"""Regression gate: does fanfold, or one of its features, add per-call cost?

On one seeded random DAG (`overhead.random_dag`) and the zero-latency model of
`overhead.py`, these runners are timed interleaved, `--repeats` times each:

* bare: the same graph written as a plain StateGraph (the floor);
* fanfold: `compile_plan(plan, aggregator=None)`;
* fanfold + limiter: with `max_concurrency` (every call takes and frees a slot);
* fanfold + events: streamed with `stream_mode="custom"` (every call sends events).

It prints each ratio of medians beside its target:

* fanfold / bare <= 1.15 (the target of `overhead.py`);
* each feature / fanfold <= 1.05 (a feature costs little per call).

and exits with status 1 when a ratio passes its target by more than `--margin`
(default 0.10, i.e. 10 %: the machine is shared, timings are noisy), so a change that
adds per-call cost shows up as a failing command. Ratios, not absolute times: every
runner runs in the same process, one after another, under the same load.

    python benchmarks/gate.py                      # 1000 subtasks, 5 repeats
    python benchmarks/gate.py --size 300 --repeats 7 --margin 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from map_scale import ZeroLatencyChatModel
from overhead import bare_graph, random_dag, time_it

from fanfold import TaskPlan, compile_plan

FANFOLD_TARGET = 1.15
"""fanfold's median at most this factor of the bare StateGraph's."""
FEATURE_TARGET = 1.05
"""A feature's median at most this factor of plain fanfold's."""


async def drain(stream: Any) -> None:
    async for _ in stream:
        pass


def runners(n: int, seed: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    model = ZeroLatencyChatModel()
    subtasks = random_dag(n, seed)
    plan = TaskPlan.model_validate({"task": "gate", "subtasks": subtasks})
    bare = bare_graph(subtasks, model)
    plain = compile_plan(plan, model=model, aggregator=None)
    limited = compile_plan(plan, model=model, aggregator=None, max_concurrency=64)
    return {
        "bare": lambda: bare.ainvoke({"results": {}}),
        "fanfold": lambda: plain.ainvoke({"inputs": {}}),
        "fanfold + limiter": lambda: limited.ainvoke({"inputs": {}}),
        "fanfold + events": lambda: drain(
            plain.astream({"inputs": {}}, stream_mode=["custom", "values"])
        ),
    }


def check(name: str, ratio: float, target: float, margin: float) -> bool:
    """Print one ratio beside its target; whether it stays within target x (1 + margin)."""
    ok = ratio <= target * (1.0 + margin)
    verdict = "met" if ratio <= target else ("within margin" if ok else "REGRESSED")
    gate = target * (1.0 + margin)
    print(f"{name:<30} {ratio:>6.3f}x (target <= {target:.2f}x, gate {gate:.2f}x): {verdict}")
    return ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--margin", type=float, default=0.10)
    args = parser.parse_args()
    runs = runners(args.size, args.seed)
    for run in runs.values():  # warm up: first-run costs out of the timings
        await run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():  # interleaved: drift hits every runner alike
            times[name].append(await time_it(run()))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.size} subtasks, median of {args.repeats} interleaved runs")
    for name, seconds in median.items():
        print(f"  {name:<20} {seconds * 1000 / args.size:>8.3f} ms per subtask")
    ok = check(
        "fanfold / bare StateGraph", median["fanfold"] / median["bare"], FANFOLD_TARGET, args.margin
    )
    for name in runs:
        if name.startswith("fanfold + "):
            ratio = median[name] / median["fanfold"]
            ok = check(f"{name} / fanfold", ratio, FEATURE_TARGET, args.margin) and ok
    print(
        "gate: passed" if ok else "gate: FAILED (a ratio passed its target by more than the margin)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
