"""The peers kind's report: each mechanism's ratio to every other implementation of it
(:mod:`.tables`), with the run's details; no plots."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from attnbench.report.options import ReportOptions
from attnbench.report.pages import run_details, unstable_count, write_pages

__all__ = ["OPTIONS", "write"]

OPTIONS = ("passes", "dtypes", "devices")


def write(run_dir: Path, options: ReportOptions, say: Callable[[str], None]) -> Path:
    """Write the report of the peers run in ``run_dir``; returns the path of ``index.html``."""
    from attnbench.kinds.peers.tables import peers_tables, peers_verdict
    from attnbench.report._document import Doc
    from attnbench.report._results import load_run
    from attnbench.report.references import write_bib

    started = time.time()
    results, df, manifest = load_run(run_dir, options, say)
    tables = peers_tables(df)
    for table in tables:
        table.write(run_dir / "tables")
    write_bib(run_dir, [t.to_latex() for t in tables])
    findings = Doc()
    findings.para(
        f"Each mechanism against other implementations of it (ratio = ours / peer, the median of the "
        f"interleaved pairs): {peers_verdict(df)}"
    )
    if unstable_count(df):
        findings.para(
            f"**{unstable_count(df)} timed row(s) are unstable**: their cells carry † in the tables; measure "
            "them again on a quiet machine before publishing (see Run)."
        )
    say("writing report.md and index.html")
    return write_pages(
        run_dir,
        findings=findings,
        figures={},
        not_drawn={},
        plots=None,
        tables=tables,
        details=run_details(results, df, run_dir),
        manifest=manifest,
        started=started,
    )
