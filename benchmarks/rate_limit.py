"""Goodput under a hidden rate limit: fanfold's adaptive pacing vs. ChatOpenAI's own retries.

A loopback `SimServer` enforces a requests-per-second limit the client is not told about
(token bucket, default 50 rps with a burst of 10; excess requests get 429 with
retry-after-ms) and answers after a lognormal latency of about 20-50 ms. The same
prompts are then sent by two runners against it, one after the other, in one process:

* fanfold: `compile_plan(plan, model=resolve_model("openai:sim-model", ...))` with a
  fresh, cold `RateLimiter()` (adaptive, no requests_per_second given) and the default
  `RetryPolicy()`; the model is the real ChatOpenAI with SDK retries off.
* plain: a real ChatOpenAI with the SDK's default retries (`max_retries=2`, honouring
  retry-after-ms), `asyncio.gather` of `ainvoke` over every prompt under a semaphore.
  It ignores dependencies (with `--shape dag` it has it easier than fanfold).

By default the server runs in a child process (`ServerProcess`), as a real provider
would, so its CPU time does not compete with the client's for the GIL; `--in-process`
runs it on a thread of this process instead (slower clients, on small machines).

The server's counters and token bucket are reset before each runner. For each, it prints
goodput / limit (successful requests per second over the run, divided by the hidden
limit; 1.00 is the best any client can sustain), the 429s the server sent, and the
subtasks lost (not succeeded, or still unfinished at the deadline). Target for fanfold:
goodput >= 0.90 of the limit and nothing lost.

With `--concurrency-limits`, it runs hidden-*concurrency* cases instead: for each limit
and each `--latencies-ms`, a server that answers 429 to any request beyond that many in
flight (no rate limit), and three runners side by side: fanfold cold (`RateLimiter()`,
learning the window), fanfold told (`RateLimiter(max_concurrency=limit)`) and a plain
ChatOpenAI `asyncio.gather` under a semaphore of the limit (the SDK's default retries).
Goodput is successes per second over the busy period (first call's start to last call's
end) against what the limit allows. That is the ideal, limit / mean latency, unless no
client told the limit reaches it on this machine: at 50 ms a limit of 16 allows 320
requests per second, more than one Python client does on two busy cores. So the allowed
rate is the lower of the ideal and the faster told baseline's measured rate (as in
benchmarks/gateway.py), and both are printed: the goodput then measures the pacing, not
the machine. The cold runner's rate is also printed against fanfold told (the pacing
alone, without fanfold's own cost per call). Targets for the cold runner: goodput >=
0.90, <= 5% of requests answered 429, 0 lost.

    python benchmarks/rate_limit.py
    python benchmarks/rate_limit.py --subtasks 500 --limit 50 --shape dag --deadline 120
    python benchmarks/rate_limit.py --in-process
    python benchmarks/rate_limit.py --concurrency-limits 4 16 --latencies-ms 50 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Protocol

from langchain_openai import ChatOpenAI

from fanfold import EVENT_TYPE, TaskPlan, compile_plan, resolve_model
from fanfold.scheduling.limits import RateLimiter
from fanfold.testing import MODEL_ID, SimServer, SimServerConfig

KEY = "sk-bench-rate-limit"
GOODPUT_TARGET = 0.90
SHARE_429_TARGET = 0.05


class Server(Protocol):
    """What the runners need of a server: its URL and its counters."""

    @property
    def base_url(self) -> str: ...

    @property
    def request_count(self) -> int: ...

    def status_counts(self) -> dict[str | int, int]: ...

    def reset(self) -> None: ...


def _serve(config: dict[str, Any], conn: Connection) -> None:
    """Child process: run a SimServer and answer counter queries until told to stop."""
    with SimServer(SimServerConfig(**config)) as srv:
        conn.send(srv.base_url)
        while True:
            command = conn.recv()
            if command == "counts":
                conn.send(srv.status_counts())
            elif command == "count":
                conn.send(srv.request_count)
            elif command == "reset":
                srv.reset()
                conn.send(None)
            else:
                conn.send(None)
                return


class ServerProcess:
    """A SimServer in a child process, with the same counters as SimServer."""

    def __init__(self, config: SimServerConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(config.model_dump(), child), daemon=True
        )
        self.base_url = ""

    def _ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    @property
    def request_count(self) -> int:
        count: int = self._ask("count")
        return count

    def status_counts(self) -> dict[str | int, int]:
        counts: dict[str | int, int] = self._ask("counts")
        return counts

    def reset(self) -> None:
        self._ask("reset")

    def __enter__(self) -> ServerProcess:
        self._process.start()
        self.base_url = self._conn.recv()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._ask("stop")
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


@contextlib.contextmanager
def serving(config: SimServerConfig, *, in_process: bool) -> Iterator[Server]:
    """A SimServer on a thread of this process, or in a child process."""
    server: Any = SimServer(config) if in_process else ServerProcess(config)
    with server as srv:
        yield srv


@dataclass
class Outcome:
    runner: str
    wall: float
    succeeded: int
    lost: int
    rate_limited: int
    requests: int
    note: str = ""
    busy: float = 0.0
    """First call's start to last call's end, seconds (fanfold runners)."""

    def goodput(self, limit: float) -> float:
        return self.succeeded / self.wall / limit if self.wall > 0 else 0.0

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


def make_plan(n: int, shape: str, seed: int) -> TaskPlan:
    """`n` subtasks: independent, or a random 3-layer DAG (0-2 deps on the layer above)."""
    rng = random.Random(seed)
    layers = 3
    subtasks: list[dict[str, Any]] = []
    by_layer: list[list[str]] = [[] for _ in range(layers)]
    for i in range(n):
        sid = f"t{i:04d}"
        deps: list[str] = []
        if shape == "dag":
            layer = i * layers // n
            if layer > 0:
                above = by_layer[layer - 1]
                deps = rng.sample(above, k=min(len(above), rng.randint(0, 2)))
            by_layer[layer].append(sid)
        # A short prompt: dependency outputs are not placed in it, only appended.
        subtasks.append({"id": sid, "prompt": f"[{sid}] answer briefly", "depends_on": deps})
    return TaskPlan.model_validate({"task": "rate-limit benchmark", "subtasks": subtasks})


async def run_fanfold(
    srv: Server,
    plan: TaskPlan,
    deadline: float,
    limiter: RateLimiter | None = None,
    label: str = "fanfold (adaptive, cold)",
) -> Outcome:
    limiter = limiter or RateLimiter()  # cold: no rate known, adaptive
    model = resolve_model(f"openai:{MODEL_ID}", base_url=srv.base_url, api_key=KEY)
    graph = compile_plan(plan, model=model, aggregator=None, rate_limiter=limiter)
    succeeded: set[str] = set()
    starts: list[float] = []
    ends: list[float] = []

    async def consume() -> None:
        async for chunk in graph.astream({"inputs": {}}, stream_mode="custom"):
            if isinstance(chunk, dict) and chunk.get("type") == EVENT_TYPE:
                if chunk["status"] == "succeeded":
                    succeeded.add(chunk["subtask"])
                    starts.append(chunk["started_at"])
                    ends.append(chunk["finished_at"])

    note = ""
    start = time.perf_counter()
    try:
        await asyncio.wait_for(consume(), deadline)
    except TimeoutError:
        note = f"deadline {deadline:.0f}s hit"
    wall = time.perf_counter() - start
    rate = f"{limiter.rate:.1f}" if limiter.rate is not None else "none"
    seen = limiter.snapshot()
    learned = (
        f"learned pace {rate} rps, window {seen['window']} "
        f"({seen['window_cuts']} window cuts, {seen['rate_cuts']} pace cuts)"
    )
    note = "; ".join(filter(None, [note, learned]))
    n = len(plan.subtasks)
    counts = srv.status_counts()
    return Outcome(
        label,
        wall,
        len(succeeded),
        n - len(succeeded),
        counts.get(429, 0),
        srv.request_count,
        note,
        busy=max(ends) - min(starts) if starts else 0.0,
    )


async def run_plain(srv: Server, prompts: list[str], concurrency: int, deadline: float) -> Outcome:
    llm = ChatOpenAI(model=MODEL_ID, base_url=srv.base_url, api_key=KEY, max_retries=2)
    semaphore = asyncio.Semaphore(concurrency)
    starts: list[float] = []
    ends: list[float] = []

    async def one(prompt: str) -> Any:
        async with semaphore:
            starts.append(time.time())
            reply = await llm.ainvoke(prompt)
            ends.append(time.time())
            return reply

    note = ""
    start = time.perf_counter()
    tasks = [asyncio.ensure_future(one(p)) for p in prompts]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - start
    if pending:
        note = f"deadline {deadline:.0f}s hit"
    ok = sum(1 for t in done if not t.cancelled() and t.exception() is None)
    errors = {type(t.exception()).__name__ for t in done if t.exception() is not None}
    if errors:
        note = "; ".join(filter(None, [note, "errors: " + ", ".join(sorted(errors))]))
    counts = srv.status_counts()
    return Outcome(
        f"plain ChatOpenAI (max_retries=2, sem {concurrency})",
        wall,
        ok,
        len(prompts) - ok,
        counts.get(429, 0),
        srv.request_count,
        note,
        busy=max(ends) - min(starts) if ends else 0.0,
    )


async def warm_up(srv: Server) -> None:
    """Import, client and connection set-up costs outside the timings."""
    llm = ChatOpenAI(model=MODEL_ID, base_url=srv.base_url, api_key=KEY, max_retries=5)
    await asyncio.gather(*(llm.ainvoke(f"warm {i}") for i in range(5)))


def allowed_rate(limit: int, latency_ms: float, sigma: float) -> float:
    """Requests per second a concurrency limit allows: limit / mean latency (lognormal)."""
    return limit / (latency_ms / 1000.0 * math.exp(sigma**2 / 2))


def told_allowed(ideal: float, *told: Any) -> float:
    """What a concurrency limit allows here, requests per second: the ideal, or the
    faster told baseline's measured rate if no client told the limit reaches the ideal."""
    rates = [o.succeeded / o.busy for o in told if o.busy > 0 and o.succeeded]
    return min(ideal, max(rates)) if rates else ideal


