"""The report of a count run: one table, written with the report kit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from attnbench.report._document import Doc, Table
from attnbench.report.options import ReportOptions
from attnbench.report.pages import write_pages
from attnbench.store import load_rows, read_manifest

OPTIONS: tuple[str, ...] = ()  # no row or column selection


def write(run_dir: Path, options: ReportOptions, say: Callable[[str], None]) -> Path:
    started = time.time()
    _, rows = load_rows(run_dir)
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["params"])
    table = Table(
        "count",
        "Parameters of each mechanism at one width.",
        ["Mechanism", "Params"],
        [[r["mechanism"], f"{r['params']:,}"] for r in ok],
    )
    table.write(run_dir / "tables")
    findings = Doc()
    if ok:
        findings.para(f"Fewest parameters: **{ok[0]['mechanism']}** ({ok[0]['params']:,}).")
    details = Doc()
    details.para(f"{len(rows)} rows, {len(ok)} ok.")
    return write_pages(
        run_dir,
        findings=findings,
        figures={},
        not_drawn={},
        plots=None,
        tables=[table],
        details=details,
        manifest=read_manifest(run_dir),
        started=started,
    )
