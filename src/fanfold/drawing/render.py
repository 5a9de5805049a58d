"""Rendering DOT text as svg, png, pdf or html with Graphviz's `dot`, run locally."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

from fanfold.drawing.shape import FONT
from fanfold.errors import DrawingError, did_you_mean

__all__ = ["FORMATS", "INSTALL_HINT", "GraphvizNotFoundError", "render"]

FORMATS = ("svg", "png", "pdf", "html", "dot")
"""What `render` produces; `dot` is the DOT text itself and needs no Graphviz."""

INSTALL_HINT = "install Graphviz: apt-get install graphviz (macOS: brew install graphviz)"


class GraphvizNotFoundError(DrawingError):
    """Graphviz's `dot` program, which renders svg/png/pdf/html, is not installed."""

    def __init__(self, fmt: str, executable: str) -> None:
        super().__init__(
            f"cannot draw {fmt}: Graphviz's {executable!r} program was not found; "
            f"{INSTALL_HINT}, or write the DOT text (format 'dot') instead"
        )
        self.fmt = fmt
        self.executable = executable


def _dot_program(fmt: str, executable: str | None) -> str:
    name = executable or "dot"
    found = shutil.which(name)
    if found is None:
        raise GraphvizNotFoundError(fmt, name)
    return found


def _run_dot(
    dot_text: str, fmt: str, executable: str | None, timeout: float, *, asked: str
) -> bytes:
    """Graphviz's `-T<fmt>` output; `asked` is the format the caller asked for."""
    program = _dot_program(asked, executable)
    try:
        done = subprocess.run(
            [program, f"-T{fmt}"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DrawingError(
            f"Graphviz took longer than {timeout:g}s to draw {asked}; write the DOT text "
            "(format 'dot') and render it yourself, or draw a smaller plan"
        ) from exc
    except OSError as exc:
        raise DrawingError(f"cannot run Graphviz's {program!r}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        errors = done.stderr.decode("utf-8", "replace").strip().splitlines()
        first = next((line for line in errors if line.strip()), "no error message")
        raise DrawingError(
            f"Graphviz could not draw {asked} (exit status {done.returncode}): {first}"
        )
    return done.stdout


_SVG_START = re.compile(r"<svg\b")
_XLINK_DECLARATION = re.compile(r'\s+xmlns:xlink="[^"]*"')
_GRAPH_TITLE = re.compile(r'<g id="graph0"[^>]*>\s*<title>(.*?)</title>', re.S)


def _html_page(svg: str, title: str | None) -> bytes:
    """A self-contained HTML page with `svg` inline: no script, stylesheet or font links."""
    start = _SVG_START.search(svg)
    if start is None:
        raise DrawingError("Graphviz produced no <svg> element; cannot build the html page")
    # Drop the XML prolog and DOCTYPE (it names an external DTD). HTML gives inline SVG
    # its namespaces itself, so the xlink declaration is not needed either.
    svg = svg[start.start() :]
    svg = _XLINK_DECLARATION.sub("", svg, count=1)
    if title is None:
        found = _GRAPH_TITLE.search(svg)
        title = html.unescape(found.group(1)) if found else "fanfold plan"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
  body {{ margin: 1rem; font-family: {FONT}; background: #fff; color: #263238; }}
  .plan {{ overflow: auto; }}
  .plan svg {{ display: block; }}
</style>
</head>
<body>
<div class="plan">
{svg.strip()}
</div>
</body>
</html>
"""
    return page.encode("utf-8")


def render(
    dot_text: str,
    fmt: str,
    *,
    title: str | None = None,
    executable: str | None = None,
    timeout: float = 60.0,
) -> bytes:
    """Render DOT text as svg, png, pdf or html by running Graphviz's `dot` locally.

    `html` is one self-contained page with the SVG inline, titled `title` (default: the
    graph's name, which `plan_dot` sets to the plan's task). `dot` returns the text
    itself, with no Graphviz needed.

    Args:
        dot_text: DOT text, e.g. from `plan_dot`.
        fmt: one of FORMATS.
        title: the html page's title.
        executable: the `dot` program (a name on PATH or a path); default `dot`.
        timeout: seconds to wait for Graphviz.

    Raises:
        GraphvizNotFoundError: `dot` is not installed (says how to install it).
        DrawingError: an unknown format, or Graphviz failed or timed out.
    """
    if fmt not in FORMATS:
        raise DrawingError(
            f"cannot draw as {fmt!r}{did_you_mean(fmt, FORMATS)}; use one of {', '.join(FORMATS)}"
        )
    if fmt == "dot":
        return dot_text.encode("utf-8")
    if fmt == "html":
        svg = _run_dot(dot_text, "svg", executable, timeout, asked=fmt).decode("utf-8")
        return _html_page(svg, title)
    return _run_dot(dot_text, fmt, executable, timeout, asked=fmt)
