"""Plots of a run, PNG and SVG, with one fixed colour-blind-safe colour and marker per mechanism.

Known mechanisms take Okabe-Ito colours (Wong, Nature Methods 2011; yellow swapped for Tol's wine,
which reads on white); names the palette does not know take Paul Tol's muted colours in sorted
order, so a report gives every mechanism one colour in every plot. Configurations of one mechanism
share its colour and differ by line style and marker fill. Figures are built on
``matplotlib.figure.Figure`` and never touch pyplot's global state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from attnbench.report._results import parameter_columns, plain, resolution_label, scaled_unit
from attnbench.report.bra_backends import backend_summary
from attnbench.report.formula import (
    CLAIMED_SLOPE,
    GROUP_COLUMNS,
    FormulaCheck,
    loglog_slope,
    paper_formula,
    paper_optimal_s,
)

__all__ = ["MECHANISM_COLORS", "draw_all", "mechanism_styles"]

MECHANISM_COLORS = {
    "vanilla": "#000000",
    "bra": "#D55E00",
    "dbra": "#CC79A7",
    "swin": "#0072B2",
    "axial": "#56B4E9",
    "neighborhood": "#009E73",
    "dilated": "#E69F00",
    "deformable": "#882255",
}
EXTRA_COLORS = ["#44AA99", "#999933", "#332288", "#888888", "#DDCC77", "#117733", "#AA4499"]
MECHANISM_MARKERS = {
    "vanilla": "o",
    "bra": "s",
    "dbra": "D",
    "swin": "^",
    "axial": "v",
    "neighborhood": "P",
    "dilated": "X",
    "deformable": "*",
}
EXTRA_MARKERS = ["h", "p", "<", ">", "d", "8", "H"]
LINESTYLES = ["-", "--", ":", "-."]
RC = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.85),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "attnbench",
}


@dataclasses.dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str = "-"
    fillstyle: str = "full"

    def kwargs(self) -> dict[str, str]:
        return {
            "color": self.color,
            "marker": self.marker,
            "linestyle": self.linestyle,
            "fillstyle": self.fillstyle,
        }


def mechanism_styles(mechanisms: Sequence[str]) -> dict[str, Style]:
    """Colour and marker of each mechanism: fixed for known names, Tol's muted in sorted order otherwise."""
    out = {m: Style(MECHANISM_COLORS[m], MECHANISM_MARKERS[m]) for m in mechanisms if m in MECHANISM_COLORS}
    unknown = sorted({m for m in mechanisms if m not in MECHANISM_COLORS})
    for i, m in enumerate(unknown):
        out[m] = Style(EXTRA_COLORS[i % len(EXTRA_COLORS)], EXTRA_MARKERS[i % len(EXTRA_MARKERS)])
    return out


