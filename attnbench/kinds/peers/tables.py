"""The peers tables of a ``kind: peers`` run: each mechanism against other implementations of it.

Per (device, dtype, batch), one table with a row per (mechanism and its parameters, shape, pass,
peer): ours' and the peer's median latency, ``ratio`` = ours / peer (the median of the interleaved
pair ratios) and its IQR. A ratio above :data:`LIMIT` is bold: ours is more than 10 % slower than
that peer. A skipped or error row (a peer that cannot run there, or one that computes another
function) shows its reason instead of numbers. Then one summary table: per (mechanism, parameters,
shape, pass, dtype), the ratio against the fastest peer (the largest ratio), the number every
mechanism must keep at or below 1.10.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from attnbench.report._document import Table

__all__ = ["LIMIT", "peers_tables", "peers_verdict"]

LIMIT = 1.10  # ours may be at most 10 % slower than its best peer
DASH = "—"
_ROW_KEY = ["mechanism", "params", "H", "W", "C", "num_heads", "pass"]


def _num(value: Any, digits: int) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DASH
    return f"{value:.{digits}f}" if math.isfinite(value) else DASH


def _int(value: Any) -> str:
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return str(value)


def _mechanism(r: pd.Series) -> str:
    """``swin (shift_size=3)``: the mechanism and the parameters the study gave."""
    try:
        params = json.loads(r.get("params") or "{}")
    except (TypeError, ValueError):
        params = {}
    given = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{r['mechanism']} ({given})" if given else str(r["mechanism"])


def _shape(r: pd.Series) -> str:
    return f"{_int(r['H'])}×{_int(r['W'])}, C {_int(r['C'])}/{_int(r['num_heads'])}"


def _reason(r: pd.Series) -> str:
    text = str(r.get("error") or "").strip()
    return text if len(text) <= 90 else text[:87] + "..."


def _ratio(r: pd.Series) -> float:
    try:
        value = float(r.get("ratio"))
    except (TypeError, ValueError):
        return math.nan
    return value if r.get("status") == "ok" else math.nan


def peers_tables(df: pd.DataFrame) -> list[Table]:
    """The detail table of each (device, dtype, batch) of a peers run, then the summary table."""
    if df.empty or not {"peer", "ratio", "ours_ms", "peer_ms"} <= set(df.columns):
        return []
    df = df.copy()
    df["ratio_value"] = [_ratio(r) for _, r in df.iterrows()]
    tables = []
    conditions = ["device", "dtype", "batch"]
    for cond, part in df.groupby(conditions, sort=False):
        device, dtype, batch = cond
        rows, bold, groups = [], [], {}
        for label, block in part.groupby(part.apply(_mechanism, axis=1), sort=False):
            groups[len(rows)] = label
            for _, r in block.iterrows():
                ok = r.get("status") == "ok"
                ratio = r["ratio_value"]
                unstable = str(r.get("unstable")) in ("1", "1.0", "True")
                note = "unstable" if ok and unstable else ("" if ok else f"{r.get('status')}: {_reason(r)}")
                rows.append(
                    [
                        str(r["peer"]),
                        _shape(r),
                        str(r["pass"]),
                        _num(r.get("ours_ms"), 2) if ok else DASH,
                        _num(r.get("peer_ms"), 2) if ok else DASH,
                        _num(ratio, 2),
                        _num(r.get("ratio_iqr"), 2) if ok else DASH,
                        note,
                    ]
                )
                bold.append([False] * 5 + [bool(ratio > LIMIT)] + [False] * 2)
        tables.append(
            Table(
                name=f"peers_{device}_{dtype}_b{_int(batch)}",
                caption=f"Each mechanism against other implementations of it ({device}, {dtype}, batch "
                f"{_int(batch)})",
                header=[
                    "Peer",
                    "Shape",
                    "Pass",
                    "Ours (ms, median)",
                    "Peer (ms, median)",
                    "Ratio (ours / peer)",
                    "IQR (of the ratio)",
                    "Note",
                ],
                rows=rows,
                bold=bold,
                align="lllrrrrl",
                groups=groups,
                note="Ours and the peer run in one process, in interleaved pairs, after their outputs "
                "agreed (1e-5 in float32); ratio = median of the pair ratios ours / peer (below 1: ours "
                f"is faster), IQR = its inter-quartile range. Bold: a ratio above {LIMIT:.2f}. Unstable: "
                "the ratio's IQR above 10 % of it, or other work on the machine during the timing.",
            )
        )
    summary = _summary(df)
    if summary is not None:
        tables.append(summary)
    return tables


def _against_fastest(df: pd.DataFrame) -> list[pd.Series]:
    """Per (mechanism, parameters, shape, pass, dtype, device, batch): the row of the fastest peer,
    i.e. the largest ratio ours / peer of the timed peers."""
    timed = df[df["ratio_value"].notna()]
    keys = [*_ROW_KEY, "dtype", "device", "batch"]
    return [
        block.loc[block["ratio_value"].idxmax()] for _, block in timed.groupby(keys, sort=False, dropna=False)
    ]


def peers_verdict(df: pd.DataFrame) -> str:
    """One sentence for the summary: how many points keep within :data:`LIMIT` of their fastest
    peer, and the slowest of those that do not."""
    df = df.assign(ratio_value=[_ratio(r) for _, r in df.iterrows()]) if not df.empty else df
    worst = _against_fastest(df) if "ratio_value" in df.columns else []
    if not worst:
        return "No point has a timed peer to compare with."
    over = sorted((w for w in worst if w["ratio_value"] > LIMIT), key=lambda w: -w["ratio_value"])
    text = (
        f"{len(worst) - len(over)} of {len(worst)} points (mechanism, shape, pass) are within "
        f"{LIMIT:.2f}× of their fastest peer"
    )
    if over:
        named = "; ".join(
            f"{_mechanism(w)} at {_shape(w)}, {w['pass']}: {w['ratio_value']:.2f}× {w['peer']}"
            for w in over[:5]
        )
        text += f". Slower than that: {named}" + (f"; and {len(over) - 5} more" if len(over) > 5 else "")
    return text + "."


def _summary(df: pd.DataFrame) -> Table | None:
    """Per (mechanism, parameters, shape, pass, dtype, device, batch): the ratio against the fastest
    peer, i.e. the largest ratio of the timed peers."""
    rows, bold = [], []
    for worst in _against_fastest(df):
        rows.append(
            [
                _mechanism(worst),
                _shape(worst),
                str(worst["pass"]),
                f"{worst['dtype']}, {worst['device']}, b{_int(worst['batch'])}",
                str(worst["peer"]),
                _num(worst["ratio_value"], 2),
            ]
        )
        bold.append([False] * 5 + [bool(worst["ratio_value"] > LIMIT)])
    if not rows:
        return None
    return Table(
        name="peers_summary",
        caption="Each mechanism against its fastest peer",
        header=["Mechanism", "Shape", "Pass", "Condition", "Fastest peer", "Ratio (ours / peer)"],
        rows=rows,
        bold=bold,
        align="llllll"[:5] + "r",
        note=f"Fastest peer: the timed peer with the largest ratio ours / peer. Bold: above {LIMIT:.2f}, "
        "i.e. ours more than 10 % slower than that peer (docs/peers.md says why where it stays so).",
    )
