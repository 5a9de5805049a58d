"""Small HTML helpers shared by the report's parts."""

from __future__ import annotations

import html
import json
from typing import Any

from pydantic import BaseModel

from fanfold.formatting import money

TEXT_LIMIT = 2000
"""Characters of an output, error or input shown; the rest is cut with a note."""
STATUSES = ("succeeded", "failed", "skipped", "running", "unfinished", "not run")
DIAMOND = '<span class="diamond" title="on the critical path">◆</span>'


def e(text: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(text), quote=True)


def slug(status: str) -> str:
    return status.replace(" ", "-")


def short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def money_total(known: float, unknown: list[str]) -> str:
    if not unknown:
        return money(known)
    return f"{money(known)} + unknown" if known else "unknown"


def cost_cell(cost: float | None, *, made: bool = True) -> str:
    if not made:
        return '<td class="num cost none">—</td>'
    if cost is not None:
        return f'<td class="num cost" data-cost="{cost:.8f}">{e(money(cost))}</td>'
    return '<td class="num cost unknown" data-cost="unknown">unknown</td>'
