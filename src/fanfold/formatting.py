"""How fanfold writes seconds, money and tokens: one function each, used by every view.

>>> seconds(0.0123), seconds(2.5), seconds(75.2), seconds(64920.4)
('12 ms', '2.50 s', '1 min 15 s', '18 h 02 min')
>>> money(0.0001), money(0.000012), money(1.23456), money(None)
('$0.0001', '$0.000012', '$1.2346', 'unknown')
>>> tokens(1234567)
'1,234,567'
>>> clock(4.25), clock(4.25, tenths=False), clock(185), clock(3720)
('4.2s', '4s', '3m05s', '1h02m')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["batch_state", "clock", "money", "seconds", "tokens"]


def seconds(value: float | None) -> str:
    """A duration: "850 ms", "2.50 s", "3 min 05 s", "18 h 02 min"; "" for None."""
    if value is None or not math.isfinite(value):
        return ""
    value = max(0.0, value)
    if value < 1:
        return f"{value * 1000:.1f} ms" if value < 0.01 else f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    if value < 3600:
        minutes, rest = divmod(round(value), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(round(value / 60), 60)
    return f"{hours} h {rest:02d} min"


def clock(value: float, *, tenths: bool = True) -> str:
    """A running clock, compact for the live view: "4.2s" ("4s" without `tenths`), "3m05s",
    "1h02m"."""
    if value < 60:
        return f"{value:.1f}s" if tenths else f"{value:.0f}s"
    if value < 3600:
        minutes, rest = divmod(int(value), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(int(value) // 60, 60)
    return f"{hours}h{rest:02d}m"


def money(usd: float | None) -> str:
    """USD with its significant digits: "$0", "$0.0001", "$0.000012", "$1.2346"; "unknown"."""
    if usd is None or not math.isfinite(usd):
        return "unknown"
    if usd == 0:
        return "$0"
    if usd >= 0.01:
        return f"${usd:.4f}"
    if usd < 0.000001:
        return "<$0.000001"
    text = f"{usd:.6f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    if len(text.split(".")[1]) < 4:
        text = f"{usd:.4f}"
    return "$" + text


def tokens(count: int | None) -> str:
    """A token count with thousands separators; "" for None."""
    return "" if count is None else f"{count:,}"


def batch_state(state: Mapping[str, Any] | None) -> str:
    """A provider batch's state: "batch batch_abc in_progress: 3/10 done, 1 failed"."""
    if not state:
        return ""
    text = f"batch {state.get('id') or '?'} {state.get('status') or '?'}"
    total = state.get("total")
    if total:
        text += f": {state.get('completed') or 0}/{total} done"
        if state.get("failed"):
            text += f", {state['failed']} failed"
    return text
