"""docs/adding-a-mechanism.md runs as shown: its mechanism file passes `check`, its study file runs.

The page marks each complete file with an HTML comment, ``<!-- file: NAME -->``, on the line before
its code block; the test writes every marked block under that name and runs it unchanged.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from attnbench import registry
from attnbench.check import EXIT_OK
from attnbench.cli import main
from attnbench.conformance import CHECKS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "adding-a-mechanism.md"
MARKED_BLOCK = re.compile(
    r"<!-- file: (?P<name>[\w.-]+) -->\n```\w*\n(?P<body>.*?)^```$", re.DOTALL | re.MULTILINE
)


def marked_files() -> dict[str, str]:
    """File name -> text of every marked code block on the page."""
    return {m["name"]: m["body"] for m in MARKED_BLOCK.finditer(PAGE.read_text(encoding="utf-8"))}


@pytest.fixture
def page_files(tmp_path, monkeypatch) -> Path:
    """The page's files written into a fresh folder (the cwd), with the registry restored after."""
    saved = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_loaded_plugins", {})
    monkeypatch.chdir(tmp_path)
    for name, body in marked_files().items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    yield tmp_path
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_the_page_marks_one_mechanism_and_one_study():
    files = marked_files()
    assert sorted(Path(n).suffix for n in files) == [".py", ".yaml"], sorted(files)
    study = next(body for name, body in files.items() if name.endswith(".yaml"))
    mechanism = next(name for name in files if name.endswith(".py"))
    assert f"plugins: [{mechanism}]" in study  # the study loads the file the page just wrote


def test_the_mechanism_file_passes_every_check(page_files, capsys):
    (mechanism,) = [n for n in marked_files() if n.endswith(".py")]
    assert main(["check", mechanism]) == EXIT_OK, capsys.readouterr().out
    out = capsys.readouterr().out
    assert f"{len(CHECKS)} of {len(CHECKS)} checks passed" in out
    assert "_check_shape" not in (page_files / mechanism).read_text()  # no boilerplate needed


def test_the_study_file_runs(page_files):
    (study,) = [n for n in marked_files() if n.endswith(".yaml")]
    out = page_files / "run"
    assert main(["run", str(page_files / study), "--out", str(out), "--no-report", "--quiet"]) == 0
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["status"] == "ok" for r in rows), [(r["mechanism"], r["error"]) for r in rows]
    assert {r["mechanism"] for r in rows} >= {"pooled_attention", "vanilla"}
