"""The results store: SQLite is the truth, the CSV an export that can be damaged without loss."""

from __future__ import annotations

import csv
import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from attnbench.store import ResultsStore, RunLock, StoreError, load_rows, prepare_run_dir


def _row(i: int, status: str = "ok", pass_: str = "forward", **extra) -> dict:
    return {"point_id": f"{i:016x}", "pass": pass_, "status": status, "mechanism": "vanilla", "H": 8, **extra}


def _store(tmp_path: Path, rows=()) -> ResultsStore:
    run = tmp_path / "run"
    prepare_run_dir(run)
    store = ResultsStore(run)
    for r in rows:
        store.add(r)
    return store


def test_rows_round_trip_with_types_and_the_csv_is_an_export(tmp_path):
    store = _store(tmp_path, [_row(1, latency_ms=1.5, error=None), _row(2, status="skipped", error="no")])
    rows = store.rows()
    assert [r["point_id"] for r in rows] == [f"{1:016x}", f"{2:016x}"]
    assert rows[0]["latency_ms"] == 1.5 and rows[0]["H"] == 8 and rows[0]["error"] is None
    with open(store.csv_path, newline="") as f:
        exported = list(csv.DictReader(f))
    assert exported[0]["latency_ms"] == "1.5" and exported[0]["error"] == ""
    store.close()
    assert not (store.run_dir / "results.db-wal").exists()  # checkpointed on close


def test_a_retried_row_keeps_its_place_and_counts_attempts(tmp_path):
    store = _store(tmp_path, [_row(1, status="error"), _row(2)])
    store.add(_row(1, status="ok"))
    assert [r["status"] for r in store.rows()] == ["ok", "ok"]
    assert store.state()[(f"{1:016x}", "forward")] == ("ok", 2)
    store.add(_row(2, mechanism="renamed"), attempt=False)
    assert store.state()[(f"{2:016x}", "forward")] == ("ok", 1)


def test_a_row_without_key_or_status_is_refused(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(ValueError, match="point_id, pass and a status"):
        store.add({"point_id": "ab", "pass": "forward", "status": "fine"})


@pytest.mark.parametrize("damage", ["bom", "truncated", "renamed_column", "not_utf8", "foreign_row"])
def test_a_damaged_csv_loses_nothing(tmp_path, damage):
    store = _store(tmp_path, [_row(i) for i in range(4)])
    store.close()
    run = store.run_dir
    text = (run / "results.csv").read_text()
    if damage == "bom":
        (run / "results.csv").write_text("\ufeff" + text, encoding="utf-8")
    elif damage == "truncated":
        (run / "results.csv").write_text(text[: len(text) // 2])
    elif damage == "renamed_column":
        (run / "results.csv").write_text(text.replace("point_id", "Point ID", 1))
    elif damage == "not_utf8":
        (run / "results.csv").write_bytes(text.encode() + b"\xff\xfe broken\n")
    else:
        header = text.splitlines()[0]
        (run / "results.csv").write_text(text + ",".join(["x"] * len(header.split(","))) + "\n")
    again = ResultsStore(run)  # the database is the truth: every row is there
    assert len(again) == 4
    again.add(_row(9))
    again.close()
    columns, rows = load_rows(run)
    assert len(rows) == 5 and "point_id" in columns
    with open(run / "results.csv", newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 5  # the export is rewritten whole


@pytest.mark.parametrize("damage", ["bom", "renamed_column", "not_utf8", "foreign_row"])
def test_a_csv_only_folder_is_imported_and_what_cannot_be_is_kept_aside(tmp_path, damage):
    run = tmp_path / "shipped"
    run.mkdir()
    header = "point_id,pass,status,mechanism,H,latency_ms"
    lines = [header, f"{1:016x},forward,ok,vanilla,8,1.25", f"{2:016x},forward,error,bra,8,"]
    text = "\n".join(lines) + "\n"
    data = text.encode()
    if damage == "bom":
        data = "\ufeff".encode() + data
    elif damage == "renamed_column":
        data = text.replace("point_id", "id", 1).encode()
    elif damage == "not_utf8":
        data = data + b"\xff\n"
    else:
        data = data + b"not,a,row,we,wrote,x\n"
    (run / "results.csv").write_bytes(data)
    # read-only loading, as the report does
    _, rows = load_rows(run)
    expected = {"bom": 2, "renamed_column": 0, "not_utf8": 0, "foreign_row": 2}[damage]
    assert len(rows) == expected
    store = ResultsStore(run)  # a run into the folder imports what it can...
    assert len(store) == expected
    kept = list(run.glob("results.csv.orig-*"))
    if damage == "bom":
        assert kept == [] and any("imported 2 rows" in n for n in store.notes)
    else:  # ... and keeps the original beside, byte for byte
        assert len(kept) == 1 and kept[0].read_bytes() == data
        assert any("kept as" in n for n in store.notes)
    store.close()


def test_a_damaged_database_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an SQLite database .*Move it aside"):
        ResultsStore(run)
    with pytest.raises(StoreError, match="not an SQLite database"):
        load_rows(run)
    # SQLite's header with damage after it: SQLite's own verdict
    (run / "results.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 2000)
    with pytest.raises(StoreError, match="damaged .*--fresh"):
        ResultsStore(run)


def test_a_newer_schema_is_refused(tmp_path):
    store = _store(tmp_path)
    store.close()
    con = sqlite3.connect(store.db_path)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(StoreError, match="schema version 99"):
        ResultsStore(store.run_dir)


def test_bad_run_folders_are_named_with_the_fix(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        prepare_run_dir(a_file)
    (tmp_path / "run" / "results.csv").mkdir(parents=True)
    with pytest.raises(StoreError, match="results.csv is a folder"):
        prepare_run_dir(tmp_path / "run")


def _hold_lock(run_dir: str, ready, release) -> None:
    with RunLock(Path(run_dir), ["attnbench", "run", "other.yaml"]):
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(run), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreError, match=rf"pid {holder.pid} .*other\.yaml.*another --out"):
            RunLock(run).acquire()
    finally:
        release.set()
        holder.join(30)
    with RunLock(run):  # free again once the other run ended
        assert json.loads((run / ".attnbench.lock").read_text())["command"] == []
