"""Tables and documents that render to Markdown, LaTeX (booktabs) and HTML from one description.

A :class:`Table` written as LaTeX compiles in ``\\documentclass[twocolumn]{article}`` with
``booktabs`` and ``graphicx`` loaded: it sits in one column (``table``) when its estimated width
fits there, else across both (``table*``), and it is shrunk to the line width, never enlarged,
when it would still be wider (the ``\\ifdim`` test in the file).
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Doc", "Table", "Tex", "best_mask", "inline_html", "latex_escape", "markdown_safe", "safe_href"]

# Widths of \documentclass[twocolumn]{article} (10 pt): one column and the whole text block.
COLUMN_WIDTH_PT = 229.5
TEXT_WIDTH_PT = 469.0


class Tex(str):
    """Plain text that carries its own LaTeX form (``"BRA (S=7)"`` / ``"BRA ($S{=}7$)"``).

    Markdown and HTML show the text; :meth:`Table.to_latex` writes ``.tex`` as it is.
    """

    tex: str

    def __new__(cls, text: str, tex: str) -> Tex:
        obj = super().__new__(cls, text)
        obj.tex = tex
        return obj


def best_mask(values: Sequence[float | None], higher_is_better: bool) -> list[bool]:
    """True where a value is the best of its column (ties all win); nothing is best among fewer than two."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return [False] * len(values)
    best = max(finite) if higher_is_better else min(finite)
    return [v is not None and math.isfinite(v) and v == best for v in values]


def _split_header(text: str) -> tuple[str, str]:
    """``"Latency (ms, median)"`` -> ``("Latency", "(ms, median)")``; no parenthesis: no unit line."""
    m = re.match(r"^(.*?)\s+(\(.*\))$", text)
    return (m.group(1), m.group(2)) if m else (text, "")


def _tex(cell: str) -> str:
    return cell.tex if isinstance(cell, Tex) else latex_escape(cell)


def _width_pt(text: str) -> float:
    """Rough width of ``text`` set in \\small (about 4.6 pt a character)."""
    return 4.6 * len(text)


