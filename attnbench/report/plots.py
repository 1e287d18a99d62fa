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

This module is the kit every kind's plots are drawn with (styles, direct labels, saving); each kind
lists its own plots (:class:`Plot`) in its package, e.g. ``attnbench/kinds/sweep/plots.py``, and
hands them to :func:`draw_all`.
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
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from attnbench.report._results import (
    device_label,
    latency_quantiles,
    mechanism_look,
    parameter_columns,
    plain,
    resolution_label,
)

__all__ = ["PALETTE", "Plot", "check_formats", "draw_all", "mechanism_styles", "series_styles"]


__all__ = ["PALETTE", "Plot", "check_formats", "draw_all", "mechanism_styles", "series_styles"]

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


def own_color(mechanism: str) -> str:
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
            values = [sorted(first[c].dropna().unique().tolist(), key=sort_key) for c in params[:2]]
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
            color = shade(b.color, float(np.linspace(-0.5, 0.45, n)[m % n])) if n > 1 else b.color
            out[row[key]] = Style(color, marker, LINESTYLES[ls % len(LINESTYLES)], fill)
    return out


def shade(color: str, t: float) -> str:
    """``color`` mixed towards black (t < 0) or white (t > 0) by ``|t|``."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    mixed = rgb * (1 + t) if t < 0 else rgb + (1 - rgb) * t
    return matplotlib.colors.to_hex(mixed)


def sort_key(value: Any) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def tokens_axis(ax, sizes: pd.DataFrame) -> None:
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


def log_axis(ax, which: str = "y") -> None:
    """Log axis with 1-2-5 ticks as plain numbers (0.01, 0.1, 1); call after plotting."""
    getattr(ax, f"set_{which}scale")("log")
    lo, hi = getattr(ax, f"get_{which}lim")()
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def log_ticks(lo: float, hi: float) -> list[float]:
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


def legend_right(fig: Figure, handles, labels, title: str | None = None) -> None:
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title=title)


def series_key(df: pd.DataFrame, extra: Sequence[str]) -> pd.Series:
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


def draw_lines(ax, series: list[Series], band_label: bool = False) -> list[str]:
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


def line_series(data: pd.DataFrame, col: str, styles: dict[str, Style], band: bool = False) -> list[Series]:
    out = []
    for name, s in data.groupby("series", sort=False):
        s = s.sort_values("HW")
        lo = hi = None
        if band and "latency_samples_ms" in s.columns:
            q = np.array([latency_quantiles(v) for v in s["latency_samples_ms"]], dtype=float)
            lo, hi = q[:, 0], q[:, 1]
        out.append(Series(str(name), s["HW"].to_numpy(float), s[col].to_numpy(float), styles[name], lo, hi))
    return out


def single_x(data: pd.DataFrame) -> bool:
    return data["HW"].nunique() < 2


def over_sizes(data: pd.DataFrame, by: Sequence[str] = ("series",)) -> pd.DataFrame:
    """The rows of the series (grouped ``by``) measured at two or more sizes: a growth plot draws a
    line and a slope per series, which one point does not have (a run that times each configuration
    at its own shape has none)."""
    if data.empty:
        return data
    return data[data.groupby(list(by))["HW"].transform("nunique") >= 2]


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


@dataclasses.dataclass(frozen=True)
class Plot:
    """One plot of a kind's report.

    Attributes:
        name: its file name, without suffix (``plots/<name>.png``).
        caption: what it shows, with its conventions.
        draw: builds the figure from what the kind bound to it; None when the data does not allow it.
        why_not: said in the report when ``draw`` gives None.
    """

    name: str
    caption: str
    draw: Callable[[], Figure | None]
    why_not: str


def draw_all(
    plots: Sequence[Plot], folder: Path, formats: Sequence[str] = ("png", "svg")
) -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
    """Draw every plot of ``plots`` that the data allows, into ``folder``.

    Returns:
        ``{name: (png or first path, caption)}`` for the plots drawn, ``{name: why not}`` for the rest.
    """
    check_formats(formats)
    drawn: dict[str, tuple[Path, str]] = {}
    skipped: dict[str, str] = {}
    with matplotlib.rc_context(RC):
        for plot in plots:
            fig = plot.draw()
            if fig is None:
                skipped[plot.name] = plot.why_not
                for stale in folder.glob(f"{plot.name}.*"):  # an earlier report's, no longer true
                    stale.unlink()
                continue
            drawn[plot.name] = (save(fig, folder, plot.name, formats)[0], plot.caption)
    return drawn, skipped