def _shade(color: str, t: float) -> str:
    """``color`` mixed towards black (t < 0) or white (t > 0) by ``|t|``."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    mixed = rgb * (1 + t) if t < 0 else rgb + (1 - rgb) * t
    return matplotlib.colors.to_hex(mixed)


def series_styles(df: pd.DataFrame, key: str = "label") -> dict[str, Style]:
    """One style per series: the mechanism's colour and marker; its configurations differ by shade
    (dark to light), line style and marker fill."""
    base = mechanism_styles(sorted(set(df["mechanism"])))
    out: dict[str, Style] = {}
    for mech, rows in df.groupby("mechanism", sort=False):
        names = list(dict.fromkeys(rows[key]))
        shades = np.linspace(-0.35, 0.45, len(names)) if len(names) > 1 else [0.0]
        for i, (name, t) in enumerate(zip(names, shades)):
            b = base[mech]
            fill = "full" if (i // 4) % 2 == 0 else "none"
            out[name] = Style(_shade(b.color, float(t)), b.marker, LINESTYLES[i % 4], fill)
    return out


def _tokens_axis(ax, sizes: pd.DataFrame) -> None:
    """Log x axis of tokens H·W with a tick per measured resolution, labelled H×W."""
    sizes = (
        sizes.drop_duplicates().assign(HW=lambda d: d["H"] * d["W"]).drop_duplicates("HW").sort_values("HW")
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(sizes["HW"])))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([resolution_label(h, w) for h, w in zip(sizes["H"], sizes["W"])])
    if len(sizes) > 5:
        for label in ax.get_xticklabels():
            label.set_rotation(45)
            label.set_ha("right")
    ax.set_xlabel("input H×W (log scale of tokens H·W)")


def _log_axis(ax, which: str = "y") -> None:
    """Log axis with 1-2-5 ticks as plain numbers (0.01, 0.1, 1); call after plotting."""
    getattr(ax, f"set_{which}scale")("log")
    lo, hi = getattr(ax, f"get_{which}lim")()
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Readable ticks for a log scale from ``lo`` to ``hi``: 1-2-5 steps, finer for narrow ranges."""
    decades = math.log10(hi / lo) if lo > 0 else 0.0
    subs = (1, 1.5, 2, 3, 4, 5, 6, 8) if decades < 1.2 else (1, 2, 5) if decades < 2.5 else (1,)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [m * 10.0**e for e in range(first, last + 1) for m in subs]
    return [float(f"{t:.6g}") for t in ticks if lo <= t <= hi]


def _legend_right(fig: Figure, handles, labels, title: str | None = None) -> None:
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title=title)


def _series_key(df: pd.DataFrame, extra: Sequence[str]) -> pd.Series:
    """The row's label, with the conditions in ``extra`` that vary appended (``bra · float16``)."""
    key = df["label"].astype(str)
    for col in extra:
        if col in df.columns and df[col].nunique() > 1:
            key = key + " · " + df[col].map(plain)
    return key


def plot_flops_vs_tokens(df: pd.DataFrame) -> Figure | None:
    """FLOPs (fvcore MACs, batch 1) against tokens, log-log, with fitted slopes in the legend."""
    data = df[df["flops"].notna()].drop_duplicates(["label", "H", "W", "C", "num_heads"])
    if data.empty:
        return None
    data = data.assign(series=_series_key(data, ["C", "num_heads"]), HW=data["H"] * data["W"])
    styles = series_styles(data, "series")
    div, unit = scaled_unit(float(data["flops"].max()), "MACs")
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    handles, labels = [], []
    for name, s in data.groupby("series", sort=False):
        s = s.sort_values("HW")
        (line,) = ax.plot(s["HW"], s["flops"] / div, **styles[name].kwargs())
        slope = loglog_slope(s["HW"], s["flops"])
        handles.append(line)
        labels.append(f"{name}: slope {slope:.2f}" if not math.isnan(slope) else f"{name}: one size")
    _log_axis(ax)
    _tokens_axis(ax, data[["H", "W"]])
    ax.set_ylabel(f"FLOPs ({unit}, fvcore, batch 1, log)")
    ax.set_title("FLOPs vs tokens; slope = fitted d log FLOPs / d log (H·W)")
    _legend_right(fig, handles, labels)
    return fig


