"""The sweep kind's plots: cost against resolution (FLOPs, latency, memory, with fitted slopes),
BRA over S and k, BRA's backends, the roofline, phases, the memory frontier, and the formula check's
two plots (drawn with the kit of :mod:`attnbench.report.plots`)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from attnbench.kinds.sweep.bra_backends import backend_summary
from attnbench.kinds.sweep.formula import (
    CLAIMED_SLOPE,
    GROUP_COLUMNS,
    FormulaCheck,
    loglog_slope,
    paper_formula,
    paper_optimal_s,
)
from attnbench.kinds.sweep.measures import plot_max_batch, plot_phases, plot_roofline
from attnbench.report._results import (
    device_label,
    display_name,
    latency_quantiles,
    parameter_columns,
    plain,
    resolution_label,
    scaled_unit,
)
from attnbench.report.plots import (
    Plot,
    draw_lines,
    fmt3,
    label_line_ends,
    legend_right,
    line_series,
    log_axis,
    log_ticks,
    note_box,
    over_sizes,
    own_color,
    series_key,
    series_styles,
    shade,
    single_x,
    tokens_axis,
)

__all__ = ["sweep_plots"]


def flops_data(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, resolution) with a FLOP count: the points of :func:`plot_flops_vs_tokens`."""
    data = df[df["flops"].notna()].drop_duplicates(["label", "H", "W", "C", "num_heads"])
    if "pass" in data.columns:  # a training row counts a whole backbone: not one attention layer
        data = data[data["pass"] != "train"]
    return data.assign(series=series_key(data, ["C", "num_heads"]), HW=data["H"] * data["W"])


def plot_flops_vs_tokens(df: pd.DataFrame) -> Figure | None:
    """FLOPs (fvcore MACs, batch 1) against tokens, log-log, each series labelled with its slope."""
    data = over_sizes(flops_data(df))
    if data.empty:
        return None
    styles = series_styles(data, "series")
    div, unit = scaled_unit(float(data["flops"].max()), "MACs")
    data = data.assign(flops=data["flops"] / div)
    series = line_series(data, "flops", styles)
    fig = Figure(figsize=(6.4, 4.6))
    fig.subplots_adjust(left=0.11, right=0.66, top=0.92, bottom=0.12)
    ax = fig.add_subplot()
    notes = draw_lines(ax, series)
    for s in series:
        slope = loglog_slope(s.x, s.y)
        s.name = f"{s.name}: {slope:.2f}" if not math.isnan(slope) else s.name
    log_axis(ax)
    tokens_axis(ax, data[["H", "W"]])
    ax.set_ylabel(f"FLOPs ({unit}, fvcore, batch 1, log)")
    ax.set_title("FLOPs vs tokens; label: fitted slope d log FLOPs / d log (H·W)", fontsize=9)
    note_box(ax, notes)
    label_line_ends(ax, series)
    return fig


def speed_data(df: pd.DataFrame) -> pd.DataFrame:
    """The ok timed rows with their series name and tokens (the points of :func:`plot_speed`)."""
    data = df[(df["status"] == "ok") & df["latency_ms"].notna()]
    return data.assign(
        series=series_key(data, ["dtype", "device", "batch", "C", "num_heads"]), HW=data["H"] * data["W"]
    )


def _name_slopes(series: list) -> None:
    """Each series' label ends with its fitted log-log slope against tokens (its measured growth
    exponent: 2 for a cost that grows with the square of the tokens)."""
    for s in series:
        slope = loglog_slope(s.x, s.y)
        if not math.isnan(slope):
            s.name = f"{s.name}: {slope:.2f}"


def plot_speed(df: pd.DataFrame) -> Figure | None:
    """Median latency against resolution with the 25th-75th percentile band, one panel per pass."""
    data = over_sizes(speed_data(df), ("series", "pass"))
    if data.empty:
        return None
    styles = series_styles(data, "series")
    passes = list(dict.fromkeys(data["pass"]))
    fig = Figure(figsize=(6.4, 3.9 * len(passes)))
    height = 3.9 * len(passes)
    fig.subplots_adjust(left=0.11, right=0.66, top=1 - 0.8 / height, bottom=0.55 / height, hspace=0.3)
    axes = fig.subplots(len(passes), 1, squeeze=False)[:, 0]
    for ax, p in zip(axes, passes):
        series = line_series(data[data["pass"] == p], "latency_ms", styles, band=True)
        _name_slopes(series)
        notes = draw_lines(ax, series)
        log_axis(ax)
        tokens_axis(ax, data[["H", "W"]])
        ax.set_title(f"pass: {p}", fontsize=10)
        ax.set_ylabel("latency (ms, median, log)")
        note_box(ax, notes)
        label_line_ends(ax, series)
    fig.suptitle(
        "Latency vs resolution (band: 25th–75th percentile of the timing samples;\n"
        "label: fitted log-log slope of latency against tokens H·W)",
        fontsize=10,
    )
    return fig


