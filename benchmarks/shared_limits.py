"""Several processes against one hidden rate limit: shared limits vs. one limiter each.

A loopback `SimServer` in a child process enforces a requests-per-second limit the
clients are not told about (token bucket, default 40 rps with a burst of 10; excess
requests get 429 with retry-after-ms; `--hidden-concurrency N` adds a concurrency
limit) and answers after a lognormal latency (median 50 ms). For 1, 2 and 4 client
processes, the same total of independent subtasks (default 400) is split between the
processes, and each runs its share with `compile_plan(..., rate_limiter=...)` on the
real ChatOpenAI (SDK retries off, the default `RetryPolicy()`):

* shared: every process opens `SharedRateLimiter.open(store, key)` on the same store
  (a fresh SQLite file, or `--store postgresql://...`) and key, cold and adaptive with
  no limit given, like `RateLimiter()`: the processes learn one pace together;
* unshared: every process has its own cold `RateLimiter()` (adaptive pacing), as
  before shared limits existed: each learns a pace of its own.

The processes are started, compile their plans, and are then let go together. The
server's counters and token bucket are reset before each run. For each run it prints
goodput / limit (successful requests per second over the busy period, from the first
call's start to the last call's end, divided by the hidden limit; 1.00 is the best any
client can sustain), the share of requests answered 429, the subtasks lost (not
succeeded, or unfinished at the deadline) and the pace each process ended with.

With `--concurrency-limits`, it runs hidden-*concurrency* cases instead: for each limit
and each `--latencies-ms`, a server with no rate limit that answers 429 to any request
beyond that many in flight, and for each `--processes` count the shared runner (cold,
learning one window together) and a told baseline (each process given its share of the
limit as `max_concurrency`, 4 over 3 processes is 2, 1, 1, and work in proportion to
it). Goodput is successes per second over the busy period against what the limit
allows: the ideal, limit / mean latency, unless the told baseline measured beside it
does not reach it on this machine (at 50 ms a limit of 16 allows 320 requests per
second, more than the clients do on two busy cores), in which case the told baseline's
rate. Both are printed: the goodput then measures the pacing, not the machine (as in
benchmarks/gateway.py); so can a goodput above 1 (the told split is coarse). Targets
for the shared runner: goodput >= 0.90, <= 5% of requests answered 429, 0 lost.

    python benchmarks/shared_limits.py
    python benchmarks/shared_limits.py --subtasks 600 --limit 50 --processes 1 2 4 8
    python benchmarks/shared_limits.py --store "$FANFOLD_TEST_POSTGRES_DSN"
    python benchmarks/shared_limits.py --concurrency-limits 4 16 --latencies-ms 50 500 \
        --processes 1 3
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rate_limit import Server, allowed_rate, serving, told_allowed, window_targets

from fanfold import EVENT_TYPE, TaskPlan, compile_plan, resolve_model
from fanfold.scheduling.limits import RateLimiter
from fanfold.scheduling.shared_limits import TABLES, SharedRateLimiter
from fanfold.testing import MODEL_ID, SimServerConfig

KEY = "sk-bench-shared-limits"


@dataclass
class Share:
    """What one process did."""

    succeeded: int = 0
    lost: int = 0
    first_start: float | None = None
    last_end: float | None = None
    pace: float | None = None
    note: str = ""


@dataclass
class Outcome:
    processes: int
    limiter: str
    shares: list[Share] = field(default_factory=list)
    rate_limited: int = 0
    requests: int = 0

    @property
    def succeeded(self) -> int:
        return sum(s.succeeded for s in self.shares)

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.shares)

    @property
    def busy(self) -> float:
        starts = [s.first_start for s in self.shares if s.first_start is not None]
        ends = [s.last_end for s in self.shares if s.last_end is not None]
        return max(ends) - min(starts) if starts and ends else 0.0

    def goodput(self, limit: float) -> float:
        return self.succeeded / self.busy / limit if self.busy > 0 else 0.0

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


def make_plan(prefix: str, n: int) -> TaskPlan:
    subtasks = [
        {"id": f"t{i:04d}", "prompt": f"[{prefix}-{i:04d}] answer briefly"} for i in range(n)
    ]
    return TaskPlan.model_validate({"task": "shared limits benchmark", "subtasks": subtasks})


def _client(config: dict[str, Any], go: Any, results: Any) -> None:
    """A child process: compile, wait for the others, run, report."""
    asyncio.run(_run_client(config, go, results))


async def _run_client(config: dict[str, Any], go: Any, results: Any) -> None:
    limiter: RateLimiter
    if config.get("told") is not None:
        limiter = RateLimiter(max_concurrency=config["told"])  # its share of a known limit
    elif config["store"] is None:
        limiter = RateLimiter()  # cold, adaptive: what each process had before
    else:
        limiter = SharedRateLimiter.open(config["store"], config["key"])
    model = resolve_model(f"openai:{MODEL_ID}", base_url=config["base_url"], api_key=KEY)
    plan = make_plan(config["prefix"], config["subtasks"])
    graph = compile_plan(plan, model=model, aggregator=None, rate_limiter=limiter)
    share = Share()

    async def consume() -> None:
        async for chunk in graph.astream({"inputs": {}}, stream_mode="custom"):
            if not (isinstance(chunk, dict) and chunk.get("type") == EVENT_TYPE):
                continue
            if chunk["status"] == "succeeded":
                share.succeeded += 1
                start, end = chunk["started_at"], chunk["finished_at"]
                share.first_start = min(start, share.first_start or start)
                share.last_end = max(end, share.last_end or end)

    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    try:
        await asyncio.wait_for(consume(), config["deadline"])
    except TimeoutError:
        share.note = f"deadline {config['deadline']:.0f}s hit"
    share.lost = config["subtasks"] - share.succeeded
    share.pace = limiter.rate
    if isinstance(limiter, SharedRateLimiter):
        limiter.close()
    results.put(share)


def run(
    srv: Server,
    processes: int,
    *,
    store: str | None,
    subtasks: int,
    deadline: float,
    label: str,
    told: int | None = None,
) -> Outcome:
    """`processes` clients, `subtasks` in all, let go together against the server."""
    context = multiprocessing.get_context("spawn")
    go = context.Barrier(processes + 1)
    results = context.Queue()
    key = f"bench-{uuid.uuid4().hex[:8]}"
    sizes = [subtasks // processes + (i < subtasks % processes) for i in range(processes)]
    shares: list[int | None] = [None] * processes
    if told is not None:  # each its share of the limit, and work in proportion to it
        shares = [max(1, told // processes + (i < told % processes)) for i in range(processes)]
        sizes = [subtasks * share // sum(shares) for share in shares]
        sizes[0] += subtasks - sum(sizes)
    children = [
        context.Process(
            target=_client,
            args=(
                {
                    "store": store,
                    "key": key,
                    "base_url": srv.base_url,
                    "prefix": f"p{i}",
                    "subtasks": size,
                    "deadline": deadline,
                    "told": shares[i],
                },
                go,
                results,
            ),
            daemon=True,
        )
        for i, size in enumerate(sizes)
    ]
    for child in children:
        child.start()
    srv.reset()
    go.wait(timeout=120)  # every client has compiled its plan
    outcome = Outcome(processes, label)
    for _ in children:
        outcome.shares.append(results.get(timeout=deadline + 60))
    for child in children:
        child.join(10)
    counts = srv.status_counts()
    outcome.rate_limited = counts.get(429, 0)
    outcome.requests = srv.request_count
    if store is not None and store.startswith("postgres"):
        forget(store, key)
    return outcome


def forget(url: str, key: str) -> None:
    """Delete a run's rows from a PostgreSQL store (a SQLite store is a temporary file)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE endpoint = %s", (key,))


