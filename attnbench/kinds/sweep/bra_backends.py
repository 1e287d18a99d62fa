"""The BRA-backends table: each backend against the released algorithm, the floor and the ideal.

For every BRA shape (H, W, C, heads, S, k) measured with two or more ``backend`` values, and every
(pass, dtype, device, batch), one row per backend:

- latency (median ± IQR) and the speed-up over ``reference``, the released algorithm;
- time above the floor: the latency minus that of ``bra_floor`` at the same shape (the QKV and
  output projections and the LCE, which no backend avoids), i.e. what the backend spends on region
  layout, routing, gathering and attention;
- the ideal attention time, (k/S²) x the latency of ``dense_sdpa`` (dense SDPA over all H·W tokens
  at the same shape), and the fraction of the ideal reached: ideal / time above the floor (1 = as
  fast as block-sparse attention can be with dense SDPA's efficiency);
- peak memory.

The yardstick rows come from ``studies/plugins/bra_parts.py``; without them those columns are "—".
"""

from __future__ import annotations

import math

import pandas as pd

from attnbench.report._document import Table, best_mask
from attnbench.report._results import device_label, plain, resolution_label

__all__ = ["backend_summary", "bra_backend_tables"]

GROUP = ["pass", "dtype", "device", "batch"]
SHAPE = ["H", "W", "C", "num_heads"]
ORDER = ["reference", "sdpa", "bmm", "masked", "flex", "auto"]
DASH = "—"


def _ok(df: pd.DataFrame, mechanism: str) -> pd.DataFrame:
    return df[(df["mechanism"] == mechanism) & (df["status"] == "ok") & df["latency_ms"].notna()]


def _match(rows: pd.DataFrame, key: dict) -> pd.Series | None:
    """The first row of ``rows`` whose columns equal ``key``'s values (None when there is none)."""
    sel = rows
    for col, value in key.items():
        sel = sel[sel[col] == value]
    return None if sel.empty else sel.iloc[0]


