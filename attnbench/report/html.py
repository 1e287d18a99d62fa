"""``index.html`` of a run folder: a one-screen summary, the plots, the tables folded, the files.

One self-contained file: the style sheet is inline, images are relative links into the run folder
(``plots/*.png``), nothing is fetched from the network. Headings go in order (``h1`` the page,
``h2`` a section, ``h3`` and deeper inside one); the manifest scrolls in a box of its own.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnbench.report._document import Doc

__all__ = ["files_doc", "index_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
nav { position: sticky; top: 0; background: #fff; padding: .3rem 0; border-bottom: 1px solid #ddd;
      z-index: 1; }
nav a { margin-right: 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .4rem; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 1.8rem; }
h3 { font-size: 1.1rem; } h4 { font-size: 1rem; }
#summary ul { padding-left: 1.2rem; } #summary li { margin: .2rem 0; }
table { border-collapse: collapse; margin: .8rem 0 .3rem; font-size: .9rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3rem; }
thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; padding: .25rem .6rem;
           text-align: right; }
thead th:first-child, thead th.l { text-align: left; }
tr.group th { text-align: left; font-style: italic; font-weight: 500; padding-top: .5rem; }
tbody tr:last-child td { border-bottom: 2px solid #222; }
td { padding: .2rem .6rem; } td.l { text-align: left; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
p.note { font-size: .85rem; color: #555; margin-top: 0; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(30rem, 1fr)); gap: 1rem; }
figure { margin: .6rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #444; }
details { margin: .3rem 0; } summary { cursor: pointer; }
details > summary { font-weight: 500; }
pre.manifest { background: #f6f6f6; padding: .8rem; overflow: auto; max-height: 28rem; font-size: .8rem;
               white-space: pre; }
code { background: #f3f3f3; padding: 0 .2rem; overflow-wrap: anywhere; }
ul.files li { overflow-wrap: anywhere; }
"""


def index_html(title: str, sections: Sequence[tuple[str, str, Doc]], manifest: dict[str, Any]) -> str:
    """The page: a navigation bar, then each ``(anchor, heading, content)`` section, then the manifest
    (folded, in a scrolling box)."""
    nav = " ".join(f'<a href="#{html.escape(a)}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = []
    for anchor, heading, doc in sections:
        inner = doc.to_html()  # a section's own headings start at h3
        if anchor == "plots":
            inner = f'<div class="figures">{inner}</div>'
        if anchor == "files":
            inner = inner.replace("<ul>", '<ul class="files">', 1)
        body.append(f'<section id="{html.escape(anchor)}"><h2>{html.escape(heading)}</h2>\n{inner}</section>')
    manifest_text = (
        json.dumps(manifest, indent=2, default=str) if manifest else "(no manifest.json in the run folder)"
    )
    body.append(
        '<section id="manifest"><h2>Manifest</h2><details><summary>manifest.json: the study, the '
        f'environments and the conditions</summary><pre class="manifest">{html.escape(manifest_text)}</pre>'
        "</details></section>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f'<h1>{html.escape(title)}</h1>\n<nav>{nav} <a href="#manifest">Manifest</a></nav>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def files_doc(run_dir: Path) -> Doc:
    """Links to every file of the run folder that a reader opens: results, manifest, pages, tables
    and plots (one line per folder)."""
    doc = Doc()
    names = [
        "results.csv",
        "results.db",
        "manifest.json",
        "report.md",
        "references.bib",
        "formula_check.csv",
        "formula_report.md",
    ]
    items = [f"[{n}]({n})" for n in names if (run_dir / n).exists()]
    folders = (("tables", "tables (Markdown and LaTeX)"), ("plots", "plots"), ("maps", "attention maps"))
    for folder, what in folders:
        files = sorted(p for p in (run_dir / folder).glob("*") if p.is_file())
        if files:
            links = ", ".join(f"[{p.name}]({folder}/{p.name})" for p in files)
            items.append(f"`{folder}/`, {what}: {links}")
    doc.bullets(items)
    return doc
