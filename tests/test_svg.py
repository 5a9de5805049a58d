"""A given graph SVG is parsed and rebuilt from an allow-list before a report inlines it.

The browser test opens each report in headless Chromium with a payload that marks the
page when it runs, and checks the mark on a control page first, so "no mark" means
"the script did not run", not "the check cannot see it".
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fanfold import TaskPlan
from fanfold._svg import clean_svg
from fanfold.drawing import plan_dot, render
from fanfold.report import run_report

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH")

MARK = "document.documentElement.setAttribute('data-pwned','1')"
PAYLOADS = {
    "handler without whitespace": f'<svg><img/src="x"/onerror="{MARK}"></svg>',
    "svg onload": f'<svg xmlns="http://www.w3.org/2000/svg" onload="{MARK}"><g/></svg>',
    "handler after a slash": f'<svg xmlns="http://www.w3.org/2000/svg"><image/onerror="{MARK}" href="x"/></svg>',  # noqa: E501
    "script": f'<svg xmlns="http://www.w3.org/2000/svg"><script>{MARK}</script></svg>',
    "foreignObject": (
        '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject width="9" height="9">'
        f'<img xmlns="http://www.w3.org/1999/xhtml" src="x" onerror="{MARK}"/>'
        "</foreignObject></svg>"
    ),
    "javascript link": (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
        f'<a xlink:href="javascript:{MARK}"><text x="1" y="9">x</text></a></svg>'
    ),
    "animate set": (
        '<svg xmlns="http://www.w3.org/2000/svg"><a><set attributeName="href" '
        f'to="javascript:{MARK}"/></a><animate onbegin="{MARK}" attributeName="x" dur="1s"/></svg>'
    ),
    "closing tag in text": f"<svg><text>&lt;/svg&gt;&lt;img src=x onerror={MARK}&gt;</text></svg>",
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_a_given_svg_keeps_no_script_handler_or_outside_link(name: str) -> None:
    cleaned = clean_svg(PAYLOADS[name])
    if cleaned is None:
        return  # not well-formed XML: the report draws its own graph instead
    assert cleaned.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    for element in ET.fromstring(cleaned).iter():
        tag = element.tag.rsplit("}", 1)[-1]
        assert tag not in ("script", "foreignObject", "img", "image", "a", "set", "animate")
        for key, value in element.attrib.items():
            assert not key.lower().startswith("on"), (key, cleaned)
            assert "javascript:" not in value.lower(), (key, cleaned)


def test_the_handler_without_whitespace_is_not_an_svg_the_report_shows() -> None:
    assert clean_svg('<svg><img/src="x"/onerror=alert(1)></svg>') is None


def test_graphviz_drawings_keep_their_shapes_text_and_classes() -> None:
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "a", "prompt": "x"},
                {"id": "b", "prompt": "{a} & <b>", "depends_on": ["a"]},
            ],
        }
    )
    svg = render(plan_dot(plan, statuses={"a": "failed"}, title=""), "svg").decode()
    cleaned = clean_svg(svg)

    assert cleaned is not None
    for part in ("<polygon", "<ellipse", "<path", "<text", "viewBox=", 'class="node'):
        assert cleaned.count(part) == svg.count(part) > 0, part
    assert ">a</text>" in cleaned and ">b</text>" in cleaned


def test_a_url_outside_the_document_is_dropped_and_a_local_one_kept() -> None:
    cleaned = clean_svg(
        '<svg xmlns="http://www.w3.org/2000/svg"><rect fill="url(http://x/y)" '
        'stroke="url(#grad)" width="1"/><use href="#a"/><use href="https://x/s.svg#a"/></svg>'
    )
    assert cleaned == (
        '<svg xmlns="http://www.w3.org/2000/svg"><rect stroke="url(#grad)" width="1"></rect>'
        '<use href="#a"></use><use></use></svg>'
    )


def chromium_dom(tmp_path: Path, page: Path) -> str:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{page.stem}"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=2000",  # let load and error events fire
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@needs_chromium
def test_no_payload_runs_in_a_browser_when_given_as_the_reports_graph(tmp_path: Path) -> None:
    # Control: the raw payloads do run when a page inlines them as they are.
    control = tmp_path / "control.html"
    control.write_text(
        f"<!doctype html><html><body>{PAYLOADS['handler without whitespace']}</body></html>"
    )
    assert 'data-pwned="1"' in chromium_dom(tmp_path, control)

    state = {"inputs": {}, "results": {}, "output": None, "totals": None}
    page = tmp_path / "reports.html"
    reports = [run_report(state, graph_svg=svg) for svg in PAYLOADS.values()]
    # One page, each report's graph section in turn: every payload gets its chance.
    sections = [r.split('<section id="graph">', 1)[1].split("</section>", 1)[0] for r in reports]
    page.write_text(
        "<!doctype html><html><body>" + "".join(sections) + "</body></html>", encoding="utf-8"
    )
    dom = chromium_dom(tmp_path, page)
    assert dom.count("<svg") >= len(PAYLOADS)
    assert 'data-pwned="1"' not in dom
