"""Plots of the measures a sweep may add: efficiency (roofline-style), phases and the memory frontier.

Each takes the report's rows (one protocol, already filtered) and returns a figure, or None when the
run did not measure what it needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from attnbench.report._results import resolution_label

matplotlib.use("Agg")

__all__ = ["plot_max_batch", "plot_phases", "plot_roofline"]

_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p"]


def _label(rows: pd.DataFrame) -> pd.Series:
    label = rows["label"] if "label" in rows.columns else rows["mechanism"]
    if "compile" in rows.columns and rows["compile"].nunique() > 1:
        mode = rows["compile"].fillna("none")
        label = label.where(mode == "none", label + " [compiled: " + mode.astype(str) + "]")
    return label


def _style(i: int) -> tuple[str, str]:
    colors = matplotlib.colormaps["tab20"].colors
    return colors[i % len(colors)], _MARKERS[i % len(_MARKERS)]


def plot_roofline(df: pd.DataFrame, styles_of: Callable[..., dict]) -> Figure | None:
    """MACs of the timed call against its latency, log-log, with lines of equal efficiency.

    ``styles_of``: ``attnbench.report.plots.series_styles`` (passed in by the plot registry, which
    imports this module): each family its colour, its variants shades of it."""
    need = {"pass_macs", "latency_ms", "peak_gmacs_s"}
    if not need <= set(df.columns):
        return None
    rows = df[(df["status"] == "ok") & df["pass_macs"].notna() & df["latency_ms"].notna()].copy()
    if rows.empty:
        return None
    rows["pass_macs"] = pd.to_numeric(rows["pass_macs"], errors="coerce")
    rows["peak_gmacs_s"] = pd.to_numeric(rows["peak_gmacs_s"], errors="coerce")
    rows["series"] = _label(rows)
    passes = list(dict.fromkeys(rows["pass"]))
    fig = Figure(figsize=(5.2 * len(passes), 4.4))
    axes = fig.subplots(1, len(passes), squeeze=False)[0]
    series = list(dict.fromkeys(rows["series"]))
    styles = styles_of(rows.assign(label=rows["series"]), key="label")  # not 20 look-alike colours
    firsts = rows.drop_duplicates("series")[["series", "mechanism"]]
    sizes = firsts["mechanism"].value_counts()
    per_family: dict[str, int] = {}
    markers = {}
    for name, mech in firsts.itertuples(index=False):
        i = per_family[mech] = per_family.get(mech, -1) + 1  # scatter has no line style: a marker each
        markers[name] = styles[name].marker if sizes[mech] == 1 else _MARKERS[i % len(_MARKERS)]
    for ax, pass_ in zip(axes, passes):
        part = rows[rows["pass"] == pass_]
        gmacs = part["pass_macs"] / 1e9
        lo, hi = gmacs.min() / 2, gmacs.max() * 2
        peak = part["peak_gmacs_s"].max()
        for frac, style in ((1.0, "-"), (0.1, "--"), (0.01, ":")):  # named in the legend: no label
            xs = np.geomspace(lo, hi, 50)  # on the plot for points to cover
            ax.plot(
                xs,
                1e3 * xs / (peak * frac),
                style,
                color="0.6",
                lw=0.9,
                zorder=1,
                label=f"{frac:.0%} of peak",
            )
        for name in series:
            s = part[part["series"] == name]
            if s.empty:
                continue
            st = styles[name]
            filled = st.fillstyle != "none"
            ax.scatter(
                s["pass_macs"] / 1e9,
                s["latency_ms"],
                color=st.color if filled else "none",
                edgecolors=st.color if not filled else "white",
                marker=markers[name],
                s=28,
                label=name,
                zorder=3,
                linewidth=0.8 if not filled else 0.5,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # decade labels only: minor labels collide on short ranges
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("GMACs of the timed call (fvcore)")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{pass_}; peak {peak:.0f} GMAC/s", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(passes) > 1:
        for ax in axes[1:]:
            h, lab = ax.get_legend_handles_labels()
            handles += [x for x, y in zip(h, lab) if y not in labels]
            labels += [y for y in lab if y not in labels]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def plot_phases(df: pd.DataFrame) -> Figure | None:
    """Stacked bars of where each mechanism's time goes, per pass, at the largest resolution."""
    if "phases_ms" not in df.columns:
        return None
    rows = df[(df["status"] == "ok") & df["phases_ms"].notna() & (df["phases_ms"].astype(str) != "")].copy()
    if rows.empty:
        return None
    rows["tokens"] = rows["H"] * rows["W"]
    rows = rows[rows["tokens"] == rows["tokens"].max()]
    rows["series"] = _label(rows)
    parsed = [json.loads(p) for p in rows["phases_ms"]]
    names = list(dict.fromkeys(k for p in parsed for k in p if k != "other")) + ["other"]
    rows["phases"] = parsed
    passes = list(dict.fromkeys(rows["pass"]))
    fig = Figure(figsize=(6.5, 0.45 * rows["series"].nunique() * len(passes) + 1.6))
    axes = fig.subplots(len(passes), 1, squeeze=False)[:, 0]
    colors = matplotlib.colormaps["tab10"].colors
    for ax, pass_ in zip(axes, passes):
        part = rows[rows["pass"] == pass_].drop_duplicates("series")
        left = np.zeros(len(part))
        for j, name in enumerate(names):
            widths = np.array([p.get(name, 0.0) for p in part["phases"]])
            color = "0.8" if name == "other" else colors[j % len(colors)]
            ax.barh(part["series"], widths, left=left, color=color, label=name, height=0.7)
            left += widths
        ax.invert_yaxis()
        ax.set_xlabel("ms of one profiled call")
        size = resolution_label(int(part["H"].iloc[0]), int(part["W"].iloc[0]))
        ax.set_title(f"{pass_} at {size}", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(
        seen.values(), seen.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False
    )
    fig.tight_layout()
    return fig


def _coinciding(part: pd.DataFrame) -> list[list[str]]:
    """Groups of series whose (tokens, max_batch) points are all the same."""
    groups: dict[tuple, list[str]] = {}
    for name, s in part.groupby("series", sort=False):
        key = tuple(sorted(zip(s["tokens"], s["max_batch"])))
        groups.setdefault(key, []).append(str(name))
    return [g for g in groups.values() if len(g) > 1]


def plot_max_batch(df: pd.DataFrame) -> Figure | None:
    """The largest batch within the budget against tokens, one line per mechanism, per pass."""
    if "max_batch" not in df.columns:
        return None
    rows = df[(df["status"] == "ok") & df["max_batch"].notna()].copy()
    rows["max_batch"] = pd.to_numeric(rows["max_batch"], errors="coerce")
    rows = rows[rows["max_batch"].notna()]
    if rows.empty or (rows["H"] * rows["W"]).nunique() < 2:
        return None
    rows["tokens"] = rows["H"] * rows["W"]
    rows["series"] = _label(rows)
    passes = list(dict.fromkeys(rows["pass"]))
    fig = Figure(figsize=(5.2 * len(passes), 4.2))
    axes = fig.subplots(1, len(passes), squeeze=False)[0]
    budgets = pd.to_numeric(rows.get("max_batch_budget_mb"), errors="coerce")
    for ax, pass_ in zip(axes, passes):
        part = rows[rows["pass"] == pass_]
        for i, name in enumerate(dict.fromkeys(part["series"])):
            s = part[part["series"] == name].sort_values("tokens")
            color, marker = _style(i)
            ys = s["max_batch"].clip(lower=0.5)  # 0 (not even batch 1) sits below the axis' 1
            ax.plot(s["tokens"], ys, marker=marker, color=color, label=name, lw=1.2, ms=5)
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        top = max(1, int(part["max_batch"].max()))
        ticks_y = [0.5] + [2**i for i in range(int(math.log2(top)) + 1)]
        ax.set_yticks(ticks_y, ["0 (none fits)"] + [str(int(t)) for t in ticks_y[1:]], fontsize=7)
        same = _coinciding(part)
        if same:  # series drawn on top of each other: say so on the plot
            ax.text(
                0.02,
                0.02,
                "same values: " + "; ".join(" = ".join(g) for g in same),
                transform=ax.transAxes,
                fontsize=6.5,
                va="bottom",
                ha="left",
                wrap=True,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
            )
        ax.set_xlabel("tokens (H·W)")
        ax.set_ylabel("largest batch within the budget")
        budget = budgets[rows["pass"] == pass_].max()
        ax.set_title(f"{pass_}; budget {budget:.0f} MiB" if not math.isnan(budget) else pass_, fontsize=9)
        ticks = sorted(set(part["tokens"]))
        ax.set_xticks(
            ticks,
            [
                resolution_label(int(h), int(w))
                for h, w in part.drop_duplicates("tokens")
                .sort_values("tokens")[["H", "W"]]
                .itertuples(index=False)
            ],
            rotation=30,
            fontsize=7,
        )
        ax.minorticks_off()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
