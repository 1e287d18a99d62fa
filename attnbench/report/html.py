"""``index.html`` of a run folder: every table, plot and the manifest, viewable offline.

One self-contained file: the style sheet is inline, images are relative links into the run folder
(``plots/*.png``), nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from attnbench.report._document import Doc

__all__ = ["index_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
nav a { margin-right: 1rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .8rem 0 .3rem; font-size: .9rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3rem; }
thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; padding: .25rem .6rem;
           text-align: right; }
thead th:first-child { text-align: left; }
tbody tr:last-child td { border-bottom: 2px solid #222; }
td { padding: .2rem .6rem; } td.l { text-align: left; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
p.note { font-size: .85rem; color: #555; margin-top: 0; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .8rem; }
code { background: #f3f3f3; padding: 0 .2rem; }
"""


def index_html(title: str, sections: Sequence[tuple[str, str, Doc]], manifest: dict[str, Any]) -> str:
    """The page: a navigation bar, then each ``(anchor, heading, content)`` section, then the manifest."""
    nav = " ".join(f'<a href="#{html.escape(a)}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = [
        f'<section id="{html.escape(anchor)}"><h2>{html.escape(heading)}</h2>\n{doc.to_html()}</section>'
        for anchor, heading, doc in sections
    ]
    manifest_text = (
        json.dumps(manifest, indent=2, default=str) if manifest else "(no manifest.json in the run folder)"
    )
    body.append(f'<section id="manifest"><h2>Manifest</h2><pre>{html.escape(manifest_text)}</pre></section>')
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f'<h1>{html.escape(title)}</h1>\n<nav>{nav} <a href="#manifest">Manifest</a></nav>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )
