"""What a run folder or a study puts into a report never becomes live markup (issue: hostile
studies and planted run folders).

A report's words come partly from the run: a study's name, a mechanism's parameters, an error row's
message. Whatever they hold, index.html has no link whose target is not http(s), an anchor or a
path inside the run folder, and no tag the run wrote; report.md holds no tag a Markdown renderer
would pass through, and no link with another target either.
"""

from __future__ import annotations

import html.parser
import re

import pytest

from attnbench.report import write_report
from attnbench.report._document import Doc, Table, inline_html, markdown_safe, safe_href
from tests.test_report import small_rows, write_run

SCRIPT_LINK = "[click me](javascript:alert(document.domain))"
TAG = '<img src=x onerror="alert(1)">'
COMMENT = "<!-- hidden -->"


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("https://example.org/a?b=c#d", True),
        ("http://example.org", True),
        ("#manifest", True),
        ("plots/speed.png", True),
        ("tables/comparison.md#x", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("data:text/html;base64,PHNjcmlwdD4=", False),
        ("file:///etc/passwd", False),
        ("vbscript:x", False),
        ("/etc/passwd", False),
        ("../../secret.json", False),
        ("plots/../../x", False),
        ("plots\\..\\x", False),
        ("", False),
    ],
)
def test_safe_href(target, ok):
    assert safe_href(target) is ok


def test_inline_html_renders_only_safe_links():
    out = inline_html(f"a {SCRIPT_LINK} b [plot](plots/a.png) {TAG}")
    assert 'href="javascript' not in out.lower() and "<img" not in out
    assert '<a href="plots/a.png">plot</a>' in out
    assert "click me (javascript:alert(document.domain" in out  # the words stay, as text


def test_markdown_safe_neutralises_tags_and_links_but_keeps_comparisons():
    out = markdown_safe(f"p < 0.05 and 3<4, {TAG} {COMMENT} {SCRIPT_LINK} [ok](#a)")
    assert "p < 0.05 and 3<4" in out  # a comparison is no tag
    assert "<img" not in out and "<!--" not in out and "&lt;img" in out
    assert "](javascript" not in out and "[ok](#a)" in out


def test_documents_pass_every_block_through_the_filters():
    doc = Doc()
    doc.heading(f"Study {TAG}")
    doc.para(SCRIPT_LINK)
    doc.bullets([TAG, SCRIPT_LINK])
    doc.figure("javascript:alert(1)", f"caption {TAG}")
    doc.table(Table(name="t", caption=f"cap {TAG}", header=["a"], rows=[[f"{TAG} {SCRIPT_LINK}"]], note=TAG))
    md, page = doc.to_markdown(), doc.to_html()
    assert "<img" not in md and "](javascript" not in md
    assert "javascript:" not in _hrefs(page) and _parse(page).hrefs == ["#", "#"]  # the figure's a, img


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.hrefs += [v or "" for k, v in attrs if k in ("href", "src", "action", "formaction")]
        assert not any(k.startswith("on") for k, _ in attrs), (tag, attrs)  # no event handler


def _parse(page: str) -> _Collect:
    parser = _Collect()
    parser.feed(page)
    return parser


def _tags(page: str) -> set[str]:
    return _parse(page).tags


def _hrefs(page: str) -> str:
    return " ".join(h.lower() for h in _parse(page).hrefs)


def test_a_run_with_hostile_rows_gives_a_report_without_live_markup(tmp_path):
    rows = small_rows()
    rows[0] = {**rows[0], "status": "error", "error": f"RuntimeError: {TAG} {SCRIPT_LINK} {COMMENT}"}
    rows[-1] = {**rows[-1], "window": f"{TAG}{SCRIPT_LINK}"}
    run = write_run(tmp_path / "run", rows, note=f"{TAG} {SCRIPT_LINK}")
    write_report(run)
    page = (run / "index.html").read_text()
    assert "RuntimeError: &lt;img src=x onerror" in page  # the error row is shown, as text
    hrefs = _hrefs(page)
    assert "javascript:" not in hrefs and "data:" not in hrefs, hrefs
    assert "img" not in _tags(page) - _own_tags(page)
    for src in re.findall(r'(?:href|src)="([^"]+)"', page):
        assert safe_href(src), src
    md = (run / "report.md").read_text()
    assert "RuntimeError: &lt;img src=x onerror" in md
    assert "<img" not in md and "](javascript" not in md and "<!--" not in md


def _own_tags(page: str) -> set[str]:
    """The tags the report itself writes: img for its plots (each with a src inside the folder)."""
    return {"img"} if re.search(r'<img src="plots/', page) else set()


def test_results_csv_cells_are_never_spreadsheet_formulas(tmp_path):
    from attnbench.store import ResultsStore, load_rows

    hostile = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "'=already quoted"]
    store = ResultsStore(tmp_path)
    for i, text in enumerate(hostile):
        store.add({"point_id": f"{i:016x}", "pass": "forward", "status": "error", "error": text, "x": -1.5})
    store.close()
    lines = (tmp_path / "results.csv").read_text().splitlines()[1:]
    for line in lines:
        cells = next(iter(__import__("csv").reader([line])))
        assert not any(c[:1] in "=+@" or (c[:1] == "-" and c != "-1.5") for c in cells), line
    (tmp_path / "results.db").unlink()  # a CSV-only folder: what attnbench reads back is the text given
    _, rows = load_rows(tmp_path)
    assert [r["error"] for r in rows] == hostile


def test_a_plugin_display_name_and_symbols_are_escaped_in_latex(temp_registry):
    import pandas as pd

    from attnbench import AttentionMechanism, register_mechanism
    from attnbench.report._results import latex_labels

    @register_mechanism("evil_tex")
    class EvilTex(AttentionMechanism):
        display_name = r"\input{/etc/passwd} 50% $x$ #1"
        param_symbols = {"window": r"\write18{rm}"}

        def __init__(self, dim, num_heads, window: int = 3):
            super().__init__(dim, num_heads)

        def forward(self, x):
            return x

    df = pd.DataFrame({"mechanism": ["evil_tex", "evil_tex"], "window": [3, r"\def\x{}"]})
    tex = " ".join(latex_labels(df).values())
    assert r"\input" not in tex and r"\write18" not in tex and r"\def" not in tex
    assert r"\textbackslash{}input\{/etc/passwd\} 50\% \$x\$ \#1" in tex


@pytest.mark.slow  # starts a headless Chromium (a few seconds)
@pytest.mark.skipif(not __import__("shutil").which("chromium"), reason="chromium is not installed")
def test_chromium_sees_no_live_markup_from_a_hostile_run(tmp_path):
    import subprocess

    rows = small_rows()
    rows[0] = {**rows[0], "status": "error", "error": f"RuntimeError: {TAG} {SCRIPT_LINK}"}
    run = write_run(tmp_path / "run", rows, note=f"{TAG} {SCRIPT_LINK}")
    write_report(run)
    done = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (run / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = done.stdout
    assert "RuntimeError: &lt;img src=x onerror" in dom  # the message is in the page, as text
    parsed = _parse(dom)  # asserts that no element carries an on* handler
    assert not any(h.lower().lstrip().startswith(("javascript:", "data:")) for h in parsed.hrefs), (
        parsed.hrefs
    )
    assert all(safe_href(h) for h in parsed.hrefs if not h.startswith("data:image/")), parsed.hrefs
