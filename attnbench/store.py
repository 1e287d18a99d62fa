"""The results store of one run folder: ``results.db`` (SQLite) is the truth, ``results.csv`` an export.

- ``results.db``: one row per (point_id, pass), the unique key. Each row is written in its own
  transaction (WAL journal), so a crash, a kill or a full disk leaves every earlier row intact.
  A row that replaces an ``error`` row (a retry) keeps its place and counts ``attempts``.
  The schema version is ``PRAGMA user_version``.
- ``results.csv``: rewritten from the database (atomically: temporary file, fsync, rename) at the
  start and end of a run, on an interrupt, when the store closes, and during a run at most every
  ``EXPORT_EVERY_S`` seconds (a rewrite after every row made a run's bookkeeping grow with the square
  of its rows), for people and spreadsheets. It is never read back as truth, so a hand-edited or
  re-saved CSV can lose nothing. A folder that holds only a ``results.csv`` (the shipped
  ``results/``, or a run of an older attnbench) is read as it is; a run into it imports its rows
  once, and a CSV that cannot be imported whole is kept beside as ``results.csv.orig-<time>``.
- ``manifest.json``: the machine, the study and every run (written atomically).
- ``.attnbench.lock``: held (``flock``) by the one process writing the folder. A second writer is
  refused at once, with the other process's pid, host and command: two runs never interleave.

Empty cells mean "not measured" (never 0).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "CSV_NAME",
    "DB_NAME",
    "DONE_STATUSES",
    "MANIFEST_NAME",
    "ResultsStore",
    "RunLock",
    "recorded_kind",
    "StoreError",
    "check_no_links",
    "load_rows",
    "move_aside",
    "manifest_problem",
    "planted_links",
    "read_manifest",
]

SCHEMA_VERSION = 1
EXPORT_EVERY_S = 10.0  # results.csv is rewritten at most this often during a run, and at its end
DB_NAME = "results.db"
CSV_NAME = "results.csv"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".attnbench.lock"
STATUSES = ("ok", "skipped", "error")
DONE_STATUSES = ("ok", "skipped")
KEY_COLUMNS = ("point_id", "pass", "status")
_POINT_ID = re.compile(r"^[0-9a-f]{12,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    point_id TEXT NOT NULL,
    pass TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'skipped', 'error')),
    attempts INTEGER NOT NULL DEFAULT 1,
    written TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (point_id, pass)
);
CREATE TABLE IF NOT EXISTS columns (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(Exception):
    """The run folder cannot be read or written; the message names the problem and the fix."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _json_value(value: Any) -> Any:
    """A row value as JSON keeps it: numbers and text as they are, NaN and None as null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


_FORMULA = re.compile(r"^[=+\-@\t\r]")  # what a spreadsheet may run as a formula (a number aside)
_NUMBER_TEXT = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_QUOTED = re.compile(r"^'[=+\-@\t\r']")  # a cell _cell quoted (or text that starts with a quote)


def _cell(value: Any) -> str:
    """A value as ``results.csv`` writes it: text that a spreadsheet would take for a formula
    (``=HYPERLINK(...)``, ``+cmd|...``, ``@SUM(...)``, ``-x``) gets a leading ``'``, which
    :func:`_uncell` takes off again when attnbench reads the file; numbers are left alone."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if not isinstance(value, str) or _NUMBER_TEXT.match(text):
        return text
    return "'" + text if _FORMULA.match(text) or _QUOTED.match(text) else text


