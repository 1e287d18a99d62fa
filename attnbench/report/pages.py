"""The pages of a report: ``report.md`` and ``index.html`` from a kind's findings, plots, tables and
extra sections, and the run details every report of timed or trained rows shares.

A kind's report (``attnbench/kinds/<kind>/report.py``) computes what it shows and hands it to
:func:`write_pages`, which writes both pages the same way for every kind and removes what an earlier
report wrote that this one no longer does (:func:`remove_stale`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.report._document import Doc, Table
from attnbench.report.html import files_doc, index_html

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STALE_PARTS", "Section", "remove_stale", "run_details", "unstable_count", "write_pages"]

STALE_PARTS = ("tables", "plots", "formula_check.csv", "formula_report.md")  # what a report rewrites


@dataclasses.dataclass(frozen=True)
class Section:
    """A section of both pages besides the findings, plots, tables and run details.

    Attributes:
        anchor: its id in ``index.html``.
        title: its heading.
        markdown: its text in ``report.md``.
        html: its text in ``index.html`` (default: ``markdown``).
        after_tables: placed after the tables (else before them).
    """

    anchor: str
    title: str
    markdown: Doc
    html: Doc | None = None
    after_tables: bool = False


def write_pages(
    run_dir: Path,
    *,
    findings: Doc,
    figures: dict[str, tuple[str, str]],
    not_drawn: dict[str, str],
    plots: bool | None,
    tables: Sequence[Table],
    details: Doc,
    manifest: dict[str, Any],
    started: float,
    sections: Sequence[Section] = (),
) -> Path:
    """Write ``report.md`` and ``index.html`` of ``run_dir``; returns the path of ``index.html``.

    Args:
        figures: ``{name: (path relative to run_dir, caption)}`` of the plots drawn.
        not_drawn: ``{name: why}`` of the plots the data did not allow.
        plots: False when plots were not asked for (``--no-plots``); None for a kind that draws none
            (no Plots section).
        started: when the report started: files of :data:`STALE_PARTS` older than this are removed.
    """
    plots_doc = Doc()
    for path, caption in figures.values():
        plots_doc.figure(path, caption)
    plots_doc.bullets([f"`{name}` not drawn: {why}." for name, why in not_drawn.items()])
    if plots is False:
        plots_doc.para("Plots were not drawn (`--no-plots`).")
    tables_doc = Doc()
    for table in tables:
        one = Doc()
        one.table(table)
        tables_doc.details(table.caption, one)
    if not tables:
        tables_doc.para("No rows to tabulate after the filters.")
    before = [s for s in sections if not s.after_tables]
    after = [s for s in sections if s.after_tables]

    markdown = Doc()
    markdown.heading(f"Report of {run_dir.name}", 1)
    markdown.extend(findings)
    if plots is not None:
        markdown.heading("Plots")
        markdown.extend(plots_doc)
    for section in before:
        markdown.heading(section.title)
        markdown.extend(section.markdown)
    markdown.heading("Tables")
    for table in tables:
        markdown.table(table)
    for section in after:
        markdown.heading(section.title)
        markdown.extend(section.markdown)
    markdown.heading("Run")
    markdown.extend(details)
    (run_dir / "report.md").write_text(markdown.to_markdown())

    html = [("summary", "Summary", findings)]
    html += [("plots", "Plots", plots_doc)] if plots is not None else []
    html += [(s.anchor, s.title, s.html or s.markdown) for s in before]
    html.append(("tables", "Tables", tables_doc))
    html += [(s.anchor, s.title, s.html or s.markdown) for s in after]
    html.append(("run", "Run", details))
    remove_stale(run_dir, started)
    html.append(("files", "Files", files_doc(run_dir)))
    index = run_dir / "index.html"
    index.write_text(index_html(f"attnbench report: {run_dir.name}", html, manifest))
    return index


def remove_stale(run_dir: Path, started: float) -> list[Path]:
    """Remove the files of the report's own parts (:data:`STALE_PARTS`) that this report did not
    write (last written before it started): a report with other options must not leave the previous
    one's tables and plots beside its own. Returns what was removed."""
    removed = []
    for part in STALE_PARTS:
        path = run_dir / part
        files = (
            [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
        )
        for f in files:
            if not f.is_symlink() and f.stat().st_mtime < started:
                f.unlink()
                removed.append(f)
    return removed


def unstable_count(df: pd.DataFrame) -> int:
    """How many rows of ``df`` are marked unstable."""
    if "unstable" not in df.columns:
        return 0
    return int(df["unstable"].astype(str).isin(["1", "1.0", "True"]).sum())


def run_details(results: pd.DataFrame, df: pd.DataFrame, run_dir: Path) -> Doc:
    """What the run holds, the conventions of its numbers, and the rows that failed."""
    from attnbench.report._results import resolution_label

    doc = Doc()
    counts = results["status"].value_counts()
    doc.para(
        f"`{run_dir.name}`: {len(results)} rows in `results.db` ("
        + ", ".join(f"{n} {s or 'no status'}" for s, n in counts.items())
        + f"); {len(df)} after the filters. Mechanisms: "
        + ", ".join(f"`{m}`" for m in dict.fromkeys(df["mechanism"]))
        + ". Resolutions: "
        + ", ".join(dict.fromkeys(resolution_label(h, w) for h, w in zip(df["H"], df["W"])))
        + "."
    )
    if results.attrs.get("left_out"):
        doc.para(f"**Rows left out:** {results.attrs['left_out']}.")
    unstable = unstable_count(df)
    if unstable:
        doc.para(
            f"**{unstable} timed row(s) are unstable** (their IQR exceeds 10 % of the median, or "
            "other work kept the machine busy while they were timed; column `unstable_why`): their "
            "latency, throughput and memory cells are marked with † in the tables. Measure on a quiet "
            "machine before publishing them."
        )
    doc.para(
        "Conventions: FLOPs are multiply-accumulates of one image (batch 1) counted by fvcore "
        "(1 MAC = 1 FLOP, the convention of the BiFormer, Swin and DAT papers); latency is the median of "
        "the timing samples at the row's batch, and plot bands run from their 25th to their 75th "
        "percentile (computed from the stored samples, `latency_samples_ms`); throughput is batch / "
        "median latency; peak memory is in MiB (2²⁰ bytes). The LaTeX tables cite from "
        "`references.bib`."
    )
    failed = results[results["status"] == "error"]
    if not failed.empty:
        doc.para(f"{len(failed)} row(s) failed" + (" (the first 20):" if len(failed) > 20 else ":"))
        doc.bullets(
            [
                f"`{r['label']}` at {resolution_label(r['H'], r['W'])}, {r['pass']}: " + str(r["error"])[:160]
                for _, r in failed.head(20).iterrows()
            ]
        )
    return doc
