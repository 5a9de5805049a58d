"""Make a given SVG safe to inline in an HTML page: parse it, keep only an allow-list.

The SVG is parsed as XML (from its `<svg` tag on, so no prolog, DTD or entity is ever
read) and written out again element by element: only drawing elements and
presentation attributes on the allow-list survive, every value is escaped, and a link
may only point inside the document (`#id`). Scripts, event handlers (`onerror`,
however they are spelt), `foreignObject`, styles, images and anything that is not
well-formed XML never reach the page. HTML sanitisers (nh3, bleach) have no SVG
allow-list, so this small one is kept here.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

__all__ = ["clean_svg"]

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"

ELEMENTS = frozenset(
    {
        "svg", "g", "defs", "symbol", "use", "title", "desc",
        "path", "polygon", "polyline", "line", "rect", "circle", "ellipse",
        "text", "tspan", "textPath",
        "marker", "clipPath", "mask", "pattern", "linearGradient", "radialGradient", "stop",
    }
)  # fmt: skip
"""Drawing elements kept; any other element is dropped with its content."""
UNWRAPPED = frozenset({"a", "switch"})
"""Elements dropped whose content is kept (Graphviz wraps nodes with a URL in `<a>`)."""
ATTRIBUTES = frozenset(
    {
        "id", "class", "width", "height", "viewBox", "preserveAspectRatio", "version",
        "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "dx", "dy",
        "d", "points", "transform", "pathLength", "rotate", "textLength", "lengthAdjust",
        "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity",
        "stroke-dasharray", "stroke-dashoffset", "stroke-linecap", "stroke-linejoin",
        "stroke-miterlimit", "opacity", "color", "visibility", "display",
        "font-family", "font-size", "font-style", "font-weight", "text-anchor",
        "dominant-baseline", "alignment-baseline", "baseline-shift", "letter-spacing",
        "text-decoration", "white-space",
        "marker-start", "marker-mid", "marker-end", "markerWidth", "markerHeight",
        "markerUnits", "refX", "refY", "orient", "clip-path", "clipPathUnits", "mask",
        "offset", "stop-color", "stop-opacity", "gradientUnits", "gradientTransform",
        "spreadMethod", "fx", "fy", "patternUnits", "patternTransform",
    }
)  # fmt: skip
"""Attributes kept (without a namespace); `href` is kept only as a local `#id` link."""
_OUTSIDE_URL = re.compile(r"url\(\s*['\"]?\s*(?!#)", re.I)
_URL_VALUED = frozenset(
    {"fill", "stroke", "marker-start", "marker-mid", "marker-end", "clip-path", "mask"}
)


def clean_svg(svg: str) -> str | None:
    """The SVG in `svg`, rebuilt from its allowed parts; None when it holds no SVG.

    Text before the `<svg` tag (an XML prolog, a DOCTYPE, comments) is ignored, and so
    is text after the root element's end. Text that is not well-formed XML, or whose
    root is not an `svg` element, gives None.
    """
    start = svg.find("<svg")
    end = svg.rfind("</svg>")
    if start < 0 or end < start:
        return None
    try:
        root = ET.fromstring(svg[start : end + len("</svg>")])
    except ET.ParseError:
        return None
    if _local(root.tag) != "svg" or _namespace(root.tag) not in ("", SVG_NS):
        return None
    parts: list[str] = []
    _write(root, parts, top=True)
    return "".join(parts)


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _write(element: ET.Element, parts: list[str], *, top: bool = False) -> None:
    name = _local(element.tag) if isinstance(element.tag, str) else ""
    in_svg = isinstance(element.tag, str) and _namespace(element.tag) in ("", SVG_NS)
    if in_svg and name in UNWRAPPED:
        parts.append(_text(element.text))
        for child in element:
            _write(child, parts)
            parts.append(_text(child.tail))
        return
    if not in_svg or name not in ELEMENTS:
        return
    attributes = _attributes(element)
    if top:
        attributes = f' xmlns="{SVG_NS}"{attributes}'
    parts.append(f"<{name}{attributes}>{_text(element.text)}")
    for child in element:
        _write(child, parts)
        parts.append(_text(child.tail))
    parts.append(f"</{name}>")


def _attributes(element: ET.Element) -> str:
    kept: list[str] = []
    for key, value in element.attrib.items():
        namespace, name = _namespace(key), _local(key)
        if name == "href" and namespace in ("", XLINK_NS):
            if value.startswith("#"):
                kept.append(f' href="{html.escape(value, quote=True)}"')
            continue
        if namespace or name not in ATTRIBUTES:
            continue
        if name in _URL_VALUED and _OUTSIDE_URL.search(value):
            continue  # only references inside the document
        kept.append(f' {name}="{html.escape(value, quote=True)}"')
    return "".join(kept)


def _text(text: str | None) -> str:
    return html.escape(text, quote=False) if text else ""
