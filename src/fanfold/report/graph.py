"""The report's picture of the plan: boxes coloured by status, the aggregate step last."""

from __future__ import annotations

import math

from fanfold.formatting import seconds
from fanfold.plan.graph import layers, sinks
from fanfold.record.model import RunRecord, SubtaskRecord
from fanfold.report._html import e, short, slug

GRAPH_ROWS = 24
"""Most boxes stacked in one column; a wider layer wraps."""
OVERVIEW_ABOVE = 60
"""Plans with more subtasks than this get a layered overview above the graph."""
AGGREGATE_ID = "(aggregate)"


def graph_svg(record: RunRecord) -> str:
    """The built-in SVG graph of the record's plan."""
    subs = {s.id: s for s in record.subtasks}
    order = [s.id for s in record.subtasks]
    if not order:
        return '<svg class="graph-svg" width="10" height="10"></svg>'
    deps = {s.id: [d for d in s.depends_on if d in subs] for s in record.subtasks}
    levels = layers(order, deps)
    if record.aggregate is not None:
        levels.append([AGGREGATE_ID])
    rank: dict[str, float] = {}
    for level, members in enumerate(levels):
        if level and members[0] != AGGREGATE_ID:
            members.sort(key=lambda s: sum(rank[d] for d in deps[s]) / max(1, len(deps[s])))
        for position, sid in enumerate(members):
            rank[sid] = position
    box_w, box_h, gap_x, gap_y, sub_gap, pad = 168, 38, 56, 10, 14, 12
    pos: dict[str, tuple[float, float]] = {}
    x, height = float(pad), 0.0
    for members in levels:
        columns = max(1, math.ceil(len(members) / GRAPH_ROWS))
        per_column = math.ceil(len(members) / columns)
        for position, sid in enumerate(members):
            column, line = divmod(position, per_column)
            pos[sid] = (x + column * (box_w + sub_gap), pad + line * (box_h + gap_y))
            height = max(height, pos[sid][1] + box_h)
        x += columns * (box_w + sub_gap) - sub_gap + gap_x
    width, height = x - gap_x + pad, height + pad
    critical = set(zip(record.critical_path, record.critical_path[1:], strict=False))
    pairs = [(d, sid) for sid in order for d in deps[sid]]
    if record.aggregate is not None:
        pairs += [(sid, AGGREGATE_ID) for sid in sinks(order, deps)]
    edges = []
    for dep, sid in pairs:
        x1, y1 = pos[dep][0] + box_w, pos[dep][1] + box_h / 2
        x2, y2 = pos[sid][0], pos[sid][1] + box_h / 2
        bend = max(20.0, (x2 - x1) / 2)
        cls = "edge crit" if (dep, sid) in critical else "edge"
        edges.append(
            f'<path class="{cls}" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} '
            f'{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" marker-end="url(#ff-arrow)">'
            f"<title>{e(dep)} → {e(sid)}</title></path>"
        )
    nodes = [_node(subs[sid], *pos[sid], box_w, box_h) for sid in order]
    if record.aggregate is not None:
        agg = record.aggregate
        nx, ny = pos[AGGREGATE_ID]
        took = agg.call_time if agg.end is not None else None
        detail = agg.status + (f" · {seconds(took)}" if took else "")
        tip = f"aggregate: {agg.status}" + (f"\n{short(agg.error, 300)}" if agg.error else "")
        nodes.append(
            f'<g class="node aggregate-node st-{slug(agg.status)}" data-subtask="aggregate">'
            f"<title>{e(tip)}</title>"
            f'<rect x="{nx:.1f}" y="{ny:.1f}" width="{box_w}" height="{box_h}" rx="5"/>'
            f'<text x="{nx + 8:.1f}" y="{ny + 16:.1f}" class="id">aggregate</text>'
            f'<text x="{nx + 8:.1f}" y="{ny + 30:.1f}" class="sub">{e(short(detail, 30))}'
            "</text></g>"
        )
    fit = ' data-fit=""' if len(order) > OVERVIEW_ABOVE else ""
    return (
        f'<svg class="graph-svg" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img"{fit} '
        f'aria-label="the plan graph">{"".join(edges)}{"".join(nodes)}</svg>'
    )


def _node(sub: SubtaskRecord, nx: float, ny: float, box_w: int, box_h: int) -> str:
    classes = f"node st-{slug(sub.status)}" + (" crit" if sub.critical else "")
    detail: str = sub.status
    took = (sub.end - sub.start) if sub.end is not None and sub.start is not None else None
    if took is not None and sub.status != "skipped":
        detail += f" · {seconds(took)}"
    if sub.map is not None:
        detail = f"map ×{len(sub.calls)} · " + detail
    tip = f"{sub.id}: {sub.status}" + (f"\n{short(sub.error, 300)}" if sub.error else "")
    stack = (
        f'<rect class="stack" x="{nx + 4:.1f}" y="{ny + 4:.1f}" width="{box_w}" '
        f'height="{box_h}" rx="5"/>'
        if sub.map is not None
        else ""
    )
    return (
        f'<g class="{classes}" data-subtask="{e(sub.id)}"><title>{e(tip)}</title>{stack}'
        f'<rect x="{nx:.1f}" y="{ny:.1f}" width="{box_w}" height="{box_h}" rx="5"/>'
        f'<text x="{nx + 8:.1f}" y="{ny + 16:.1f}" class="id">{e(short(sub.id, 22))}</text>'
        f'<text x="{nx + 8:.1f}" y="{ny + 30:.1f}" class="sub">{e(short(detail, 30))}'
        "</text></g>"
    )


def overview(record: RunRecord) -> str:
    """Above OVERVIEW_ABOVE subtasks: one card per layer with its statuses counted."""
    if len(record.subtasks) <= OVERVIEW_ABOVE:
        return ""
    subs = {s.id: s for s in record.subtasks}
    order = list(subs)
    deps = {s.id: [d for d in s.depends_on if d in subs] for s in record.subtasks}
    cards = []
    for level, members in enumerate(layers(order, deps)):
        counts: dict[str, int] = {}
        for sid in members:
            counts[subs[sid].status] = counts.get(subs[sid].status, 0) + 1
        text = " · ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        cards.append(
            f'<div class="layer" data-layer="{level}"><b>layer {level + 1}: '
            f"{len(members)} subtasks</b>{e(text)}</div>"
        )
    return f'<div class="overview" id="ff-overview">{"".join(cards)}</div>'
