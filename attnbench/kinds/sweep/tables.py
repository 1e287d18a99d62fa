"""Paper-style tables from the rows of a run: a mechanism comparison and resolution sweeps.

Every table renders to Markdown and LaTeX (booktabs); the best value of each column is bold; FLOPs
carry their convention in the header (fvcore: 1 multiply-accumulate = 1 FLOP, batch 1).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from attnbench.report._document import Table, Tex, best_mask, latex_escape
from attnbench.report._results import (
    UNSTABLE_NOTE,
    decimals_for,
    device_label,
    display_name,
    latency_samples,
    latex_labels,
    mechanism_citation,
    plain,
    resolution_label,
    scaled_unit,
    varying,
)
from attnbench.report.references import cite

__all__ = ["METRICS", "Metric", "comparison_tables", "growth_tables", "pick_resolution", "sweep_tables"]

# Conditions a table is measured under; the ones that vary split tables (or rows) apart.
CONDITIONS = ["pass", "compile", "dtype", "device", "batch", "C", "num_heads"]
# FLOPs and parameters do not depend on these: a FLOPs table ignores them.
TIMING_CONDITIONS = ["pass", "compile", "dtype", "device", "batch"]


@dataclasses.dataclass(frozen=True)
class Metric:
    """A numeric column of results.csv as a table shows it.

    Attributes:
        title: column title without unit.
        unit: unit; an SI prefix is prepended when ``scale`` is set (``MACs`` -> ``GMACs``).
        scale: pick the prefix from the column's largest value.
        note: convention after the unit in the header (``fvcore``).
        higher_is_better: direction for the bold best value; None: nothing is bold.
    """

    title: str
    unit: str
    scale: bool = False
    note: str = ""
    higher_is_better: bool | None = False

    def header(self, prefix_unit: str) -> str:
        inner = ", ".join(p for p in (prefix_unit, self.note) if p)
        return f"{self.title} ({inner})" if inner else self.title


METRICS = {
    "params": Metric("Params", "", scale=True),
    "flops": Metric("FLOPs", "MACs", scale=True, note="fvcore"),
    "flops_torch": Metric("FLOPs", "MACs", scale=True, note="FlopCounterMode ÷ 2"),
    "flops_analytic": Metric("FLOPs", "MACs", scale=True, note="closed form"),
    "throughput": Metric("Throughput", "img/s", higher_is_better=True),
    "latency_ms": Metric("Latency", "ms", note="median"),
    "latency_iqr_ms": Metric("Latency IQR", "ms", higher_is_better=None),
    "peak_mem_mb": Metric("Peak memory", "MiB"),
    "achieved_gmacs_s": Metric("Achieved", "GMAC/s", higher_is_better=True),
    "efficiency": Metric("Efficiency", "of peak", higher_is_better=True),
    "compile_s": Metric("Compile", "s", higher_is_better=None),
    "max_batch": Metric("Max batch", "", higher_is_better=True),
    "top1": Metric("Top-1", "%", higher_is_better=True),
    "top5": Metric("Top-5", "%", higher_is_better=True),
}
DEFAULT_COLUMNS = [
    *("params", "flops", "throughput", "latency_ms", "efficiency", "peak_mem_mb", "compile_s", "max_batch"),
    *("top1", "top5"),
]
ACCURACY = ("top1", "top5")


def _as_percent(values: pd.Series) -> pd.Series:
    """Accuracies written as fractions (all <= 1) become percentages."""
    return values * 100 if values.notna().any() and values.max() <= 1.0 else values


def _unit(metric: Metric, values: Sequence[float]) -> tuple[float, str]:
    """(divisor, unit) of a metric for these values: ``(1e9, "GMACs")``, ``(1, "ms")``."""
    finite = [v for v in values if not math.isnan(v)]
    return scaled_unit(max(finite, default=0.0), metric.unit) if metric.scale else (1.0, metric.unit)


def _column(
    metric_key: str,
    values: list[float],
    missing: list[str],
    spreads: list[float] | None = None,
    unit: tuple[float, str] | None = None,
    unstable: list[bool] | None = None,
) -> tuple[str, list[str], list[bool]]:
    """Header, cell texts and bold marks of one numeric column; ``missing`` fills NaN cells; a timed
    value from an ``unstable`` row is marked †."""
    metric = METRICS[metric_key]
    finite = [v for v in values if not math.isnan(v)]
    div, unit_text = unit or _unit(metric, values)
    header = metric.header(unit_text)
    decimals = decimals_for([v / div for v in finite])
    cells = []
    for i, v in enumerate(values):
        if math.isnan(v):
            cells.append(missing[i])
            continue
        text = f"{v / div:.{decimals}f}"
        if spreads is not None and not math.isnan(spreads[i]):
            text += f" ± {spreads[i] / div:.{decimals}f}"
        if unstable is not None and unstable[i] and metric_key in TIMED:
            text += UNSTABLE_MARK
        cells.append(text)
    if metric.higher_is_better is None:
        bold = [False] * len(values)
    else:
        bold = best_mask([None if math.isnan(v) else v for v in values], metric.higher_is_better)
    return header, cells, bold


UNSTABLE_MARK = "†"
TIMED = ("latency_ms", "latency_iqr_ms", "throughput")  # peak memory is measured once, not timed
EFFICIENCY_NOTE = (
    "Efficiency: the MACs of the timed call per second (achieved_gmacs_s) over the peak of a large "
    "matrix multiply on the same device, dtype and threads (peak_gmacs_s, attnbench.peak)."
)


def _is_unstable(rows: pd.DataFrame) -> bool:
    """True when any timed row among ``rows`` is marked unstable by the noise guard."""
    if "unstable" not in rows.columns:
        return False
    return bool(pd.to_numeric(rows["unstable"], errors="coerce").fillna(0).astype(bool).any())


def _status_word(rows: pd.DataFrame) -> str:
    if rows["oom"].any():
        return "OOM"
    statuses = set(rows["status"]) - {"ok"}
    return "/".join(sorted(statuses)) if statuses else "—"


def _slug(values: Sequence[object]) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "_".join(str(v) for v in values)).strip("-").lower()


def _conditions(rows: pd.DataFrame, columns: Sequence[str]) -> str:
    """``forward, float32, CPU, batch 8, C = 64, 2 heads, 1 thread`` for the columns single-valued in
    ``rows`` (the threads wherever the device is said: a timing depends on them)."""
    names = {"batch": "batch {}", "C": "C = {}", "num_heads": "{} heads", "threads": "{} threads"}
    parts = []
    if "device" in columns and "threads" in rows.columns and "threads" not in columns:
        columns = [*columns, "threads"]  # a timing depends on the threads it ran on: say them
    for col in columns:
        if col in rows.columns and rows[col].nunique(dropna=True) == 1:
            value = rows[col].dropna().iloc[0]
            if col == "compile":  # the compile mode reads as eager or compiled
                value = "eager" if value in ("none", "", None) else f"compiled ({value})"
            value = device_label(value) if col == "device" else plain(value)
            text = names.get(col, "{}").format(value)
            parts.append("1 thread" if col == "threads" and value == "1" else text)
    return ", ".join(parts)


def _row_label(key: tuple, tex_of: dict[str, str]) -> Tex:
    """The row label of a group key (the mechanism label, then conditions that vary), with its LaTeX."""
    texts = [device_label(k) if isinstance(k, str) and k in ("cpu", "cuda", "mps") else plain(k) for k in key]
    first = tex_of.get(texts[0], latex_escape(texts[0]))
    tex = " $\\cdot$ ".join([first, *(latex_escape(t) for t in texts[1:])])
    return Tex(" · ".join(texts), tex)


def _mechanism_note(rows: pd.DataFrame) -> str:
    """LaTeX: each mechanism's display name with its \\cite, for a table note."""
    names = dict.fromkeys(str(m) for m in rows["mechanism"])
    keys = {m: mechanism_citation(m) for m in names}
    parts = [f"{latex_escape(display_name(m))}~{cite([found[0]])}" for m, found in keys.items() if found]
    return ("Mechanisms: " + ", ".join(parts) + ".") if parts else ""