def warm_up(srv: Server) -> None:
    """Connection and server start-up outside the timings."""
    from langchain_openai import ChatOpenAI

    async def calls() -> None:
        llm = ChatOpenAI(model=MODEL_ID, base_url=srv.base_url, api_key=KEY, max_retries=5)
        await asyncio.gather(*(llm.ainvoke(f"warm {i}") for i in range(5)))

    asyncio.run(calls())


def concurrency_cases(args: argparse.Namespace) -> None:
    """Each hidden concurrency limit at each latency, for each process count."""
    print(
        f"hidden concurrency limits (no rate limit; 429 beyond them), latency lognormal "
        f"sigma {args.sigma:g}, about {args.case_seconds:g} s of work per case split between "
        f"the processes; goodput = successes per second over the busy period / allowed, "
        f"allowed = min(ideal = limit / mean latency, the told baseline's rate)"
    )
    header = (
        f"{'limit':>5} {'lat ms':>6} {'n':>5} {'procs':>5} {'limiter':<22} {'busy s':>7} "
        f"{'rate/s':>7} {'goodput':>7} {'429 share':>9} {'lost':>5}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "limits.db")
        kind = "PostgreSQL" if store.startswith("postgres") else "SQLite"
        for limit in args.concurrency_limits:
            for latency_ms in args.latencies_ms:
                ideal = allowed_rate(limit, latency_ms, args.sigma)
                n = max(40, round(args.case_seconds * ideal))
                config = SimServerConfig(
                    latency_median=latency_ms / 1000.0,
                    latency_sigma=args.sigma,
                    rate_limit_concurrency=limit,
                    seed=args.seed,
                )
                deadline = args.deadline or max(30.0, 8 * n / ideal)
                common = {"subtasks": n, "deadline": deadline}
                with serving(config, in_process=False) as srv:
                    warm_up(srv)
                    for procs in args.processes:
                        shared = run(srv, procs, store=store, label=f"shared ({kind})", **common)
                        told = run(srv, procs, store=None, label="told", told=limit, **common)
                        allowed = told_allowed(ideal, told)
                        print(
                            f"{limit:>5} {latency_ms:>6g} {n:>5} {procs:>5} ideal "
                            f"{ideal:.1f}/s, told baseline "
                            f"{told_allowed(math.inf, told):.1f}/s: allowed {allowed:.1f}/s"
                        )
                        for o in (shared, told):
                            rate = o.succeeded / o.busy if o.busy else 0.0
                            good = rate / allowed
                            extra = ""
                            if o is shared:
                                extra = "  " + window_targets(good, o.share_429, o.lost)
                                extra += f"; {rate / ideal:.2f} x ideal"
                                if told.busy and told.succeeded:
                                    told_rate = told.succeeded / told.busy
                                    extra += f", {rate / told_rate:.2f} x told"
                            print(
                                f"{limit:>5} {latency_ms:>6g} {n:>5} {procs:>5} "
                                f"{o.limiter:<22} {o.busy:>7.2f} {rate:>7.1f} {good:>7.2f} "
                                f"{o.share_429:>9.1%} {o.lost:>5}{extra}",
                                flush=True,
                            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=400, help="subtasks in all (400)")
    parser.add_argument("--limit", type=float, default=40.0, help="hidden rps limit (40)")
    parser.add_argument("--hidden-concurrency", type=int, default=None, metavar="N")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="median latency (50)")
    parser.add_argument("--sigma", type=float, default=0.25, help="lognormal sigma (0.25)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--store", default=None, help="SQLite file or postgresql:// URL (a fresh file)"
    )
    parser.add_argument("--deadline", type=float, default=None, help="seconds per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--concurrency-limits",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run hidden-concurrency cases with these limits instead",
    )
    parser.add_argument("--latencies-ms", type=float, nargs="+", default=[50.0, 500.0])
    parser.add_argument("--case-seconds", type=float, default=4.0, help="work per case (4)")
    args = parser.parse_args()
    if args.concurrency_limits:
        concurrency_cases(args)
        return
    ideal = args.subtasks / args.limit
    deadline = args.deadline or max(30.0, 6 * ideal)
    config = SimServerConfig(
        latency_median=args.latency_ms / 1000.0,
        latency_sigma=args.sigma,
        rate_limit_rps=args.limit,
        rate_limit_concurrency=args.hidden_concurrency,
        seed=args.seed,
    )
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as tmp, serving(config, in_process=False) as srv:
        store = args.store or str(Path(tmp) / "limits.db")
        kind = "PostgreSQL" if store.startswith("postgres") else "SQLite"
        warm_up(srv)
        for n in args.processes:
            common = {"subtasks": args.subtasks, "deadline": deadline}
            outcomes.append(run(srv, n, store=store, label=f"shared ({kind})", **common))
            outcomes.append(run(srv, n, store=None, label="unshared RateLimiter() each", **common))

    hidden = f"hidden limit {args.limit:g} rps (burst {config.effective_burst:g})"
    if args.hidden_concurrency:
        hidden += f" and {args.hidden_concurrency} in flight"
    print(
        f"{args.subtasks} independent subtasks split between the processes, {hidden}, "
        f"latency median {args.latency_ms:g} ms sigma {args.sigma:g}; ideal {ideal:.1f}s, "
        f"deadline {deadline:.0f}s; cold adaptive limiters, no limit given"
    )
    header = (
        f"{'procs':>5} {'limiter':<28} {'busy s':>7} {'goodput/limit':>13} {'429 share':>9} "
        f"{'429s':>5} {'requests':>8} {'lost':>5}  pace at the end (rps, per process)"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        paces = ", ".join(f"{s.pace:.1f}" if s.pace is not None else "none" for s in o.shares)
        notes = "; ".join(sorted({s.note for s in o.shares if s.note}))
        print(
            f"{o.processes:>5} {o.limiter:<28} {o.busy:>7.2f} {o.goodput(args.limit):>13.2f} "
            f"{o.share_429:>9.1%} {o.rate_limited:>5} {o.requests:>8} {o.lost:>5}  "
            f"{paces}{'  ' + notes if notes else ''}"
        )


if __name__ == "__main__":
    main()
