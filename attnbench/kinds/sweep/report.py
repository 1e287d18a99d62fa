"""The sweep kind's report: the comparison, sweep and growth tables, BRA's backends, the BRA formula
check, the plots of :mod:`.plots`, and a summary that names a fastest mechanism only where its
ratio to the runner-up is resolved (written with the kit of :mod:`attnbench.report`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from attnbench.report._document import Doc
from attnbench.report.options import SELECTING, ReportOptions
from attnbench.report.pages import Section, run_details, unstable_count, write_pages

__all__ = ["OPTIONS", "write"]

OPTIONS = SELECTING  # a sweep's tables honour every row and column option


def write(run_dir: Path, options: ReportOptions, say: Callable[[str], None]) -> Path:
    """Write the report of the sweep run in ``run_dir``; returns the path of ``index.html``."""
    from attnbench.kinds.sweep.bra_backends import bra_backend_tables
    from attnbench.kinds.sweep.formula import formula_tables, run_formula_check, verdict, write_formula_files
    from attnbench.kinds.sweep.plots import sweep_plots
    from attnbench.kinds.sweep.tables import comparison_tables, growth_tables, sweep_tables
    from attnbench.report._results import load_run
    from attnbench.report.plots import draw_all
    from attnbench.report.references import write_bib

    started = time.time()
    results, df, manifest = load_run(run_dir, options, say)
    o = options
    tables = [
        *comparison_tables(df, columns=o.columns, sort=o.sort, group_by=o.group_by, resolution=o.resolution),
        *sweep_tables(df, group_by=o.group_by, sort=o.sort),
        *growth_tables(df),
        *bra_backend_tables(df),
    ]
    check = None
    if options.formula:
        if "mechanism" in df.columns and (df["mechanism"] == "bra").any():
            say("BRA formula check: the published terms against the stored counts")
        check = run_formula_check(results)  # no BRA row: nothing to count, and nothing announced
    drawn: dict = {}
    not_drawn: dict[str, str] = {}
    if options.plots:
        say(f"drawing the plots ({', '.join(options.formats)})")
        plots = sweep_plots(df, check, _why_no_check(results, options.formula))
        drawn, not_drawn = draw_all(plots, run_dir / "plots", options.formats)
    figures = {
        name: (path.relative_to(run_dir).as_posix(), caption) for name, (path, caption) in drawn.items()
    }

    sections = []
    check_tables = []
    if check is not None:
        formula_figs = [figures[n] for n in ("formula_flops_vs_s", "formula_scaling") if n in figures]
        formula_doc = write_formula_files(check, run_dir, formula_figs)
        check_tables = formula_tables(check)
        md = Doc()
        md.para(
            "Full text: [formula_report.md](formula_report.md); rows: [formula_check.csv](formula_check.csv)."
        )
        for table in check_tables:
            md.table(table)
        folded = Doc()
        folded.details("The formula check in full: verdict, term by term, scaling", formula_doc.shifted(2))
        sections.append(Section("formula", "BRA formula check", md, folded, after_tables=True))
    for table in [*tables, *check_tables]:
        table.write(run_dir / "tables")
    write_bib(run_dir, [t.to_latex() for t in [*tables, *check_tables]])
    say("writing report.md and index.html")
    return write_pages(
        run_dir,
        findings=_findings(df, check, verdict),
        figures=figures,
        not_drawn=not_drawn,
        plots=options.plots,
        tables=tables,
        details=run_details(results, df, run_dir),
        manifest=manifest,
        started=started,
        sections=sections,
    )


def _why_no_check(results: pd.DataFrame, asked: bool) -> str:
    """Why there is no formula check to plot, from the rows."""
    if not asked:
        return "the formula check did not run (--no-formula)"
    if results.empty or "mechanism" not in results.columns or not (results["mechanism"] == "bra").any():
        return "the run has no BRA rows"
    return "the formula check counted no BRA layer"


def _findings(df: pd.DataFrame, check: object, verdict: Callable[[object], str]) -> Doc:
    """One screen: the fastest and the cheapest mechanism per pass at the largest resolution, the
    formula verdict and the unstable rows."""
    from attnbench.report._results import resolution_label

    doc = Doc()
    lines = []
    ok = df[df["status"] == "ok"] if not df.empty else df
    if not ok.empty:
        for pass_, rows in ok.groupby("pass", sort=False):
            timed = rows[rows["latency_ms"].notna()] if "latency_ms" in rows else rows.iloc[:0]
            counted = rows[rows["flops"].notna()] if "flops" in rows else rows.iloc[:0]
            parts = []
            for what, sel, col, fmt in (
                ("fastest", timed, "latency_ms", _ms),
                ("fewest FLOPs", counted, "flops", _macs),
            ):
                if sel.empty:
                    continue
                hw = (sel["H"] * sel["W"]).max()
                at = sel[sel["H"] * sel["W"] == hw]
                means = at.groupby("label", sort=False)[col].mean().sort_values()
                if len(means) < 2:
                    continue
                best = means[means == means.iloc[0]]
                runner = means[means > means.iloc[0]]
                where = resolution_label(at["H"].iloc[0], at["W"].iloc[0])
                noise = (
                    _within_noise(at, best.index[0], runner.index[0])
                    if col == "latency_ms" and len(best) == 1 and not runner.empty
                    else None
                )
                if noise is not None and noise[1] <= 1:  # the runner-up may be as fast: no winner named
                    parts.append(
                        f"{what} at {where}: **within noise** between {best.index[0]} ({fmt(means.iloc[0])}) "
                        f"and {runner.index[0]} ({fmt(runner.iloc[0])}): their ratio's 95 % interval "
                        f"[{noise[1]:.2f}, {noise[2]:.2f}] includes 1 ({len(means)} compared)"
                    )
                    continue
                text = f"{what} at {where}: **" + ", ".join(best.index) + f"** {fmt(means.iloc[0])}"
                if not runner.empty:
                    ratio = ""
                    if noise is not None:
                        ratio = f"; {runner.index[0]} / {best.index[0]} = {noise[0]:.2f} "
                        ratio += f"[{noise[1]:.2f}, {noise[2]:.2f}]"
                    text += f" (next: {runner.index[0]}, {fmt(runner.iloc[0])}{ratio}; {len(means)} compared)"
                parts.append(text)
            if parts:
                lines.append(f"**{pass_}**: " + "; ".join(parts) + ".")
    doc.bullets(lines)
    if check is not None:
        doc.para(verdict(check))
    unstable = unstable_count(df)
    if unstable:
        doc.para(
            f"**{unstable} timed row(s) are unstable**: their cells carry † in the tables; measure them "
            "again on a quiet machine before publishing (see Run)."
        )
    if not lines and check is None and not unstable:
        doc.para("No ok row with a latency or a FLOP count to compare.")
    return doc


def _within_noise(at: pd.DataFrame, best: str, runner: str) -> tuple[float, float, float] | None:
    """(runner / best, low, high): the latency ratio of the runner-up to the fastest with its 95 %
    bootstrap interval from their stored timing samples (:func:`attnbench.report.compare.ratio_interval`);
    None when either is not one row with at least 3 samples."""
    from attnbench.report._results import latency_samples
    from attnbench.report.compare import MIN_SAMPLES, ratio_interval

    found = []
    for label in (best, runner):
        rows = at[at["label"] == label]
        if len(rows) != 1 or "latency_samples_ms" not in rows.columns:
            return None
        samples = latency_samples(rows["latency_samples_ms"].iloc[0])
        if len(samples) < MIN_SAMPLES:
            return None
        found.append(samples)
    return ratio_interval(found[0], found[1])


def _ms(value: float) -> str:
    return f"{value:.3g} ms"


def _macs(value: float) -> str:
    from attnbench.report._results import scaled_unit

    div, unit = scaled_unit(value, "MACs")
    return f"{value / div:.3g} {unit}"


def _ms(value: float) -> str:
    return f"{value:.3g} ms"


def _macs(value: float) -> str:
    from attnbench.report._results import scaled_unit

    div, unit = scaled_unit(value, "MACs")
    return f"{value / div:.3g} {unit}"
