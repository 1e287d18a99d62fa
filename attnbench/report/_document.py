"""Tables and documents that render to Markdown, LaTeX (booktabs) and HTML from one description."""

from __future__ import annotations

import dataclasses
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Doc", "Table", "best_mask", "inline_html"]


def best_mask(values: Sequence[float | None], higher_is_better: bool) -> list[bool]:
    """True where a value is the best of its column (ties all win); nothing is best among fewer than two."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return [False] * len(values)
    best = max(finite) if higher_is_better else min(finite)
    return [v is not None and math.isfinite(v) and v == best for v in values]


@dataclasses.dataclass
class Table:
    """A table of pre-formatted cells.

    Attributes:
        name: file stem (``tables/<name>.md`` and ``.tex``) and LaTeX label.
        caption: one line saying what the rows are and their fixed conditions.
        header: column titles, units in parentheses.
        rows: cell text, one list per row.
        bold: same shape as ``rows``; True marks the best value of its column.
        align: one of ``l``/``r`` per column (default: first left, the rest right).
        note: a sentence printed under the table (conventions, missing values).
    """

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]] | None = None
    align: str | None = None
    note: str = ""

    def _align(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)

    def _cells(self, wrap: str) -> list[list[str]]:
        bold = self.bold or [[False] * len(r) for r in self.rows]
        return [[wrap.format(c) if b else c for c, b in zip(row, brow)] for row, brow in zip(self.rows, bold)]

    def to_markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join(":---" if a == "l" else "---:" for a in self._align()) + "|"
        body = [line(r) for r in self._cells("**{}**")]
        out = [f"**{self.caption}**", "", line(self.header), rule, *body]
        if self.note:
            out += ["", f"*{self.note}*"]
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        header = " & ".join(latex_escape(h) for h in self.header) + r" \\"
        bold = self.bold or [[False] * len(r) for r in self.rows]
        body = [
            " & ".join(rf"\textbf{{{latex_escape(c)}}}" if b else latex_escape(c) for c, b in zip(row, brow))
            + r" \\"
            for row, brow in zip(self.rows, bold)
        ]
        lines = [
            r"% needs \usepackage{booktabs}",
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{latex_escape(self.caption)}}}",
            rf"\label{{tab:{self.name}}}",
            rf"\begin{{tabular}}{{{self._align()}}}",
            r"\toprule",
            header,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
        ]
        if self.note:
            lines += [r"\par\smallskip", rf"{{\footnotesize {latex_escape(self.note)}}}"]
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        cls = {"l": "l", "r": "r"}
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>"
            + "".join(f'<td class="{cls[a]}">{html.escape(c)}</td>' for c, a in zip(row, self._align()))
            + "</tr>"
            for row in self._cells("\0{}\1")
        )
        body = body.replace("\0", "<b>").replace("\1", "</b>")
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
    "⁴": r"$^4$",
    "≈": r"$\approx$",
    "–": "--",
    "—": "---",
    "·": r"$\cdot$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def inline_html(text: str) -> str:
    """Escape ``text`` and render the two inline marks the reports use: `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


@dataclasses.dataclass
class Doc:
    """A sequence of headings, paragraphs, bullet lists, tables and figures."""

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

    def extend(self, other: Doc) -> None:
        self.blocks.extend(other.blocks)

    def to_markdown(self) -> str:
        out: list[str] = []
        for kind, body in self.blocks:
            if kind.startswith("h"):
                out.append("#" * int(kind[1]) + f" {body}")
            elif kind == "p":
                out.append(str(body))
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in body))
            elif kind == "table":
                out.append(body.to_markdown().rstrip())
            elif kind == "img":
                path, caption = body
                out.append(f"![{caption}]({path})\n\n*{caption}*")
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
                src = html.escape(path)
                out.append(
                    f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(caption)}"></a>'
                    f"<figcaption>{inline_html(caption)}</figcaption></figure>"
                )
        return "\n".join(out)
