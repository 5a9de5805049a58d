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

Times are divided by a lower bound computed from the same seeded durations:
max(critical path, total work / limit). No schedule beats it, so 1.00 is optimal (an
exact-duration list-scheduling simulation of these DAGs reaches 1.00). Two
times are shown per run:

* ainvoke makespan: the whole `graph.ainvoke`, what a caller waits for. It includes
  LangGraph's fixed start-up and wind-down around the calls (about 0.05-0.1 s for 300
  subtasks, about 0.3 s for 1000), which no scheduling policy can remove.
* calls span: from the first subtask call's start to the last one's end (the
  `started_at` / `finished_at` of the results), i.e. what the scheduling policy decides.

The table prints the median over seeds and learned's worst seed, then how much longer
the other policies take than learned. The default run (sizes 300 and 1000, limits 8,
16, 32, 3 seeds, 3 policies: 54 runs) takes about five minutes on 2 cores with the
durations unscaled (`--median-ms` scales them; shorter calls make the fixed overhead
weigh more). Run it on an otherwise idle machine: a busy event loop delays every call.

    python benchmarks/limited_concurrency.py
    python benchmarks/limited_concurrency.py --sizes 300 --limits 8 --seeds 5
    python benchmarks/limited_concurrency.py --median-ms 100
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
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.limits import Priority, RateLimiter

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


async def timed_run(graph: Any) -> tuple[float, float]:
    """Seconds of the whole `ainvoke`, and from the first call's start to the last one's end."""
    start = time.perf_counter()
    state = await graph.ainvoke({"inputs": {}})
    elapsed = time.perf_counter() - start
    results = state["results"].values()
    assert all(r.ok for r in results), "a subtask failed"
    span = max(r.finished_at for r in results) - min(r.started_at for r in results)
    return elapsed, span


async def run_case(
    plan: TaskPlan, model: SimulatedChatModel, limit: int, store_path: Path
) -> dict[str, tuple[float, float]]:
    """(makespan, calls span) in seconds of each policy on one plan at one limit."""
    store = DurationStore(store_path)
    try:
        fcfs = compile_plan(
            plan,
            model=model,
            aggregator=None,
            durations=store,
            rate_limiter=FifoRateLimiter(max_concurrency=limit),
        )
        seconds = {"FCFS": await timed_run(fcfs)}  # also records the durations
        hops = compile_plan(
            plan, model=model, aggregator=None, rate_limiter=RateLimiter(max_concurrency=limit)
        )
        seconds["hops"] = await timed_run(hops)
        learned = compile_plan(
            plan,
            model=model,
            aggregator=None,
            durations=store,
            rate_limiter=RateLimiter(max_concurrency=limit),
        )
        runtime = learned.fanfold_runtime
        source = runtime.expected_source if runtime is not None else None
        assert source == "learned", f"second run did not use learned durations ({source})"
        seconds["learned"] = await timed_run(learned)
    finally:
        store.close()
    return seconds


def scaled_dag(n: int, seed: int, median: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """`makespan.random_dag` with its durations scaled from a 50 ms median to `median`."""
    subtasks, durations = random_dag(n, seed)
    return subtasks, {sid: d * median / 0.05 for sid, d in durations.items()}


def row(n: int, limit: int, case: dict[str, list[float]]) -> str:
    medians = " ".join(f"{statistics.median(case[p]):>7.3f}" for p in POLICIES)
    return f"{n:>8} {limit:>5}  {medians} {max(case['learned']):>7.3f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--limits", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--median-ms", type=float, default=50.0, help="median call duration (default 50)"
    )
    args = parser.parse_args()
    median = args.median_ms / 1000.0

    # Warm up imports and LangGraph's first-run costs outside the timings.
    warm, warm_durations = scaled_dag(20, 999, 0.001)
    await timed_run(
        compile_plan(
            TaskPlan(task="warm-up", subtasks=warm),
            model=model_for(warm_durations),
            aggregator=None,
            rate_limiter=RateLimiter(max_concurrency=4),
        )
    )

    began = time.perf_counter()
    makespans: dict[tuple[int, int], dict[str, list[float]]] = {}
    spans: dict[tuple[int, int], dict[str, list[float]]] = {}
    print("time / lower bound, where lower bound = max(critical path, total work / limit)")
    print(
        f"median call {args.median_ms:g} ms; medians over {args.seeds} seeds "
        "(worst: learned's worst seed); 1.00 is optimal"
    )
    print(f"{'':>15}  {'ainvoke makespan / lower bound':<31}   first call start to last call end")
    names = " ".join(f"{p:>7}" for p in POLICIES)
    print(f"{'subtasks':>8} {'limit':>5}  {names} {'worst':>7}   {names} {'worst':>7}")
    with tempfile.TemporaryDirectory(prefix="fanfold-bench-") as tmp:
        for n in args.sizes:
            for limit in args.limits:
                whole = makespans[(n, limit)] = {p: [] for p in POLICIES}
                calls = spans[(n, limit)] = {p: [] for p in POLICIES}
                for seed in range(args.seeds):
                    subtasks, durations = scaled_dag(n, seed, median)
                    plan = TaskPlan(task=f"bench n={n} seed={seed}", subtasks=subtasks)
                    bound = lower_bound(subtasks, durations, limit)
                    store_path = Path(tmp) / f"n{n}-l{limit}-s{seed}.db"
                    seconds = await run_case(plan, model_for(durations), limit, store_path)
                    for policy in POLICIES:
                        whole[policy].append(seconds[policy][0] / bound)
                        calls[policy].append(seconds[policy][1] / bound)
                span_cells = row(n, limit, calls)[15:]
                print(f"{row(n, limit, whole)}  {span_cells}", flush=True)

    print()
    print("median makespan relative to learned (>1: slower than learned)")
    print(f"{'subtasks':>8} {'limit':>5} {'FCFS':>8} {'hops':>8}")
    for (n, limit), case in makespans.items():
        base = statistics.median(case["learned"])
        fcfs, hops = (statistics.median(case[p]) / base for p in ("FCFS", "hops"))
        print(f"{n:>8} {limit:>5} {fcfs:>7.2f}x {hops:>7.2f}x")
    print()
    for label, table in (("ainvoke makespan", makespans), ("calls span", spans)):
        worst = max(statistics.median(case["learned"]) for case in table.values())
        verdict = "met" if worst <= TARGET else "missed"
        print(
            f"learned {label} <= {TARGET:.2f} x lower bound at every size and limit: "
            f"{verdict} (worst median {worst:.3f})"
        )
    print(f"total {time.perf_counter() - began:.0f}s")


if __name__ == "__main__":
    asyncio.run(main())
