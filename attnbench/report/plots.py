"""Plots of a run, PNG and SVG: one hue per mechanism family, variants told apart by marker and line.

Known mechanisms take Okabe-Ito colours (Wong, Nature Methods 2011; yellow swapped for Tol's wine,
which reads on white); names the palette does not know take Paul Tol's muted colours in sorted
order, so a report gives every family one colour in every plot. The variants of a family (BRA over
S and k) keep its colour and differ by marker (first varying parameter) and line style (second).
Line plots label every series directly at its last point, pushed apart so that no two labels
overlap; series that would hide one another are drawn side by side and named in a note on the
plot. Latency bands run from the 25th to the 75th percentile of each row's stored timing samples.
A figure uses one unit per quantity, and a plot with a single x value is not drawn.

Figures are built on ``matplotlib.figure.Figure`` and never touch pyplot's global state.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from attnbench import outcomes, stats
from attnbench.report._results import (
    device_label,
    display_name,
    latency_quantiles,
    mechanism_look,
    parameter_columns,
    plain,
    resolution_label,
    scaled_unit,
)
from attnbench.report.ablation import ablation_summary, is_ablation_frame, learning_curves
from attnbench.report.bra_backends import backend_summary
from attnbench.report.formula import (
    CLAIMED_SLOPE,
    GROUP_COLUMNS,
    FormulaCheck,
    loglog_slope,
    paper_formula,
    paper_optimal_s,
)
from attnbench.report.measures import plot_max_batch, plot_phases, plot_roofline
from attnbench.report.outcome import analysis_plan, arms_of
from attnbench.report.reach import is_reach_run, plot_reach_bra, plot_reach_vs_cost, plot_reach_vs_distance

__all__ = ["PALETTE", "PLOTS", "check_formats", "draw_all", "mechanism_styles", "series_styles"]

# the rendering kit's palette (Okabe-Ito and Tol's muted) for what declares no colour of its own;
# each mechanism's own colour and marker live with it (AttentionMechanism.color, .marker)
PALETTE = ["#D55E00", "#CC79A7", "#0072B2", "#56B4E9", "#009E73", "#E69F00", "#882255", "#44AA99", "#999933"]
PALETTE += ["#332288", "#AA4499"]
EXTRA_COLORS = ["#117733", "#888888", "#DDCC77", "#661100", "#6699CC", "#AA4466", "#4477AA"]
EXTRA_MARKERS = ["d", "8", "H", "1", "2", "3", "4"]
VARIANT_MARKERS = ["s", "o", "^", "D", "v", "P", "X", "*", "h", "p"]
LINESTYLES = ["-", "--", ":", "-."]
RC = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.85),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "attnbench",
}
# series whose values differ by less than this factor at every x are drawn side by side (log axes)
COINCIDE_RTOL = 0.03
LABEL_FONTSIZE = 7.5


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


def _own_color(mechanism: str) -> str:
    """The mechanism's declared colour (the first of :data:`PALETTE` if it declares none)."""
    return mechanism_look(mechanism)[0] or PALETTE[0]


def mechanism_styles(mechanisms: Sequence[str]) -> dict[str, Style]:
    """Colour and marker of each family: the mechanism's own (its ``color`` and ``marker``), else
    Tol's muted in sorted order."""
    looks = {m: mechanism_look(m) for m in dict.fromkeys(mechanisms)}
    out = {m: Style(c, k) for m, (c, k) in looks.items() if c is not None and k is not None}
    unknown = sorted(m for m in looks if m not in out)
    for i, m in enumerate(unknown):
        out[m] = Style(EXTRA_COLORS[i % len(EXTRA_COLORS)], EXTRA_MARKERS[i % len(EXTRA_MARKERS)])
    return out


