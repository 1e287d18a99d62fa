"""Add the count by term (column ``flops_detail``) to the rows of sweep runs measured before
attnbench stored it, so that their report's BRA formula check has what it reads.

    python scripts/store-flops-detail.py RUN_DIR [RUN_DIR ...]

For each row with a FLOP count and no ``flops_detail``, the mechanism is built again from the row
(its name, shape and parameter columns) and counted on CPU exactly as the sweep kind counts it
(:func:`attnbench.kinds.sweep.kind.flops_detail`); the row gets the column only when the new total
equals the stored ``flops`` (otherwise it is left as it was, and said). Mechanisms that a study's
plugins register are loaded from the study file the manifest names, where it exists. Nothing is
timed; no other column changes. Then ``attnbench report RUN_DIR`` writes the check.
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

import attnbench  # noqa: F401  (registers the mechanisms; before timm)
from attnbench.flops import count_flops
from attnbench.kinds.sweep.kind import flops_detail
from attnbench.registry import build_mechanism, get_mechanism
from attnbench.store import ResultsStore, RunLock, read_manifest
from attnbench.study import load_study


def _value(cell: Any, annotation: Any) -> Any:
    """A stored cell back to the parameter's type (CSV imports hold text: '7.0', 'None', 'False')."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if type(None) in typing.get_args(annotation) and str(cell) in ("None", ""):
        return None
    kind = args[0]
    if kind is bool:
        return cell if isinstance(cell, bool) else str(cell).strip().lower() in ("true", "1", "yes")
    if kind is int:
        return int(float(cell))
    if kind is float:
        return float(cell)
    return cell if isinstance(cell, str) or cell is None else str(cell)


def _detail(row: dict[str, Any]) -> tuple[str | None, str]:
    """(the JSON of the row's count by term, or None; what happened)."""
    import torch

    declared = get_mechanism(row["mechanism"]).hyperparameters()
    params = {
        name: _value(row[name], p.annotation if p.choices is None else str)
        for name, p in declared.items()
        if name in row and row[name] is not None
    }
    H, W, C, heads = (int(float(row[k])) for k in ("H", "W", "C", "num_heads"))
    module = build_mechanism(row["mechanism"], C, heads, **{k: v for k, v in params.items() if v is not None})
    report = count_flops(module, torch.zeros(1, H, W, C), cross_check=False)
    if report.total != int(float(row["flops"])):
        return None, f"counted {report.total} MACs, the row holds {row['flops']}: left as it was"
    return json.dumps(flops_detail(module, report, H, W)), "added"


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    for folder in folders:
        run_dir = Path(folder)
        study = (read_manifest(run_dir).get("study") or {}).get("path")
        if study and Path(study).is_file():
            load_study(study)  # its plugins register their mechanisms
        lock = RunLock(run_dir, ["scripts/store-flops-detail.py", folder])
        lock.acquire()
        store = ResultsStore(run_dir)
        try:
            added, said = 0, 0
            for row in store.rows():
                if row.get("flops") in (None, "") or row.get("flops_detail") or row.get("pass") == "train":
                    continue
                try:
                    detail, what = _detail(row)
                except Exception as exc:  # noqa: BLE001 - one line per row that cannot be rebuilt
                    detail, what = None, f"could not be built again ({type(exc).__name__}: {exc})"
                if detail is None:
                    said += 1
                    print(f"{run_dir}: {row['mechanism']} {row['H']}x{row['W']} {row['pass']}: {what}")
                    continue
                store.add({**row, "flops_detail": detail}, attempt=False)
                added += 1
            store.export_csv()
            print(f"{run_dir}: flops_detail added to {added} row(s); {said} left as they were")
        finally:
            store.close()
            lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
