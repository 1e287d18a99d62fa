"""The report of an ``attnbench doctor`` run: the environment's probes and every mechanism's checks.

Two tables (``tables/doctor_environment`` and ``tables/doctor_mechanisms``, Markdown and LaTeX),
``report.md`` and ``index.html``. The summary says how many rows passed, failed and were skipped,
names every failure, and says what the errors are measured against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnbench.report._document import Doc, Table

__all__ = ["OPTIONS", "doctor_tables", "write", "write_doctor_report"]


def _cell(value: Any, fmt: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return format(v, fmt) if math.isfinite(v) else "—"


def _verdict(r: dict[str, Any]) -> str:
    return str(
        r.get("verdict") or {"ok": "PASS", "skipped": "SKIP", "error": "FAIL"}.get(str(r.get("status")), "?")
    )


def doctor_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """The environment table, then the mechanisms table."""
    env = [r for r in rows if r.get("part") == "environment"]
    mech = [r for r in rows if r.get("part") == "mechanism"]
    device = next((str(r.get("device")) for r in mech if r.get("check") == "vs reference"), "")
    tables = [
        Table(
            "doctor_environment",
            "What is installed and works on this machine: one row per probe.",
            ["Verdict", "Probe", "Found"],
            [[_verdict(r), str(r.get("item")), str(r.get("detail") or r.get("error") or "")] for r in env],
            align="lll",
        )
    ]

    body = []
    for r in mech:
        note = str(r.get("error") or "")
        if not note and r.get("check") == "gradcheck":
            note = "gradients checked numerically (float64, CPU)"
        elif not note:
            note = str(r.get("detail") or "")
        body.append(
            [
                _verdict(r),
                str(r.get("item")),
                str(r.get("backend") or "—"),
                str(r.get("dtype")),
                _cell(r.get("forward_error"), ".1e"),
                _cell(r.get("backward_error"), ".1e"),
                str(r.get("default") or ""),
                _cell(r.get("median_ms"), ".2f"),
                note,
            ]
        )
    tables.append(
        Table(
            "doctor_mechanisms",
            f"Every mechanism's backends on {device or 'the device'} against its reference (float64, CPU): "
            "relative errors max |a − ref| / max |ref|.",
            [
                "Verdict",
                "Mechanism",
                "Backend",
                "Dtype",
                "Forward error",
                "Backward error",
                "Auto takes it for",
                "Forward (ms)",
                "Note",
            ],
            body,
            align="llllrrlrl",
            note="The first row of each mechanism is its reference: float64 on the CPU, its gradients "
            "checked "
            "against central differences (torch.autograd.gradcheck, fast mode). Backward error: the largest "
            "over the gradients of the input and every parameter. Forward (ms): one small median (batch 2, "
            "28×28, C 32, 2 heads), not a benchmark.",
        )
    )
    return tables


def write_doctor_report(run_dir: str | Path, *, progress: Callable[[str], None] | None = None) -> Path:
    """``tables/``, ``report.md`` and ``index.html`` of a doctor run; the path of ``index.html``."""
    from attnbench.report._results import load_manifest
    from attnbench.report.html import files_doc, index_html
    from attnbench.store import load_rows

    say = progress or (lambda line: None)
    run_dir = Path(run_dir)
    _, rows = load_rows(run_dir)
    manifest = load_manifest(run_dir)
    say(f"{len(rows)} doctor rows read; writing the tables")
    tables = doctor_tables(rows)
    for table in tables:
        table.write(run_dir / "tables")

    counts = {v: sum(_verdict(r) == v for r in rows) for v in ("PASS", "FAIL", "SKIP")}
    summary = Doc()
    summary.para(
        f"**{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped** on "
        f"{manifest.get('device', '?')} ({', '.join(_dtypes(rows)) or 'no dtype'}), attnbench "
        f"{manifest.get('attnbench_version', '?')}."
    )
    failed = [r for r in rows if _verdict(r) == "FAIL"]
    if failed:
        summary.bullets([f"FAIL {_where(r)}: {r.get('error')}" for r in failed])
    tol = manifest.get("protocol", {}).get("tolerance", {})
    if tol:
        summary.para(
            "A backend passes when its forward and backward errors (max |a − ref| / max |ref| against the "
            "float64 reference) are within its dtype's tolerance: "
            + "; ".join(
                f"{d} {t.get('forward')} forward, {t.get('backward')} backward" for d, t in tol.items()
            )
            + "."
        )
    tables_doc = Doc()
    for table in tables:
        tables_doc.table(table)
    markdown = Doc()
    markdown.heading(f"Report of {run_dir.name}", 1)
    markdown.extend(summary)
    markdown.heading("Tables")
    markdown.extend(tables_doc)
    (run_dir / "report.md").write_text(markdown.to_markdown())
    sections = [("summary", "Summary", summary), ("tables", "Tables", tables_doc)]
    sections.append(("files", "Files", files_doc(run_dir)))
    index = run_dir / "index.html"
    index.write_text(index_html(f"attnbench doctor: {run_dir.name}", sections, manifest))
    return index


def _where(r: dict[str, Any]) -> str:
    return " ".join(str(r.get(k)) for k in ("item", "backend", "dtype") if r.get(k) not in (None, ""))


def _dtypes(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(r.get("dtype")) for r in rows if r.get("check") == "vs reference"))


OPTIONS: tuple[str, ...] = ()  # a doctor run's verdicts are one table each: no selection


def write(run_dir: Path, options: Any, say: Callable[[str], None]) -> Path:
    """The report of a doctor run (:func:`write_doctor_report`); it draws no plots."""
    return write_doctor_report(run_dir, progress=say)
