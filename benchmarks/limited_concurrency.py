"""Makespan under a concurrency limit: first-come-first-served vs. hop counts vs. learned durations.

For each seeded random DAG (0-3 dependencies per subtask, lognormal call durations with
median 50 ms and sigma 1, the generator of `makespan.py`) and each limit, the plan runs
for real on `SimulatedChatModel`, whose `latency_fn` answers every subtask after its
seeded duration (looked up by the `[[id]]` marker in the prompt). Every run gets a fresh
`RateLimiter(max_concurrency=limit)` through `compile_plan(..., rate_limiter=...)`, so no
two runs share queue or pacing state, and `aggregator=None`.

The three policies decide which ready subtask gets a freed slot:

* FCFS (first-come-first-served): the order in which subtasks became ready. Giving
  every subtask `priority=0` does *not* give this: `priority_key(0.0, remaining)` equals
  `priority_key(None, remaining)`, so ties fall back to the remaining-path value (hop
  counts), and an explicit priority of minus the plan index would be plan order, not
  arrival order. So FCFS runs use `FifoRateLimiter`, a `RateLimiter` subclass that
  drops the priority it is given: waiters are then ordered by the limiter's arrival
  sequence number alone, i.e. by the moment each subtask's dependencies finished.
* hops: a plain `compile_plan` without a store; every subtask is expected to take one
  hop, so the longest remaining chain of subtasks goes first.
* learned: `compile_plan(..., durations=store)` with a `DurationStore` in a temporary
  directory (a fresh file per DAG and limit). The FCFS run of the same plan and model is
  compiled with that store too and is the first, recording run (the FCFS limiter ignores
  priorities, so the store changes nothing about that run but what it records; reusing
  it saves one run per case). The learned run is the second run, whose compile loads
  the recorded durations (`expected_source == "learned"`); that is the run reported.

Each run's makespan is divided by a lower bound computed from the same seeded durations:
max(critical path, total work / limit). No schedule can beat it, so 1.00 is optimal;
scheduling and LangGraph overhead count against every policy alike. The table prints
the median over seeds (and the worst), then how much longer the other policies take than
learned. The default run (sizes 300 and 1000, limits 8 16 32, 3 seeds) takes about five
minutes on 2 cores; durations are not scaled down.

    python benchmarks/limited_concurrency.py
    python benchmarks/limited_concurrency.py --sizes 300 --limits 8 --seeds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from makespan import critical_path, model_for, random_dag

from fanfold import SimulatedChatModel, TaskPlan, compile_plan
from fanfold.durations import DurationStore
from fanfold.graphs.limits import Priority, RateLimiter

TARGET = 1.05
"""The learned policy should stay within this factor of the lower bound."""
POLICIES = ("FCFS", "hops", "learned")


class FifoRateLimiter(RateLimiter):
    """A limiter that hands free slots to waiters in arrival order, whatever their priority."""

    async def acquire(self, priority: Priority = 0.0, *, tokens: int = 0) -> None:
        await super().acquire(0.0, tokens=tokens)


def lower_bound(subtasks: list[dict[str, Any]], durations: dict[str, float], limit: int) -> float:
    """No schedule finishes before its critical path or before the work fits through the limit."""
    return max(critical_path(subtasks, durations), sum(durations.values()) / limit)


async def timed_run(graph: Any) -> float:
    start = time.perf_counter()
    state = await graph.ainvoke({"inputs": {}})
    elapsed = time.perf_counter() - start
    assert all(r.ok for r in state["results"].values()), "a subtask failed"
    return elapsed


async def run_case(
    plan: TaskPlan, model: SimulatedChatModel, limit: int, store_path: Path
) -> dict[str, float]:
    """Makespan in seconds of each policy on one plan at one limit."""
    store = DurationStore(store_path)
    try:
        fcfs = compile_plan(
            plan, model=model, aggregator=None, durations=store,
            rate_limiter=FifoRateLimiter(max_concurrency=limit),
        )
        seconds = {"FCFS": await timed_run(fcfs)}  # also records the durations
        hops = compile_plan(
            plan, model=model, aggregator=None, rate_limiter=RateLimiter(max_concurrency=limit)
        )
        seconds["hops"] = await timed_run(hops)
        learned = compile_plan(
            plan, model=model, aggregator=None, durations=store,
            rate_limiter=RateLimiter(max_concurrency=limit),
        )
        source = learned.fanfold_runtime.expected_source
        assert source == "learned", f"second run did not use learned durations ({source})"
        seconds["learned"] = await timed_run(learned)
    finally:
        store.close()
    return seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--limits", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    # Warm up imports and LangGraph's first-run costs outside the timings.
    warm, warm_durations = random_dag(20, 999)
    await timed_run(
        compile_plan(
            TaskPlan(task="warm-up", subtasks=warm),
            model=model_for({k: 0.001 for k in warm_durations}),
            aggregator=None,
            rate_limiter=RateLimiter(max_concurrency=4),
        )
    )

    began = time.perf_counter()
    ratios: dict[tuple[int, int], dict[str, list[float]]] = {}
    print("makespan / max(critical path, total work / limit)  (lower is better; 1.00 is optimal)")
    header = "".join(f" {p + ' med':>12} {'worst':>6}" for p in POLICIES)
    print(f"{'subtasks':>8} {'limit':>5}{header}   learned per seed")
    with tempfile.TemporaryDirectory(prefix="fanfold-bench-") as tmp:
        for n in args.sizes:
            for limit in args.limits:
                case = ratios[(n, limit)] = {p: [] for p in POLICIES}
                for seed in range(args.seeds):
                    subtasks, durations = random_dag(n, seed)
                    plan = TaskPlan(task=f"bench n={n} seed={seed}", subtasks=subtasks)
                    bound = lower_bound(subtasks, durations, limit)
                    store_path = Path(tmp) / f"n{n}-l{limit}-s{seed}.db"
                    seconds = await run_case(plan, model_for(durations), limit, store_path)
                    for policy in POLICIES:
                        case[policy].append(seconds[policy] / bound)
                cells = "".join(
                    f" {statistics.median(case[p]):>12.3f} {max(case[p]):>6.3f}" for p in POLICIES
                )
                per_seed = " ".join(f"{v:.3f}" for v in case["learned"])
                print(f"{n:>8} {limit:>5}{cells}   {per_seed}", flush=True)

    print()
    print("how much longer than learned (median makespan ratio)")
    print(f"{'subtasks':>8} {'limit':>5} {'FCFS':>8} {'hops':>8}")
    for (n, limit), case in ratios.items():
        base = statistics.median(case["learned"])
        fcfs, hops = (statistics.median(case[p]) / base for p in ("FCFS", "hops"))
        print(f"{n:>8} {limit:>5} {fcfs:>7.2f}x {hops:>7.2f}x")
    medians = [statistics.median(case["learned"]) for case in ratios.values()]
    verdict = "met" if max(medians) <= TARGET else "MISSED"
    print(
        f"\nlearned median <= {TARGET:.2f} at every size and limit: {verdict} "
        f"(worst median {max(medians):.3f}); {time.perf_counter() - began:.0f}s"
    )


if __name__ == "__main__":
    asyncio.run(main())
