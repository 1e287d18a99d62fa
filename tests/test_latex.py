"""Every generated LaTeX table compiles in a two-column article without an overfull box.

The preamble is the issue's: ``\\documentclass[twocolumn]{article}`` with booktabs, graphicx,
siunitx, multirow and amsmath, nothing else. The tables of a small report made here and those of a
copy of each shipped run (regenerated with this code) are compiled with ``pdflatex``; bibtex, where
installed, checks ``references.bib``. Without ``pdflatex`` (Debian: ``apt-get install
--no-install-recommends texlive-latex-extra texlive-science``) the test is skipped and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from attnbench.report import write_report
from tests.test_bra_yardsticks import yardstick_rows
from tests.test_report import small_rows, write_run

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "results").glob("*") if (p / "results.csv").is_file())
PREAMBLE = (
    r"\documentclass[twocolumn]{article}" "\n" r"\usepackage{booktabs,graphicx,siunitx,multirow,amsmath}"
)

pytestmark = pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex is not installed (Debian: apt-get install --no-install-recommends texlive-latex-extra "
    "texlive-science); the LaTeX tables were not compiled",
)


def compile_tables(run: Path) -> str:
    """Compile every ``tables/*.tex`` of ``run`` in one two-column document; returns the log."""
    tables = sorted((run / "tables").glob("*.tex"))
    assert tables, f"no .tex table in {run}"
    body = "\n".join(rf"\input{{{t.as_posix()}}}" + "\n\\clearpage" for t in tables)
    bib = (run / "references.bib").is_file()
    cites = r"\bibliographystyle{plain}\bibliography{references}" if bib else ""
    doc = run / "all_tables.tex"
    doc.write_text(f"{PREAMBLE}\n\\begin{{document}}\n{body}\n{cites}\n\\end{{document}}\n")
    cmd = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name]
    first = subprocess.run(cmd, cwd=run, capture_output=True, text=True, timeout=300)
    log = (run / "all_tables.log").read_text(errors="replace")
    assert first.returncode == 0, f"pdflatex failed on {run.name}:\n" + log[-3000:]
    if bib and shutil.which("bibtex"):
        out = subprocess.run(["bibtex", "all_tables"], cwd=run, capture_output=True, text=True, timeout=60)
        assert "error message" not in out.stdout, out.stdout
        for _ in range(2):  # the citations resolve on the second run after bibtex
            subprocess.run(cmd, cwd=run, capture_output=True, timeout=300)
        log = (run / "all_tables.log").read_text(errors="replace")
    return log


def overfull(log: str) -> list[str]:
    """``table.tex: Overfull \\hbox (12.3pt too wide) ...`` for each overfull box of the log (the
    file is the last one opened before it; ``all_tables.bbl`` is the bibliography)."""
    out = []
    for m in re.finditer(r"Overfull \\hbox \(([\d.]+)pt too wide\)[^\n]*", log):
        opened = re.findall(r"\(([^()\s]*(?:tables/[\w.-]+\.tex|\.bbl))", log[: m.start()])
        out.append(f"{Path(opened[-1]).name if opened else '?'}: {m.group(0)}")
    return out


def test_tables_of_a_small_report_fit_a_two_column_page(tmp_path):
    from tests.test_formula import bra_row

    counted = [bra_row(14, 14, 7, 1, C=64, latency_ms=1.0)]  # a stored count by term
    run = write_run(tmp_path / "run", [*small_rows(), *yardstick_rows(), *counted])
    write_report(run, plots=False)
    names = {p.stem for p in (run / "tables").glob("*.tex")}
    assert {"comparison_forward", "formula_totals", "formula_terms"} <= names
    assert any(n.startswith("bra_backends_") for n in names)
    log = compile_tables(run)
    assert not overfull(log), overfull(log)
    if shutil.which("bibtex"):
        missing = re.findall(r"Citation `([^']+)' on page \d+ undefined", log)
        assert not missing, f"\\cite keys missing from references.bib: {missing}"


@pytest.mark.slow  # every shipped run's tables; the small report's tables compile in the default run
@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.name for p in SHIPPED])
def test_tables_of_the_shipped_runs_fit_a_two_column_page(tmp_path, shipped):
    run = tmp_path / shipped.name
    shutil.copytree(shipped, run, ignore=shutil.ignore_patterns("plots", "tables", "ablation"))
    write_report(run, plots=False, formula=False)  # the tables as this code writes them
    log = compile_tables(run)
    assert not overfull(log), overfull(log)
