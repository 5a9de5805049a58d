"""HTTP throughput: fanfold's overhead over a plain gather, with the real ChatOpenAI on a socket.

1000 independent subtasks, a loopback `SimServer` answering every request after 50 ms (no
hidden limits, no faults) and a concurrency of 100. The same model object (the real
ChatOpenAI that `resolve_model("openai:sim-model", base_url=...)` builds: SDK retries off,
finite timeout) is driven by fanfold and a plain gather, and the raw SDK runs beside them,
all three alternately:

* fanfold: `compile_plan(plan, model=..., max_concurrency=100,
  rate_limiter=RateLimiter(max_concurrency=100), aggregator=None).ainvoke(...)`, with a
  fresh limiter every run;
* plain: `asyncio.gather` of `model.ainvoke(messages)` under `asyncio.Semaphore(100)`, the
  same system and user messages fanfold sends;
* raw SDK: the same gather of `AsyncOpenAI().chat.completions.create(...)` (one client,
  SDK retries off) with those messages as dicts: what the client library itself costs.

Each wall time is divided by the ideal, 1000 / 100 x 50 ms = 0.5 s (no client can do
better with 100 calls in flight). The table prints every run and the median of `--runs`
(3). The target is fanfold's median at most 1.10x the plain gather's, measured in the
same run; plain / raw SDK shows ChatOpenAI's own share (the earlier target, a median
<= 1.15x the ideal, is printed too). By default the server runs in a child process, as
a real provider would (`--in-process` puts it on a thread of this process, where its
CPU time competes with the client's for the GIL). `--profile` runs fanfold once more
under cProfile and prints where the time goes.

    python benchmarks/http_throughput.py
    python benchmarks/http_throughput.py --in-process --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage
from openai import AsyncOpenAI
from rate_limit import Server, serving

from fanfold import TaskPlan, compile_plan, resolve_model
from fanfold.scheduling.limits import RateLimiter
from fanfold.testing import MODEL_ID, SimServerConfig

KEY = "sk-bench-throughput"
TARGET = 1.10
"""fanfold's median wall time over the plain gather's."""
IDEAL_TARGET = 1.15
TASK = "http throughput benchmark"


def make_plan(n: int) -> TaskPlan:
    subtasks = [{"id": f"t{i:04d}", "prompt": f"[t{i:04d}] answer briefly"} for i in range(n)]
    return TaskPlan.model_validate({"task": TASK, "subtasks": subtasks})


def messages_for(plan: TaskPlan) -> list[list[BaseMessage]]:
    """What fanfold sends for each subtask: its default system message and the prompt."""
    from fanfold.plan.prompts import subtask_messages

    return [subtask_messages(s, task=TASK, prompt=s.prompt) for s in plan.subtasks]


async def run_fanfold(model: Any, plan: TaskPlan, concurrency: int) -> float:
    graph = compile_plan(
        plan,
        model=model,
        aggregator=None,
        max_concurrency=concurrency,
        rate_limiter=RateLimiter(max_concurrency=concurrency),
    )
    start = time.perf_counter()
    state = await graph.ainvoke({"inputs": {}})
    elapsed = time.perf_counter() - start
    failed = [r.error for r in state["results"].values() if not r.ok]
    assert not failed, f"{len(failed)} subtasks failed, e.g. {failed[0]}"
    return elapsed


async def run_plain(model: Any, messages: list[list[BaseMessage]], concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt: list[BaseMessage]) -> Any:
        async with semaphore:
            return await model.ainvoke(prompt)

    start = time.perf_counter()
    await asyncio.gather(*(one(m) for m in messages))
    return time.perf_counter() - start


def sdk_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """The same messages as the OpenAI SDK takes them."""
    return [
        {"role": "system" if isinstance(m, SystemMessage) else "user", "content": str(m.content)}
        for m in messages
    ]


async def run_raw(
    client: AsyncOpenAI, messages: list[list[dict[str, str]]], concurrency: int
) -> float:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt: list[dict[str, str]]) -> Any:
        async with semaphore:
            return await client.chat.completions.create(model=MODEL_ID, messages=prompt)  # type: ignore[arg-type]

    start = time.perf_counter()
    await asyncio.gather(*(one(m) for m in messages))
    return time.perf_counter() - start


async def profile_fanfold(model: Any, plan: TaskPlan, concurrency: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    elapsed = await run_fanfold(model, plan, concurrency)
    profiler.disable()
    out = io.StringIO()
    out.write(f"cProfile of one fanfold run ({elapsed:.2f}s wall, profiler overhead included)\n")
    stats = pstats.Stats(profiler, stream=out)
    by_package: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        package = package_of(filename)
        by_package[package] = by_package.get(package, 0.0) + tottime
    total = sum(by_package.values())
    out.write(f"own time by package (total {total:.2f}s):\n")
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:top]:
        out.write(f"  {package:<28} {seconds:>6.2f}s {seconds / total:>6.1%}\n")
    stats.strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def package_of(filename: str) -> str:
    """The top-level package a profiled function lives in (stdlib modules by name)."""
    path = Path(filename)
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else marker
    if "fanfold" in parts:
        return "fanfold"
    if filename.startswith("<") or not path.suffix:
        return "builtins"
    return f"stdlib:{path.parent.name if path.parent.name != 'python3.11' else path.stem}"


def check_server(srv: Server, expected: int) -> None:
    counts = srv.status_counts()
    assert counts == {200: expected}, f"server answered {counts}, expected {expected} x 200"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="server on a thread here")
    parser.add_argument("--profile", action="store_true", help="cProfile one more fanfold run")
    parser.add_argument("--top", type=int, default=25, help="profile rows to print")
    args = parser.parse_args()
    n, concurrency, latency = args.subtasks, args.concurrency, args.latency_ms / 1000.0
    ideal = n / concurrency * latency

    plan = make_plan(n)
    messages = messages_for(plan)
    config = SimServerConfig(latency=latency)
    raw_messages = [sdk_messages(m) for m in messages]
    times: dict[str, list[float]] = {"fanfold": [], "plain": [], "raw": []}
    profile = ""
    with serving(config, in_process=args.in_process) as srv:
        model = resolve_model(f"openai:{MODEL_ID}", base_url=srv.base_url, api_key=KEY)
        client = AsyncOpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0, timeout=60.0)
        # Warm up imports, LangGraph's first compile and the connection pool.
        await run_fanfold(model, make_plan(concurrency), concurrency)
        await run_plain(model, messages[:concurrency], concurrency)
        await run_raw(client, raw_messages[:concurrency], concurrency)
        for _ in range(args.runs):
            for name in ("fanfold", "plain", "raw"):
                srv.reset()
                if name == "fanfold":
                    times[name].append(await run_fanfold(model, plan, concurrency))
                elif name == "plain":
                    times[name].append(await run_plain(model, messages, concurrency))
                else:
                    times[name].append(await run_raw(client, raw_messages, concurrency))
                check_server(srv, n)
        await client.close()
        if args.profile:
            profile = await profile_fanfold(model, plan, concurrency, args.top)

    where = "on a thread of this process" if args.in_process else "in a child process"
    print(
        f"{n} calls, {latency * 1000:g} ms server latency, concurrency {concurrency}; "
        f"ideal {n} / {concurrency} x {latency * 1000:g} ms = {ideal:.2f}s; server {where}"
    )
    runs = " ".join(f"{'run ' + str(i + 1):>7}" for i in range(args.runs))
    header = f"{'runner':<44} {runs} {'median':>7} {'median/ideal':>12}"
    print(header)
    print("-" * len(header))
    labels = {
        "fanfold": f"fanfold compile_plan(max_concurrency={concurrency})",
        "plain": f"plain gather + Semaphore({concurrency}), same model",
        "raw": f"raw AsyncOpenAI gather + Semaphore({concurrency})",
    }
    for name, label in labels.items():
        cells = " ".join(f"{t:>6.2f}s" for t in times[name])
        median = statistics.median(times[name])
        print(f"{label:<44} {cells} {median:>6.2f}s {median / ideal:>12.2f}")
    ratio = statistics.median(times["fanfold"]) / ideal
    over_plain = statistics.median(times["fanfold"]) / statistics.median(times["plain"])
    print(
        f"fanfold median / plain gather median: {over_plain:.2f}x (target <= {TARGET:.2f}x): "
        f"{'met' if over_plain <= TARGET else 'MISSED'}"
    )
    plain_over_raw = statistics.median(times["plain"]) / statistics.median(times["raw"])
    fanfold_over_raw = statistics.median(times["fanfold"]) / statistics.median(times["raw"])
    print(
        f"plain gather median / raw SDK median: {plain_over_raw:.2f}x (ChatOpenAI's own share); "
        f"fanfold / raw SDK: {fanfold_over_raw:.2f}x (no target)"
    )
    print(
        f"fanfold median / ideal: {ratio:.2f} (earlier target <= {IDEAL_TARGET:.2f}): "
        f"{'met' if ratio <= IDEAL_TARGET else 'MISSED'}"
    )
    if profile:
        print()
        print(profile)


if __name__ == "__main__":
    asyncio.run(main())
