"""Reports of a run folder: BRA's formula checked against the count, paper-style tables, plots.

:func:`write_report` reads the stored rows (``results.db``, or ``results.csv`` alone) and
``manifest.json`` of a run folder and writes, beside them:

- ``formula_check.csv`` and ``formula_report.md`` when the run has BRA points (:mod:`.formula`);
- ``tables/*.md`` and ``tables/*.tex``: the mechanism comparison, resolution sweeps and the formula
  tables (:mod:`.tables`), and for BRA measured over several backends the backends table
  (:mod:`.bra_backends`). The LaTeX compiles in a two-column article (booktabs, graphicx), labels
  rows with each mechanism's ``display_name`` and ``param_symbols``, and cites (``\\cite``) the entries
  of ``references.bib`` (:mod:`.references`), written beside it;
- ``plots/*.png`` and ``*.svg`` (:mod:`.plots`);
- ``index.html`` (:mod:`.html`): a one-screen summary, the plots, the tables folded, links to every
  file and the manifest, offline; ``report.md``, the same in Markdown.

An ablation run (``kind: ablation``) gets, per dataset level, the outcome tables first (did each
training learn, the declared contrasts Holm-adjusted over all levels: :mod:`.outcome`), the
straight-line-cue tables of Pathfinder levels (which may generate the validation split once, into
the Pathfinder cache), then the mean top-1 tables as secondary (:mod:`.ablation`); its summary and
method say the same in words.

A models run (``kind: models``) gets its own report instead (:mod:`.models`): ``tables/models.md``
and ``.tex``, a throughput/memory plot, ``report.md`` and ``index.html``.

The runner calls ``write_report(run_dir)`` at the end of ``attnbench run``; ``attnbench report``
calls it with the options of :func:`add_arguments` (defined in :mod:`.options`) and prints a
progress line as each step starts.

Importing this package is cheap: pandas, matplotlib and torch are imported by
:func:`write_report` when it runs, so that the command line builds its parser without them.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from attnbench.report._document import Doc, Table
from attnbench.report.options import add_arguments

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["add_arguments", "report_from_args", "write_report"]


def write_report(
    run_dir: str | Path,
    *,
    columns: Sequence[str] | None = None,
    sort: str | None = None,
    group_by: Sequence[str] | None = None,
    passes: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    resolution: tuple[int, int] | None = None,
    formula: bool = True,
    plots: bool = True,
    formats: Sequence[str] = ("png", "svg"),
    progress: Callable[[str], None] | None = None,
    maps: bool = True,
) -> Path:
    """Write the tables, plots, formula check and ``index.html`` of a run folder.

    Args:
        run_dir: folder holding ``results.db`` or ``results.csv`` (and ``manifest.json``).
        columns: comparison-table columns, keys of :data:`attnbench.report.tables.METRICS`.
        sort: comparison rows by a column key (``-key`` descending, or ``mechanism``); default: run order.
        group_by: columns that split the tables (default: the conditions that vary, e.g. ``pass``).
        passes, dtypes, devices: keep only these rows for tables and plots.
        resolution: (H, W) of the comparison table; default: the size most mechanisms ran at.
        formula: run the BRA formula check (counts every BRA point again, about 0.5 s each on CPU).
        plots: draw the plots.
        formats: image formats of the plots (the first is linked from the pages).
        progress: called with a short line as each step starts (``attnbench report`` prints them).
        maps: an ablation run with trained models (and ``plots``): draw the attention maps and ERFs
            into ``maps/`` first (:func:`attnbench.maps.draw_run_maps`, about 5 s per configuration
            on a CPU); False keeps ``maps/`` as it is.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: no results in ``run_dir``.
        ValueError: an option names a column, value, format or resolution the run does not have.
    """
    from attnbench.report._results import filter_rows, load_manifest, load_results, mechanism_labels
    from attnbench.report.ablation import ablation_summary, ablation_tables, is_ablation_frame
    from attnbench.report.bra_backends import bra_backend_tables
    from attnbench.report.doctor import is_doctor_run, write_doctor_report
    from attnbench.report.formula import formula_tables, run_formula_check, verdict, write_formula_files
    from attnbench.report.html import files_doc, index_html
    from attnbench.report.models import is_models_run, write_models_report
    from attnbench.report.outcome import (
        cue_reliance,
        cue_tables,
        outcome_analysis,
        outcome_tables,
        report_findings,
        report_method,
    )
    from attnbench.report.peers import is_peers_frame, peers_tables
    from attnbench.report.plots import PLOTS, check_formats, draw_all
    from attnbench.report.reach import distance_frame, reach_findings, reach_summary, reach_tables
    from attnbench.report.references import write_bib
    from attnbench.report.tables import comparison_tables, growth_tables, sweep_tables

    say = progress or (lambda line: None)
    run_dir = Path(run_dir)
    if plots:
        check_formats(formats)
    if is_doctor_run(run_dir) or is_models_run(run_dir):  # a doctor run, a models table: their own reports
        given = {"columns": columns, "sort": sort, "group_by": group_by, "passes": passes}
        given.update(dtypes=dtypes, devices=devices, resolution=resolution)
        if any(v is not None for v in given.values()):
            options = [k for k, v in given.items() if v is not None]
            what = "doctor" if is_doctor_run(run_dir) else "models"
            raise ValueError(f"{options} select rows or columns of sweep runs; {run_dir} is a {what} run")
        if is_doctor_run(run_dir):
            return write_doctor_report(run_dir, progress=say)
        return write_models_report(run_dir, plots=plots, formats=formats, progress=say)
    started = time.time()
    results = load_results(run_dir)
    say(f"{len(results)} rows read; writing the tables")
    manifest = load_manifest(run_dir)
    results["label"] = mechanism_labels(results) if not results.empty else []
    df = filter_rows(results, passes=passes, dtypes=dtypes, devices=devices).copy()

    peers_run = is_peers_frame(results)
    ablation_run = not peers_run and is_ablation_frame(results)
    summary = analysis = cue = None
    reach = None
    if peers_run:  # each mechanism against its peers: ratio tables; the sweep's tables do not apply
        tables = peers_tables(df)
        formula = plots = False
    elif ablation_run:  # trained backbones: learned or not (primary), then accuracy intervals
        say("testing the declared contrasts of the learning outcomes")
        analysis = outcome_analysis(df, manifest)
        say("checking the learned trainings against the straight-line cue")
        cue = cue_reliance(df, manifest, analysis)
        say("computing the intervals of the accuracies and of the paired differences")
        summary = ablation_summary(df, manifest=manifest)
        reach = reach_summary(distance_frame(df, manifest), df)
        tables = [
            *outcome_tables(analysis, df),
            *reach_tables(reach, df),
            *cue_tables(cue, df),
            *ablation_tables(summary, df),
        ]
        formula = False  # the rows count whole backbones, not one BRA layer
    else:
        tables = [
            *comparison_tables(df, columns=columns, sort=sort, group_by=group_by, resolution=resolution),
            *sweep_tables(df, group_by=group_by, sort=sort),
            *growth_tables(df),
            *bra_backend_tables(df),
        ]
    check = None
    if formula and "mechanism" in df.columns and (df["mechanism"] == "bra").any():
        say("BRA formula check: counting every BRA point again")
        check = run_formula_check(results)
    elif formula:
        check = run_formula_check(results)  # no BRA row: nothing to count, and nothing announced
    drawn: dict = {}
    not_drawn: dict[str, str] = {}
    if plots:
        say(f"drawing up to {len(PLOTS)} plots ({', '.join(formats)})")
        drawn, not_drawn = draw_all(df, check, run_dir / "plots", formats, results=results, manifest=manifest)
    figures = {
        name: (path.relative_to(run_dir).as_posix(), caption) for name, (path, caption) in drawn.items()
    }

    formula_doc, check_tables = None, []
    if check is not None:
        formula_figs = [figures[n] for n in ("formula_flops_vs_s", "formula_scaling") if n in figures]
        formula_doc = write_formula_files(check, run_dir, formula_figs)
        check_tables = formula_tables(check)
    for table in [*tables, *check_tables]:
        table.write(run_dir / "tables")
    write_bib(run_dir, [t.to_latex() for t in [*tables, *check_tables]])

    say("writing report.md and index.html")
    if summary is not None:
        findings = report_findings(summary, analysis, cue)
        if reach is not None:
            findings.extend(reach_findings(reach))
        if _unstable(df):
            findings.para(f"**{_unstable(df)} timed row(s) are unstable**: their latency cells carry †.")
    else:
        findings = _findings(df, check, verdict)
    details = _run_details(results, df, run_dir)
    if summary is not None:
        for paragraph in report_method(summary, analysis):
            details.para(paragraph)
    if ablation_run and maps and plots:
        _draw_maps(run_dir, say)
    maps_doc = _maps_doc(run_dir) if ablation_run else None
    plots_doc = Doc()
    for path, caption in figures.values():
        plots_doc.figure(path, caption)
    plots_doc.bullets([f"`{name}` not drawn: {why}." for name, why in not_drawn.items()])
    if not plots:
        plots_doc.para("Plots were not drawn (`--no-plots`).")
    tables_doc = Doc()
    for table in tables:
        tables_doc.details(table.caption, _one_table(table))
    if not tables:
        tables_doc.para("No rows to tabulate after the filters.")

    markdown = Doc()
    markdown.heading(f"Report of {run_dir.name}", 1)
    markdown.extend(findings)
    markdown.heading("Plots")
    markdown.extend(plots_doc)
    if maps_doc is not None:
        markdown.heading("Attention maps")
        markdown.extend(maps_doc)
    markdown.heading("Tables")
    for table in tables:
        markdown.table(table)
    if formula_doc is not None:
        markdown.heading("BRA formula check")
        markdown.para(
            "Full text: [formula_report.md](formula_report.md); rows: [formula_check.csv](formula_check.csv)."
        )
        for table in check_tables:
            markdown.table(table)
    markdown.heading("Run")
    markdown.extend(details)
    (run_dir / "report.md").write_text(markdown.to_markdown())

    sections = [
        ("summary", "Summary", findings),
        ("plots", "Plots", plots_doc),
        *([("maps", "Attention maps", maps_doc)] if maps_doc is not None else []),
        ("tables", "Tables", tables_doc),
    ]
    if formula_doc is not None:
        folded = Doc()
        folded.details("The formula check in full: verdict, term by term, scaling", formula_doc.shifted(2))
        sections.append(("formula", "BRA formula check", folded))
    sections.append(("run", "Run", details))
    _remove_stale(run_dir, started)
    sections.append(("files", "Files", files_doc(run_dir)))
    index = run_dir / "index.html"
    index.write_text(index_html(f"attnbench report: {run_dir.name}", sections, manifest))
    return index


STALE_PARTS = ("tables", "plots", "formula_check.csv", "formula_report.md")  # what a report rewrites


def _remove_stale(run_dir: Path, started: float) -> list[Path]:
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


def _draw_maps(run_dir: Path, say: Callable[[str], None]) -> None:
    """``attnbench maps RUN_DIR`` for the report; a run whose models cannot be drawn (none kept, a
    mechanism that fails) is said in one line, and the report goes on."""
    if not any(run_dir.glob("ablation/*/model.pt")):
        return
    from attnbench.maps import MapsError, draw_run_maps

    say("drawing the attention maps and effective receptive fields (maps/)")
    try:
        draw_run_maps(run_dir)
    except MapsError as exc:
        say(f"no attention maps: {exc}")


def _maps_doc(run_dir: Path) -> Doc | None:
    """The attention maps of an ablation run, where ``attnbench.maps.draw_run_maps`` wrote them
    (``maps/*.png``, ``all.png`` first, and ``erf.csv``); None when the folder has none. The report
    only shows these files: drawing them needs the trained models and torch."""
    pngs = sorted((run_dir / "maps").glob("*.png"), key=lambda p: (p.stem != "all", p.stem))
    if not pngs:
        return None
    erf = run_dir / "maps" / "erf.csv"
    labels = _map_labels(erf)
    doc = Doc()
    doc.para(
        "Where each configuration's attention looks, at initialisation and trained, for a few query "
        "positions, with the effective receptive field (drawn by `attnbench.maps` into `maps/`)."
        + (" ERF radii: [maps/erf.csv](maps/erf.csv)." if erf.is_file() else "")
    )
    for path in pngs:
        what = "every configuration" if path.stem == "all" else labels.get(path.stem, path.stem)
        doc.figure(path.relative_to(run_dir).as_posix(), f"Attention maps and ERF: {what}.")
    return doc


def _map_labels(erf_csv: Path) -> dict[str, str]:
    """``{file stem: configuration label}`` from ``erf.csv``'s ``file`` and ``configuration``
    columns (empty for a missing file or one written before the ``file`` column)."""
    if not erf_csv.is_file():
        return {}
    with erf_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["file"]: r["configuration"] for r in rows if r.get("file") and r.get("configuration")}


def _one_table(table: Table) -> Doc:
    doc = Doc()
    doc.table(table)
    return doc


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
    unstable = _unstable(df)
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


def _unstable(df: pd.DataFrame) -> int:
    if "unstable" not in df.columns:
        return 0
    return int(df["unstable"].astype(str).isin(["1", "1.0", "True"]).sum())


def _run_details(results: pd.DataFrame, df: pd.DataFrame, run_dir: Path) -> Doc:
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
    unstable = _unstable(df)
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


def report_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`write_report` with the options parsed by :func:`add_arguments`, printing progress."""
    return write_report(
        args.run_dir,
        columns=args.columns,
        sort=args.sort,
        group_by=args.group_by,
        passes=args.passes,
        dtypes=args.dtypes,
        devices=args.devices,
        resolution=args.resolution,
        formula=args.formula,
        plots=args.plots,
        formats=args.formats,
        maps=args.maps,
        progress=lambda line: print(f"attnbench report: {line} ...", flush=True),
    )
