"""The results store of one run folder: ``results.csv`` and ``manifest.json``.

``results.csv`` has one row per (point, pass), keyed by ``point_id``: a hash of the point's full
configuration (mechanism and all its parameters, shape, batch, dtype, pass, device, measurement
protocol) and of the environment key (device name, torch and CUDA versions). Each new row is
written atomically: the whole file is rewritten to ``results.csv.tmp``, flushed, fsync'ed and
``os.replace``'d over the old one, so an interrupt, a crash or a full disk leaves either the old
file or the new one, never a torn row. A row with the ``point_id`` of an existing row replaces it
in place (how a retried ``error`` row is superseded). Reading tolerates a damaged last line (a
file edited or copied by hand): it is dropped with a warning.

Empty cells mean "not measured" (never 0).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_COLUMNS",
    "COLUMN_DOCS",
    "MEASURE_COLUMNS",
    "ResultsStore",
    "load_results",
    "move_aside",
]

BASE_COLUMNS = [
    "point_id",
    "env_id",
    "study",
    "mechanism",
    "H",
    "W",
    "C",
    "num_heads",
    "batch",
    "dtype",
    "device",
    "pass",
]
# mechanism parameters go between the base and the measured columns; these two are always there
LEADING_PARAM_COLUMNS = ["n_win", "topk"]
MEASURE_COLUMNS = [
    "status",
    "error",
    "flops",
    "flops_torch",
    "flops_analytic",
    "flops_uncounted",
    "params",
    "latency_ms",
    "latency_iqr_ms",
    "latency_n",
    "latency_samples_ms",
    "throughput",
    "peak_mem_mb",
    "mem_method",
    "timestamp",
]
COLUMN_DOCS = {
    "point_id": "hash of the point's full config (all mechanism params, shape, batch, dtype, pass, device, "
    "protocol) and the environment key; the resume key",
    "env_id": "key into manifest.json 'environments'",
    "study": "study name",
    "mechanism": "registered mechanism name",
    "H": "input height (tokens)",
    "W": "input width (tokens)",
    "C": "channels (dim)",
    "num_heads": "attention heads",
    "batch": "batch size of the timing and memory passes",
    "dtype": "dtype the module and input were cast to (no autocast)",
    "device": "cpu or cuda",
    "pass": "forward (eval, no_grad) or forward_backward (train, loss = out.float().sum(), backward)",
    "status": "ok | skipped (impossible point, reason in error) | error (message in error)",
    "error": "why the row is skipped or failed; empty when ok",
    "flops": "MACs of one forward pass at batch 1, fp32, fvcore convention (1 MAC = 1 FLOP), "
    "attnbench.count_flops; same value in both pass rows",
    "flops_torch": "torch FlopCounterMode total of the same forward, halved to MACs",
    "flops_analytic": "sum of the mechanism's analytic_flops(H, W), MACs, batch 1",
    "flops_uncounted": "JSON {operator: calls} that no FLOP handle counted (non-empty: flops may be low)",
    "params": "number of parameters (elements)",
    "latency_ms": "median of the timing samples, milliseconds, at the row's batch",
    "latency_iqr_ms": "inter-quartile range (p75 - p25) of the samples, milliseconds",
    "latency_n": "number of timing samples",
    "latency_samples_ms": "JSON list of every sample, milliseconds",
    "throughput": "images per second = batch / median latency",
    "peak_mem_mb": "peak memory of one pass in MiB (2^20 bytes), by mem_method",
    "mem_method": "how peak_mem_mb was measured (see manifest.json 'memory_methods')",
    "timestamp": "UTC time the row was written",
}
CSV_NAME = "results.csv"
MANIFEST_NAME = "manifest.json"
DONE_STATUSES = ("ok", "skipped")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_aside(run_dir: Path) -> Path | None:
    """Rename an existing run folder to ``<name>.old-<UTC time>`` (for ``--fresh``); returns the new path."""
    if not run_dir.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
        n += 1
    shutil.move(str(run_dir), str(target))
    return target


class ResultsStore:
    """Rows of one run folder, kept in memory and on disk after every :meth:`add`.

    Args:
        run_dir: the folder; created on the first write.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / CSV_NAME
        self.manifest_path = self.run_dir / MANIFEST_NAME
        self._rows: dict[str, dict[str, str]] = {}
        self._param_columns: list[str] = list(LEADING_PARAM_COLUMNS)
        self.dropped_lines = 0
        if self.csv_path.exists():
            self._read()

    def _read(self) -> None:
        with open(self.csv_path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return
            rows = list(reader)
        for col in header:
            if col not in BASE_COLUMNS and col not in MEASURE_COLUMNS and col not in self._param_columns:
                self._param_columns.append(col)
        for i, values in enumerate(rows):
            if len(values) != len(header):
                self.dropped_lines += 1
                warnings.warn(
                    f"{self.csv_path}: line {i + 2} has {len(values)} fields, expected {len(header)}; "
                    "dropped (it will be measured again)",
                    stacklevel=2,
                )
                continue
            row = dict(zip(header, values))
            if row.get("point_id"):
                self._rows[row["point_id"]] = row

    @property
    def columns(self) -> list[str]:
        return BASE_COLUMNS + self._param_columns + MEASURE_COLUMNS

    @property
    def rows(self) -> list[dict[str, str]]:
        """Every row, as the strings written to the CSV, in file order."""
        return list(self._rows.values())

    def status(self, point_id: str) -> str | None:
        """The status of the row with this id, or None if there is none."""
        row = self._rows.get(point_id)
        return None if row is None else row.get("status")

    def is_done(self, point_id: str) -> bool:
        """True for rows that a resumed run skips (``ok`` and ``skipped``; ``error`` is retried)."""
        return self.status(point_id) in DONE_STATUSES

    def add_param_columns(self, names: list[str]) -> None:
        """Declare mechanism-parameter columns (kept in first-seen order)."""
        for name in names:
            if name not in self._param_columns:
                self._param_columns.append(name)

    def add(self, row: dict[str, Any]) -> None:
        """Insert (or replace, by ``point_id``) one row and rewrite the CSV atomically."""
        point_id = row.get("point_id")
        if not point_id:
            raise ValueError("a results row needs a point_id")
        known = set(self.columns)
        self.add_param_columns([k for k in row if k not in known])
        self._rows[str(point_id)] = {k: _cell(v) for k, v in row.items()}
        self.flush()

    def flush(self) -> None:
        """Write every row to ``results.csv`` (atomically)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        columns = self.columns
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in self._rows.values():
            writer.writerow([row.get(c, "") for c in columns])
        _write_atomically(self.csv_path, buffer.getvalue())

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        with open(self.manifest_path, encoding="utf-8") as f:
            return json.load(f)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(manifest, indent=2, default=str) + "\n"
        _write_atomically(self.manifest_path, text)


def load_results(run_dir: str | Path):
    """``results.csv`` of a run folder as a pandas DataFrame (empty cells are NaN)."""
    import pandas as pd

    return pd.read_csv(Path(run_dir) / CSV_NAME, keep_default_na=False, na_values=[""])