def plot_speed(df: pd.DataFrame) -> Figure | None:
    """Median latency and throughput against resolution, one column per pass."""
    data = df[(df["status"] == "ok") & df["latency_ms"].notna()]
    if data.empty:
        return None
    data = data.assign(series=_series_key(data, ["dtype", "device", "batch", "C", "num_heads"]))
    styles = series_styles(data, "series")
    passes = list(dict.fromkeys(data["pass"]))
    fig = Figure(figsize=(4.2 * len(passes) + 1, 6.5))
    axes = fig.subplots(2, len(passes), squeeze=False, sharex="col")
    seen: dict[str, Line2D] = {}
    for j, p in enumerate(passes):
        at = data[data["pass"] == p]
        for i, (col, ylabel) in enumerate(
            [("latency_ms", "latency (ms, median, log)"), ("throughput", "throughput (images/s, log)")]
        ):
            ax = axes[i][j]
            for name, s in at.groupby("series", sort=False):
                s = s.assign(HW=s["H"] * s["W"]).sort_values("HW")
                (line,) = ax.plot(s["HW"], s[col], **styles[name].kwargs())
                if col == "latency_ms" and "latency_iqr_ms" in s and s["latency_iqr_ms"].notna().any():
                    half = s["latency_iqr_ms"].fillna(0) / 2
                    ax.fill_between(
                        s["HW"], s[col] - half, s[col] + half, color=styles[name].color, alpha=0.15, lw=0
                    )
                seen.setdefault(name, line)
            _log_axis(ax)
            _tokens_axis(ax, data[["H", "W"]])
            if i == 0:
                ax.set_title(f"pass: {p}")
                ax.set_xlabel("")
            ax.set_ylabel(ylabel if j == 0 else "")
    fig.suptitle("Speed vs resolution (band: latency inter-quartile range)")
    _legend_right(fig, list(seen.values()), list(seen))
    fig.tight_layout()
    return fig


def plot_memory(df: pd.DataFrame) -> Figure | None:
    """Peak memory against resolution, one column per pass; ✕ and a dotted line at the first size
    that ran out of memory."""
    data = df[((df["status"] == "ok") & df["peak_mem_mb"].notna()) | df["oom"]]
    if data.empty or not data["peak_mem_mb"].notna().any():
        return None
    data = data.assign(
        series=_series_key(data, ["dtype", "device", "batch", "C", "num_heads"]), HW=data["H"] * data["W"]
    )
    styles = series_styles(data, "series")
    passes = list(dict.fromkeys(data["pass"]))
    fig = Figure(figsize=(4.2 * len(passes) + 1, 4.2))
    axes = fig.subplots(1, len(passes), squeeze=False)[0]
    seen: dict[str, Line2D] = {}
    any_oom = False
    for ax, p in zip(axes, passes):
        at = data[data["pass"] == p]
        for name, s in at.groupby("series", sort=False):
            ok = s[~s["oom"]].sort_values("HW")
            (line,) = ax.plot(ok["HW"], ok["peak_mem_mb"], **styles[name].kwargs())
            seen.setdefault(name, line)
            if s["oom"].any():
                any_oom = True
                x = s.loc[s["oom"], "HW"].min()
                ax.axvline(x, color=styles[name].color, linestyle=":", lw=1.2)
                # above the plotting area, so it never hides a measured point
                ax.plot(
                    [x],
                    [1.04],
                    marker="X",
                    ms=9,
                    color=styles[name].color,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
        _log_axis(ax)
        _tokens_axis(ax, data[["H", "W"]])
        ax.set_title(f"pass: {p}", pad=14)
        ax.set_ylabel("peak memory (MiB, log)" if ax is axes[0] else "")
    handles, labels = list(seen.values()), list(seen)
    if any_oom:
        handles.append(Line2D([], [], color="grey", marker="X", linestyle=":", ms=9))
        labels.append("out of memory (first failing size)")
    fig.suptitle("Peak memory vs resolution")
    _legend_right(fig, handles, labels)
    fig.tight_layout()
    return fig


def plot_bra_heatmaps(df: pd.DataFrame) -> Figure | None:
    """S × k heatmaps of BRA's FLOPs and forward latency at up to three resolutions."""
    bra = df[(df["mechanism"] == "bra") & df["n_win"].notna() & df["topk"].notna()]
    if bra.empty or (bra["n_win"].nunique() < 2 and bra["topk"].nunique() < 2):
        return None
    fixed = [c for c in ["C", "num_heads", *parameter_columns(df, "bra")] if c not in ("n_win", "topk")]
    fixed = [c for c in fixed if c in bra.columns]
    key = bra[fixed].map(str).agg("|".join, axis=1)
    bra = bra[key == key.value_counts().index[0]]
    sizes = (
        bra.groupby(["H", "W"])
        .apply(lambda g: g[["n_win", "topk"]].drop_duplicates().shape[0], include_groups=False)
        .rename("cells")
        .reset_index()
    )
    sizes = sizes[sizes["cells"] >= 2].assign(HW=lambda d: d["H"] * d["W"]).sort_values("HW").tail(3)
    if sizes.empty:
        return None
    lat = bra[(bra["status"] == "ok") & (bra["pass"] == "forward") & bra["latency_ms"].notna()]
    for col in ("dtype", "device", "batch"):
        if col in lat.columns and lat[col].nunique() > 1:
            lat = lat[lat[col] == lat[col].value_counts().index[0]]
    panels: list[tuple[str, pd.DataFrame, str]] = [("flops", bra[bra["flops"].notna()], "FLOPs")]
    if not lat.empty:
        where = ", ".join(str(lat[c].iloc[0]) for c in ("dtype", "device") if c in lat.columns)
        batch = f"batch {int(lat['batch'].iloc[0])}, " if "batch" in lat.columns else ""
        panels.append(("latency_ms", lat, f"forward latency ({batch}{where})"))
    fig = Figure(figsize=(3.6 * len(sizes) + 0.5, 3.3 * len(panels)))
    axes = fig.subplots(len(panels), len(sizes), squeeze=False)
    for i, (col, rows, title) in enumerate(panels):
        for j, (H, W) in enumerate(zip(sizes["H"], sizes["W"])):
            ax = axes[i][j]
            at = rows[(rows["H"] == H) & (rows["W"] == W)]
            grid = at.pivot_table(index="n_win", columns="topk", values=col, aggfunc="mean")
            grid = grid.reindex(index=sorted(bra["n_win"].unique()), columns=sorted(bra["topk"].unique()))
            grid.index = grid.index.astype(int)
            grid.columns = grid.columns.astype(int)
            unit = "ms"
            if col == "flops":
                div, unit = scaled_unit(float(grid.max().max()), "MACs")
                grid = grid / div
            ax.set_facecolor("#d9d9d9")
            ax.grid(False)
            if grid.notna().any().any():
                lo, hi = float(grid.min().min()), float(grid.max().max())
                sns.heatmap(
                    grid,
                    ax=ax,
                    cmap="cividis",
                    norm=LogNorm(lo, hi * 1.0001),
                    annot=True,
                    fmt=".3g",
                    annot_kws={"size": 8},
                    cbar_kws={"label": unit + (", fvcore, batch 1" if col == "flops" else ", median")},
                )
                cbar = ax.collections[0].colorbar
                cbar.ax.yaxis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
                cbar.ax.yaxis.set_minor_locator(NullLocator())
                cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_title(f"{title}, {resolution_label(H, W)}", fontsize=9)
            ax.set_ylabel("S (n_win)")
            ax.set_xlabel("k (topk)")
    fixed_text = ", ".join(f"{c} = {plain(bra[c].iloc[0])}" for c in fixed if bra[c].notna().any())
    fig.suptitle(
        f"BRA over S × k; grey: skipped, not run or k > S²; log colour scale\n{fixed_text}", fontsize=9
    )
    fig.tight_layout()
    return fig


def plot_pareto(df: pd.DataFrame) -> Figure | None:
    """Top-1 accuracy against FLOPs with the Pareto front (higher accuracy at no more FLOPs)."""
    if "top1" not in df.columns or df["top1"].isna().all():
        return None
    acc = df[(df["status"] == "ok") & df["top1"].notna() & df["flops"].notna()]
    if acc.empty:
        return None
    # one point per model: a configuration at one input size, over its seeds
    point = acc["label"].astype(str)
    if acc[["H", "W"]].drop_duplicates().shape[0] > 1:
        point = point + " @ " + acc["H"].astype(int).astype(str) + "×" + acc["W"].astype(int).astype(str)
    if acc["C"].nunique() > 1:
        point = point + ", C=" + acc["C"].astype(int).astype(str)
    acc = acc.assign(point=point)
    seeds = acc["seed"].fillna(-1) if "seed" in acc.columns else pd.Series(-1, index=acc.index)
    acc = acc.assign(seed_=seeds).drop_duplicates(["point", "seed_"])
    scale = 100 if acc["top1"].max() <= 1.0 else 1
    agg = (
        acc.groupby(["mechanism", "point"], sort=False)
        .agg(top1=("top1", "mean"), std=("top1", "std"), flops=("flops", "mean"), n=("seed_", "nunique"))
        .reset_index()
        .rename(columns={"point": "label"})
    )
    agg[["top1", "std"]] *= scale
    styles = series_styles(agg)
    div, unit = scaled_unit(float(agg["flops"].max()), "MACs")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for r in agg.itertuples():
        ax.errorbar(
            r.flops / div,
            r.top1,
            yerr=0 if math.isnan(r.std) else r.std,
            linestyle="none",
            marker=styles[r.label].marker,
            color=styles[r.label].color,
            ms=8,
            capsize=3,
            label=f"{r.label} ({r.n} seed{'s' if r.n > 1 else ''})",
        )
    front = agg.sort_values(["flops", "top1"], ascending=[True, False])
    front = front[front["top1"] > front["top1"].cummax().shift(fill_value=-np.inf)]
    ax.step(
        front["flops"] / div,
        front["top1"],
        where="post",
        color="grey",
        linestyle="--",
        lw=1,
        label="Pareto front",
    )
    if agg["flops"].max() / agg["flops"].min() > 3:
        _log_axis(ax, "x")
    ax.set_xlabel(f"FLOPs ({unit}, fvcore, batch 1" + (", log)" if ax.get_xscale() == "log" else ")"))
    ax.set_ylabel("top-1 accuracy (%, mean ± std over seeds)")
    ax.set_title("Accuracy vs FLOPs")
    handles, labels = ax.get_legend_handles_labels()
    _legend_right(fig, handles, labels)
    return fig


def plot_bra_backends(df: pd.DataFrame) -> Figure | None:
    """BRA's backends side by side: median latency (IQR as error bar) and peak memory per shape and pass.

    Where the run has the yardstick rows (``studies/plugins/bra_parts.py``), the latency panels mark
    each shape's floor (projections + LCE) and the floor plus the ideal block-sparse attention time.
    """
    if "backend" not in df.columns:
        return None
    bra = df[(df["mechanism"] == "bra") & (df["status"] == "ok") & df["backend"].notna()].copy()
    if bra["backend"].nunique() < 2 or bra["latency_ms"].isna().all():
        return None

    def shape_label(r: Any) -> str:
        return f"{int(r.H)}×{int(r.W)}, C {int(r.C)}\nS {int(r.n_win)}, k {int(r.topk)}"

    bra["shape"] = [shape_label(r) for r in bra.itertuples()]
    summary = backend_summary(df)
    if not summary.empty:
        summary["shape"] = [shape_label(r) for r in summary.itertuples()]
    shapes = list(dict.fromkeys(bra.sort_values(["H", "C"], ascending=[False, True])["shape"]))
    backends = [b for b in ("reference", "sdpa", "bmm", "masked", "flex", "auto") if b in set(bra["backend"])]
    backends += sorted(set(bra["backend"]) - set(backends))
    passes = [p for p in ("forward", "forward_backward") if p in set(bra["pass"])]
    known = {"reference": "#000000", "sdpa": "#0072B2", "bmm": "#D55E00", "masked": "#E69F00"}
    known.update(flex="#56B4E9", auto="#CC79A7")
    extra = iter(["#F0E442", "#999999", "#332288"])
    colors = {b: known.get(b) or next(extra, "#777777") for b in backends}
    fig = Figure(figsize=(5.4 * len(passes) + 2.0, 7.4))
    axes = fig.subplots(2, len(passes), squeeze=False)
    width = 0.8 / len(backends)
    x = np.arange(len(shapes))
    for col, pass_ in enumerate(passes):
        part = bra[bra["pass"] == pass_]
        for row, (metric, label) in enumerate(
            (("latency_ms", "latency (ms, median; bar: IQR)"), ("peak_mem_mb", "peak memory (MiB)"))
        ):
            ax = axes[row][col]
            for i, be in enumerate(backends):
                sel = part[part["backend"] == be].groupby("shape").first().reindex(shapes)
                err = sel["latency_iqr_ms"] / 2 if metric == "latency_ms" else None
                bars = ax.bar(
                    x + (i - (len(backends) - 1) / 2) * width,
                    sel[metric],
                    width,
                    yerr=err,
                    color=colors[be],
                    label=be,
                    capsize=2,
                )
                values = [f"{v:.3g}" if np.isfinite(v) else "" for v in sel[metric]]
                ax.bar_label(bars, values, fontsize=6, padding=2, rotation=90)
            shown = list(part[metric].dropna())
            if metric == "latency_ms" and not summary.empty:
                marks = summary[summary["pass"] == pass_].groupby("shape").first().reindex(shapes)
                for xi, floor, ideal in zip(x, marks["floor_ms"], marks["ideal_ms"]):
                    if np.isfinite(floor):
                        shown.append(floor)
                        ax.hlines(
                            floor,
                            xi - 0.45,
                            xi + 0.45,
                            colors="#555555",
                            linestyles="--",
                            lw=1.4,
                            label="floor (QKV, LCE, output proj.)",
                        )
                        if np.isfinite(ideal):
                            ax.hlines(
                                floor + ideal,
                                xi - 0.45,
                                xi + 0.45,
                                colors="#009E73",
                                linestyles=(0, (1, 1)),
                                lw=2.2,
                                label="floor + ideal attention (k/S² × dense)",
                            )
            if shown:  # room for the labels; bars start well below the smallest value
                ax.set_ylim(min(shown) / 2, max(shown) * 3)
            ax.set_yscale("log")
            _log_axis(ax)
            ax.set_xticks(x, shapes, fontsize=8)
            ax.set_ylabel(label)
            ax.set_title(f"pass: {pass_}" if row == 0 else "")
    conds = bra.iloc[0]
    fig.suptitle(
        f"BRA backends ({conds['device']}, {conds['dtype']}, batch {int(conds['batch'])}); "
        "reference = the released algorithm"
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    _legend_right(fig, list(unique.values()), list(unique.keys()), title="backend")
    return fig


def _resolution_colors(n: int) -> list[str]:
    """Shades of BRA's colour, dark (smallest map) to light (largest): these plots are all BRA."""
    return [_shade(MECHANISM_COLORS["bra"], float(t)) for t in np.linspace(-0.55, 0.45, max(n, 1))]


PAPER_COLOR = "#555555"


def _formula_groups(check: FormulaCheck, table: pd.DataFrame, limit: int = 3) -> list[pd.DataFrame]:
    """Rows of ``table`` split by the formula's group columns (C, heads, k, ...), at most ``limit``."""
    return [g for _, g in table.groupby(GROUP_COLUMNS, sort=True)][:limit]


def plot_flops_vs_s(check: FormulaCheck) -> Figure | None:
    """BRA's measured FLOPs against S per resolution, the paper's formula over S, S* and the best swept S."""
    if check.points.empty:
        return None
    groups = [g for g in _formula_groups(check, check.points, limit=99) if g["n_win"].nunique() >= 2][:3]
    if not groups:
        return None
    fig = Figure(figsize=(4.6 * len(groups) + 2.5, 4.4))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    res_handles: dict[str, Line2D] = {}
    for ax, pts in zip(axes, groups):
        C, k = int(pts["C"].iloc[0]), int(pts["topk"].iloc[0])
        div, unit = scaled_unit(float(pts["measured_total"].max()), "MACs")
        sizes = pts[["H", "W"]].drop_duplicates().assign(HW=lambda d: d["H"] * d["W"]).sort_values("HW")
        s_lo, s_hi = pts["n_win"].min(), pts["n_win"].max()
        grid = np.geomspace(s_lo, s_hi, 200)
        for color, (H, W, HW) in zip(_resolution_colors(len(sizes)), sizes.itertuples(index=False)):
            at = pts[(pts["H"] == H) & (pts["W"] == W)].sort_values("n_win")
            (line,) = ax.plot(at["n_win"], at["measured_total"] / div, marker="o", color=color)
            res_handles.setdefault(resolution_label(H, W), line)
            ax.plot(grid, [paper_formula(HW, C, s, k) / div for s in grid], linestyle="--", color=color, lw=1)
            best = at.loc[at["measured_total"].idxmin()]
            ax.plot(
                best["n_win"],
                best["measured_total"] / div,
                marker="o",
                ms=14,
                fillstyle="none",
                color=color,
                mew=1.5,
            )
            s_star = paper_optimal_s(HW, k)
            if s_lo <= s_star <= s_hi:
                ax.plot(
                    s_star,
                    paper_formula(HW, C, s_star, k) / div,
                    marker="*",
                    ms=14,
                    color=color,
                    mec="black",
                    mew=0.6,
                )
        swept = sorted(pts["n_win"].unique())
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(swept))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(int(v)) for v in swept])
        _log_axis(ax)
        ax.set_xlabel("S = n_win, regions per side (log scale)")
        ax.set_ylabel(f"FLOPs ({unit}, fvcore, batch 1, log)")
        ax.set_title(f"C = {C}, k = {k}", fontsize=10)
    keys = [
        Line2D([], [], color="grey", marker="o", label="measured (fvcore)"),
        Line2D([], [], color="grey", linestyle="--", label="paper: 3HWC² + 2S⁴C\n+ 2HWk(HW/S²)C"),
        Line2D(
            [], [], color="grey", marker="o", ms=12, fillstyle="none", linestyle="none", label="best swept S"
        ),
        Line2D([], [], color="grey", marker="*", ms=12, mec="black", linestyle="none", label="paper's S*"),
    ]
    fig.legend(
        list(res_handles.values()),
        list(res_handles),
        title="H×W",
        loc="upper left",
        bbox_to_anchor=(1.0, 0.95),
        frameon=False,
    )
    fig.legend(
        keys, [h.get_label() for h in keys], loc="lower left", bbox_to_anchor=(1.0, 0.1), frameon=False
    )
    fig.suptitle("BRA FLOPs against the region count S")
    fig.tight_layout()
    return fig


def plot_scaling(check: FormulaCheck) -> Figure | None:
    """FLOPs at the best swept S and the paper's bound at S* against HW, log-log, with fitted slopes."""
    if check.slopes.empty:
        return None
    groups = _formula_groups(
        check, check.scaling[check.scaling.groupby(GROUP_COLUMNS)["HW"].transform("nunique") > 1]
    )
    fig = Figure(figsize=(4.8 * len(groups), 5.4))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    bra = MECHANISM_COLORS["bra"]
    curves = [
        ("measured_at_best", "measured total, best swept S", "-", "o", bra),
        ("measured_sdep_at_best", "measured routing + attention, best S", "-.", "s", bra),
        ("paper_bound", "paper's bound at S*", "--", None, PAPER_COLOR),
        ("paper_sdep_bound", "paper's bound, S-dependent part", ":", None, PAPER_COLOR),
    ]
    for ax, g in zip(axes, groups):
        g = g.sort_values("HW")
        div, unit = scaled_unit(float(g[["measured_at_best", "paper_bound"]].max().max()), "MACs")
        for col, name, ls, marker, color in curves:
            slope = loglog_slope(g["HW"], g[col])
            ax.plot(
                g["HW"], g[col] / div, linestyle=ls, marker=marker, color=color, label=f"{name}: {slope:.3f}"
            )
        _log_axis(ax)
        _tokens_axis(ax, g[["H", "W"]])
        ax.set_ylabel(f"FLOPs ({unit}, fvcore convention, log)")
        ax.set_title(f"C = {int(g['C'].iloc[0])}, k = {int(g['topk'].iloc[0])}", fontsize=10)
        ax.legend(
            title=f"fitted slope (claimed 4/3 = {CLAIMED_SLOPE:.3f})",
            fontsize=8,
            title_fontsize=8,
            frameon=False,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
        )
    fig.suptitle("BRA at the best S: log-log slope of FLOPs against H·W")
    fig.tight_layout()
    return fig


def save(fig: Figure, folder: Path, name: str, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` as ``folder/name.<fmt>`` for each format; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        meta = {"Date": None} if fmt == "svg" else {"Software": None} if fmt == "png" else {}
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(path)
    return paths


PLOTS: list[tuple[str, str, Callable[..., Figure | None], str]] = [
    (
        "flops_vs_tokens",
        "FLOPs (fvcore MACs, batch 1) against tokens, log-log; fitted slopes in the legend.",
        plot_flops_vs_tokens,
        "results",
    ),
    (
        "speed_vs_resolution",
        "Median latency and throughput against resolution, per pass.",
        plot_speed,
        "results",
    ),
    (
        "memory_vs_resolution",
        "Peak memory against resolution; ✕ and dotted line: first size out of memory.",
        plot_memory,
        "results",
    ),
    (
        "bra_s_k_heatmaps",
        "BRA over S (n_win) × k (topk): FLOPs and forward latency.",
        plot_bra_heatmaps,
        "results",
    ),
    ("accuracy_vs_flops", "Top-1 accuracy against FLOPs with the Pareto front.", plot_pareto, "results"),
    (
        "bra_backends",
        "BRA's backends per shape: median latency (IQR bars) and peak memory; "
        "reference = the released algorithm.",
        plot_bra_backends,
        "results",
    ),
    (
        "formula_flops_vs_s",
        "BRA FLOPs against S: measured (solid), the paper's formula (dashed), S* (star), "
        "best swept S (ring).",
        plot_flops_vs_s,
        "formula",
    ),
    (
        "formula_scaling",
        "BRA FLOPs at the best S against H·W with fitted log-log slopes (claimed 4/3).",
        plot_scaling,
        "formula",
    ),
]
WHY_NOT = {
    "flops_vs_tokens": "no row has a FLOP count",
    "speed_vs_resolution": "no ok row has a latency",
    "memory_vs_resolution": "no ok row has a peak memory",
    "bra_s_k_heatmaps": "the run has no BRA rows over at least two S or k values at one resolution",
    "accuracy_vs_flops": "the run has no accuracy (top1) column with values",
    "bra_backends": "the run has no timed BRA rows over at least two backends",
    "formula_flops_vs_s": "the formula check has fewer than two S values",
    "formula_scaling": "the formula check has fewer than two resolutions per setting",
}


def draw_all(
    df: pd.DataFrame, check: FormulaCheck | None, folder: Path, formats: Sequence[str] = ("png", "svg")
) -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
    """Draw every plot that the data allows.

    Returns:
        ``{name: (png or first path, caption)}`` for the plots drawn, ``{name: why not}`` for the rest.
    """
    drawn: dict[str, tuple[Path, str]] = {}
    skipped: dict[str, str] = {}
    with matplotlib.rc_context(RC):
        for name, caption, fn, source in PLOTS:
            arg = df if source == "results" else check
            fig = fn(arg) if arg is not None else None
            if fig is None:
                skipped[name] = WHY_NOT[name] if arg is not None else "no BRA point was counted"
                continue
            paths = save(fig, folder, name, formats)
            drawn[name] = (paths[0], caption)
    return drawn, skipped