def plot_memory(df: pd.DataFrame) -> Figure | None:
    """Peak memory against resolution, one panel per pass; ✕ above the axes at the first size that
    ran out of memory."""
    data = df[((df["status"] == "ok") & df["peak_mem_mb"].notna()) | df["oom"]]
    if data.empty or not data["peak_mem_mb"].notna().any():
        return None
    data = data.assign(
        series=series_key(data, ["dtype", "device", "batch", "C", "num_heads"]), HW=data["H"] * data["W"]
    )
    if single_x(data):
        return None
    styles = series_styles(data, "series")
    passes = list(dict.fromkeys(data["pass"]))
    fig = Figure(figsize=(6.4, 3.9 * len(passes)))
    height = 3.9 * len(passes)
    fig.subplots_adjust(left=0.11, right=0.66, top=1 - 0.9 / height, bottom=0.55 / height, hspace=0.4)
    axes = fig.subplots(len(passes), 1, squeeze=False)[:, 0]
    any_oom = False
    for ax, p in zip(axes, passes):
        at = data[data["pass"] == p]
        series = line_series(at[~at["oom"]], "peak_mem_mb", styles)
        _name_slopes(series)
        notes = draw_lines(ax, series)
        for name, s in at.groupby("series", sort=False):
            if s["oom"].any():
                any_oom = True
                x = s.loc[s["oom"], "HW"].min()
                ax.axvline(x, color=styles[name].color, linestyle=":", lw=1.2)
                ax.plot(
                    [x],
                    [1.04],
                    marker="X",
                    ms=9,
                    color=styles[name].color,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
        log_axis(ax)
        tokens_axis(ax, data[["H", "W"]])
        ax.set_title(f"pass: {p}", pad=14, fontsize=10)
        ax.set_ylabel("peak memory (MiB, log)")
        note_box(ax, notes)
        label_line_ends(ax, series)
    title = "Peak memory vs resolution"
    if any_oom:
        title += "; ✕ and dotted line: first size out of memory"
    fig.suptitle(title, fontsize=10)
    return fig


def plot_bra_heatmaps(df: pd.DataFrame) -> Figure | None:
    """S × k heatmaps of BRA's FLOPs and forward latency at up to three resolutions."""
    if "n_win" not in df.columns or "topk" not in df.columns:
        return None
    bra = df[(df["mechanism"] == "bra") & df["n_win"].notna() & df["topk"].notna()]
    bra = bra.assign(n_win=pd.to_numeric(bra["n_win"]), topk=pd.to_numeric(bra["topk"]))
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
        where = ", ".join(
            device_label(lat[c].iloc[0]) if c == "device" else str(lat[c].iloc[0])
            for c in ("dtype", "device")
            if c in lat.columns
        )
        batch = f"batch {int(lat['batch'].iloc[0])}, " if "batch" in lat.columns else ""
        panels.append(("latency_ms", lat, f"forward latency ({batch}{where})"))
    fig = Figure(figsize=(3.6 * len(sizes) + 0.5, 3.3 * len(panels)))
    axes = fig.subplots(len(panels), len(sizes), squeeze=False)
    at_sizes = bra[bra[["H", "W"]].apply(tuple, axis=1).isin(list(zip(sizes["H"], sizes["W"])))]
    flops_div, flops_unit = scaled_unit(float(at_sizes["flops"].max()), "MACs")
    for i, (col, rows, title) in enumerate(panels):
        for j, (H, W) in enumerate(zip(sizes["H"], sizes["W"])):
            ax = axes[i][j]
            at = rows[(rows["H"] == H) & (rows["W"] == W)]
            grid = at.pivot_table(index="n_win", columns="topk", values=col, aggfunc="mean")
            grid = grid.reindex(index=sorted(bra["n_win"].unique()), columns=sorted(bra["topk"].unique()))
            grid.index = grid.index.astype(int)
            grid.columns = grid.columns.astype(int)
            unit = "ms"
            if col == "flops":  # one unit for every panel of the figure
                unit = flops_unit
                grid = grid / flops_div
            ax.set_facecolor("#d9d9d9")
            ax.grid(False)
            if grid.notna().any().any():
                lo, hi = float(grid.min().min()), float(grid.max().max())
                sns.heatmap(
                    grid,
                    ax=ax,
                    cmap="cividis",
                    norm=LogNorm(lo, hi * 1.0001),
                    annot=grid.map(lambda v: fmt3(v) if pd.notna(v) else ""),
                    fmt="",
                    annot_kws={"size": 8},
                    cbar_kws={"label": unit + (", fvcore, batch 1" if col == "flops" else ", median")},
                )
                cbar = ax.collections[0].colorbar
                cbar.ax.yaxis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
                cbar.ax.yaxis.set_minor_locator(NullLocator())
                cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_title(f"{title}, {resolution_label(H, W)}", fontsize=9)
            ax.set_ylabel("S (n_win)")
            ax.set_xlabel("k (topk)")
    fixed_text = ", ".join(f"{c} = {plain(bra[c].iloc[0])}" for c in fixed if bra[c].notna().any())
    fig.suptitle(
        f"{display_name('bra')} over S × k; grey: skipped, not run or k > S²; log colour scale\n{fixed_text}",
        fontsize=9,
    )
    fig.tight_layout()
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
            (
                ("latency_ms", "latency (ms, median; bar: 25th–75th pct.)"),
                ("peak_mem_mb", "peak memory (MiB)"),
            )
        ):
            ax = axes[row][col]
            for i, be in enumerate(backends):
                sel = part[part["backend"] == be].groupby("shape").first().reindex(shapes)
                err = None
                if metric == "latency_ms" and "latency_samples_ms" in sel.columns:
                    q = np.array([latency_quantiles(v) for v in sel["latency_samples_ms"]], dtype=float)
                    err = np.nan_to_num(np.abs(np.stack([sel[metric] - q[:, 0], q[:, 1] - sel[metric]])))
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
            log_axis(ax)
            ax.set_xticks(x, shapes, fontsize=8)
            ax.set_ylabel(label)
            ax.set_title(f"pass: {pass_}" if row == 0 else "")
    conds = bra.iloc[0]
    fig.suptitle(
        f"{display_name('bra')} backends ({device_label(conds['device'])}, {conds['dtype']}, "
        f"batch {int(conds['batch'])}); reference = the released algorithm"
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    legend_right(fig, list(unique.values()), list(unique.keys()), title="backend")
    return fig


def _resolution_colors(n: int) -> list[str]:
    """Shades of BRA's colour, dark (smallest map) to light (largest): these plots are all BRA."""
    return [shade(own_color("bra"), float(t)) for t in np.linspace(-0.55, 0.45, max(n, 1))]


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
    div, unit = scaled_unit(float(max(g["measured_total"].max() for g in groups)), "MACs")
    drew_star = False
    for ax, pts in zip(axes, groups):
        C, k = int(pts["C"].iloc[0]), int(pts["topk"].iloc[0])
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
                drew_star = True
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
        log_axis(ax)
        ax.set_xlabel("S = n_win, regions per side (log scale)")
        ax.set_ylabel(f"FLOPs ({unit}, fvcore, batch 1, log)")
        ax.set_title(f"C = {C}, k = {k}", fontsize=10)
    keys = [
        Line2D([], [], color="grey", marker="o", label="measured (fvcore)"),
        Line2D([], [], color="grey", linestyle="--", label="paper: 3HWC² + 2S⁴C\n+ 2HWk(HW/S²)C"),
        Line2D(
            [], [], color="grey", marker="o", ms=12, fillstyle="none", linestyle="none", label="best swept S"
        ),
    ]
    if drew_star:  # S* lies inside the swept S somewhere: the star is drawn, so it is named
        keys.append(
            Line2D([], [], color="grey", marker="*", ms=12, mec="black", linestyle="none", label="paper's S*")
        )
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
    fig.suptitle(f"{display_name('bra')} FLOPs against the region count S")
    fig.tight_layout()
    return fig


def plot_scaling(check: FormulaCheck) -> Figure | None:
    """FLOPs at the best swept S and the paper's bound at S* against HW, log-log, with fitted slopes."""
    if check.slopes.empty:
        return None
    groups = _formula_groups(
        check, check.scaling[check.scaling.groupby(GROUP_COLUMNS)["HW"].transform("nunique") > 1]
    )
    if not groups:
        return None
    fig = Figure(figsize=(4.8 * len(groups), 5.4))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    bra = own_color("bra")
    curves = [
        ("measured_at_best", "measured total, best swept S", "-", "o", bra),
        ("measured_sdep_at_best", "measured routing + attention, best S", "-.", "s", bra),
        ("paper_bound", "paper's bound at S*", "--", None, PAPER_COLOR),
        ("paper_sdep_bound", "paper's bound, S-dependent part", ":", None, PAPER_COLOR),
    ]
    div, unit = scaled_unit(
        float(max(g[["measured_at_best", "paper_bound"]].max().max() for g in groups)), "MACs"
    )
    for ax, g in zip(axes, groups):
        g = g.sort_values("HW")
        for col, name, ls, marker, color in curves:
            slope = loglog_slope(g["HW"], g[col])
            ax.plot(
                g["HW"], g[col] / div, linestyle=ls, marker=marker, color=color, label=f"{name}: {slope:.3f}"
            )
        log_axis(ax)
        tokens_axis(ax, g[["H", "W"]])
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
    fig.suptitle(f"{display_name('bra')} at the best S: log-log slope of FLOPs against H·W")
    fig.tight_layout()
    return fig


def sweep_plots(df: pd.DataFrame, check: FormulaCheck | None, why_no_check: str) -> list[Plot]:
    """The plots of a sweep run's rows ``df`` and its formula ``check`` (None: ``why_no_check``)."""
    listed = [
        (
            "flops_vs_tokens",
            "FLOPs (fvcore MACs, batch 1) against tokens, log-log; each label ends with the fitted slope.",
            plot_flops_vs_tokens,
            "no configuration has a FLOP count at two or more resolutions",
        ),
        (
            "speed_vs_resolution",
            "Median latency against resolution, per pass; band: 25th–75th percentile of the timing samples; "
            "each label ends with the fitted log-log slope against tokens.",
            plot_speed,
            "no configuration has an ok latency at two or more resolutions",
        ),
        (
            "memory_vs_resolution",
            "Peak memory against resolution; ✕ and dotted line: first size out of memory; each label ends "
            "with the fitted log-log slope against tokens.",
            plot_memory,
            "no ok row has a peak memory at two or more resolutions",
        ),
        (
            "bra_s_k_heatmaps",
            "BRA over S (n_win) × k (topk): FLOPs and forward latency.",
            plot_bra_heatmaps,
            "the run has no BRA rows over at least two S or k values at one resolution",
        ),
        (
            "bra_backends",
            "BRA's backends per shape: median latency (bars: 25th–75th percentile) and peak memory; "
            "reference = the released algorithm.",
            plot_bra_backends,
            "the run has no timed BRA rows over at least two backends",
        ),
        (
            "roofline",
            "MACs of the timed call against median latency, log-log; grey lines: 100 %, 10 % and 1 % of the "
            "machine's dense-matmul peak (efficiency).",
            functools.partial(plot_roofline, styles_of=series_styles),
            "the run measured no latency with FLOPs (no efficiency)",
        ),
        (
            "phases",
            "Where the time of one profiled call goes, per mechanism and pass, at the largest resolution "
            "(attnbench.phase marks; other: unmarked time).",
            plot_phases,
            "the run did not measure phases",
        ),
        (
            "max_batch_vs_resolution",
            "The largest batch within the memory budget against tokens, per mechanism (log-log).",
            plot_max_batch,
            "the run did not measure max_batch at two or more resolutions",
        ),
        (
            "formula_flops_vs_s",
            "BRA FLOPs against S: measured (solid), the paper's formula (dashed), best swept S (ring), the "
            "paper's S* (star) where it lies inside the swept S.",
            plot_flops_vs_s,
            "the formula check has fewer than two S values at one setting",
        ),
        (
            "formula_scaling",
            "BRA FLOPs at the best S against H·W with fitted log-log slopes (claimed 4/3).",
            plot_scaling,
            "the formula check has fewer than two resolutions per setting",
        ),
    ]
    plots = []
    for name, caption, fn, why in listed:
        if name.startswith("formula_"):
            draw = functools.partial(_maybe, fn, check)
            plots.append(Plot(name, caption, draw, why if check is not None else why_no_check))
        else:
            plots.append(Plot(name, caption, functools.partial(fn, df), why))
    return plots


def _maybe(fn: Any, check: FormulaCheck | None) -> Figure | None:
    return None if check is None else fn(check)
