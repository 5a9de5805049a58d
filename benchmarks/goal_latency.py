"""Goal latency: streamed planning against plan-then-run, with the real ChatOpenAI on a socket.

A loopback `SimServer` answers the planner with a scripted plan streamed at about 50
tokens per second (16-character pieces, 4 tokens each, 0.08 s apart) and every call
(the planner's first token too) after a latency drawn around 2 s (lognormal, median 2 s,
sigma 0.3: about 1-3 s). The plans have 5, 10 and 20 subtasks, listed in dependency
order as a planner writes them: research pipelines of two steps (`gather_i` ->
`analyse_i`), an independent `background` subtask when the count needs one, and a final
`report` over every analysis. No aggregation call.

Two runners drive the same `compile_goal` graph, alternately, with the server's random
streams restarted from the same seed before each run:

* plan-then-run: `compile_goal(streamed=False)`, the whole plan first;
* streamed: `compile_goal()`, each subtask starting once its object is complete in the
  stream and its dependencies are known.

For each size it prints the median end-to-end time of each and their ratio (target
<= 0.75 at 10 subtasks), and, for the streamed runs, when the first subtask's request
reached the server against when its object was complete in the planner's stream, both
counted from the planner's request (target <= 1.2x).

    python benchmarks/goal_latency.py            # 3 runs per size and runner
    python benchmarks/goal_latency.py --runs 1 --sizes 5
    python benchmarks/goal_latency.py --runs 1 --sizes 10 --timeline   # where time goes
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from langchain_openai import ChatOpenAI

import fanfold.planning.stream as plan_stream
from fanfold.graphs.goal import compile_goal
from fanfold.testing import SimServer, SimServerConfig

GOAL = "Research the state of tidal power and write a short report"
PLANNER = "Plan this goal"
RATIO_TARGET = 0.75
"""Streamed end-to-end time over plan-then-run's, at 10 subtasks."""
FIRST_CALL_TARGET = 1.2
"""First subtask request over its object's completion in the stream."""
PIECE_DELAY = 0.08
"""Seconds between 16-character pieces (about 4 tokens): about 50 tokens per second."""


def plan_data(n: int) -> dict[str, Any]:
    """A dependency-ordered plan of `n` subtasks: pipelines, maybe a background, a report."""
    subtasks: list[dict[str, Any]] = []
    pipelines = (n - 1) // 2
    if (n - 1) % 2:
        subtasks.append(
            {
                "id": "background",
                "prompt": "[background] Summarise the history of tidal power in a paragraph.",
                "depends_on": [],
            }
        )
    for i in range(pipelines):
        subtasks.append(
            {
                "id": f"gather_{i}",
                "prompt": f"[gather_{i}] Collect recent facts about tidal power topic {i}.",
                "depends_on": [],
            }
        )
        subtasks.append(
            {
                "id": f"analyse_{i}",
                "prompt": f"[analyse_{i}] Analyse these facts:\n{{gather_{i}}}",
                "depends_on": [f"gather_{i}"],
            }
        )
    analyses = [s["id"] for s in subtasks if s["id"].startswith("analyse_")]
    extra = [s["id"] for s in subtasks if s["id"] == "background"]
    uses = "\n".join(f"{{{sid}}}" for sid in [*extra, *analyses])
    subtasks.append(
        {
            "id": "report",
            "prompt": f"[report] Write the report from these notes:\n{uses}",
            "depends_on": [*extra, *analyses],
        }
    )
    assert len(subtasks) == n
    return {"task": "A short report on tidal power", "subtasks": subtasks}


class _Clock:
    """When the planner's stream completed subtask objects (time.monotonic())."""

    first_object: float | None = None
    objects: dict[str, float] = {}  # noqa: RUF012 - one run at a time


def _instrument() -> None:
    original = plan_stream.PlanScanner.feed

    def feed(self: plan_stream.PlanScanner, text: str) -> list[Any]:
        found = original(self, text)
        now = time.monotonic()
        if found and _Clock.first_object is None:
            _Clock.first_object = now
        for obj in found:
            if isinstance(obj, dict):
                _Clock.objects.setdefault(str(obj.get("id")), now)
        return found

    plan_stream.PlanScanner.feed = feed  # type: ignore[method-assign]