def window_targets(goodput: float, share_429: float, lost: int) -> str:
    """The hidden-concurrency targets, and whether they are met."""
    met = goodput >= GOODPUT_TARGET and share_429 <= SHARE_429_TARGET and lost == 0
    return (
        f"target goodput >= {GOODPUT_TARGET:.2f}, 429s <= {SHARE_429_TARGET:.0%}, 0 lost: "
        f"{'met' if met else 'missed'}"
    )


async def concurrency_cases(args: argparse.Namespace) -> None:
    """Each hidden concurrency limit at each latency: cold fanfold vs. told baselines."""
    print(
        f"hidden concurrency limits (429 beyond them, retry hints "
        f"{'on' if args.hints else 'off'}), latency lognormal sigma {args.sigma:g}, "
        f"about {args.case_seconds:g} s of work per case; goodput = successes per second "
        f"over the busy period / allowed, allowed = min(ideal = limit / mean latency, the "
        f"faster told baseline's rate: fanfold told or plain ChatOpenAI sem limit); server "
        f"{'on a thread of this process' if args.in_process else 'in a child process'}"
    )
    header = (
        f"{'limit':>5} {'lat ms':>6} {'n':>5} {'runner':<26} {'busy s':>7} {'rate/s':>7} "
        f"{'goodput':>7} {'429 share':>9} {'lost':>5}"
    )
    print(header)
    print("-" * len(header))
    for limit in args.concurrency_limits:
        for latency_ms in args.latencies_ms:
            ideal = allowed_rate(limit, latency_ms, args.sigma)
            n = max(40, round(args.case_seconds * ideal))
            plan = make_plan(n, "independent", args.seed)
            config = SimServerConfig(
                latency_median=latency_ms / 1000.0,
                latency_sigma=args.sigma,
                rate_limit_concurrency=limit,
                retry_after_hints=args.hints,
                seed=args.seed,
            )
            deadline = args.deadline or max(30.0, 8 * n / ideal)
            with serving(config, in_process=args.in_process) as srv:
                await warm_up(srv)
                srv.reset()
                cold = await run_fanfold(srv, plan, deadline, RateLimiter(), "fanfold cold")
                srv.reset()
                told = await run_fanfold(
                    srv, plan, deadline, RateLimiter(max_concurrency=limit), "fanfold told"
                )
                srv.reset()
                plain = await run_plain(srv, [s.prompt for s in plan.subtasks], limit, deadline)
                plain.runner = f"plain ChatOpenAI sem {limit}"
            allowed = told_allowed(ideal, told, plain)
            print(
                f"{limit:>5} {latency_ms:>6g} {n:>5} ideal {ideal:.1f}/s, told baseline "
                f"{told_allowed(math.inf, told, plain):.1f}/s: allowed {allowed:.1f}/s"
            )
            for outcome in (cold, told, plain):
                rate = outcome.succeeded / outcome.busy if outcome.busy else 0.0
                good = rate / allowed
                extra = ""
                if outcome is cold:
                    extra = "  " + window_targets(good, outcome.share_429, outcome.lost)
                    extra += f"; {rate / ideal:.2f} x ideal"
                    if told.busy and told.succeeded:
                        extra += f", {rate / (told.succeeded / told.busy):.2f} x fanfold told"
                print(
                    f"{limit:>5} {latency_ms:>6g} {n:>5} {outcome.runner:<26} "
                    f"{outcome.busy:>7.2f} {rate:>7.1f} {good:>7.2f} {outcome.share_429:>9.1%} "
                    f"{outcome.lost:>5}{extra}  ({outcome.note})",
                    flush=True,
                )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=500)
    parser.add_argument("--limit", type=float, default=50.0, help="hidden rps limit (50)")
    parser.add_argument("--burst", type=float, default=None, help="token bucket size")
    parser.add_argument("--latency-ms", type=float, default=32.0, help="median latency (32)")
    parser.add_argument("--sigma", type=float, default=0.25, help="lognormal sigma (0.25)")
    parser.add_argument("--shape", choices=["independent", "dag"], default="independent")
    parser.add_argument("--concurrency", type=int, default=100, help="plain runner's semaphore")
    parser.add_argument("--deadline", type=float, default=None, help="seconds per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--in-process", action="store_true", help="run the server on a thread of this process"
    )
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
    parser.add_argument(
        "--no-hints", dest="hints", action="store_false", help="429s without retry-after"
    )
    args = parser.parse_args()
    if args.concurrency_limits:
        await concurrency_cases(args)
        return
    ideal = args.subtasks / args.limit
    deadline = args.deadline or max(30.0, 6 * ideal)

    plan = make_plan(args.subtasks, args.shape, args.seed)
    prompts = [s.prompt for s in plan.subtasks]
    config = SimServerConfig(
        latency_median=args.latency_ms / 1000.0,
        latency_sigma=args.sigma,
        rate_limit_rps=args.limit,
        rate_limit_burst=args.burst,
        seed=args.seed,
    )
    with serving(config, in_process=args.in_process) as srv:
        await warm_up(srv)
        srv.reset()
        fanfold = await run_fanfold(srv, plan, deadline)
        srv.reset()
        plain = await run_plain(srv, prompts, args.concurrency, deadline)

    burst = config.effective_burst
    print(
        f"{args.subtasks} subtasks ({args.shape}), hidden limit {args.limit:g} rps "
        f"(burst {burst:g}), latency median {args.latency_ms:g} ms sigma {args.sigma:g}; "
        f"ideal {ideal:.1f}s, deadline {deadline:.0f}s; server "
        f"{'on a thread of this process' if args.in_process else 'in a child process'}"
    )
    header = (
        f"{'runner':<40} {'wall s':>7} {'goodput/limit':>13} {'ok':>5} {'lost':>5} "
        f"{'429s':>6} {'requests':>8}"
    )
    print(header)
    print("-" * len(header))
    for outcome in (fanfold, plain):
        print(
            f"{outcome.runner:<40} {outcome.wall:>7.2f} {outcome.goodput(args.limit):>13.2f} "
            f"{outcome.succeeded:>5} {outcome.lost:>5} {outcome.rate_limited:>6} "
            f"{outcome.requests:>8}  {outcome.note}"
        )
    good = fanfold.goodput(args.limit)
    met = good >= GOODPUT_TARGET and fanfold.lost == 0
    print(
        f"fanfold target (goodput >= {GOODPUT_TARGET:.2f} x limit, 0 lost): "
        f"{'met' if met else 'missed'} ({good:.2f}, {fanfold.lost} lost)"
    )


if __name__ == "__main__":
    asyncio.run(main())
