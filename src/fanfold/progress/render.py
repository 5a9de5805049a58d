"""Drawing a progress snapshot with rich."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fanfold.formatting import batch_state, clock, money
from fanfold.progress.snapshot import Eta, ItemCounts, ProgressSnapshot, RunningRow

__all__ = ["eta_text", "format_seconds", "render_progress"]


format_seconds = clock
"""The live view's clock (`fanfold.formatting.clock`), under its earlier name."""


def eta_text(eta: Eta) -> str:
    """`ETA ~41s (learned durations)`, or `ETA ? (...)` before there is an estimate."""
    if eta.seconds is None:
        return f"ETA ? ({eta.source})"
    if eta.seconds < 1:
        return f"ETA <1s ({eta.source})"
    return f"ETA ~{clock(eta.seconds, tenths=False)} ({eta.source})"


def _items_text(items: ItemCounts) -> str:
    total = "?" if items.total is None else str(items.total)
    parts = [f"{items.done}/{total} items done"]
    for count, word in ((items.failed, "failed"), (items.skipped, "skipped")):
        if count:
            parts.append(f"{count} {word}")
    parts.append(f"{items.running} in flight")
    if items.backoff:
        parts.append(f"{items.backoff} in backoff")
    if items.waiting:
        parts.append(f"{items.waiting} queued")
    return " · ".join(parts)


def render_progress(snapshot: ProgressSnapshot, *, max_running: int = 10) -> RenderableType:
    """The live view of `snapshot`: a bar, the counts, and at most `max_running` running rows.

    Every text from the run (ids, errors) is shown as is, never read as rich markup.
    """
    if snapshot.planning:
        return Text(f"fanfold  planning the goal…  {clock(snapshot.elapsed)}")
    counts = snapshot.counts
    finished = counts.running == 0 and counts.waiting == 0 and counts.backoff == 0
    status = f"{counts.finished}/{counts.total} subtasks  {clock(snapshot.elapsed)}"
    if snapshot.aggregating:
        status += "  aggregating"
    else:
        status += "  finished" if finished else f"  {eta_text(snapshot.eta)}"
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True, min_width=7)
    head.add_column(no_wrap=True, min_width=16)
    head.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    head.add_row(
        Text("fanfold", style="bold"),
        ProgressBar(
            total=max(snapshot.calls_total, counts.total, 1),
            completed=snapshot.calls_finished or counts.finished,
            width=16,
        ),
        Text(status),
    )
    tally = Text(no_wrap=True, overflow="ellipsis")
    for label, count, style in (
        ("done", counts.done, "green"),
        ("failed", counts.failed, "red" if counts.failed else ""),
        ("skipped", counts.skipped, "yellow" if counts.skipped else ""),
        ("running", counts.running, "blue"),
        ("backoff", counts.backoff, "magenta"),
        ("waiting", counts.waiting, "dim"),
    ):
        if label == "backoff" and not count:
            continue  # counted apart only while something waits out a backoff
        if tally:
            tally.append(" · ")
        tally.append(f"{label} {count}", style=style)
    tally.append(f"   tokens {snapshot.tokens:,}")
    if snapshot.cost is not None:
        unknown = snapshot.cost_unknown
        unknown_text = f" (+{unknown} calls without a cost)" if unknown else ""
        tally.append(f"   cost {money(snapshot.cost)}{unknown_text}")
    if snapshot.rate_limited:
        tally.append(f"   429s {snapshot.rate_limited}", style="magenta")
    if snapshot.pace is not None:
        tally.append(f"   pace {snapshot.pace:.1f} calls/s")
    parts: list[RenderableType] = [head, tally]
    if snapshot.items is not None:
        line = "map items: " + _items_text(snapshot.items).replace(" items done", " done")
        parts.append(Text(line, style="dim", no_wrap=True, overflow="ellipsis"))
    rows = snapshot.running[:max_running]
    if snapshot.aggregating:
        rows = [RunningRow(id="aggregate", elapsed=0.0, attempt=1), *rows][:max_running]
    if rows:
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, overflow="ellipsis", max_width=40)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        for row in rows:
            notes = []
            if row.batch is not None:
                notes.append(batch_state(row.batch))
            if row.items is not None:
                notes.append(_items_text(row.items))
            if row.attempt > 1:
                notes.append(f"attempt {row.attempt}")
            if row.retrying:
                notes.append(f"retrying after: {row.error}" if row.error else "retrying")
            elapsed = (
                "" if row.id == "aggregate" and not row.elapsed else clock(row.elapsed)
            )
            table.add_row(Text("  " + row.id), Text(elapsed), Text(", ".join(notes)))
        parts.append(table)
    hidden = len(snapshot.running) - len(rows)
    if hidden > 0:
        parts.append(Text(f"  … and {hidden} more running", style="dim"))
    return Group(*parts)