def series_styles(df: pd.DataFrame, key: str = "label") -> dict[str, Style]:
    """One style per series: its family's colour, shaded from dark to light over the values of the
    first parameter that varies; the variants of a family also differ by marker (that parameter) and
    line style (the second), else by their order."""
    base = mechanism_styles(sorted(set(df["mechanism"])))
    out: dict[str, Style] = {}
    for mech, rows in df.groupby("mechanism", sort=False):
        first = rows.drop_duplicates(key)
        b = base[mech]
        if len(first) == 1:
            out[first[key].iloc[0]] = b
            continue
        params = [c for c in parameter_columns(df, mech) if c in first and first[c].nunique(dropna=False) > 1]
        if params:
            values = [sorted(first[c].dropna().unique().tolist(), key=_sort_key) for c in params[:2]]
        for i, r in enumerate(first.itertuples(index=False)):
            row = r._asdict()
            if params:
                m = values[0].index(row[params[0]]) if row[params[0]] in values[0] else i
                ls = values[1].index(row[params[1]]) if len(params) > 1 and row[params[1]] in values[1] else m
            else:
                m = ls = i
            marker = VARIANT_MARKERS[m % len(VARIANT_MARKERS)] if params or i else b.marker
            fill = "full" if (m // len(VARIANT_MARKERS)) % 2 == 0 else "none"
            n = len(values[0]) if params else len(first)
            color = _shade(b.color, float(np.linspace(-0.5, 0.45, n)[m % n])) if n > 1 else b.color
            out[row[key]] = Style(color, marker, LINESTYLES[ls % len(LINESTYLES)], fill)
    return out


def _shade(color: str, t: float) -> str:
    """``color`` mixed towards black (t < 0) or white (t > 0) by ``|t|``."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    mixed = rgb * (1 + t) if t < 0 else rgb + (1 - rgb) * t
    return matplotlib.colors.to_hex(mixed)


def _sort_key(value: Any) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


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


def fmt3(value: float) -> str:
    """Three significant digits without an exponent: 1120, 20.4, 0.0823."""
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return (
        f"{value:.{decimals}f}"
        if abs(value) < 1000
        else f"{round(value, -int(math.log10(abs(value))) + 2):.0f}"
    )


def _legend_right(fig: Figure, handles, labels, title: str | None = None) -> None:
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title=title)


def _series_key(df: pd.DataFrame, extra: Sequence[str]) -> pd.Series:
    """The row's label, with the conditions in ``extra`` that vary appended (``BRA · float16``)."""
    key = df["label"].astype(str)
    for col in extra:
        if col in df.columns and df[col].nunique() > 1:
            key = key + " · " + df[col].map(lambda v, c=col: device_label(v) if c == "device" else plain(v))
    return key


@dataclasses.dataclass
class Series:
    """One line of a line plot: its points, its style and, for latency, its band."""

    name: str
    x: np.ndarray
    y: np.ndarray
    style: Style
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


def coinciding(series: Sequence[Series], rtol: float = COINCIDE_RTOL) -> list[list[int]]:
    """Groups (two or more) of series with the same x values whose y values differ by less than
    ``rtol`` (relative) at every x: drawn plainly, each would hide the others."""
    groups: list[list[int]] = []
    seen: set[int] = set()
    for i, a in enumerate(series):
        if i in seen:
            continue
        group = [i]
        for j in range(i + 1, len(series)):
            b = series[j]
            if j in seen or len(a.x) != len(b.x) or not np.array_equal(a.x, b.x):
                continue
            if np.all(np.abs(a.y - b.y) <= rtol * np.maximum(np.abs(a.y), np.abs(b.y))):
                group.append(j)
        if len(group) > 1:
            groups.append(group)
            seen.update(group)
    return groups


def _draw_lines(ax, series: list[Series], band_label: bool = False) -> list[str]:
    """Draw the series (bands first), side by side where they coincide; returns the notes to show."""
    notes = []
    offsets = [1.0] * len(series)
    for group in coinciding(series):
        spread = np.exp(np.linspace(-0.045, 0.045, len(group))) if len(group) > 1 else [1.0]
        for k, i in enumerate(group):
            offsets[i] = float(spread[k])
        notes.append(" = ".join(series[i].name for i in group))
    for s, off in zip(series, offsets):
        if s.lo is not None and s.hi is not None and np.isfinite(s.lo).any():
            ax.fill_between(s.x * off, s.lo, s.hi, color=s.style.color, alpha=0.15, lw=0)
    for s, off in zip(series, offsets):
        ax.plot(s.x * off, s.y, ms=5, lw=1.3, **s.style.kwargs())
    return notes


def note_box(
    ax,
    notes: Sequence[str],
    head: str = f"Equal within {COINCIDE_RTOL:.0%}, drawn side by side:",
    corner: str = "upper left",
) -> None:
    """A box in a corner of the axes (``upper left``, the default, or ``lower left``) naming the
    series (or points) that coincide."""
    if notes:
        top = corner.startswith("upper")
        ax.text(
            0.01,
            0.99 if top else 0.02,
            "\n".join([head, *notes]),
            transform=ax.transAxes,
            va="top" if top else "bottom",
            ha="left",
            fontsize=6.5,
            color="#333333",
            bbox={"facecolor": "white", "edgecolor": "#cccccc", "alpha": 0.9, "pad": 2},
        )


def spread_positions(targets: Sequence[float], gap: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """Positions near ``targets`` (axes fractions) at least ``gap`` apart, kept within [lo, hi]
    where they fit (a one-dimensional repel, as direct labels need)."""
    order = sorted(range(len(targets)), key=lambda i: targets[i])
    pos = [0.0] * len(targets)
    prev = -math.inf
    for i in order:
        pos[i] = max(targets[i], prev + gap, lo)
        prev = pos[i]
    top = max(hi, lo + gap * (len(targets) - 1))
    nxt = math.inf
    for i in reversed(order):
        pos[i] = min(pos[i], nxt - gap, top)
        nxt = pos[i]
    return pos


def label_line_ends(ax, series: Sequence[Series]) -> list[Any]:
    """A label right of the axes for each series, at its last point's height where labels do not
    collide, joined to that point by a thin leader. Call after the axes limits are final."""
    if not series:
        return []
    fig = ax.figure
    height_pt = ax.get_position().height * fig.get_figheight() * 72
    gap = LABEL_FONTSIZE * 1.3 / height_pt
    to_axes = ax.transAxes.inverted()
    ends = []
    for s in series:
        k = int(np.nanargmax(s.x))
        ends.append((s.x[k], s.y[k]))
    targets = [float(to_axes.transform(ax.transData.transform(e))[1]) for e in ends]
    placed = spread_positions(targets, gap)
    texts = []
    for s, (x, y), ypos in zip(series, ends, placed):
        texts.append(
            ax.annotate(
                s.name,
                xy=(x, y),
                xytext=(1.06, ypos),
                textcoords="axes fraction",
                va="center",
                ha="left",
                fontsize=LABEL_FONTSIZE,
                color=s.style.color,
                annotation_clip=False,
                arrowprops={
                    "arrowstyle": "-",
                    "lw": 0.5,
                    "color": s.style.color,
                    "shrinkA": 0,
                    "shrinkB": 2,
                    "relpos": (0.0, 0.5),
                },
            )
        )
    return texts


def place_point_labels(
    ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], fontsize: float = 7
):
    """Labels beside scatter points that overlap neither each other nor a point, nor leave the axes:
    each label takes the first free spot among candidates around its point (further out when
    crowded, then with a leader line). Call after the axes limits are final."""
    fig = ax.figure
    px = fig.dpi / 72.0
    to_disp = ax.transData.transform
    pts = np.array([to_disp((x, y)) for x, y in zip(xs, ys)])
    box = ax.get_window_extent()
    marker_r = 5 * px
    placed: list[tuple[float, float, float, float]] = []
    out = []

    def free(b: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = b
        if x0 < box.x0 or x1 > box.x1 or y0 < box.y0 or y1 > box.y1:
            return False
        if any(x0 < c[2] and c[0] < x1 and y0 < c[3] and c[1] < y1 for c in placed):
            return False
        return not any(
            x0 - marker_r < p[0] < x1 + marker_r and y0 - marker_r < p[1] < y1 + marker_r for p in pts
        )

    order = np.argsort(-pts[:, 1])
    for i in order:
        w, h = 0.58 * fontsize * len(texts[i]) * px, 1.25 * fontsize * px
        cx, cy = pts[i]
        chosen = None
        for dist in (6, 12, 20, 32, 48, 70):
            d = dist * px
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)):
                x0 = cx + dx * d if dx > 0 else cx + dx * d - w if dx < 0 else cx - w / 2
                y0 = cy + dy * d if dy > 0 else cy + dy * d - h if dy < 0 else cy - h / 2
                b = (x0, y0, x0 + w, y0 + h)
                if free(b):
                    chosen = (b, dist)
                    break
            if chosen:
                break
        if chosen is None:  # nowhere free: right of the point, overlapping as little as it must
            chosen = ((cx + 6 * px, cy - h / 2, cx + 6 * px + w, cy + h / 2), 6)
        b, dist = chosen
        placed.append(b)
        xy_text = ax.transData.inverted().transform(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
        out.append(
            ax.annotate(
                texts[i],
                xy=(xs[i], ys[i]),
                xytext=tuple(xy_text),
                ha="center",
                va="center",
                fontsize=fontsize,
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#666666"} if dist > 12 else None,
            )
        )
    return out


def overlapping_points(ax, xs: Sequence[float], ys: Sequence[float], names: Sequence[str]) -> list[str]:
    """``"a = b"`` for each group of scatter points whose markers overlap (centres within 9 pt)."""
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    limit = 9 * ax.figure.dpi / 72
    groups = []
    seen: set[int] = set()
    for i in range(len(pts)):
        if i in seen:
            continue
        group = [j for j in range(i, len(pts)) if j not in seen and np.hypot(*(pts[j] - pts[i])) < limit]
        if len(group) > 1:
            seen.update(group)
            groups.append(" = ".join(names[j] for j in group))
    return groups


def _line_series(data: pd.DataFrame, col: str, styles: dict[str, Style], band: bool = False) -> list[Series]:
    out = []
    for name, s in data.groupby("series", sort=False):
        s = s.sort_values("HW")
        lo = hi = None
        if band and "latency_samples_ms" in s.columns:
            q = np.array([latency_quantiles(v) for v in s["latency_samples_ms"]], dtype=float)
            lo, hi = q[:, 0], q[:, 1]
        out.append(Series(str(name), s["HW"].to_numpy(float), s[col].to_numpy(float), styles[name], lo, hi))
    return out


def _single_x(data: pd.DataFrame) -> bool:
    return data["HW"].nunique() < 2


def flops_data(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, resolution) with a FLOP count: the points of :func:`plot_flops_vs_tokens`."""
    data = df[df["flops"].notna()].drop_duplicates(["label", "H", "W", "C", "num_heads"])
    if "pass" in data.columns:  # a training row counts a whole backbone: not one attention layer
        data = data[data["pass"] != "train"]
    return data.assign(series=_series_key(data, ["C", "num_heads"]), HW=data["H"] * data["W"])


def plot_flops_vs_tokens(df: pd.DataFrame) -> Figure | None:
    """FLOPs (fvcore MACs, batch 1) against tokens, log-log, each series labelled with its slope."""
    data = flops_data(df)
    if data.empty or _single_x(data):
        return None
    styles = series_styles(data, "series")
    div, unit = scaled_unit(float(data["flops"].max()), "MACs")
    data = data.assign(flops=data["flops"] / div)
    series = _line_series(data, "flops", styles)
    fig = Figure(figsize=(6.4, 4.6))
    fig.subplots_adjust(left=0.11, right=0.66, top=0.92, bottom=0.12)
    ax = fig.add_subplot()
    notes = _draw_lines(ax, series)
    for s in series:
        slope = loglog_slope(s.x, s.y)
        s.name = f"{s.name}: {slope:.2f}" if not math.isnan(slope) else s.name
    _log_axis(ax)
    _tokens_axis(ax, data[["H", "W"]])
    ax.set_ylabel(f"FLOPs ({unit}, fvcore, batch 1, log)")
    ax.set_title("FLOPs vs tokens; label: fitted slope d log FLOPs / d log (H·W)", fontsize=9)
    note_box(ax, notes)
    label_line_ends(ax, series)
    return fig


def speed_data(df: pd.DataFrame) -> pd.DataFrame:
    """The ok timed rows with their series name and tokens (the points of :func:`plot_speed`)."""
    data = df[(df["status"] == "ok") & df["latency_ms"].notna()]
    return data.assign(
        series=_series_key(data, ["dtype", "device", "batch", "C", "num_heads"]), HW=data["H"] * data["W"]
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
    data = speed_data(df)
    if data.empty or _single_x(data):
        return None
    styles = series_styles(data, "series")
    passes = list(dict.fromkeys(data["pass"]))
    fig = Figure(figsize=(6.4, 3.9 * len(passes)))
    height = 3.9 * len(passes)
    fig.subplots_adjust(left=0.11, right=0.66, top=1 - 0.8 / height, bottom=0.55 / height, hspace=0.3)
    axes = fig.subplots(len(passes), 1, squeeze=False)[:, 0]
    for ax, p in zip(axes, passes):
        series = _line_series(data[data["pass"] == p], "latency_ms", styles, band=True)
        _name_slopes(series)
        notes = _draw_lines(ax, series)
        _log_axis(ax)
        _tokens_axis(ax, data[["H", "W"]])
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
        series=_series_key(data, ["dtype", "device", "batch", "C", "num_heads"]), HW=data["H"] * data["W"]
    )
    if _single_x(data):
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
        series = _line_series(at[~at["oom"]], "peak_mem_mb", styles)
        _name_slopes(series)
        notes = _draw_lines(ax, series)
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
        _log_axis(ax)
        _tokens_axis(ax, data[["H", "W"]])
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
                cbar.ax.yaxis.set_major_locator(FixedLocator(_log_ticks(lo, hi)))
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


def plot_pareto(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """Top-1 accuracy against FLOPs with the Pareto front (higher accuracy at no more FLOPs); an
    ablation run's success rate and mean top-1 per dataset level (:func:`plot_accuracy_vs_cost`)."""
    if "top1" not in df.columns or df["top1"].isna().all():
        return None
    if is_ablation_frame(df):
        return plot_accuracy_vs_cost(df, "flops", manifest)
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
    front = agg.iloc[stats.pareto_front(agg["flops"], agg["top1"])]
    if len(front) >= 2:  # a front of one point is no line: nothing to name in the legend
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


# --- ablation runs: success rates (attnbench.outcomes), mean top-1 with its 95 % interval (stats) -----


def _grid(n: int, cols: int = 2) -> tuple[int, int]:
    ncols = min(cols, max(n, 1))
    return math.ceil(max(n, 1) / ncols), ncols


def _bars(rows: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Error bars of the summary rows: to the 95 % interval where they have one, else ± std over
    seeds (none for one seed); and the words for the axis."""
    has_ci = rows["lo"].notna() & rows["hi"].notna()
    low = np.where(has_ci, rows["top1"] - rows["lo"], rows["std"].fillna(0))
    high = np.where(has_ci, rows["hi"] - rows["top1"], rows["std"].fillna(0))
    if has_ci.all():
        words = "bars: 95 % CI"
    elif not has_ci.any():
        words = "bars: ± std over seeds, no CI"
    else:
        words = "bars: 95 % CI; ± std where no CI"
    return np.clip(np.stack([low, high]), 0, None), words


def _summary(df: pd.DataFrame) -> pd.DataFrame:
    summary = ablation_summary(df)
    return summary[summary["status"] == "ok"]


def _success(df: pd.DataFrame, manifest: dict[str, Any] | None) -> tuple[pd.DataFrame, float]:
    """Per (level, configuration) with trainings: k learned of n, the rate and its Clopper-Pearson
    interval in percent (``level``, ``level_index``, ``label``, ``k``, ``n``, ``rate``, ``lo``,
    ``hi``); and the threshold (the run's ``analysis.learned_top1``, else 70 %)."""
    threshold = analysis_plan(df, manifest).threshold
    arms = arms_of(df, manifest)
    rows = []
    for (level, label), arm in arms.trainings.items():
        r = outcomes.success_rate(arm, threshold)
        rows.append(
            {
                "level": level,
                "level_index": arms.level_index[level],
                "label": label,
                "k": r.k,
                "n": r.n,
                "n_seeds": r.n,
                "rate": 100 * r.rate,
                "lo": 100 * r.lo,
                "hi": 100 * r.hi,
            }
        )
    columns = ["level", "level_index", "label", "k", "n", "n_seeds", "rate", "lo", "hi"]
    return pd.DataFrame(rows, columns=columns), threshold


def _rate_bars(rows: pd.DataFrame) -> np.ndarray:
    """Error bars of success rates (percent) to their Clopper-Pearson bounds."""
    return np.clip(np.stack([rows["rate"] - rows["lo"], rows["hi"] - rows["rate"]]), 0, None)


def _learned_axis(ax, threshold: float, what: str = "learned") -> None:
    ax.set_ylim(-6, 106)
    ax.yaxis.set_major_locator(FixedLocator([0, 25, 50, 75, 100]))
    ax.set_ylabel(f"{what} (% of trainings,\ntop-1 ≥ {threshold:g} %; bars: 95 % CI)")


def _cost_points(ax, part: pd.DataFrame, x: np.ndarray, y: np.ndarray, err: np.ndarray, styles, handles):
    for j, r in enumerate(part.itertuples()):
        st = styles[r.label]
        h = ax.errorbar(
            x[j],
            y[j],
            yerr=err[:, j : j + 1],
            linestyle="none",
            marker=st.marker,
            fillstyle=st.fillstyle,
            color=st.color,
            ms=7,
            capsize=3,
            lw=1.1,
        )
        handles.setdefault(r.label, h)


def _note_above(ax, notes: Sequence[str]) -> None:
    """Name the points drawn on one spot in a box above the data: the y axis grows to make room,
    its ticks stay where the data are."""
    if not notes:
        return
    lo, hi = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    ax.set_ylim(lo, hi + (hi - lo) * 0.085 * (len(notes) + 1.5))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    note_box(ax, notes, head="Drawn on one spot:")


def plot_accuracy_vs_cost(
    df: pd.DataFrame, cost: str = "flops", manifest: dict[str, Any] | None = None
) -> Figure | None:
    """An ablation run's success rate (learned fraction, bars: Clopper-Pearson 95 % CI; top row) and
    mean top-1 (bars: 95 % CI, secondary; bottom row) against FLOPs or latency, one column per
    dataset level, each with its Pareto front (no configuration better at no more cost) dashed."""
    summary = _summary(df)
    if summary.empty or cost not in summary.columns:
        return None
    summary = summary[summary[cost].notna()]
    if summary.empty:
        return None
    success, threshold = _success(df, manifest)
    success = success.merge(summary[["level", "label", cost]], on=["level", "label"], how="inner")
    styles = series_styles(df[df["label"].isin(set(summary["label"]))])
    if cost == "flops":
        div, unit = scaled_unit(float(summary[cost].max()), "MACs")
        xlabel = f"FLOPs ({unit}, fvcore, batch 1"
    else:
        div, xlabel = 1.0, "latency (ms, median, batch 1"
    levels = list(dict.fromkeys(summary["level"]))
    ncols = min(3, len(levels))
    blocks = math.ceil(len(levels) / ncols)
    fig = Figure(figsize=(4.3 * ncols + 0.4, 3.4 * 2 * blocks))
    grid = fig.subplots(2 * blocks, ncols, squeeze=False)
    handles: dict[str, Any] = {}
    log = summary[cost].max() / summary[cost].min() > 3
    words = _bars(summary)[1]
    used = []
    for i, level in enumerate(levels):
        top, bottom = grid[2 * (i // ncols)][i % ncols], grid[2 * (i // ncols) + 1][i % ncols]
        used += [top, bottom]
        rates = success[success["level"] == level]
        x = rates[cost].to_numpy(float) / div
        y = rates["rate"].to_numpy(float)
        _cost_points(top, rates, x, y, _rate_bars(rates), styles, handles)
        front = stats.pareto_front(x, y)
        if len(front) >= 2:
            (line,) = top.step(x[front], y[front], where="post", color="grey", ls=(0, (4, 2)), lw=1)
            handles["Pareto front"] = line
        _learned_axis(top, threshold)
        top.set_title(str(level), fontsize=9)
        _note_above(top, overlapping_points(top, x, y, list(rates["label"])))
        part = summary[summary["level"] == level]
        err, _ = _bars(part)
        x = part[cost].to_numpy(float) / div
        y = part["top1"].to_numpy(float)
        _cost_points(bottom, part, x, y, err, styles, handles)
        front = stats.pareto_front(x, y)
        if len(front) >= 2:  # a front of one point is no line
            (line,) = bottom.step(x[front], y[front], where="post", color="grey", ls="--", lw=1)
            handles.setdefault("Pareto front", line)
        bottom.set_ylabel(f"top-1 (%, mean; {words})\nsecondary, exploratory")
        bottom.set_title(f"{level}: mean top-1", fontsize=8, color="#555555")
        _note_above(bottom, overlapping_points(bottom, x, y, list(part["label"])))
        for ax in (top, bottom):
            if log:
                _log_axis(ax, "x")
            ax.set_xlabel(xlabel + (", log)" if log else ")"))
    for ax in grid.ravel():
        if not any(ax is u for u in used):
            ax.set_visible(False)
    what = "FLOPs" if cost == "flops" else "latency"
    fig.suptitle(
        f"Success rate (top) and mean top-1 (bottom, secondary) against {what} ({_seed_words(summary)}); "
        "dashed: the Pareto fronts",
        fontsize=10,
    )
    fig.tight_layout()
    _legend_right(fig, list(handles.values()), [_with_seeds(name, summary) for name in handles])
    return fig


def _seed_words(summary: pd.DataFrame) -> str:
    """``3 seeds each``, or ``2 to 3 seeds`` when configurations differ (the legend then says which)."""
    lo, hi = int(summary["n_seeds"].min()), int(summary["n_seeds"].max())
    return f"{hi} seed{'s' if hi != 1 else ''} each" if lo == hi else f"{lo} to {hi} seeds"


def _with_seeds(label: str, summary: pd.DataFrame) -> str:
    """A legend entry; the seed counts where they differ between levels or configurations."""
    if summary["n_seeds"].nunique() == 1 or label not in set(summary["label"]):
        return label
    counts = sorted({int(n) for n in summary.loc[summary["label"] == label, "n_seeds"]})
    return f"{label} ({'/'.join(map(str, counts))} seeds)"


def plot_accuracy_vs_latency(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """:func:`plot_accuracy_vs_cost` against the median latency (an ablation run that timed it)."""
    if not is_ablation_frame(df) or "latency_ms" not in df.columns:
        return None
    return plot_accuracy_vs_cost(df, "latency_ms", manifest)


def plot_accuracy_ladder(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """The difficulty ladder: the success rate (the fraction of trainings that learned; bars:
    Clopper-Pearson 95 % CI) against the dataset level, in the study's order, one line per
    configuration, labelled at its hardest level."""
    if not is_ablation_frame(df):
        return None
    success, threshold = _success(df, manifest)
    if success.empty or success["level"].nunique() < 2:
        return None
    levels = success.drop_duplicates("level").sort_values("level_index")["level"].tolist()
    pos = {lv: i for i, lv in enumerate(levels)}
    styles = series_styles(df[df["label"].isin(set(success["label"]))])
    labels = list(dict.fromkeys(success["label"]))
    fig = Figure(figsize=(max(6.4, 1.3 * len(levels) + 4.2), 4.6))
    fig.subplots_adjust(left=0.12, right=0.68, top=0.9, bottom=0.2)
    ax = fig.add_subplot()
    dodge = min(0.08, 0.4 / len(labels)) if len(labels) > 1 else 0.0
    series = []
    for j, label in enumerate(labels):
        part = success[success["label"] == label].sort_values("level_index")
        x = part["level"].map(pos).to_numpy(float) + dodge * (j - (len(labels) - 1) / 2)
        st = styles[label]
        ax.errorbar(
            x, part["rate"], yerr=_rate_bars(part), capsize=2.5, ms=5, lw=1.3, elinewidth=0.9, **st.kwargs()
        )
        series.append(Series(str(label), x, part["rate"].to_numpy(float), st))
    ax.set_xticks(range(len(levels)), levels, fontsize=8)
    if max(len(lv) for lv in levels) > 12:
        for text in ax.get_xticklabels():
            text.set_rotation(20)
            text.set_ha("right")
    ax.set_xlim(-0.4, len(levels) - 0.6)
    ax.set_xlabel("dataset level (the study's order)")
    _learned_axis(ax, threshold)
    ax.set_title("Success rate against difficulty, one line per configuration", fontsize=10)
    label_line_ends(ax, series)
    return fig


def plot_learning_curves(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """Validation top-1 against epoch, one panel per dataset level: each configuration's mean over
    its seeds (thick, markers) and every seed (thin); dotted: the learned threshold."""
    if not is_ablation_frame(df):
        return None
    curves = learning_curves(df)
    if curves.empty or curves.groupby(["level", "label", "seed"])["epoch"].nunique().max() < 2:
        return None
    threshold = analysis_plan(df, manifest).threshold
    styles = series_styles(df[df["label"].isin(set(curves["label"]))])
    levels = curves.drop_duplicates("level").sort_values("level_index")["level"].tolist()
    nrows, ncols = _grid(len(levels))
    fig = Figure(figsize=(4.3 * ncols + 0.4, 3.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles: dict[str, Any] = {}
    for ax, level in zip(axes, levels):
        part = curves[curves["level"] == level]
        for label, rows in part.groupby("label", sort=False):
            st = styles[label]
            for _, seed_rows in rows.groupby("seed"):
                seed_rows = seed_rows.sort_values("epoch")
                ax.plot(
                    seed_rows["epoch"], seed_rows["top1"], color=st.color, ls=st.linestyle, lw=0.6, alpha=0.35
                )
            mean = rows.groupby("epoch")["top1"].mean()
            (line,) = ax.plot(mean.index, mean.to_numpy(), ms=4, lw=1.5, **st.kwargs())
            handles.setdefault(str(label), line)
        handles[f"learned: top-1 ≥ {threshold:g} %"] = ax.axhline(threshold, color="grey", ls=":", lw=1)
        ax.set_title(str(level), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation top-1 (%)")
    for ax in axes[len(levels) :]:
        ax.set_visible(False)
    fig.suptitle("Learning curves: mean over seeds (thick), each seed (thin)", fontsize=10)
    fig.tight_layout()
    _legend_right(fig, list(handles.values()), list(handles))
    return fig


def _spread(keys: dict[str, Any], step: float) -> tuple[dict[str, float], list[str]]:
    """Vertical offsets for series with equal values (``keys``: label -> hashable of its values),
    ``step`` apart and centred, and the notes naming each group."""
    groups: dict[Any, list[str]] = {}
    for label, key in keys.items():
        groups.setdefault(key, []).append(label)
    offsets, notes = dict.fromkeys(keys, 0.0), []
    for members in groups.values():
        if len(members) < 2:
            continue
        for k, label in enumerate(members):
            offsets[label] = step * (k - (len(members) - 1) / 2)
        notes.append(" = ".join(members))
    return offsets, notes


def _band_alpha(n_series: int) -> float:
    """The opacity of one confidence band among ``n_series`` drawn on one panel: lighter as more
    overlap, so that where they all cover the same area it stays grey, not black."""
    return float(min(0.12, max(0.03, 0.3 / max(n_series, 1))))


def _panels(n: int) -> tuple[Figure, np.ndarray]:
    nrows, ncols = _grid(n)
    fig = Figure(figsize=(4.3 * ncols + 0.4, 3.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _outcome_figure(df: pd.DataFrame, manifest: dict[str, Any] | None, arms: Any) -> tuple[Any, ...]:
    """What both outcome plots start from: the learned threshold, each configuration's style, its
    seed counts (for the legend) and one panel per dataset level."""
    styles = series_styles(df[df["label"].isin({label for _, label in arms.trainings})])
    counts = pd.DataFrame(
        [{"label": lb, "n_seeds": len(arm)} for (_, lb), arm in arms.trainings.items()],
        columns=["label", "n_seeds"],
    )
    fig, axes = _panels(len(arms.levels))
    return analysis_plan(df, manifest).threshold, styles, counts, fig, axes


def _level_arms(arms: Any, level: str) -> dict[str, Any]:
    """The trainings of each configuration present at ``level``, in the run's order."""
    return {lb: arms.trainings[(level, lb)] for lb in arms.present[level] if (level, lb) in arms.trainings}


def plot_time_to_learn(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """Kaplan-Meier curves of the fraction of trainings not yet learned against the epoch, one panel
    per dataset level, one step line per configuration with its pointwise 95 % band; a tick marks
    where trainings that never learned were censored (their last evaluated epoch)."""
    if not is_ablation_frame(df):
        return None
    arms = arms_of(df, manifest)
    if not arms.trainings or not arms.curves:
        return None
    threshold, styles, counts, fig, axes = _outcome_figure(df, manifest, arms)
    handles: dict[str, Any] = {}
    for ax, level in zip(axes, arms.levels):
        mine = _level_arms(arms, level)
        kms = {lb: outcomes.kaplan_meier(arm, threshold) for lb, arm in mine.items()}
        offsets, notes = _spread({lb: (km.times, km.survival) for lb, km in kms.items()}, 0.015)
        last = 0.0
        for label, km in kms.items():
            st, off = styles[label], offsets[label]
            x = np.array([0.0, *km.times])
            y = np.array([1.0, *km.survival]) + off
            lo = np.array([1.0, *km.lo]) + off
            hi = np.array([1.0, *km.hi]) + off
            last = max(last, float(x[-1]))
            ax.fill_between(x, lo, hi, step="post", color=st.color, alpha=_band_alpha(len(kms)), lw=0)
            (line,) = ax.step(x, y, where="post", color=st.color, ls=st.linestyle, lw=1.4)
            events = [outcomes.time_to_learn(t, threshold) for t in mine[label]]
            for hit, mark in (
                (True, {"marker": st.marker, "fillstyle": st.fillstyle, "ms": 4.5}),
                (False, {"marker": "|", "ms": 9}),
            ):  # learned here, or censored here
                at_epochs = sorted({e for e, event in events if event == hit})
                if at_epochs:
                    at = np.searchsorted(km.times, at_epochs)
                    ax.plot(at_epochs, np.asarray(km.survival)[at] + off, ls="none", color=st.color, **mark)
            handles.setdefault(
                label,
                Line2D([], [], color=st.color, ls=st.linestyle, marker=st.marker, fillstyle=st.fillstyle),
            )
        ax.axhline(0.5, color="#999999", ls=":", lw=0.8)
        ax.set_xlim(0, last * 1.04 if last else 1)
        ax.set_ylim(-0.04, 1.06)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(str(level), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"not yet learned (fraction;\nval top-1 < {threshold:g} %)")
        note_box(ax, notes, head="Equal curves, drawn slightly apart:", corner="lower left")
    handles["censored: never learned (last evaluated epoch)"] = Line2D(
        [], [], color="#555555", marker="|", ms=9, ls="none"
    )
    handles["median (half learned)"] = Line2D([], [], color="#999999", ls=":", lw=0.8)
    fig.suptitle(
        "Time to learn (Kaplan–Meier): fraction of trainings not yet learned; band: 95 % CI", fontsize=10
    )
    fig.tight_layout()
    _legend_right(fig, list(handles.values()), [_with_seeds(name, counts) for name in handles])
    return fig


PROFILE_TAUS = np.round(np.arange(40.0, 100.0 + 1e-9, 0.5), 2)


def plot_performance_profiles(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """Performance profiles (rliable): the fraction of trainings whose final top-1 is at or above
    tau, for tau from 40 to 100 %, with Clopper-Pearson 95 % bands, one panel per dataset level, one
    line per configuration; dotted: the learned threshold."""
    if not is_ablation_frame(df):
        return None
    arms = arms_of(df, manifest)
    if not arms.trainings:
        return None
    threshold, styles, counts, fig, axes = _outcome_figure(df, manifest, arms)
    handles: dict[str, Any] = {}
    for ax, level in zip(axes, arms.levels):
        mine = _level_arms(arms, level)
        profiles = {
            lb: outcomes.performance_profile([t.top1 for t in arm], PROFILE_TAUS) for lb, arm in mine.items()
        }
        offsets, notes = _spread({lb: p.fraction for lb, p in profiles.items()}, 0.015)
        for j, (label, prof) in enumerate(profiles.items()):
            st, off = styles[label], offsets[label]
            frac = np.asarray(prof.fraction) + off
            ax.fill_between(
                PROFILE_TAUS,
                np.asarray(prof.lo) + off,
                np.asarray(prof.hi) + off,
                step="pre",
                color=st.color,
                alpha=_band_alpha(len(profiles)),
                lw=0,
            )
            ax.step(PROFILE_TAUS, frac, where="pre", color=st.color, ls=st.linestyle, lw=1.4)
            every = (4 + 3 * j) % 20
            ax.plot(
                PROFILE_TAUS[every::20],
                frac[every::20],
                ls="none",
                marker=st.marker,
                fillstyle=st.fillstyle,
                color=st.color,
                ms=4.5,
            )
            handles.setdefault(
                label,
                Line2D([], [], color=st.color, ls=st.linestyle, marker=st.marker, fillstyle=st.fillstyle),
            )
        ax.axvline(threshold, color="#777777", ls=":", lw=1)
        ax.set_xlim(PROFILE_TAUS[0], PROFILE_TAUS[-1])
        ax.set_ylim(-0.04, 1.06)
        ax.set_title(str(level), fontsize=9)
        ax.set_xlabel("τ: final validation top-1 (%)")
        ax.set_ylabel("fraction of trainings\nwith top-1 ≥ τ")
        note_box(ax, notes, head="Equal profiles, drawn slightly apart:", corner="lower left")
    handles[f"learned threshold ({threshold:g} %)"] = Line2D([], [], color="#777777", ls=":", lw=1)
    fig.suptitle(
        "Performance profiles: fraction of trainings at or above each top-1; band: 95 % CI (Clopper–Pearson)",
        fontsize=10,
    )
    fig.tight_layout()
    _legend_right(fig, list(handles.values()), [_with_seeds(name, counts) for name in handles])
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
            _log_axis(ax)
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
    _legend_right(fig, list(unique.values()), list(unique.keys()), title="backend")
    return fig


def _resolution_colors(n: int) -> list[str]:
    """Shades of BRA's colour, dark (smallest map) to light (largest): these plots are all BRA."""
    return [_shade(_own_color("bra"), float(t)) for t in np.linspace(-0.55, 0.45, max(n, 1))]


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
    bra = _own_color("bra")
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
    fig.suptitle(f"{display_name('bra')} at the best S: log-log slope of FLOPs against H·W")
    fig.tight_layout()
    return fig


def check_formats(formats: Sequence[str]) -> None:
    """Raise a ``ValueError`` naming a plot format matplotlib cannot write, and the ones it can."""
    known = FigureCanvasBase.get_supported_filetypes()
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise ValueError(f"formats = {list(formats)}: unknown {unknown}; choose among {sorted(known)}")


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
        "FLOPs (fvcore MACs, batch 1) against tokens, log-log; each label ends with the fitted slope.",
        plot_flops_vs_tokens,
        "results",
    ),
    (
        "speed_vs_resolution",
        "Median latency against resolution, per pass; band: 25th–75th percentile of the timing samples; "
        "each label ends with the fitted log-log slope against tokens.",
        plot_speed,
        "results",
    ),
    (
        "memory_vs_resolution",
        "Peak memory against resolution; ✕ and dotted line: first size out of memory; each label ends "
        "with the fitted log-log slope against tokens.",
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
        "accuracy_vs_latency",
        "Success rate (top; bars: 95 % Clopper–Pearson CI) and mean top-1 (bottom, secondary; bars: 95 % "
        "CI) against median latency (batch 1) per dataset level; dashed: the Pareto fronts.",
        plot_accuracy_vs_latency,
        "results",
    ),
    (
        "accuracy_ladder",
        "The difficulty ladder: the success rate (fraction of trainings that learned) against the dataset "
        "level, one line per configuration; bars: 95 % CI (Clopper–Pearson).",
        plot_accuracy_ladder,
        "results",
    ),
    (
        "time_to_learn",
        "Time to learn: Kaplan–Meier fraction of trainings not yet learned against the epoch, per dataset "
        "level; band: 95 % CI; ticks: trainings censored at their last evaluated epoch.",
        plot_time_to_learn,
        "results",
    ),
    (
        "performance_profiles",
        "Performance profiles: fraction of trainings with final top-1 at or above τ, per dataset level; "
        "band: 95 % CI (Clopper–Pearson); dotted: the learned threshold.",
        plot_performance_profiles,
        "results",
    ),
    (
        "learning_curves",
        "Validation top-1 against epoch per dataset level: mean over seeds (thick) and each seed (thin); "
        "dotted: the learned threshold.",
        plot_learning_curves,
        "results",
    ),
    (
        "reach_vs_distance",
        "Reach: validation accuracy against the distance between the two marked glyphs, one line per "
        "configuration: the mean over its trainings that learned (at least 75 % at the nearest distance; "
        "k/n in the legend), band: 95 % Student interval over them; the tables give the mean of all.",
        functools.partial(plot_reach_vs_distance, styles_of=series_styles),
        "results",
    ),
    (
        "reach_bra_s_k",
        "Reach: BRA's mean reach (tokens) over S (n_win) × k (topk), beside its FLOPs.",
        plot_reach_bra,
        "results",
    ),
    (
        "reach_vs_cost",
        "Reach: mean reach (bars: 95 % CI over seeds) against FLOPs and latency; dashed: Pareto front.",
        functools.partial(plot_reach_vs_cost, styles_of=series_styles),
        "results",
    ),
    (
        "bra_backends",
        "BRA's backends per shape: median latency (bars: 25th–75th percentile) and peak memory; "
        "reference = the released algorithm.",
        plot_bra_backends,
        "results",
    ),
    (
        "roofline",
        "MACs of the timed call against median latency, log-log; grey lines: 100 %, 10 % and 1 % of the "
        "machine's dense-matmul peak (efficiency).",
        functools.partial(plot_roofline, styles_of=series_styles),
        "results",
    ),
    (
        "phases",
        "Where the time of one profiled call goes, per mechanism and pass, at the largest resolution "
        "(attnbench.phase marks; other: unmarked time).",
        plot_phases,
        "results",
    ),
    (
        "max_batch_vs_resolution",
        "The largest batch within the memory budget against tokens, per mechanism (log-log).",
        plot_max_batch,
        "results",
    ),
    (
        "formula_flops_vs_s",
        "BRA FLOPs against S: measured (solid), the paper's formula (dashed), best swept S (ring), the "
        "paper's S* (star) where it lies inside the swept S.",
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
    "flops_vs_tokens": "no row has a FLOP count at two or more resolutions",
    "speed_vs_resolution": "no ok row has a latency at two or more resolutions",
    "memory_vs_resolution": "no ok row has a peak memory at two or more resolutions",
    "bra_s_k_heatmaps": "the run has no BRA rows over at least two S or k values at one resolution",
    "accuracy_vs_flops": "the run has no accuracy (top1) column with values",
    "accuracy_vs_latency": "the run's ok rows have no latency",
    "accuracy_ladder": "the run has fewer than two dataset levels with an ok row",
    "time_to_learn": "no training stores a learning curve of two or more evaluated epochs (column curve)",
    "performance_profiles": "the run has no ok training with a top-1",
    "learning_curves": "the rows store no learning curve with two or more epochs (column curve)",
    "bra_backends": "the run has no timed BRA rows over at least two backends",
    "reach_vs_distance": "the run has no reach trainings with per-image results",
    "reach_bra_s_k": "the run has no reach trainings of BRA over two or more S or k",
    "reach_vs_cost": "the run has no reach trainings with per-image results",
    "roofline": "the run measured no latency with FLOPs (no efficiency)",
    "phases": "the run did not measure phases",
    "max_batch_vs_resolution": "the run did not measure max_batch at two or more resolutions",
    "formula_flops_vs_s": "the formula check has fewer than two S values at one setting",
    "formula_scaling": "the formula check has fewer than two resolutions per setting",
}


# the plots of an ablation run; a sweep run draws the others (accuracy_vs_flops: both)
ABLATION_PLOTS = (
    "accuracy_vs_flops",
    "accuracy_vs_latency",
    "accuracy_ladder",
    "time_to_learn",
    "performance_profiles",
    "learning_curves",
    "reach_vs_distance",
    "reach_bra_s_k",
    "reach_vs_cost",
)
ABLATION_CAPTIONS = {
    "accuracy_vs_flops": "Success rate (top; bars: 95 % Clopper–Pearson CI) and mean top-1 (bottom, "
    "secondary; bars: 95 % CI, ± std over seeds where the run has no interval) against FLOPs (fvcore "
    "MACs, batch 1) per dataset level; dashed: the Pareto fronts.",
}


REACH_PLOTS = ("reach_vs_distance", "reach_bra_s_k", "reach_vs_cost")


def _relevant(name: str, ablation: bool, reach: bool = False) -> bool:
    """Whether a plot belongs to this kind of run (an ablation run's plots, or a sweep's; the reach
    plots only to an ablation run on the reach task)."""
    if name in REACH_PLOTS:
        return reach
    return name == "accuracy_vs_flops" or (name in ABLATION_PLOTS) == ablation


def _why_no_check(results: pd.DataFrame | None) -> str:
    """Why there is no formula check to plot, from the rows."""
    if results is None or results.empty:
        return "the formula check did not run"
    bra = results[results["mechanism"] == "bra"]
    if bra.empty:
        return "the run has no BRA rows"
    if "pass" in bra.columns and (bra["pass"] == "train").all():
        return (
            "the run's BRA rows count whole trained backbones (pass train), not one BRA layer, so the "
            "formula does not apply"
        )
    return "the formula check did not run (--no-formula) or counted no BRA layer"


def draw_all(
    df: pd.DataFrame,
    check: FormulaCheck | None,
    folder: Path,
    formats: Sequence[str] = ("png", "svg"),
    results: pd.DataFrame | None = None,
    manifest: dict[str, Any] | None = None,
) -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
    """Draw every plot that the data allows.

    Args:
        results: the rows before the filters, to say why the formula plots are missing.
        manifest: the run's manifest: an ablation run's plots read the learned threshold of its
            ``conditions.analysis`` (default 70 %).

    Returns:
        ``{name: (png or first path, caption)}`` for the plots drawn, ``{name: why not}`` for the rest.
    """
    check_formats(formats)
    drawn: dict[str, tuple[Path, str]] = {}
    skipped: dict[str, str] = {}
    ablation = is_ablation_frame(df)
    reach = ablation and is_reach_run(df)
    with matplotlib.rc_context(RC):
        for name, caption, fn, source in PLOTS:
            if not _relevant(name, ablation, reach):  # the other kind's plot: not drawn, not listed
                for stale in folder.glob(f"{name}.*"):
                    stale.unlink()
                continue
            if ablation:
                caption = ABLATION_CAPTIONS.get(name, caption)
            arg = df if source == "results" else check
            if arg is None:
                fig = None
            elif ablation and name in ABLATION_PLOTS:
                fig = fn(arg, manifest=manifest)
            else:
                fig = fn(arg)
            if fig is None:
                skipped[name] = WHY_NOT[name] if arg is not None else _why_no_check(results)
                for stale in folder.glob(f"{name}.*"):  # an earlier report's, no longer true
                    stale.unlink()
                continue
            paths = save(fig, folder, name, formats)
            drawn[name] = (paths[0], caption)
    return drawn, skipped
