"""A damaged run folder is never written to: ``run`` stops with exit 2, keeps results.csv and says
how to recover; ``report`` reads what it can and names what it could not (issue: damaged and
planted run folders).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from attnbench.cli import main
from tests.test_planted_links import STUDY


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One finished run folder (one params row, no report), made once for the module."""
    base = tmp_path_factory.mktemp("template")
    path = base / "study.yaml"
    path.write_text(STUDY)
    out = base / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    return out


@pytest.fixture
def done(tmp_path: Path, template: Path) -> Path:
    """A copy of the finished run folder for this test to damage."""
    return Path(shutil.copytree(template, tmp_path / "run"))


def _csv(out: Path) -> str:
    return (out / "results.csv").read_text()


def test_an_empty_database_is_not_taken_for_a_new_one(done, study, capsys):
    csv_before = _csv(done)
    (done / "results.db").write_bytes(b"")  # what a crash or a full disk can leave
    capsys.readouterr()
    assert main(["run", str(study), "--out", str(done), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "results.db is empty (0 bytes" in err and "Move it aside" in err and "imports it" in err
    assert (done / "results.db").stat().st_size == 0 and _csv(done) == csv_before  # nothing written
    # the recovery the message gives: move the empty file aside, run again: the CSV is imported
    (done / "results.db").rename(done / "results.db.empty")
    assert main(["run", str(study), "--out", str(done), "--quiet", "--no-report"]) == 0
    assert "imported" in capsys.readouterr().err.lower() or _csv(done) == csv_before
    con = sqlite3.connect(done / "results.db")
    assert con.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 1  # the row was not re-measured
    con.close()


def test_a_foreign_sqlite_file_is_left_as_it_is(done, study, capsys):
    db = done / "results.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE accounts (name TEXT)")
    con.commit()
    con.close()
    before = db.read_bytes()
    assert main(["run", str(study), "--out", str(done), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not an attnbench database: it holds other tables (accounts)" in err
    assert db.read_bytes() == before  # no table added, no user_version set
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 0
    con.close()


def test_a_file_that_is_not_sqlite(done, study, capsys):
    (done / "results.db").write_bytes(b"garbage" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{done / 'results.db'}{suffix}").unlink(missing_ok=True)
    assert main(["run", str(study), "--out", str(done), "--quiet"]) == 2
    assert "is not an SQLite database" in capsys.readouterr().err
    assert main(["report", str(done)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnbench report: ") and "not an SQLite database" in err and "Traceback" not in err


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '"text"'])
def test_a_stored_row_that_is_not_a_json_object(done, study, capsys, data):
    con = sqlite3.connect(done / "results.db")
    con.execute("UPDATE rows SET data = ?", (data,))
    con.commit()
    con.close()
    csv_before = _csv(done)
    assert main(["run", str(study), "--out", str(done), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not a JSON object; the database is damaged" in err and "Traceback" not in err
    assert _csv(done) == csv_before
    assert main(["report", str(done)]) == 2
    assert "is not a JSON object" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ('"x"', "it holds a JSON str, not an object"),
        ('{"runs": "x"}', "its 'runs' is not a list of objects"),
        ('{"runs": [1]}', "its 'runs' is not a list of objects"),
        ('{"environments": []}', "its 'environments' is not an object"),
        ("{not json", "it cannot be read as JSON"),
    ],
)
def test_a_manifest_of_the_wrong_shape(done, study, capsys, manifest, problem):
    (done / "manifest.json").write_text(manifest)
    assert main(["run", str(study), "--out", str(done), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert problem in err and "move it aside" in err and "Traceback" not in err
    assert (done / "manifest.json").read_text() == manifest  # not overwritten
    # the report reads the rows, leaves the manifest out and says so
    assert main(["report", str(done)]) == 0
    captured = capsys.readouterr()
    assert "attnbench report: left out: " in captured.err and problem in captured.err
    assert (done / "index.html").is_file()


def test_report_on_a_folder_it_cannot_write_is_one_line(done, capsys, monkeypatch):
    import attnbench.report

    def refused(args):  # what a read-only folder gives (root ignores chmod, so it is simulated)
        raise PermissionError(13, "Permission denied", str(done / "tables"))

    monkeypatch.setattr(attnbench.report, "report_from_args", refused)
    assert main(["report", str(done)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnbench report: cannot read or write {done / 'tables'} (Permission denied)")
    assert len(err.splitlines()) == 1


def test_a_path_with_uri_special_characters(tmp_path, study, capsys):
    out = tmp_path / "run ?#%&= folder"
    assert main(["run", str(study), "--out", str(out), "--quiet", "--no-report"]) == 0
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["study"]["name"] == "links"
    assert "vanilla" in (out / "report.md").read_text().lower() or (out / "index.html").is_file()


@pytest.mark.parametrize(
    "csv_text",
    [
        "point_id,pass,status,mechanism,H,W,C,num_heads\n00000000000000aa,forward,ok,vanilla,14,14,32,2\n",
        "point_id,pass,status,mechanism,H,W,C,num_heads,latency_ms,flops\n"
        "00000000000000aa,forward,ok,vanilla,14,14,32,2,abc,[1]\n",
    ],
    ids=["no-measured-columns", "text-where-numbers-go"],
)
def test_report_reads_a_csv_with_columns_missing_or_wrong(tmp_path, capsys, csv_text):
    run = tmp_path / "csv-only"
    run.mkdir()
    (run / "results.csv").write_text(csv_text)
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    assert (run / "index.html").is_file() and "Traceback" not in capsys.readouterr().err