def _uncell(text: str) -> str:
    return text[1:] if _QUOTED.match(text) else text


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _describe(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def move_aside(run_dir: Path) -> Path | None:
    """Rename an existing run folder to ``<name>.old-<UTC time>`` (for ``--fresh``); returns the new path."""
    if not run_dir.exists():
        return None
    target = run_dir.with_name(f"{run_dir.name}.old-{_stamp()}")
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.old-{_stamp()}-{n}")
        n += 1
    shutil.move(str(run_dir), str(target))
    return target


def check_run_dir(run_dir: Path) -> None:
    """Say in one line why ``run_dir`` cannot be a run folder, creating nothing.

    Raises:
        StoreError: ``run_dir`` is a file, or holds a folder where ``results.csv`` or ``results.db``
            should be.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise StoreError(f"{run_dir} is a file, not a folder; give --out a folder (new or a run folder)")
    for name in (CSV_NAME, DB_NAME, MANIFEST_NAME):
        if (run_dir / name).is_dir():
            raise StoreError(
                f"{run_dir / name} is a folder; attnbench writes a file there: move it away, or give "
                "another --out"
            )


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder, or say in one line why it cannot be one.

    Raises:
        StoreError: ``run_dir`` is a file, cannot be created or written, or holds a directory
            where ``results.csv`` or ``results.db`` should be.
    """
    check_run_dir(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {run_dir} ({_describe(exc)}); give --out a writable folder") from exc
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write to {run_dir} (read-only or not yours); give --out a writable folder")


LINKS_SHOWN = 5  # planted links named in the message; the rest counted


def planted_links(run_dir: Path) -> list[str]:
    """The symbolic links inside ``run_dir`` (at any depth, links to folders not followed), as paths
    relative to it, sorted."""
    found = []
    for root, dirs, files in os.walk(run_dir, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if path.is_symlink():
                found.append(path.relative_to(run_dir).as_posix())
    return sorted(found)


def check_no_links(run_dir: Path) -> None:
    """Refuse a run folder that holds symbolic links: attnbench reads and writes a run folder's files
    by name (manifest.json, results.db, report.md, plots/, ...), and a link at any of those names
    would make it read or overwrite a file elsewhere. The run folder itself may be a link.

    Raises:
        StoreError: naming the links and the fix.
    """
    if not run_dir.is_dir():
        return
    links = planted_links(run_dir)
    if links:
        shown = ", ".join(links[:LINKS_SHOWN]) + (
            f" and {len(links) - LINKS_SHOWN} more" if len(links) > LINKS_SHOWN else ""
        )
        raise StoreError(
            f"{run_dir} holds symbolic links ({shown}); attnbench never reads or writes a run folder's "
            "files through a link, which could point anywhere: remove them (copy a linked file in its "
            "place if you need it) and run again"
        )


class RunLock:
    """The one-writer lock of a run folder (``flock`` on ``.attnbench.lock``).

    Args:
        run_dir: the run folder (it must exist).
        command: recorded in the lock file, shown to a second writer.
    """

    def __init__(self, run_dir: Path, command: list[str] | None = None) -> None:
        self.path = run_dir / LOCK_NAME
        self.command = command or []
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreError` naming the process that holds it."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot write to {self.path.parent} ({_describe(exc)}); give --out a writable folder"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._holder()
            os.close(fd)
            raise StoreError(
                f"{self.path.parent} is being written by {holder}; wait for that run to end, or give this "
                "run another --out"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def _holder(self) -> str:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            record = {}
        if not record:
            return "another process"
        command = " ".join(record.get("command") or []) or "an attnbench run"
        return f"pid {record.get('pid')} on {record.get('host')} since {record.get('started')} ({command})"

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """Header, rows and problems of a results CSV read as leniently as is safe.

    A UTF-8 byte-order mark (a spreadsheet's re-save) is accepted. Rows without a well-formed
    ``point_id``, a ``pass`` and a known ``status``, or with the wrong number of fields, are left
    out and counted in the problems; nothing here raises for content.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [], [f"cannot read it ({_describe(exc)})"]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [], [f"it is not UTF-8 text (byte {exc.start})"]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        return [], [], []
    header = [h.strip() for h in header]
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing:
        return header, [], [f"its header lacks {', '.join(missing)}"]
    rows, bad = [], 0
    for values in reader:
        if not values:
            continue
        row = dict(zip(header, map(_uncell, values)))
        if (
            len(values) != len(header)
            or not _POINT_ID.match(row["point_id"])
            or row["status"] not in STATUSES
            or not row["pass"]
        ):
            bad += 1
            continue
        rows.append(row)
    problems = (
        [f"{bad} line(s) are not rows attnbench wrote (wrong field count, id or status)"] if bad else []
    )
    return header, rows, problems


class ResultsStore:
    """The rows of one run folder in ``results.db``; the CSV export is rewritten every few seconds and
    when the store closes.

    Args:
        run_dir: an existing folder (see :func:`prepare_run_dir`).

    Raises:
        StoreError: the database is damaged, of a newer schema, or cannot be written.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.db_path = self.run_dir / DB_NAME
        self.csv_path = self.run_dir / CSV_NAME
        self.manifest_path = self.run_dir / MANIFEST_NAME
        self.notes: list[str] = []  # what opening the folder found (an imported or kept CSV)
        self._exported = -math.inf  # time.monotonic() of the last export of results.csv
        self._stale = False  # rows added since
        fresh = not self.db_path.exists()
        if not fresh:
            _check_database_file(self.db_path)
        try:
            self._db = sqlite3.connect(self.db_path, isolation_level=None, timeout=30)
            if not fresh:
                self._check_ours()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.db_path} has schema version {version}, newer than this attnbench "
                    f"({SCHEMA_VERSION}); upgrade attnbench, or give another --out"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.db_path} is damaged ({exc}); move it aside (results.csv beside it holds an export "
                "of its rows) or start over with --fresh"
            ) from exc
        self._columns = [r[0] for r in self._db.execute("SELECT name FROM columns ORDER BY position")]
        if fresh and self.csv_path.is_file():
            self._import_csv()

    def _check_ours(self) -> None:
        """Refuse, before writing anything, an existing database that attnbench did not write: one
        without its tables (another program's, or an empty one)."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if {"rows", "columns", "meta"} <= tables:
            return
        self._db.close()
        what = f"holds other tables ({', '.join(sorted(tables)[:5])})" if tables else "holds no table"
        raise StoreError(
            f"{self.db_path} is not an attnbench database: it {what}; attnbench does not write to it. "
            f"Move it aside{_csv_hint(self.csv_path)}, or give this run another --out"
        )

    # -- reading

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict of its columns, in the order rows were first written.

        Raises:
            StoreError: a stored row is not a JSON object (the database is damaged).
        """
        cur = self._db.execute("SELECT seq, point_id, pass, data FROM rows ORDER BY seq")
        return [_row_data(self.db_path, *r) for r in cur]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    def state(self) -> dict[tuple[str, str], tuple[str, int]]:
        """(point_id, pass) -> (status, attempts) of every row."""
        cur = self._db.execute("SELECT point_id, pass, status, attempts FROM rows")
        return {(p, s): (st, a) for p, s, st, a in cur}

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    # -- writing

    def declare_columns(self, names: Iterable[str]) -> None:
        """Add columns to the export's order (kept in first-seen order)."""
        new = [n for n in dict.fromkeys(names) if n not in self._columns]
        if not new:
            return
        with self._transaction():
            for name in new:
                self._db.execute("INSERT INTO columns VALUES (?, ?)", (name, len(self._columns)))
                self._columns.append(name)

    def meta(self, key: str) -> str | None:
        """A value of the folder's ``meta`` table (e.g. ``kind``)."""
        found = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if found is None else found[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add(self, row: dict[str, Any], *, attempt: bool = True) -> None:
        """Insert one row, or replace the row of the same (point_id, pass), in one transaction.

        ``attempt``: the row is a new measurement (a replaced row's ``attempts`` goes up); False for
        rewriting a kept row's descriptive columns.

        Raises:
            ValueError: the row lacks point_id, pass or a known status.
            StoreError: the database cannot be written (full disk, read-only).
        """
        point_id, pass_, status = (row.get(k) for k in KEY_COLUMNS)
        if not point_id or not pass_ or status not in STATUSES:
            raise ValueError(
                f"a results row needs point_id, pass and a status in {STATUSES}; got {row!r:.200}"
            )
        data = {k: _json_value(v) for k, v in row.items()}
        try:
            with self._transaction():
                for name in data:
                    if name not in self._columns:
                        self._db.execute("INSERT INTO columns VALUES (?, ?)", (name, len(self._columns)))
                        self._columns.append(name)
                self._db.execute(
                    "INSERT INTO rows (point_id, pass, status, written, data) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (point_id, pass) DO UPDATE SET status = excluded.status, "
                    f"attempts = rows.attempts + {int(attempt)}, written = excluded.written, "
                    "data = excluded.data",
                    (str(point_id), str(pass_), status, _now(), json.dumps(data)),
                )
        except sqlite3.Error as exc:
            self._columns = [r[0] for r in self._db.execute("SELECT name FROM columns ORDER BY position")]
            raise StoreError(
                f"cannot write to {self.db_path} ({exc}); free the disk or fix its permissions"
            ) from exc
        self._stale = True
        if time.monotonic() - self._exported >= EXPORT_EVERY_S:
            self.export_csv()

    def export_csv(self) -> None:
        """Rewrite ``results.csv`` from the database (atomically).

        Raises:
            StoreError: the file cannot be written.
        """
        self._exported, self._stale = time.monotonic(), False
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        columns = self._columns
        writer.writerow(columns)
        for row in self.rows():
            writer.writerow([_cell(row.get(c)) for c in columns])
        try:
            _write_atomically(self.csv_path, buffer.getvalue())
        except OSError as exc:
            raise StoreError(
                f"cannot write {self.csv_path} ({_describe(exc)}); the rows are safe in {self.db_path}"
            ) from exc

    def _import_csv(self) -> None:
        """Take in the rows of a CSV-only folder once; keep the original if it could not be taken whole."""
        header, rows, problems = _read_csv(self.csv_path)
        if header:
            self.declare_columns(header)
        with self._transaction():
            for row in rows:
                data = {k: (v if v != "" else None) for k, v in row.items()}
                self._db.execute(
                    "INSERT OR REPLACE INTO rows (point_id, pass, status, written, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (row["point_id"], row["pass"], row["status"], _now(), json.dumps(data)),
                )
        if rows:
            self.notes.append(f"imported {len(rows)} rows from {self.csv_path} into {self.db_path}")
        if problems:
            kept = self.csv_path.with_name(f"{CSV_NAME}.orig-{_stamp()}")
            shutil.copy2(self.csv_path, kept)
            self.notes.append(
                f"{self.csv_path}: {'; '.join(problems)}; the file is kept as {kept.name}, and "
                f"{CSV_NAME} is rewritten from the database"
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Export the rows not yet in ``results.csv`` (a failure to is printed, never raised: the rows
        are safe in the database) and close the database (the WAL checkpointed into ``results.db``)."""
        if self._stale:
            try:
                self.export_csv()
            except StoreError as exc:
                print(f"attnbench: {exc}", file=sys.stderr)
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.close()

    # -- the manifest

    def read_manifest(self) -> dict[str, Any] | None:
        """The folder's manifest, None when absent.

        Raises:
            StoreError: it is unreadable or of the wrong shape.
        """
        return read_manifest(self.run_dir, strict=True) or None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, default=str) + "\n"
        try:
            _write_atomically(self.manifest_path, text)
        except OSError as exc:
            raise StoreError(f"cannot write {self.manifest_path} ({_describe(exc)})") from exc


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _csv_hint(csv_path: Path) -> str:
    if csv_path.is_file():
        return (
            f" ({csv_path.name} beside it holds the last export of the run's rows: a run into this folder "
            "imports it and resumes)"
        )
    return ""


def _check_database_file(db_path: Path) -> None:
    """Refuse an existing ``results.db`` that is empty (a crash, a full disk or a restore can leave
    a zero-byte file, which SQLite would take as a new database) or not SQLite at all.

    Raises:
        StoreError: naming the file, what is wrong and how to recover.
    """
    try:
        with open(db_path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read {db_path} ({_describe(exc)})") from exc
    if not head:
        raise StoreError(
            f"{db_path} is empty (0 bytes; a crash, a full disk or a restore can leave it so); attnbench "
            f"does not write to it. Move it aside{_csv_hint(db_path.parent / CSV_NAME)}"
        )
    if head != _SQLITE_MAGIC:
        raise StoreError(
            f"{db_path} is not an SQLite database (damaged, or another file under that name); attnbench "
            f"does not write to it. Move it aside{_csv_hint(db_path.parent / CSV_NAME)}, or start over "
            "with --fresh (the whole folder is moved aside)"
        )


def _row_data(db_path: Path, seq: Any, point_id: Any, pass_: Any, data: Any) -> dict[str, Any]:
    try:
        row = json.loads(data)
    except (TypeError, ValueError):
        row = None
    if not isinstance(row, dict):
        raise StoreError(
            f"{db_path}: stored row {seq} ({point_id}, {pass_}) is not a JSON object; the database is "
            f"damaged. Move it aside{_csv_hint(db_path.parent / CSV_NAME)}"
        )
    return row


def manifest_problem(manifest: Any) -> str | None:
    """Why a parsed ``manifest.json`` is not an attnbench manifest, or None when its shape is one:
    an object whose ``runs`` (where present) is a list of objects and whose ``environments``,
    ``conditions`` and ``study`` (where present) are objects."""
    if not isinstance(manifest, dict):
        return f"it holds a JSON {type(manifest).__name__}, not an object"
    runs = manifest.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        return "its 'runs' is not a list of objects"
    for key in ("environments", "conditions", "study"):
        if not isinstance(manifest.get(key, {}), dict):
            return f"its {key!r} is not an object"
    return None


def read_manifest(run_dir: str | Path, *, strict: bool = False) -> dict[str, Any]:
    """``manifest.json`` of a run folder: empty when absent; when unreadable or of the wrong shape
    (:func:`manifest_problem`), empty too, or with ``strict`` a :class:`StoreError` saying why (a
    run refuses to write a new manifest over one it cannot read)."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        problem = manifest_problem(manifest)
    except (OSError, ValueError) as exc:
        manifest, problem = {}, f"it cannot be read as JSON ({_describe(exc)})"
    if problem is None:
        return manifest
    if strict:
        raise StoreError(
            f"{path} is not an attnbench manifest: {problem}; move it aside (the rows in results.db are "
            "kept; a run then writes a new manifest)"
        )
    return {}


def recorded_kind(run_dir: str | Path) -> str | None:
    """The kind of study a run folder holds, as recorded: its manifest's ``kind``, else the one its
    ``results.db`` records (a run that stopped before its first manifest); None when neither says
    (a ``results.csv`` alone). Nothing is read off the columns."""
    kind = read_manifest(run_dir).get("kind")
    if isinstance(kind, str) and kind:
        return kind
    db = Path(run_dir) / DB_NAME
    if not db.is_file():
        return None
    try:
        _check_database_file(db)
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            found = con.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
        finally:
            con.close()
    except (sqlite3.DatabaseError, StoreError):
        return None
    return None if found is None else str(found[0])


def load_rows(run_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of a run folder, read-only: from ``results.db``, or from a ``results.csv``
    alone (a shipped or older run folder; rows that attnbench did not write are left out).

    Raises:
        FileNotFoundError: the folder holds neither.
        StoreError: the database is damaged.
    """
    run_dir = Path(run_dir)
    db = run_dir / DB_NAME
    if db.is_file():
        try:
            _check_database_file(db)
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                columns = [r[0] for r in con.execute("SELECT name FROM columns ORDER BY position")]
                cur = con.execute("SELECT seq, point_id, pass, data FROM rows ORDER BY seq")
                rows = [_row_data(db, *r) for r in cur]
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db} is damaged ({exc}); move it aside or re-run the study") from exc
        return columns, rows
    csv_path = run_dir / CSV_NAME
    if not csv_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {DB_NAME} or {CSV_NAME}; give the folder a run wrote")
    header, rows, _ = _read_csv(csv_path)
    return header, [{k: (v if v != "" else None) for k, v in r.items()} for r in rows]
