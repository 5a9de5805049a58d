"""The report's timeline: one row per call, its queued, call, retry and backoff stretches."""

from __future__ import annotations

import math
from collections.abc import Iterable

from fanfold.formatting import batch_state, seconds
from fanfold.record.model import BatchRecord, CallRecord, RunRecord, Segment, SubtaskRecord
from fanfold.report._html import DIAMOND, e, slug

OPEN_ITEMS = 12
"""A map with at most this many items shows them expanded."""
_CLASS = {"queued": "wait", "backoff": "backoff"}
_NOTES = {"queued": "waited for a slot or limit", "backoff": "backoff"}


def ticks(span: float) -> list[float]:
    """Round tick positions (seconds from the start), about eight over `span`."""
    raw = span / 8
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    count = int(span / step) + 1
    return [i * step for i in range(count) if i * step <= span + 1e-12]


def _union(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class _Track:
    def __init__(self, record: RunRecord) -> None:
        self.span = max(record.end, 1e-6)
        self.ticks = ticks(self.span)
        self.gaps = [
            (a[1], b[0]) for a, b in zip(record.sessions, record.sessions[1:], strict=False)
        ]

    def x(self, t: float) -> float:
        return max(0.0, min(1000.0, t / self.span * 1000.0))

    def svg(
        self,
        row_id: str,
        group: str,
        status: str,
        critical: bool,
        segments: list[Segment],
        busy: list[tuple[float, float]] | None = None,
        extent: tuple[float, float] | None = None,
        batch: BatchRecord | None = None,
    ) -> str:
        out = [
            f'<line class="grid" x1="{self.x(t):.2f}" x2="{self.x(t):.2f}" y1="0" y2="16"/>'
            for t in self.ticks
        ]
        out += [
            f'<rect class="notrun" x="{self.x(a):.2f}" y="0" '
            f'width="{max(self.x(b) - self.x(a), 1.0):.2f}" height="16">'
            "<title>not running (between processes)</title></rect>"
            for a, b in self.gaps
        ]
        if extent is not None:
            x1, x2 = self.x(extent[0]), self.x(extent[1])
            out.append(
                f'<rect class="bar span st-{slug(status)}" data-subtask="{e(group)}" '
                f'data-call="{e(row_id)}" x="{x1:.2f}" y="4" width="{max(x2 - x1, 1.5):.2f}" '
                f'height="8"><title>{e(row_id)} · map</title></rect>'
            )
        for seg in segments:
            x1, x2 = self.x(seg.start), self.x(seg.end)
            if seg.kind == "call":
                cls = f"bar run st-{slug(status)}" if status != "unfinished" else "bar open"
            elif seg.kind in ("retry", "skip", "aggregate"):
                cls = f"bar {seg.kind}"
            else:
                cls = _CLASS.get(seg.kind, seg.kind)
            if critical and seg.kind in ("call", "retry"):
                cls += " crit"
            y, h = (4, 8) if seg.kind in ("queued", "backoff") else (2, 12)
            note = seg.note or _NOTES.get(seg.kind, seg.kind)
            tip = (
                f"{row_id} · {note} · +{seconds(seg.start)} → +{seconds(seg.end)} "
                f"({seconds(seg.end - seg.start)})"
            )
            out.append(
                f'<rect class="{cls}" data-subtask="{e(group)}" data-call="{e(row_id)}" '
                f'x="{x1:.2f}" y="{y}" width="{max(x2 - x1, 1.5):.2f}" height="{h}">'
                f"<title>{e(tip)}</title></rect>"
            )
        if batch is not None:
            out += self._batch(row_id, group, batch)
        for start, end in busy or []:
            out.append(
                f'<rect class="busy" x="{self.x(start):.2f}" y="6" '
                f'width="{max(self.x(end) - self.x(start), 1.0):.2f}" height="4"/>'
            )
        return (
            '<svg class="track" viewBox="0 0 1000 16" preserveAspectRatio="none" '
            f'width="100%" height="16" aria-hidden="true">{"".join(out)}</svg>'
        )

    def _batch(self, row_id: str, group: str, batch: BatchRecord) -> list[str]:
        """The provider batch as one bar, a stretch per status it went through."""
        end = batch.end if batch.end is not None else self.span
        states = batch.states or [(batch.status, batch.start or 0.0)]
        out = []
        for i, (status, start) in enumerate(states):
            stop = states[i + 1][1] if i + 1 < len(states) else end
            if stop <= start and i + 1 < len(states):
                continue
            x1, x2 = self.x(start), self.x(max(stop, start))
            tip = f"{row_id} · batch {batch.id} {status} · +{seconds(start)} → +{seconds(stop)}"
            out.append(
                f'<rect class="bar batch bs-{slug(status)}" data-subtask="{e(group)}" '
                f'data-call="{e(row_id)}" x="{x1:.2f}" y="1" width="{max(x2 - x1, 1.5):.2f}" '
                f'height="14"><title>{e(tip)}</title></rect>'
            )
        return out


def _info(call: CallRecord | SubtaskRecord, items: int = 0) -> str:
    took = (call.end - call.start) if call.end is not None and call.start is not None else None
    shown = took is not None and call.status != "skipped"
    bits: list[str] = [seconds(took)] if shown else [call.status]
    if call.attempts > 1 and not items:
        bits.append(f"{call.attempts} tries")
    if items:
        bits.append(f"{items} items")
    return " · ".join(bits)


def _line(track: _Track, call: CallRecord, group: str, label: str, critical: bool) -> str:
    cls = "g-row" + (" crit" if critical else "") + (" item" if call.item is not None else "")
    bars = track.svg(call.id, group, call.status, critical, call.segments)
    return (
        f'<div class="{cls}" data-id="{e(call.id)}" data-status="{e(call.status)}">'
        f'<span class="g-label">{DIAMOND if critical else ""}{label}</span>{bars}'
        f'<span class="g-info">{e(_info(call))}</span></div>'
    )


def timeline(record: RunRecord) -> str:
    """The timeline section."""
    track = _Track(record)
    body: list[str] = []

    def first(sub: SubtaskRecord) -> float:
        marks = [s.start for c in sub.calls for s in c.segments if s.kind != "queued"]
        return min(marks, default=math.inf)

    position = {s.id: i for i, s in enumerate(record.subtasks)}
    for sub in sorted(record.subtasks, key=lambda s: (first(s), position[s.id])):
        dot = f'<span class="dot st-{slug(sub.status)}"></span>'
        if sub.map is None and len(sub.calls) == 1 and sub.calls[0].id == sub.id:
            body.append(_line(track, sub.calls[0], sub.id, f"{dot}{e(sub.id)}", sub.critical))
            continue
        items = sorted(sub.calls, key=lambda c: c.item or 0)
        spans = [(s.start, s.end) for c in items for s in c.segments if s.kind in ("call", "retry")]
        extent = (
            (sub.start, sub.end if sub.end is not None else record.end)
            if sub.start is not None
            else None
        )
        opened = " open" if len(items) <= OPEN_ITEMS else ""
        cls = "g-row" + (" crit" if sub.critical else "")
        span_bar = track.svg(
            sub.id, sub.id, sub.status, False, [], _union(spans), extent, batch=sub.batch
        )
        info = _info(sub, len(items))
        if sub.batch is not None:
            info = f"{info} · {batch_state(sub.batch.model_dump())}"
        body.append(
            f'<details class="g-group" data-id="{e(sub.id)}" data-status="{e(sub.status)}"'
            f'{opened}><summary class="{cls}" data-id="{e(sub.id)}" '
            f'data-status="{e(sub.status)}"><span class="g-label">'
            f'{DIAMOND if sub.critical else ""}<span class="caret"></span>{dot}{e(sub.id)}</span>'
            f'{span_bar}<span class="g-info">{e(info)}</span></summary>'
            + "".join(
                _line(
                    track,
                    c,
                    sub.id,
                    f'<span class="dot st-{slug(c.status)}"></span>{e(c.id)}',
                    False,
                )
                for c in items
            )
            + "</details>"
        )
    agg = record.aggregate
    if agg is not None and agg.start is not None:
        end = agg.end if agg.end is not None else record.end
        note = "aggregate (times estimated from the run's end)" if agg.estimated else "aggregate"
        seg = Segment(kind="aggregate", start=agg.start, end=end, note=note)
        row = CallRecord(id="aggregate", subtask="aggregate", status=agg.status)
        bars = track.svg("aggregate", "aggregate", agg.status, False, [seg])
        body.append(
            f'<div class="g-row" data-id="aggregate" data-status="{e(agg.status)}">'
            f'<span class="g-label"><span class="dot st-{slug(agg.status)}"></span>aggregate'
            f'</span>{bars}<span class="g-info">{e(_info(row) if agg.end else agg.status)}'
            "</span></div>"
        )
    axis = "".join(
        f'<span style="left:{t / track.span * 100:.3f}%">{e(seconds(t) or "0")}</span>'
        for t in track.ticks
    )
    legend = (
        '<span class="chip st-succeeded"></span>call '
        '<span class="chip retry"></span>failed attempt (retried) '
        '<span class="chip backoff"></span>retry backoff '
        '<span class="chip wait"></span>waiting for a slot / rate limit '
        '<span class="chip st-skipped"></span>skipped '
        '<span class="chip batch"></span>provider batch '
        '<span class="chip notrun"></span>not running '
        '<span class="chip crit"></span>critical path ◆'
    )
    t = record.totals
    retries = t.retries
    return (
        '<section id="timeline"><h2>Timeline</h2>'
        f'<p class="legend">{legend}</p>'
        f'<p class="note">Waiting for slots or limits: {e(seconds(t.queued) or "0")} summed '
        f"over calls; backoff before {retries} retr{'y' if retries == 1 else 'ies'}: "
        f"{e(seconds(t.backoff) or '0')}. Critical path "
        f"({e(seconds(t.critical_path_seconds) or '0')}): "
        f"{e(' → '.join(record.critical_path) or 'none')}.</p>"
        '<div class="gantt"><div class="g-row g-axis"><span class="g-label">subtask</span>'
        f'<div class="axis">{axis}</div><span class="g-info">time</span></div>'
        f"{''.join(body)}</div></section>"
    )
