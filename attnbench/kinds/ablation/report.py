"""The ablation kind's report: per dataset level, the outcome tables first (did each training learn;
the declared contrasts, Holm-adjusted over all levels: :mod:`.analysis`), the reach tables of reach
trainings (:mod:`.reach`), the straight-line-cue tables of Pathfinder levels (which may generate the
validation split once, into the Pathfinder cache), then the mean top-1 tables as secondary
(:mod:`.accuracy`); its summary and method say the same in words, and the attention maps in
``maps/`` are shown. The report reads stored rows only: the maps are drawn from the trained models
beforehand (:func:`prepare`, ``attnbench maps``)."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

from attnbench.report._document import Doc
from attnbench.report.options import ReportOptions
from attnbench.report.pages import Section, run_details, unstable_count, write_pages

__all__ = ["OPTIONS", "prepare", "write"]

OPTIONS = ("passes", "dtypes", "devices")  # row filters; the tables of an ablation are its own


def write(run_dir: Path, options: ReportOptions, say: Callable[[str], None]) -> Path:
    """Write the report of the ablation run in ``run_dir``; returns the path of ``index.html``."""
    from attnbench.kinds.ablation.accuracy import ablation_summary, ablation_tables
    from attnbench.kinds.ablation.analysis import (
        cue_reliance,
        cue_tables,
        outcome_analysis,
        outcome_tables,
        report_findings,
        report_method,
    )
    from attnbench.kinds.ablation.plots import ablation_plots
    from attnbench.kinds.ablation.reach import distance_frame, reach_findings, reach_summary, reach_tables
    from attnbench.report._results import load_run
    from attnbench.report.plots import draw_all
    from attnbench.report.references import write_bib

    started = time.time()
    results, df, manifest = load_run(run_dir, options, say)
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
    drawn: dict = {}
    not_drawn: dict[str, str] = {}
    if options.plots:
        say(f"drawing the plots ({', '.join(options.formats)})")
        drawn, not_drawn = draw_all(ablation_plots(df, manifest), run_dir / "plots", options.formats)
    figures = {
        name: (path.relative_to(run_dir).as_posix(), caption) for name, (path, caption) in drawn.items()
    }
    for table in tables:
        table.write(run_dir / "tables")
    write_bib(run_dir, [t.to_latex() for t in tables])

    say("writing report.md and index.html")
    findings = report_findings(summary, analysis, cue)
    findings.extend(reach_findings(reach))
    if unstable_count(df):
        findings.para(f"**{unstable_count(df)} timed row(s) are unstable**: their latency cells carry †.")
    details = run_details(results, df, run_dir)
    for paragraph in report_method(summary, analysis):
        details.para(paragraph)
    maps = _maps_doc(run_dir)
    return write_pages(
        run_dir,
        findings=findings,
        figures=figures,
        not_drawn=not_drawn,
        plots=options.plots,
        tables=tables,
        details=details,
        manifest=manifest,
        started=started,
        sections=[Section("maps", "Attention maps", maps)] if maps is not None else [],
    )


def prepare(run_dir: Path, maps: bool, say: Callable[[str], None]) -> None:
    """Draw the attention maps and effective receptive fields of the trained models into ``maps/``
    (``attnbench maps RUN_DIR``, about 5 s per configuration on a CPU) before the report shows them;
    a run whose models cannot be drawn (none kept, a mechanism that fails) is said in one line."""
    if not maps or not any(run_dir.glob("ablation/*/model.pt")):
        return
    from attnbench.kinds.ablation.maps import MapsError, draw_run_maps

    say("drawing the attention maps and effective receptive fields (maps/)")
    try:
        draw_run_maps(run_dir)
    except MapsError as exc:
        say(f"no attention maps: {exc}")


def _maps_doc(run_dir: Path) -> Doc | None:
    """The attention maps of an ablation run, where ``attnbench.kinds.ablation.maps.draw_run_maps`` wrote them
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
        "positions, with the effective receptive field (drawn by `attnbench maps` into `maps/`)."
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