@dataclasses.dataclass
class Table:
    """A table of pre-formatted cells.

    Attributes:
        name: file stem (``tables/<name>.md`` and ``.tex``) and LaTeX label.
        caption: one line saying what the rows are and their fixed conditions.
        header: column titles, units in parentheses (LaTeX sets the units on a second header line).
        rows: cell text, one list per row; a :class:`Tex` cell brings its LaTeX form.
        bold: same shape as ``rows``; True marks the best value of its column.
        align: one of ``l``/``r`` per column (default: first left, the rest right).
        note: a sentence printed under the table (conventions, missing values).
        groups: ``{row index: label}``: a spanning label row above that row (e.g. one per shape).
        header_groups: LaTeX only: ``(label, number of columns)`` spanning the column titles.
    """

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]] | None = None
    align: str | None = None
    note: str = ""
    groups: dict[int, str] = dataclasses.field(default_factory=dict)
    header_groups: list[tuple[str, int]] | None = None

    def _align(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)

    def _cells(self, wrap: str) -> list[list[str]]:
        bold = self.bold or [[False] * len(r) for r in self.rows]
        return [[wrap.format(c) if b else c for c, b in zip(row, brow)] for row, brow in zip(self.rows, bold)]

    def to_markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(markdown_safe(c).replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join(":---" if a == "l" else "---:" for a in self._align()) + "|"
        body = []
        for i, row in enumerate(self._cells("**{}**")):
            if i in self.groups:
                body.append(line([f"*{self.groups[i]}*", *[""] * (len(self.header) - 1)]))
            body.append(line(row))
        out = [f"**{markdown_safe(self.caption)}**", "", line(self.header), rule, *body]
        if self.note:
            out += ["", f"*{markdown_safe(self.note)}*"]
        return "\n".join(out) + "\n"

    def width_pt(self) -> float:
        """Estimated natural width of the LaTeX tabular (12 pt of padding per column)."""
        widths = []
        for j, h in enumerate(self.header):
            title, unit = _split_header(str(h))
            cells = [str(r[j]) for r in self.rows if j < len(r)]
            widths.append(max([_width_pt(title), _width_pt(unit), *map(_width_pt, cells)]) + 12)
        return sum(widths)

    def to_latex(self) -> str:
        n = len(self.header)
        wide = self.width_pt() > COLUMN_WIDTH_PT
        env = "table*" if wide else "table"
        titles, units = [], []
        for h in self.header:
            if isinstance(h, Tex):
                title, _, unit = h.tex.partition("\n")
            else:
                plain_title, plain_unit = _split_header(h)
                title, unit = latex_escape(plain_title), latex_escape(plain_unit)
            titles.append(title)
            units.append(unit)
        head = []
        if self.header_groups:
            spans, rules, col = [], [], 1
            for label, span in self.header_groups:
                text = _tex(label)
                spans.append(rf"\multicolumn{{{span}}}{{c}}{{{text}}}" if span > 1 or text else text)
                if text:
                    rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
                col += span
            head += [" & ".join(spans) + r" \\", " ".join(rules)]
        head.append(" & ".join(titles) + r" \\")
        if any(units):
            head.append(" & ".join(units) + r" \\")
        bold = self.bold or [[False] * len(r) for r in self.rows]
        body = []
        for i, (row, brow) in enumerate(zip(self.rows, bold)):
            if i in self.groups:
                if i:
                    body.append(r"\midrule")
                body.append(rf"\multicolumn{{{n}}}{{l}}{{\textit{{{_tex(self.groups[i])}}}}} \\")
            cells = [rf"\textbf{{{_tex(c)}}}" if b else _tex(c) for c, b in zip(row, brow)]
            body.append(" & ".join(cells) + r" \\")
        lines = [
            r"% needs \usepackage{booktabs,graphicx}; shrunk to the line width only where wider",
            rf"\begin{{{env}}}[t]",
            r"\centering",
            rf"\caption{{{_tex(self.caption)}}}",
            rf"\label{{tab:{self.name}}}",
            r"\small",
            r"\setbox0=\hbox{%",
            rf"\begin{{tabular}}{{@{{}}{self._align()}@{{}}}}",
            r"\toprule",
            *head,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}}%",
            r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\box0}\else\box0\fi",
        ]
        if self.note:
            lines += [r"\par\smallskip", rf"{{\footnotesize\raggedright {_tex(self.note)}\par}}"]
        lines.append(rf"\end{{{env}}}")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        cls = {"l": "l", "r": "r"}
        head = "".join(
            f'<th class="l">{html.escape(h)}</th>' if a == "l" else f"<th>{html.escape(h)}</th>"
            for h, a in zip(self.header, self._align())
        )
        rows = []
        for i, row in enumerate(self._cells("\0{}\1")):
            if i in self.groups:
                label = html.escape(self.groups[i])
                rows.append(f'<tr class="group"><th colspan="{len(self.header)}">{label}</th></tr>')
            cells = "".join(f'<td class="{cls[a]}">{html.escape(c)}</td>' for c, a in zip(row, self._align()))
            rows.append(f"<tr>{cells}</tr>")
        body = "".join(rows).replace("\0", "<b>").replace("\1", "</b>")
        note = f'<p class="note">{inline_html(self.note)}</p>' if self.note else ""
        return (
            f'<table id="{html.escape(self.name)}"><caption>{html.escape(self.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"
        )

    def write(self, folder: Path) -> list[Path]:
        """Write ``<name>.md`` and ``<name>.tex`` into ``folder``; returns both paths."""
        folder.mkdir(parents=True, exist_ok=True)
        md, tex = folder / f"{self.name}.md", folder / f"{self.name}.tex"
        md.write_text(self.to_markdown())
        tex.write_text(self.to_latex())
        return [md, tex]


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "×": r"$\times$",
    "±": r"$\pm$",
    "†": r"\textsuperscript{\dag}",
    "²": r"$^2$",
    "³": r"$^3$",
    "⁴": r"$^4$",
    "≈": r"$\approx$",
    "≠": r"$\neq$",
    "∈": r"$\in$",
    "→": r"$\to$",
    "÷": r"$\div$",
    "–": "--",
    "—": "---",
    "·": r"$\cdot$",
    "δ": r"$\delta$",
    "Δ": r"$\Delta$",
    "−": r"$-$",
    "ᵀ": r"$^\top$",
    "✕": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "α": r"$\alpha$",
    "τ": r"$\tau$",
    "<": r"\textless{}",  # a bare < or > is another glyph without T1 font encoding
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """``text`` for LaTeX: special characters escaped, the Unicode the reports use as math, and
    quotes as TeX quotes (``'GFLOPs'`` becomes ```GFLOPs'``)."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    out = re.sub(r"(^|[\s(\[])'", r"\1`", out)  # an opening single quote
    out = re.sub(r'(^|[\s(\[])"', r"\1``", out)
    return out.replace('"', "''")


_MD_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")  # what would open an HTML tag or comment in Markdown


def safe_href(target: str) -> bool:
    """Whether a link target may be live in a report: an http(s) URL, an anchor (``#part``), or a
    relative path that stays inside the run folder (no scheme, not absolute, no ``..`` part, no
    backslash). ``javascript:``, ``data:``, ``file:`` and the like are never links."""
    t = html.unescape(target).strip()
    if not t or any(ord(ch) < 32 for ch in t) or "\\" in t:
        return False
    if t.startswith("#"):
        return True
    if _SCHEME.match(t):
        return t.lower().startswith(("http://", "https://"))
    if t.startswith("/"):
        return False
    return ".." not in t.split("#", 1)[0].split("?", 1)[0].split("/")


def markdown_safe(text: str) -> str:
    """``text`` for report.md: every ``<`` that would open an HTML tag or comment written as
    ``&lt;`` (Markdown renderers pass inline HTML through), and every [link](target) whose target is
    not :func:`safe_href` written without its brackets, so it is plain text."""
    out = _TAG_START.sub("&lt;", str(text))
    return _MD_LINK.sub(lambda m: m.group(0) if safe_href(m.group(2)) else _plain_link(m), out)


def _plain_link(m: re.Match) -> str:
    return f"{m.group(1)} ({m.group(2)})"


def _link(m: re.Match) -> str:
    if not safe_href(m.group(2)):
        return _plain_link(m)
    return f'<a href="{html.escape(html.unescape(m.group(2)))}">{m.group(1)}</a>'


def inline_html(text: str) -> str:
    """Escape ``text`` and render the inline marks the reports use: `code`, **bold** and
    [links](target), a link only where :func:`safe_href` allows its target (else plain text)."""
    out = html.escape(text, quote=False)
    out = _MD_LINK.sub(_link, out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


@dataclasses.dataclass
class Doc:
    """A sequence of headings, paragraphs, bullet lists, tables, figures and folded parts."""

    blocks: list[tuple[str, object]] = dataclasses.field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def figure(self, path: str, caption: str) -> None:
        """``path`` relative to the folder the document is written to."""
        self.blocks.append(("img", (path, caption)))

    def details(self, summary: str, inner: Doc) -> None:
        """A part folded in HTML (``<details>``); in Markdown a bold line, then the part."""
        self.blocks.append(("details", (summary, inner)))

    def extend(self, other: Doc) -> None:
        self.blocks.extend(other.blocks)

    def shifted(self, levels: int) -> Doc:
        """A copy with every heading ``levels`` deeper (at most ``h6``), to nest it under another."""
        out = Doc()
        for kind, body in self.blocks:
            if kind.startswith("h"):
                kind = f"h{min(6, int(kind[1]) + levels)}"
            elif kind == "details":
                body = (body[0], body[1].shifted(levels))
            out.blocks.append((kind, body))
        return out

    def to_markdown(self) -> str:
        out: list[str] = []
        for kind, body in self.blocks:
            if kind.startswith("h"):
                out.append("#" * int(kind[1]) + f" {markdown_safe(body)}")
            elif kind == "p":
                out.append(markdown_safe(body))
            elif kind == "ul":
                out.append("\n".join(f"- {markdown_safe(item)}" for item in body))
            elif kind == "table":
                out.append(body.to_markdown().rstrip())
            elif kind == "img":
                path, caption = body
                caption = markdown_safe(caption).replace("]", "\\]")
                src = path if safe_href(path) else "#"
                out.append(f"![{caption}]({src})\n\n*{caption}*")
            elif kind == "details":
                summary, inner = body
                out.append(f"**{markdown_safe(summary)}**\n\n" + inner.to_markdown().rstrip())
        return "\n\n".join(out) + "\n"

    def to_html(self) -> str:
        out: list[str] = []
        for kind, body in self.blocks:
            if kind.startswith("h"):
                out.append(f"<{kind}>{inline_html(str(body))}</{kind}>")
            elif kind == "p":
                out.append(f"<p>{inline_html(str(body))}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in body) + "</ul>")
            elif kind == "table":
                out.append(body.to_html())
            elif kind == "img":
                path, caption = body
                src = html.escape(path if safe_href(path) else "#")
                out.append(
                    f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(caption)}"></a>'
                    f"<figcaption>{inline_html(caption)}</figcaption></figure>"
                )
            elif kind == "details":
                summary, inner = body
                out.append(
                    f"<details><summary>{inline_html(summary)}</summary>\n{inner.to_html()}\n</details>"
                )
        return "\n".join(out)
