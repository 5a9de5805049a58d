"""The report's figures: summary cards, the subtask table, totals and the run's output."""

from __future__ import annotations

from collections.abc import Iterable

from fanfold.formatting import money, seconds, tokens
from fanfold.record.model import CallRecord, RunRecord, SubtaskRecord
from fanfold.report._html import (
    DIAMOND,
    STATUSES,
    TEXT_LIMIT,
    as_text,
    cost_cell,
    e,
    money_total,
    short,
    slug,
)
from fanfold.state.results import TokenUsage


def _ratio(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "n/a"


def bound_text(record: RunRecord) -> str:
    t = record.totals
    cp = f"critical path {seconds(t.critical_path_seconds) or '0'}"
    if not t.max_concurrency:
        return f"{cp} (unlimited concurrency)"
    return f"max({cp}, work {seconds(t.call_time) or '0'} / {t.max_concurrency} slots)"


def summary(record: RunRecord) -> str:
    t = record.totals
    cards = [
        (
            "subtasks",
            f"{t.succeeded} ok · {t.failed} failed · {t.skipped} skipped",
            f"of {t.tasks} planned" + (f", {t.items} map items" if t.items else ""),
        ),
        (
            "tokens",
            tokens(t.total_tokens),
            f"{tokens(t.aggregate_usage.total_tokens)} in the aggregate",
        ),
        (
            "cost",
            money_total(t.known_cost, t.unknown_cost_models),
            "unknown: " + ", ".join(t.unknown_cost_models) if t.unknown_cost_models else "",
        ),
        (
            "wall time",
            seconds(t.wall_time) or "0",
            f"call time {seconds(t.call_time) or '0'}"
            + (f"; not running {seconds(t.not_running)}" if t.not_running else ""),
        ),
        (
            "speedup",
            _ratio(t.speedup),
            "call time / wall time" if t.speedup is not None else "no call reached the provider",
        ),
        (
            "vs lower bound",
            _ratio(t.bound_ratio),
            f"bound {seconds(t.lower_bound) or '0'} = " + bound_text(record),
        ),
    ]
    body = "".join(
        f'<div class="card" id="card-{slug(key)}"><div class="k">{e(key)}</div>'
        f'<div class="v">{e(value)}</div><div class="s">{e(sub)}</div></div>'
        for key, value, sub in cards
    )
    return f'<section id="summary" class="cards">{body}</section>'


def _cells(row: CallRecord | SubtaskRecord, kind: str, items: list[CallRecord]) -> list[str]:
    usage = row.usage
    ran = row.status not in ("skipped", "not run")
    if items:
        hits = sum(i.cached for i in items)
        cache = f"{hits}/{len(items)} hits" if hits else ""
    else:
        cache = "hit" if row.cached else ""
    made = row.status != "not run" and (row.attempts > 0 or bool(row.cached) or bool(items))
    took = (row.end - row.start) if row.end is not None and row.start is not None else None
    return [
        f'<td class="status"><span class="dot st-{slug(row.status)}"></span>{e(row.status)}</td>',
        f"<td>{e(kind)}</td>",
        f"<td>{e(row.model or '')}</td>",
        f'<td class="num attempts">{row.attempts}'
        + (f' <span class="muted">({row.retries} retried)</span>' if row.retries else "")
        + "</td>",
        f'<td class="num">{usage.input_tokens:,}</td>' if ran else '<td class="num"></td>',
        f'<td class="num">{usage.output_tokens:,}</td>' if ran else '<td class="num"></td>',
        f'<td class="num tokens">{usage.total_tokens:,}</td>' if ran else '<td class="num"></td>',
        cost_cell(row.cost, made=made),
        f'<td class="cache">{e(cache)}</td>',
        f'<td class="num">{e(seconds(row.queued)) if row.queued else ""}</td>',
        f'<td class="num">{e(seconds(row.backoff)) if row.backoff else ""}</td>',
        f'<td class="num">{e(seconds(took)) if took is not None and ran else ""}</td>',
    ]


def _detail(record: RunRecord, row: CallRecord | SubtaskRecord, output: bool) -> str:
    out = []
    if row.error:
        out.append(f'<div class="error">{e(short(row.error, TEXT_LIMIT))}</div>')
    if output:
        data = record.results.get(row.id)
        if isinstance(data, dict) and data.get("output") is not None:
            text = as_text(data["output"])
            out.append(
                f"<details><summary>output ({len(text):,} chars)</summary>"
                f"<pre>{e(short(text, TEXT_LIMIT))}</pre></details>"
            )
    if isinstance(row, CallRecord) and row.item is not None:
        items = (record.results.get(row.subtask) or {}).get("items") or []
        if row.item < len(items) and items[row.item].get("output") is not None:
            text = as_text(items[row.item]["output"])
            shown = e(short(text, TEXT_LIMIT))
            out.append(f"<details><summary>output</summary><pre>{shown}</pre></details>")
    return "".join(out)


_HEAD = (
    "<th>status</th><th>kind</th><th>model</th><th>attempts</th><th>tokens in</th>"
    "<th>tokens out</th><th>tokens</th><th>cost</th><th>cache</th><th>waited</th>"
    "<th>backoff</th><th>duration</th><th>error · output</th>"
)


def table(record: RunRecord) -> str:
    rows = []
    for sub in record.subtasks:
        crit = f" {DIAMOND}" if sub.critical else ""
        items = sub.calls if sub.map is not None else []
        detail = _detail(record, sub, output=not items)
        if items:
            inner = "".join(
                f'<tr><td class="id">{e(i.id)}</td>{"".join(_cells(i, sub.kind, []))}'
                f"<td>{_detail(record, i, output=False)}</td></tr>"
                for i in sorted(items, key=lambda c: c.item or 0)
            )
            detail += (
                f"<details><summary>{len(items)} items</summary>"
                f'<table class="data items"><thead><tr><th>item</th>{_HEAD}</tr></thead>'
                f"<tbody>{inner}</tbody></table></details>"
            )
        row = sub if items or len(sub.calls) != 1 else sub.calls[0]
        rows.append(
            f'<tr class="row" data-id="{e(sub.id)}" data-status="{e(sub.status)}">'
            f'<td class="id">{e(sub.id)}{crit}</td>{"".join(_cells(row, sub.kind, items))}'
            f'<td class="detail">{detail}</td></tr>'
        )
    agg = record.aggregate
    if agg is not None:
        agg_row = CallRecord(
            id="aggregate",
            subtask="aggregate",
            status=agg.status,
            model=agg.model,
            attempts=1 if agg.status in ("succeeded", "failed") and not agg.cached else 0,
            usage=agg.usage,
            cost=agg.cost,
            cached=agg.cached,
            start=agg.start,
            end=agg.end,
            error=agg.error,
        )
        rows.append(
            f'<tr class="row aggregate" data-id="aggregate" data-status="{e(agg.status)}">'
            f'<td class="id">aggregate</td>{"".join(_cells(agg_row, "aggregate", []))}'
            f'<td class="detail">{_detail(record, agg_row, output=False)}</td></tr>'
        )
    options = "".join(f'<option value="{e(s)}">{e(s)}</option>' for s in STATUSES)
    return (
        '<section id="subtasks"><h2>Subtasks</h2>'
        '<p class="filter"><label>filter <input id="ff-filter" type="search" '
        'placeholder="subtask id"></label> <label>status <select id="ff-status">'
        f'<option value="">all</option>{options}</select></label></p>'
        '<div class="table-wrap"><table id="ff-table" class="data">'
        f"<thead><tr><th>subtask</th>{_HEAD}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div></section>"
    )


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{e(k)}</th><td class='num'>{e(v)}</td></tr>" for k, v in rows)


def totals(record: RunRecord) -> str:
    t = record.totals
    counts = [
        ("planned subtasks", f"{t.tasks}"),
        ("succeeded", f"{t.succeeded}"),
        ("failed", f"{t.failed}"),
        ("skipped", f"{t.skipped}"),
        ("not run", f"{t.not_run}"),
        ("map items", f"{t.items}"),
        ("calls", f"{t.calls}"),
        ("attempts", f"{t.attempts}"),
        ("retries", f"{t.retries}"),
        ("cache hits", f"{t.cached}"),
    ]
    token_rows = [
        ("input tokens", tokens(t.usage.input_tokens + t.aggregate_usage.input_tokens)),
        ("output tokens", tokens(t.usage.output_tokens + t.aggregate_usage.output_tokens)),
        ("subtask tokens", tokens(t.usage.total_tokens)),
        ("aggregate tokens", tokens(t.aggregate_usage.total_tokens)),
        ("total tokens", tokens(t.total_tokens)),
    ]
    times: list[tuple[str, str, str, float | None]] = [
        ("wall time (processes running)", seconds(t.wall_time) or "0", "wall-time", t.wall_time),
        ("not running (between processes)", seconds(t.not_running) or "0", "not-running", None),
        ("call time (at the provider)", seconds(t.call_time) or "0", "call-time", t.call_time),
        ("waiting for slots or limits", seconds(t.queued) or "0", "queued", None),
        ("backoff before retries", seconds(t.backoff) or "0", "backoff", None),
        ("speedup (call time / wall time)", _ratio(t.speedup), "speedup", t.speedup),
        ("critical path", seconds(t.critical_path_seconds) or "0", "critical-path", None),
        ("concurrency", str(t.max_concurrency or "unlimited"), "concurrency", None),
        ("lower bound", seconds(t.lower_bound) or "0", "lower-bound", t.lower_bound),
        ("bound from", bound_text(record), "bound-from", None),
        ("wall time / lower bound", _ratio(t.bound_ratio), "bound-ratio", t.bound_ratio),
    ]
    time_rows = "".join(
        f'<tr id="total-{key}"'
        + (f' data-value="{value:.6f}"' if value is not None else "")
        + f"><th>{e(label)}</th><td class='num'>{e(text)}</td></tr>"
        for label, text, key, value in times
    )
    per_model: dict[str, tuple[int, TokenUsage, int]] = {}
    calls = [c for s in record.subtasks for c in s.calls if c.attempts or c.cached]
    for c in calls:
        n, usage, hits = per_model.get(c.model or "(no model)", (0, TokenUsage(), 0))
        per_model[c.model or "(no model)"] = (
            n + 1,
            usage + (TokenUsage() if c.cached else c.usage),
            hits + int(c.cached),
        )
    agg = record.aggregate
    if agg is not None and (agg.model or agg.usage.total_tokens):
        label = agg.model or "(aggregate's model)"
        n, usage, hits = per_model.get(label, (0, TokenUsage(), 0))
        per_model[label] = (n + 1, usage + agg.usage, hits + int(agg.cached))
    model_rows = "".join(
        f'<tr data-model="{e(m)}"><td>{e(m)}</td><td class="num">{n}</td>'
        f'<td class="num">{u.input_tokens:,}</td><td class="num">{u.output_tokens:,}</td>'
        f'<td class="num">{u.total_tokens:,}</td><td class="num">{hits}</td>'
        f"{cost_cell(t.cost_by_model.get(m, 0.0))}</tr>"
        for m, (n, u, hits) in sorted(per_model.items())
    )
    total_cell = (
        f'<td class="num cost" data-cost="{t.known_cost:.8f}">'
        f"{e(money_total(t.known_cost, t.unknown_cost_models))}</td>"
    )
    heads = "".join(
        f"<th class='num'>{h}</th>" for h in ("calls", "in", "out", "tokens", "cached", "cost")
    )
    return (
        '<section id="totals"><h2>Totals</h2><div class="totals">'
        f'<table class="kv" id="totals-counts"><caption>counts</caption>{_kv(counts)}</table>'
        f'<table class="kv" id="totals-tokens"><caption>tokens</caption>{_kv(token_rows)}</table>'
        f'<table class="kv" id="totals-time"><caption>time</caption>{time_rows}</table>'
        '<div class="cost-wrap"><table class="data" id="totals-cost">'
        f"<caption>cost per model</caption><thead><tr><th>model</th>{heads}</tr></thead>"
        f"<tbody>{model_rows}</tbody><tfoot><tr><th>total</th>"
        f"<td></td><td></td><td></td><td></td><td></td>{total_cell}</tr></tfoot></table>"
        "</div></div></section>"
    )


def outputs(record: RunRecord) -> str:
    parts = []
    if record.inputs:
        parts.append(
            "<details><summary>run inputs</summary>"
            f"<pre>{e(short(as_text(record.inputs), TEXT_LIMIT * 2))}</pre></details>"
        )
    if record.aggregate_error:
        text = e(short(str(record.aggregate_error), TEXT_LIMIT))
        parts.append(f'<div class="error">aggregate failed: {text}</div>')
    if record.output is not None:
        parts.append(
            "<details open><summary>output</summary>"
            f"<pre>{e(short(as_text(record.output), TEXT_LIMIT * 2))}</pre></details>"
        )
    if not parts:
        return ""
    return f'<section id="output"><h2>Run output</h2>{"".join(parts)}</section>'


__all__ = ["bound_text", "money", "outputs", "summary", "table", "totals"]


def rounds(record: RunRecord) -> str:
    """A replanning goal run's rounds: each plan's subtasks and the judge's verdict."""
    if not record.rounds:
        return ""
    rows = []
    for entry in record.rounds:
        ids = ", ".join(s["id"] for s in (entry.get("plan") or {}).get("subtasks", []))
        usage = TokenUsage.model_validate(entry.get("judge_usage") or {})
        asked = tokens(usage.total_tokens) if entry.get("judged") else "no call"
        rows.append(
            f'<tr id="round-{int(entry["round"])}"><td class="num">{int(entry["round"])}</td>'
            f"<td>{e(ids)}</td><td>{e(str(entry.get('decision')))}</td>"
            f"<td>{e(str(entry.get('reason') or ''))}</td><td class='num'>{e(asked)}</td>"
            f"<td class='num'>{e(money(entry.get('judge_cost')))}</td></tr>"
        )
    return (
        '<section id="rounds"><h2>Rounds</h2><table><thead><tr><th>round</th><th>subtasks'
        "</th><th>judge's decision</th><th>reason</th><th>judge tokens</th><th>judge cost"
        f"</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )
