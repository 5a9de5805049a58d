"""Pictures of a plan without a network: Graphviz DOT, SVG/PNG/PDF/HTML, and text listings.

* `plan_dot(plan)` writes Graphviz DOT text (pure Python, needs nothing installed).
* `render(dot_text, fmt)` turns it into svg, png, pdf or a self-contained html page by
  running Graphviz's `dot` program locally (Debian/Ubuntu: `apt-get install graphviz`);
  nothing is fetched from a network.
* `plan_ascii(plan, width)` is the terminal picture: LangGraph's ASCII boxes while they
  fit (`ascii_fits`), else `layered_listing(plan)`, a list of subtasks layer by layer.

Every function takes a `TaskPlan`, a `PlanRuntime` (its learned expected durations then
shape the critical path) or a `CompiledPlanGraph` (its runtime is used).

Errors: `DrawingError` (a `FanfoldError`, and a `ValueError`) for a format that cannot be
drawn, a `dot` run that fails or times out, or statuses that name no subtask;
`GraphvizNotFoundError` (a `DrawingError`) when the `dot` program is not installed.
Each message is one line that says how to fix it.
"""

from __future__ import annotations

from fanfold.drawing.dot import plan_dot
from fanfold.drawing.render import FORMATS, GraphvizNotFoundError, render
from fanfold.drawing.shape import STATUS_COLOURS
from fanfold.drawing.text import ASCII_MAX_SUBTASKS, ascii_fits, layered_listing, plan_ascii
from fanfold.errors import DrawingError

__all__ = [
    "ASCII_MAX_SUBTASKS",
    "FORMATS",
    "STATUS_COLOURS",
    "DrawingError",
    "GraphvizNotFoundError",
    "ascii_fits",
    "layered_listing",
    "plan_ascii",
    "plan_dot",
    "render",
]
