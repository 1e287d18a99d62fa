"""Reports of a run folder, written by the run's kind from its stored rows and manifest.

:func:`write_report` reads which kind of study the folder holds from its manifest (else the kind
``results.db`` records; else ``sweep``) and calls that kind's report
(``attnbench/kinds/<kind>/report.py``, :mod:`attnbench.kind`). Every kind's report writes, beside
the rows:

- ``tables/*.md`` and ``tables/*.tex`` (the LaTeX compiles in a two-column article with booktabs and
  graphicx, labels rows with each mechanism's ``display_name`` and ``param_symbols``, and cites the
  entries of ``references.bib``, :mod:`.references`, written beside it);
- ``plots/*.png`` and ``*.svg`` (drawn with :mod:`.plots`);
- ``report.md`` and ``index.html`` (:mod:`.pages`, :mod:`.html`): a one-screen summary, the plots, the
  tables folded, links to every file and the manifest, offline.

What each kind adds: a sweep the BRA formula check (``formula_check.csv``, ``formula_report.md``)
and the backends table; an ablation the declared contrasts of its learning outcomes, the
straight-line-cue tables, the reach tables and the attention maps that ``attnbench maps`` drew; a
models run its models table; a peers run its ratio tables; a doctor run its verdicts.

This package is the kit the kinds write with (documents, tables, LaTeX, HTML, plots, pages) and
knows no kind: it imports none. The runner calls ``write_report(run_dir)`` at the end of
``attnbench run``; ``attnbench report`` calls it with the options of :func:`add_arguments` (defined
in :mod:`.options`) and prints a progress line as each step starts.

Importing this package is cheap: pandas, matplotlib and torch are imported by the kind's report
when it runs, so that the command line builds its parser without them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from attnbench.report.options import ReportOptions, add_arguments

__all__ = [
    "ReportOptions",
    "add_arguments",
    "prepare_report",
    "report_from_args",
    "run_kind",
    "write_report",
]


def run_kind(run_dir: str | Path) -> str:
    """The kind of study ``run_dir`` holds: its manifest's, else the one ``results.db`` records,
    else ``sweep`` (a ``results.csv`` alone)."""
    from attnbench.store import recorded_kind

    return recorded_kind(run_dir) or "sweep"


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
    """Write the tables, plots and pages of a run folder, by the report of the run's kind.

    Args:
        run_dir: folder holding ``results.db`` or ``results.csv`` (and ``manifest.json``).
        columns: comparison-table columns, keys of :data:`attnbench.kinds.sweep.tables.METRICS` (sweep).
        sort: comparison rows by a column key (``-key`` descending, or ``mechanism``); default: run
            order (sweep).
        group_by: columns that split the tables (default: the conditions that vary, e.g. ``pass``) (sweep).
        passes, dtypes, devices: keep only these rows for tables and plots (sweep, ablation, peers).
        resolution: (H, W) of the comparison table; default: the size most mechanisms ran at (sweep).
        formula: run the BRA formula check (sweep).
        plots: draw the plots.
        formats: image formats of the plots (the first is linked from the pages).
        progress: called with a short line as each step starts (``attnbench report`` prints them).
        maps: kept for callers of earlier versions; drawing an ablation run's attention maps is
            :func:`prepare_report`'s (``attnbench report`` and the runner call it first), and the
            report shows whatever ``maps/`` holds.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: no results in ``run_dir``.
        ValueError: an option names a column, value, format or resolution the run does not have, or
            selects rows or columns that the run's kind does not have.
    """
    from attnbench.kind import kind_module

    run_dir = Path(run_dir)
    options = ReportOptions(
        columns, sort, group_by, passes, dtypes, devices, resolution, formula, plots, tuple(formats), maps
    )
    kind = run_kind(run_dir)
    try:
        report = kind_module(kind, "report")
    except ValueError:
        report = None
    if report is None:
        from attnbench.kind import KINDS

        raise ValueError(
            f"{run_dir} holds a {kind!r} run, a kind with no report here (known: {', '.join(KINDS)}); a "
            "kind of your own is registered with attnbench.kind.register_kind before its runs are reported"
        )
    refused = [name for name in options.given() if name not in report.OPTIONS]
    if refused:
        raise ValueError(f"{refused} select rows or columns of other kinds of run; {run_dir} is a {kind} run")
    if options.plots:
        from attnbench.report.plots import check_formats

        check_formats(options.formats)
    return report.write(run_dir, options, progress or (lambda line: None))


def prepare_report(
    run_dir: str | Path, *, maps: bool = True, progress: Callable[[str], None] | None = None
) -> None:
    """What a report shows that the stored rows do not hold, made by the run's kind before
    :func:`write_report` (which never runs a model): an ablation run's attention maps, drawn from its
    trained models into ``maps/`` unless ``maps`` is False. A kind's report module may define
    ``prepare(run_dir, maps, say)``; the runner and ``attnbench report`` call this first."""
    from attnbench.kind import kind_module

    try:
        report = kind_module(run_kind(run_dir), "report")
    except ValueError:
        return
    if report is not None and hasattr(report, "prepare"):
        report.prepare(Path(run_dir), maps, progress or (lambda line: None))


def report_from_args(args: argparse.Namespace) -> Path:
    """:func:`prepare_report`, then :func:`write_report` with the options parsed by
    :func:`add_arguments`, printing progress."""
    say = lambda line: print(f"attnbench report: {line} ...", flush=True)  # noqa: E731
    prepare_report(args.run_dir, maps=args.maps and args.plots, progress=say)
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
        progress=say,
    )