def _note(text: str, rows: pd.DataFrame, fvcore: bool) -> Tex:
    """A table note; in LaTeX the fvcore convention and each mechanism cite their source."""
    tex = latex_escape(text)
    if fvcore:
        tex = tex.replace("fvcore", "fvcore~" + cite(["fvcore"]), 1)
    extra = _mechanism_note(rows)
    return Tex(text, f"{tex} {extra}".strip())


def _check_columns(option: str, wanted: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [c for c in wanted if c not in allowed]
    if unknown:
        raise ValueError(f"{option} = {list(wanted)}: unknown {unknown}; choose among {list(allowed)}")


def pick_resolution(df: pd.DataFrame) -> tuple[int, int] | None:
    """The resolution with the most mechanisms measured ``ok`` (ties: the largest)."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        ok = df
    if ok.empty:
        return None
    counts = ok.groupby(["H", "W"])["label"].nunique().reset_index()
    counts["HW"] = counts["H"] * counts["W"]
    best = counts.sort_values(["label", "HW"]).iloc[-1]
    return int(best["H"]), int(best["W"])


def _row_order(labels: list[str], values: dict[str, list[float]], sort: str | None) -> list[int]:
    if sort is None:
        return list(range(len(labels)))
    key, descending = sort.lstrip("-"), sort.startswith("-")
    if key in ("mechanism", "label"):
        return sorted(range(len(labels)), key=lambda i: labels[i], reverse=descending)
    vals = values.get(key) or [math.nan] * len(labels)
    finite = [i for i in range(len(labels)) if not math.isnan(vals[i])]
    rest = [i for i in range(len(labels)) if math.isnan(vals[i])]
    return sorted(finite, key=lambda i: vals[i], reverse=descending) + rest


def _group_by(df: pd.DataFrame, group_by: Sequence[str] | None, candidates: Sequence[str]) -> list[str]:
    if group_by is None:
        return varying(df, candidates)
    _check_columns("group_by", group_by, list(df.columns))
    return list(group_by)


def comparison_tables(
    df: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    sort: str | None = None,
    group_by: Sequence[str] | None = None,
    resolution: tuple[int, int] | None = None,
) -> list[Table]:
    """Mechanisms side by side at one resolution, BiFormer-table style; one table per group.

    Args:
        df: filtered rows with a ``label`` column.
        columns: metric keys (:data:`METRICS`); default: those of params, FLOPs, throughput,
            latency, peak memory, top-1 and top-5 that the run measured.
        sort: a metric key, ``-key`` for descending, or ``mechanism``; default: the run's order.
        group_by: columns that split tables; default: the conditions that vary.
        resolution: (H, W); default: :func:`pick_resolution`.
    """
    if columns is not None:
        _check_columns("columns", columns, list(METRICS))
    if sort is not None:
        _check_columns("sort", [sort.lstrip("-")], [*METRICS, "mechanism", "label"])
    if df.empty:
        return []
    resolution = resolution or pick_resolution(df)
    at = df[(df["H"] == resolution[0]) & (df["W"] == resolution[1])]
    if at.empty:
        have = sorted({resolution_label(h, w) for h, w in zip(df["H"], df["W"])})
        raise ValueError(f"resolution = {resolution}: no row at that size; the run has {have}")
    cols = list(columns) if columns is not None else [c for c in DEFAULT_COLUMNS if c in at.columns]
    if columns is None:
        # the measured columns; if nothing was measured, FLOPs and latency show each row's status
        cols = [c for c in cols if at[c].notna().any()] or [c for c in ("flops", "latency_ms") if c in at]
    groups = _group_by(at, group_by, CONDITIONS)
    in_label = [c for c in varying(at, CONDITIONS) if c not in groups]
    sort_key = sort.lstrip("-") if sort is not None else None
    measured = [*cols, *([sort_key] if sort_key in METRICS and sort_key not in cols else [])]
    tex_of = latex_labels(at)
    tables = []
    for gvalues, g in at.groupby(groups, sort=False, dropna=False) if groups else [((), at)]:
        gvalues = gvalues if isinstance(gvalues, tuple) else (gvalues,)
        keys = ["label", *in_label]
        labels, values, spreads, missing, shaky = (
            [],
            {c: [] for c in measured},
            {c: [] for c in measured},
            {c: [] for c in measured},
            [],
        )
        for key, rows in g.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            labels.append(_row_label(key, tex_of))
            ok = rows[rows["status"] == "ok"]
            use = ok if not ok.empty else rows
            word = "—" if not ok.empty else _status_word(rows)
            shaky.append(_is_unstable(use))
            for c in measured:
                column = use[c] if c in use.columns else pd.Series(math.nan, index=use.index)
                series = _as_percent(column) if c in ACCURACY else column
                values[c].append(float(series.mean()) if series.notna().any() else math.nan)
                many = c in ACCURACY and series.notna().sum() > 1
                spreads[c].append(float(series.std()) if many else math.nan)
                missing[c].append(word)
        order = _row_order(labels, values, sort)
        header, body_cols, bold_cols = ["Mechanism"], [], []
        for c in cols:
            h, cells, bold = _column(
                c,
                [values[c][i] for i in order],
                [missing[c][i] for i in order],
                spreads=[spreads[c][i] for i in order] if c in ACCURACY else None,
                unstable=[shaky[i] for i in order],
            )
            header.append(h)
            body_cols.append(cells)
            bold_cols.append(bold)
        rows_text = [[labels[i], *(col[j] for col in body_cols)] for j, i in enumerate(order)]
        rows_bold = [[False, *(col[j] for col in bold_cols)] for j in range(len(order))]
        where = _conditions(g, CONDITIONS)
        # the file name always carries the pass, so that it does not change with how many passes ran
        only = sorted(set(g["pass"].astype(str))) if "pass" in g.columns and "pass" not in groups else []
        suffix = _slug(gvalues) if groups else (_slug((only[0],)) if len(only) == 1 else "")
        if groups and len(only) == 1:
            suffix = _slug((only[0], *gvalues))
        name = "comparison" + (f"_{suffix}" if suffix else "")
        notes = ["FLOPs: multiply-accumulates of one image (batch 1), fvcore convention (1 MAC = 1 FLOP)."]
        if any(c in ACCURACY for c in cols):
            notes.append("Accuracy: mean ± std over seeds where several were run.")
        if any(shaky) and any(c in TIMED for c in cols):
            notes.append(UNSTABLE_NOTE)
        if "efficiency" in cols:
            notes.append(EFFICIENCY_NOTE)
        tables.append(
            Table(
                name=name,
                caption=f"Mechanism comparison at {resolution_label(*resolution)}"
                + (f" ({where})" if where else ""),
                header=header,
                rows=rows_text,
                bold=rows_bold,
                note=_note(" ".join(notes), g, fvcore=True),
            )
        )
    return tables


def sweep_tables(
    df: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("flops", "latency_ms", "throughput", "peak_mem_mb"),
    group_by: Sequence[str] | None = None,
    sort: str | None = None,
) -> list[Table]:
    """One table per metric (and group): mechanisms as rows, resolutions as columns.

    FLOPs do not depend on pass, dtype, device or batch, so their table ignores those.
    """
    _check_columns("metrics", metrics, list(METRICS))
    tables = []
    for metric in metrics:
        if metric not in df.columns or df[metric].isna().all():
            continue
        flops_like = metric.startswith("flops")
        candidates = [c for c in CONDITIONS if not (flops_like and c in TIMING_CONDITIONS)]
        group = [c for c in _group_by(df, group_by, candidates) if c in candidates]
        in_label = [c for c in varying(df, candidates) if c not in group]
        sizes = df[["H", "W"]].drop_duplicates()
        sizes = sizes.assign(HW=sizes["H"] * sizes["W"]).sort_values(["HW", "H"])
        res = list(zip(sizes["H"], sizes["W"]))
        for gvalues, g in df.groupby(group, sort=False, dropna=False) if group else [((), df)]:
            gvalues = gvalues if isinstance(gvalues, tuple) else (gvalues,)
            keys = ["label", *in_label]
            tex_of = latex_labels(g)
            labels, grid, words, shaky = [], [], [], []
            for key, rows in g.groupby(keys, sort=False):
                key = key if isinstance(key, tuple) else (key,)
                labels.append(_row_label(key, tex_of))
                line, wline, sline = [], [], []
                for H, W in res:
                    cell = rows[(rows["H"] == H) & (rows["W"] == W)]
                    ok = cell if flops_like else cell[cell["status"] == "ok"]
                    line.append(float(ok[metric].mean()) if ok[metric].notna().any() else math.nan)
                    wline.append(_status_word(cell) if not cell.empty else "—")
                    sline.append(_is_unstable(ok))
                grid.append(line)
                words.append(wline)
                shaky.append(sline)
            order = list(range(len(labels)))
            if sort is not None and sort.lstrip("-") in ("mechanism", "label"):
                order = sorted(order, key=lambda i: labels[i], reverse=sort.startswith("-"))
            m = METRICS[metric]
            unit = _unit(m, [v for line in grid for v in line])
            columns_text, columns_bold = [], []
            for j in range(len(res)):
                _, cells, bold = _column(
                    metric,
                    [grid[i][j] for i in order],
                    [words[i][j] for i in order],
                    unit=unit,
                    unstable=[shaky[i][j] for i in order],
                )
                columns_text.append(cells)
                columns_bold.append(bold)
            where = _conditions(g, candidates)
            title = m.header(unit[1])
            tables.append(
                Table(
                    name=f"sweep_{metric}" + (f"_{_slug(gvalues)}" if group else ""),
                    caption=f"{title} by resolution H×W" + (f"; {where}" if where else ""),
                    header=["Mechanism", *(resolution_label(H, W) for H, W in res)],
                    rows=[[labels[i], *(col[r] for col in columns_text)] for r, i in enumerate(order)],
                    bold=[[False, *(col[r] for col in columns_bold)] for r in range(len(order))],
                    note=_note(
                        ("fvcore MACs of one image (batch 1). " if flops_like else "")
                        + "OOM: out of memory; —: not run."
                        + (f" {EFFICIENCY_NOTE}" if metric == "efficiency" else "")
                        + (f" {UNSTABLE_NOTE}" if metric in TIMED and any(any(x) for x in shaky) else ""),
                        g,
                        fvcore=flops_like,
                    ),
                )
            )
    return tables


BRA_GROWTH_NOTE = (
    " BRA at a fixed S attends to k of S² regions of HW/S² tokens each, O((HW)² k/S²): its exponent "
    "tends to 2, and with k = S² it is global attention. The paper's O((HW)^{4/3}) assumes S grows "
    "as (HW)^{1/3}; the BRA formula check measures that at the best S of each size."
)
GROWTH_RESAMPLES = 1000  # bootstrap resamples of the timing samples for a growth exponent's interval


def _growth_interval(hw: np.ndarray, samples: list[list[float]], seed: int = 0) -> tuple[float, float]:
    """The 95 % interval of the log-log slope of median latency against tokens, from a bootstrap of
    each resolution's timing samples (the measurement noise of the medians; the fit itself is exact
    at two sizes and has little freedom at three)."""
    rng = np.random.default_rng(seed)
    meds = np.stack(
        [np.median(rng.choice(np.asarray(s), size=(GROWTH_RESAMPLES, len(s))), axis=1) for s in samples],
        axis=1,
    )
    x = np.log(hw) - np.log(hw).mean()
    slopes = (np.log(meds) - np.log(meds).mean(axis=1, keepdims=True)) @ x / (x @ x)
    lo, hi = np.quantile(slopes, [0.025, 0.975])
    return float(lo), float(hi)


def _slope_text(hw: np.ndarray, rows: pd.DataFrame, column: str) -> str:
    """The log-log slope of ``column`` against tokens (``attnbench.kinds.sweep.formula.loglog_slope``),
    two decimals; a dash where the column is missing or not positive everywhere."""
    from attnbench.kinds.sweep.formula import loglog_slope  # (it imports the FLOP counter and torch)

    values = rows[column].to_numpy(float) if column in rows else np.array([])
    if not values.size or not (np.isfinite(values) & (values > 0)).all():
        return "—"
    return f"{loglog_slope(hw, values):.2f}"


def growth_tables(df: pd.DataFrame) -> list[Table]:
    """One table per pass (and dtype, device, batch, C, heads where they vary): each configuration's
    measured growth exponent against tokens H·W (log-log slope of the median latency, with a 95 %
    interval from the timing samples; of peak memory) beside its FLOPs exponent, over the
    resolutions where it ran."""
    if "latency_ms" not in df.columns:
        return []
    ok = df[(df["status"] == "ok") & df["latency_ms"].notna()]
    if ok.empty or ok.assign(HW=ok["H"] * ok["W"])["HW"].nunique() < 2:
        return []
    tex_of = latex_labels(ok)
    tables = []
    groups = [c for c in TIMING_CONDITIONS + ["C", "num_heads"] if c in ok.columns and ok[c].nunique() > 1]
    for gvalues, g in ok.groupby(groups, sort=False, dropna=False) if groups else [((), ok)]:
        gvalues = gvalues if isinstance(gvalues, tuple) else (gvalues,)
        rows, bold = [], []
        for label, s in g.groupby("label", sort=False):
            s = s.assign(HW=s["H"] * s["W"]).sort_values("HW").drop_duplicates("HW", keep="last")
            if len(s) < 2:
                continue
            hw = s["HW"].to_numpy(float)
            cell = _slope_text(hw, s, "latency_ms")
            samples = (
                [latency_samples(v) for v in s["latency_samples_ms"]] if "latency_samples_ms" in s else []
            )
            if samples and all(len(x) >= 3 for x in samples):
                lo, hi = _growth_interval(hw, samples)
                cell += f" [{lo:.2f}, {hi:.2f}]"
            first, last = s.iloc[0], s.iloc[-1]
            sizes = f"{resolution_label(first['H'], first['W'])}–{resolution_label(last['H'], last['W'])}"
            rows.append(
                [
                    _row_label((label,), tex_of),
                    sizes,
                    cell,
                    _slope_text(hw, s, "flops"),
                    _slope_text(hw, s, "peak_mem_mb"),
                ]
            )
            bold.append([False] * 5)
        if not rows:
            continue
        where = _conditions(g, TIMING_CONDITIONS + ["C", "num_heads"])
        suffix = _slug(gvalues) if groups else _slug(tuple(sorted(set(g["pass"].astype(str))))[:1])
        tables.append(
            Table(
                name=f"growth_{suffix}" if suffix else "growth",
                caption=f"Growth with the number of tokens H·W ({where})" if where else "Growth with tokens",
                header=[
                    "Mechanism",
                    "Sizes",
                    "Latency exponent (95 % CI)",
                    "FLOPs exponent",
                    "Peak-memory exponent",
                ],
                rows=rows,
                bold=bold,
                align="llrrr",
                note=(
                    "Exponent: the least-squares slope of log y against log(H·W) over the sizes run, so a "
                    "cost that grows with the square of the tokens has exponent 2 and a linear one 1. The "
                    "latency interval comes from a bootstrap of each size's timing samples "
                    f"({GROWTH_RESAMPLES} resamples); it covers the measurement noise of the medians, not "
                    "how well a power law fits. Below the sizes where attention dominates, fixed costs "
                    "(projections, kernel launches) pull the latency exponent under the FLOPs exponent."
                    + (BRA_GROWTH_NOTE if (g["mechanism"] == "bra").any() else "")
                ),
            )
        )
    return tables