async def run_once(
    srv: SimServer, *, streamed: bool, seed: int, timeline: bool = False
) -> tuple[float, float | None]:
    """One goal run: (end-to-end seconds, first-call ratio or None for plan-then-run)."""
    srv.update(seed=seed)
    srv.reset()
    _Clock.first_object = None
    _Clock.objects = {}
    model = ChatOpenAI(
        model="sim-model", base_url=srv.base_url, api_key="sk-bench", max_retries=0, timeout=60
    )
    graph = compile_goal(model=model, aggregator=None, streamed=streamed, max_subtasks=25)
    start = time.perf_counter()
    state = await graph.ainvoke({"goal": GOAL})
    elapsed = time.perf_counter() - start
    failed = [r.error for r in state["results"].values() if not r.ok]
    assert not failed, f"{len(failed)} subtasks failed, e.g. {failed[0]}"
    if timeline:
        print_timeline(srv, state, streamed=streamed)
    if not streamed or _Clock.first_object is None:
        return elapsed, None
    log = srv.log
    planner = next(r.time for r in log if r.prompt.startswith(PLANNER))
    first_call = min(r.time for r in log if not r.prompt.startswith(PLANNER))
    return elapsed, (first_call - planner) / (_Clock.first_object - planner)


def print_timeline(srv: SimServer, state: dict[str, Any], *, streamed: bool) -> None:
    """Per subtask, seconds from the planner's request: its object complete in the stream,
    its dependencies finished, its request at the server, its result; then the plan's end."""
    log = srv.log
    planner = next(r.time for r in log if r.prompt.startswith(PLANNER))
    shift = time.time() - time.monotonic()  # results carry wall-clock times
    finished = {
        sid: r.finished_at - shift - planner
        for sid, r in state["results"].items()
        if r.finished_at is not None
    }
    plan = state["plan"]
    runner = "streamed" if streamed else "plan-then-run"
    print(f"  timeline ({runner}), seconds from the planner's request:")
    print("    subtask        object  deps done  request  finished  request - max(object, deps)")
    for sub in plan["subtasks"]:
        sid = sub["id"]
        obj = _Clock.objects.get(sid)
        obj_at = obj - planner if obj is not None else None
        deps = max((finished[d] for d in sub.get("depends_on") or []), default=0.0)
        asked = min((r.time for r in log if r.prompt.startswith(f"[{sid}]")), default=None)
        asked_at = asked - planner if asked is not None else None
        ready = max(obj_at or 0.0, deps)
        late = f"{asked_at - ready:+.2f}" if asked_at is not None else "-"
        print(
            f"    {sid:<12} {_s(obj_at):>7} {_s(deps):>10} {_s(asked_at):>8} "
            f"{_s(finished.get(sid)):>9}  {late}"
        )
    ends = [r.time for r in log if r.prompt.startswith(PLANNER)]
    if _Clock.objects:
        last = max(_Clock.objects.values()) - planner
        print(f"    last object complete at {last:.2f} s; planner requests at {ends}")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


async def main(sizes: list[int], runs: int, timeline: bool = False) -> None:
    _instrument()
    rows = []
    for n in sizes:
        config = SimServerConfig(
            scripted={PLANNER: plan_data(n)},
            token_delay=PIECE_DELAY,
            latency_median=2.0,
            latency_sigma=0.3,
        )
        whole: list[float] = []
        streamed: list[float] = []
        first: list[float] = []
        with SimServer(config) as srv:
            await run_once(srv, streamed=True, seed=99)  # warm-up: imports, first connections
            for run in range(runs):
                whole.append((await run_once(srv, streamed=False, seed=run))[0])
                seconds, ratio = await run_once(
                    srv, streamed=True, seed=run, timeline=timeline and run == 0
                )
                streamed.append(seconds)
                if ratio is not None:
                    first.append(ratio)
        rows.append((n, whole, streamed, first))
        print(
            f"  {n:>2} subtasks: plan-then-run {', '.join(f'{s:.2f}' for s in whole)} s; "
            f"streamed {', '.join(f'{s:.2f}' for s in streamed)} s",
            flush=True,
        )
    print()
    print("subtasks  plan-then-run  streamed  streamed/plan-then-run  first call/first object")
    for n, whole, streamed, first in rows:
        ratio = statistics.median(streamed) / statistics.median(whole)
        target = f"(target <= {RATIO_TARGET})" if n == 10 else ""
        first_ratio = f"{statistics.median(first):.2f}x" if first else "-"
        print(
            f"{n:>8}  {statistics.median(whole):>12.2f}s  {statistics.median(streamed):>7.2f}s  "
            f"{ratio:>10.2f} {target:<16}  {first_ratio} (target <= {FIRST_CALL_TARGET}x)"
        )
    print(f"medians of {runs} run(s) per runner; calls ~2 s (lognormal, sigma 0.3); ")
    print(f"plan streamed at ~{4 / PIECE_DELAY:.0f} tokens/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument(
        "--timeline", action="store_true", help="print each subtask's timeline (first run)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.sizes, args.runs, args.timeline))
