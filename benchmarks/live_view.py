"""Live view cost: a 5,000-item map's events through the old fold vs the growing record.

Issue 15 made the live view (`fanfold.progress.Progress`) a view of the run record as it
grows (`fanfold.record.RecordBuilder`) instead of a fold of its own. This measures what
that costs the live view. It records the lifecycle events of one real run (a plan with
one subtask before a map over `--items` items, the simulated model at zero latency,
`stream_mode="custom"`), then feeds the same events, as the dicts the CLI's watch gets,
alternately through:

* old fold: `Progress` as it was before (commit OLD_FOLD, read from git), which folded
  events into its own per-subtask entries;
* growing record: today's `Progress`, whose `feed` adds each event to a RecordBuilder.

Each pass also takes a snapshot (what the view draws) every `--snapshot-every` events,
as the terminal redraw does a few times a second. It prints the median seconds per pass,
µs per event and growing / old fold side by side (target: <= 1.5x), the cost of one
snapshot at the end of each pass, and for context what a whole `record()` costs (what
rebuilding the record from scratch at every redraw would cost).

    python benchmarks/live_view.py                 # 5000 items, 7 passes each
    python benchmarks/live_view.py --items 20000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from fanfold import SimulatedChatModel, TaskPlan, compile_plan
from fanfold.progress import Progress
from fanfold.record import build_record

OLD_FOLD = "28273c8"
"""The last commit whose `Progress` folded events into its own model."""
TARGET = 1.5
ROOT = Path(__file__).resolve().parent.parent


def old_progress_class() -> type:
    """`Progress` as of OLD_FOLD, loaded from git with the snapshot module of its time."""

    def source(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{OLD_FOLD}:{path}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    snapshot = types.ModuleType("_old_fold_snapshot")
    sys.modules[snapshot.__name__] = snapshot
    exec(compile(source("src/fanfold/progress/snapshot.py"), "old/snapshot.py", "exec"), snapshot.__dict__)  # noqa: E501, S102
    model = types.ModuleType("_old_fold_model")
    text = source("src/fanfold/progress/model.py").replace(
        "from fanfold.progress.snapshot import", "from _old_fold_snapshot import"
    )
    exec(compile(text, "old/model.py", "exec"), model.__dict__)  # noqa: S102
    return model.Progress  # type: ignore[no-any-return]


def make_plan() -> TaskPlan:
    return TaskPlan.model_validate(
        {
            "task": "live view benchmark",
            "inputs": ["docs"],
            "subtasks": [
                {"id": "intro", "prompt": "Say what the documents are about."},
                {
                    "id": "each",
                    "prompt": "Summarise item {index}: {item} ({intro})",
                    "map": "docs",
                    "depends_on": ["intro"],
                },
            ],
        }
    )


async def record_run(items: int) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """One real run's runtime, final state and lifecycle events."""
    graph = compile_plan(make_plan(), model=SimulatedChatModel(latency=0.0), aggregator=None)
    docs = [f"document {i} about topic {i % 97}" for i in range(items)]
    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    stream = graph.astream({"inputs": {"docs": docs}}, stream_mode=["custom", "values"])
    async for mode, chunk in stream:
        if mode == "custom":
            events.append(chunk)
        else:
            state = chunk
    return graph.fanfold_runtime, state, events


def one_pass(
    make: Any, runtime: Any, inputs: dict[str, Any], events: list[dict[str, Any]], every: int
) -> tuple[float, float, Any]:
    """Seconds to feed every event (snapshots included), one final snapshot's seconds."""
    progress = make(runtime, inputs=inputs)
    gc.collect()
    start = time.perf_counter()
    for n, event in enumerate(events, 1):
        progress.feed(event)
        if n % every == 0:
            progress.snapshot(event["time"])
    fed = time.perf_counter() - start
    start = time.perf_counter()
    progress.snapshot(events[-1]["time"])
    return fed, time.perf_counter() - start, progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--snapshot-every", type=int, default=250, help="events between two snapshots"
    )
    args = parser.parse_args()

    old = old_progress_class()
    runtime, state, events = asyncio.run(record_run(args.items))
    inputs = dict(state["inputs"])
    print(
        f"{len(events)} events of a run with a map over {args.items} items; "
        f"a snapshot every {args.snapshot_every} events; {args.runs} passes each, alternating"
    )
    feeds: dict[str, list[float]] = {"old fold": [], "growing record": []}
    snaps: dict[str, list[float]] = {"old fold": [], "growing record": []}
    last: Any = None
    for _ in range(args.runs):
        for name, make in (("old fold", old), ("growing record", Progress)):
            fed, snap, progress = one_pass(make, runtime, inputs, events, args.snapshot_every)
            feeds[name].append(fed)
            snaps[name].append(snap)
            if name == "growing record":
                last = progress
    base = statistics.median(feeds["old fold"])
    print(f"{'':16}{'s/pass':>10}{'µs/event':>10}{'snapshot ms':>13}{'vs old':>9}")
    for name in feeds:
        median = statistics.median(feeds[name])
        snap_ms = statistics.median(snaps[name]) * 1e3
        print(
            f"{name:16}{median:10.4f}{median / len(events) * 1e6:10.2f}{snap_ms:13.3f}"
            f"{median / base:8.2f}x"
        )
    ratio = statistics.median(feeds["growing record"]) / base
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"target: growing record / old fold <= {TARGET:.1f}x per event: {ratio:.2f}x ({verdict})")

    assert last is not None
    start = time.perf_counter()
    last.record.record()
    whole = time.perf_counter() - start
    start = time.perf_counter()
    grown = last.record.record(state, runtime=runtime)
    final = time.perf_counter() - start
    start = time.perf_counter()
    built = build_record(state, events=events, runtime=runtime)
    rebuilt = time.perf_counter() - start
    assert grown.model_dump() == built.model_dump(), "the grown record is not build_record's"
    print(
        f"for context: one whole record() of the run so far {whole * 1e3:.0f} ms "
        f"(a redraw at 4/s rebuilding it would spend {min(whole * 4, 1.0):.0%} of a core); "
        f"the final record {final * 1e3:.0f} ms, build_record from scratch {rebuilt * 1e3:.0f} ms "
        "(the same record)"
    )
    sys.exit(0 if ratio <= TARGET else 1)


if __name__ == "__main__":
    if importlib.util.find_spec("fanfold") is None:  # pragma: no cover
        sys.exit("install fanfold first")
    main()
