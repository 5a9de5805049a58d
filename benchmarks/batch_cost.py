"""Batch cost: a 10,000-item map sent live and through the Batch API, on the loopback server.

One map subtask over N items (default 10,000), run by the real ChatOpenAI (gpt-4o-mini,
priced at fanfold's default prices) against a loopback `SimServer` in a child process
(its CPU time is not the client's), alternately:

* live: `compile_plan(plan, max_concurrency=64)`, one chat request per item;
* batch: the same plan with `batch: true`: one JSONL upload, one batch, a few polls and
  the output file's download.

Printed per runner: the run's cost (the sum of its items' costs, as the run computes
them), the HTTP requests the server received, the wall time, and the client's CPU time
per item (`time.process_time`, this process only). Targets: batch cost = 0.5x live at
default prices; batch requests at most 1% of live; batch CPU per item below live.

    python benchmarks/batch_cost.py
    python benchmarks/batch_cost.py --items 2000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from langchain_openai import ChatOpenAI

from fanfold import BatchOptions, compile_plan
from fanfold.testing import SimServer, SimServerConfig

COST_TARGET = 0.5
REQUESTS_TARGET = 0.01
"""Batch requests over live requests, at most."""


def _serve(conn: Connection) -> None:
    """Child process: a SimServer that reports its request counters when asked."""
    with SimServer(SimServerConfig(seed=11)) as srv:
        conn.send(srv.base_url)
        while conn.recv() == "counts":
            api = srv.batch_api
            conn.send(
                {
                    "chat": srv.request_count,
                    "batch": api.uploads + api.creations + api.retrievals + api.downloads,
                    "batches": api.creations,
                }
            )
        conn.send(None)


@contextlib.contextmanager
def server_process() -> Iterator[tuple[str, Connection]]:
    context = multiprocessing.get_context("spawn")
    conn, child = context.Pipe()
    process = context.Process(target=_serve, args=(child,), daemon=True)
    process.start()
    try:
        yield conn.recv(), conn
    finally:
        with contextlib.suppress(OSError, EOFError):
            conn.send("stop")
        process.join(5)
        if process.is_alive():
            process.kill()


def counts(conn: Connection) -> dict[str, int]:
    conn.send("counts")
    found: dict[str, int] = conn.recv()
    return found


def plan(batch: bool) -> dict[str, Any]:
    return {
        "task": "Triage the support tickets",
        "inputs": {"tickets": {"description": "ticket texts"}},
        "subtasks": [
            {
                "id": "classify",
                "map": "tickets",
                "prompt": "Classify this ticket as billing, bug or question: {item}",
                "batch": batch,
            }
        ],
    }


async def one_run(base_url: str, conn: Connection, *, batch: bool, items: int) -> dict[str, Any]:
    model = ChatOpenAI(
        model="gpt-4o-mini", base_url=base_url, api_key="sk-bench", max_retries=0, timeout=60
    )
    graph = compile_plan(
        plan(batch),
        model=model,
        aggregator=None,
        max_concurrency=64,
        batch=BatchOptions(poll_min=0.05, poll_max=0.5),
    )
    tickets = [f"ticket {i}: my invoice {i} is wrong and the app crashes" for i in range(items)]
    before = counts(conn)
    cpu, wall = time.process_time(), time.perf_counter()
    state = await graph.ainvoke({"inputs": {"tickets": tickets}})
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = counts(conn)
    result = state["results"]["classify"]
    assert result.status == "succeeded", result.error
    sent = {k: after[k] - before[k] for k in after}
    return {
        "cost": result.cost,
        "requests": sent["chat"] + sent["batch"],
        "batches": sent["batches"],
        "wall": wall,
        "cpu_per_item": cpu / items,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"live": [], "batch": []}
    with server_process() as (base_url, conn):
        await one_run(base_url, conn, batch=False, items=50)  # warm up imports and pools
        await one_run(base_url, conn, batch=True, items=50)
        for _ in range(args.runs):
            for name in ("live", "batch"):
                runs[name].append(
                    await one_run(base_url, conn, batch=name == "batch", items=args.items)
                )

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(
        f"one map of {args.items} items, gpt-4o-mini at default prices, loopback server in a "
        f"child process; medians of {args.runs} runs each, alternated"
    )
    header = (
        f"{'runner':<8} {'cost USD':>10} {'requests':>9} {'batches':>8} {'wall s':>8} "
        f"{'CPU us/item':>12}"
    )
    print(header)
    print("-" * len(header))
    for name in ("live", "batch"):
        print(
            f"{name:<8} {median(name, 'cost'):>10.5f} {median(name, 'requests'):>9.0f} "
            f"{median(name, 'batches'):>8.0f} {median(name, 'wall'):>8.2f} "
            f"{median(name, 'cpu_per_item') * 1e6:>12.0f}"
        )
    cost = median("batch", "cost") / median("live", "cost")
    requests = median("batch", "requests") / median("live", "requests")
    cpu = median("batch", "cpu_per_item") / median("live", "cpu_per_item")
    print(
        f"batch / live cost: {cost:.3f}x (target {COST_TARGET}x): "
        f"{'met' if abs(cost - COST_TARGET) < 0.005 else 'MISSED'}"
    )
    print(
        f"batch / live requests: {requests:.4f}x (target <= {REQUESTS_TARGET}x): "
        f"{'met' if requests <= REQUESTS_TARGET else 'MISSED'}"
    )
    print(
        f"batch / live client CPU per item: {cpu:.2f}x (target < 1x): "
        f"{'met' if cpu < 1 else 'MISSED'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