def backend_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (BRA shape, condition, backend) with the derived columns of the table.

    Columns: the shape and condition columns, n_win, topk, backend, latency_ms, latency_iqr_ms,
    peak_mem_mb, speedup, floor_ms, above_floor_ms, dense_ms, ideal_ms, fraction_of_ideal.
    """
    if "backend" not in df.columns:
        return pd.DataFrame()
    bra = _ok(df, "bra")
    bra = bra[bra["backend"].notna() & (bra["backend"] != "")]
    floors, dense = _ok(df, "bra_floor"), _ok(df, "dense_sdpa")
    out = []
    for _, shape_rows in bra.groupby([*SHAPE, "n_win", "topk", *GROUP], sort=False, dropna=False):
        if shape_rows["backend"].nunique() < 2:
            continue
        first = shape_rows.iloc[0]
        key = {c: first[c] for c in [*SHAPE, *GROUP]}
        ref = _match(shape_rows, {"backend": "reference"})
        # the bra_floor row of this shape; with several, the one with BRA's n_win
        floor = _match(floors, {**key, "n_win": first["n_win"]}) if "n_win" in floors else None
        floor = floor if floor is not None else _match(floors, key)
        dense_row = _match(dense, key)
        S, k = float(first["n_win"]), float(first["topk"])
        ideal = k / (S * S) * dense_row["latency_ms"] if dense_row is not None else math.nan
        for _, r in shape_rows.iterrows():
            ms = r["latency_ms"]
            above = ms - floor["latency_ms"] if floor is not None else math.nan
            out.append(
                {
                    **{c: r[c] for c in [*SHAPE, "n_win", "topk", *GROUP]},
                    "backend": r["backend"],
                    "latency_ms": ms,
                    "latency_iqr_ms": r.get("latency_iqr_ms", math.nan),
                    "peak_mem_mb": r.get("peak_mem_mb", math.nan),
                    "speedup": ref["latency_ms"] / ms if ref is not None else math.nan,
                    "floor_ms": floor["latency_ms"] if floor is not None else math.nan,
                    "above_floor_ms": above,
                    "dense_ms": dense_row["latency_ms"] if dense_row is not None else math.nan,
                    "ideal_ms": ideal,
                    "fraction_of_ideal": ideal / above if above > 0 else math.nan,
                }
            )
    summary = pd.DataFrame(out)
    if summary.empty:
        return summary
    rank = {b: i for i, b in enumerate(ORDER)}
    summary["_order"] = summary["backend"].map(lambda b: rank.get(b, len(ORDER)))
    summary["_shape"] = summary.groupby([*SHAPE, "n_win", "topk"], sort=False).ngroup()
    return summary.sort_values(["_shape", "_order"], kind="stable").drop(columns=["_order", "_shape"])


def _num(value: float, digits: int = 1) -> str:
    return DASH if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _geomean(values: pd.Series) -> float:
    values = values[values > 0].dropna()
    return math.exp(sum(math.log(v) for v in values) / len(values)) if len(values) else math.nan


def bra_backend_tables(df: pd.DataFrame) -> list[Table]:
    """One table per (pass, dtype, device, batch) of a run with BRA rows over several backends."""
    summary = backend_summary(df)
    if summary.empty:
        return []
    tables = []
    for cond, part in summary.groupby(GROUP, sort=False):
        pass_, dtype, device, batch = cond
        rows, bold, groups = [], [], {}
        for _, shape in part.groupby([*SHAPE, "n_win", "topk"], sort=False):
            fastest = best_mask(list(shape["latency_ms"]), higher_is_better=False)
            leanest = best_mask(list(shape["peak_mem_mb"]), higher_is_better=False)
            first = shape.iloc[0]
            groups[len(rows)] = (
                f"{resolution_label(first['H'], first['W'])}, C {plain(first['C'])}, "
                f"S {plain(first['n_win'])}, k {plain(first['topk'])}: floor {_num(first['floor_ms'])} ms, "
                f"dense {_num(first['dense_ms'])} ms"
            )
            for i, (_, r) in enumerate(shape.iterrows()):
                rows.append(
                    [
                        str(r["backend"]),
                        f"{_num(r['latency_ms'])} ± {_num(r['latency_iqr_ms'])}",
                        DASH if not math.isfinite(r["speedup"]) else f"{r['speedup']:.2f}×",
                        _num(r["above_floor_ms"]),
                        _num(r["ideal_ms"], 2),
                        _num(r["fraction_of_ideal"], 2),
                        _num(r["peak_mem_mb"], 0),
                    ]
                )
                bold.append([False, fastest[i], False, False, False, False, leanest[i]])
        means = [
            f"{b} {_geomean(part[part['backend'] == b]['speedup']):.2f}×"
            for b in dict.fromkeys(part["backend"])
            if b != "reference" and part[part["backend"] == b]["speedup"].notna().any()
        ]
        tables.append(
            Table(
                name=f"bra_backends_{pass_}_{dtype}_{device}_b{plain(batch)}",
                caption=f"BRA backends against the released algorithm ({pass_}, {dtype}, "
                f"{device_label(device)}, batch {plain(batch)})",
                header=[
                    "Backend",
                    "Latency (ms, median ± IQR)",
                    "Speed-up (vs reference)",
                    "Above floor (ms)",
                    "Ideal attention (ms)",
                    "Fraction (of ideal)",
                    "Peak memory (MiB)",
                ],
                rows=rows,
                bold=bold,
                align="lrrrrrr",
                groups=groups,
                note="reference = the released algorithm (k-fold gather); floor = `bra_floor`, the QKV "
                "and output projections and the LCE that no backend avoids; dense = `dense_sdpa`, SDPA "
                "over all H·W tokens; above floor = latency - floor; ideal attention = (k/S²) × dense; "
                "fraction of ideal = ideal / above floor. Geometric-mean speed-up over the shapes: "
                + (", ".join(means) if means else DASH)
                + ". Bold: fastest and leanest per shape. Each shape's row names its floor and dense times.",
            )
        )
    return tables
