"""The ablation kind's plots: what each configuration learned against its cost, the difficulty
ladder, time to learn, performance profiles, learning curves, and the reach task's three plots
(drawn with the kit of :mod:`attnbench.report.plots`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator

from attnbench import stats
from attnbench.kinds.ablation import outcomes
from attnbench.kinds.ablation.accuracy import ablation_summary, learning_curves
from attnbench.kinds.ablation.analysis import analysis_plan, arms_of
from attnbench.kinds.ablation.reach import (
    is_reach_run,
    plot_reach_bra,
    plot_reach_vs_cost,
    plot_reach_vs_distance,
)
from attnbench.report._results import (
    scaled_unit,
)
from attnbench.report.plots import (
    Plot,
    Series,
    label_line_ends,
    legend_right,
    log_axis,
    note_box,
    overlapping_points,
    series_styles,
)

__all__ = ["ablation_plots"]


def plot_pareto(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """Success rate and mean top-1 per dataset level against FLOPs, with the Pareto fronts
    (:func:`plot_accuracy_vs_cost`)."""
    if not _trained(df):
        return None
    return plot_accuracy_vs_cost(df, "flops", manifest)


def _trained(df: pd.DataFrame) -> bool:
    """Whether ``df`` holds a top-1 to plot."""
    return not df.empty and "top1" in df.columns and not df["top1"].isna().all()


# --- success rates (outcomes), mean top-1 with its 95 % interval (stats) ---


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
                log_axis(ax, "x")
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
    legend_right(fig, list(handles.values()), [_with_seeds(name, summary) for name in handles])
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
    if not _trained(df) or "latency_ms" not in df.columns:
        return None
    return plot_accuracy_vs_cost(df, "latency_ms", manifest)


def plot_accuracy_ladder(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """The difficulty ladder: the success rate (the fraction of trainings that learned; bars:
    Clopper-Pearson 95 % CI) against the dataset level, in the study's order, one line per
    configuration, labelled at its hardest level."""
    if not _trained(df):
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
    if not _trained(df):
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
    legend_right(fig, list(handles.values()), list(handles))
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
    if not _trained(df):
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
    legend_right(fig, list(handles.values()), [_with_seeds(name, counts) for name in handles])
    return fig


PROFILE_TAUS = np.round(np.arange(40.0, 100.0 + 1e-9, 0.5), 2)


def plot_performance_profiles(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """Performance profiles (rliable): the fraction of trainings whose final top-1 is at or above
    tau, for tau from 40 to 100 %, with Clopper-Pearson 95 % bands, one panel per dataset level, one
    line per configuration; dotted: the learned threshold."""
    if not _trained(df):
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
    legend_right(fig, list(handles.values()), [_with_seeds(name, counts) for name in handles])
    return fig


REACH_PLOTS = ("reach_vs_distance", "reach_bra_s_k", "reach_vs_cost")


def ablation_plots(df: pd.DataFrame, manifest: dict[str, Any] | None) -> list[Plot]:
    """The plots of an ablation run's rows ``df``; the reach plots only for trainings on reach."""
    listed = [
        (
            "accuracy_vs_flops",
            "Success rate (top; bars: 95 % Clopper–Pearson CI) and mean top-1 (bottom, "
            "secondary; bars: 95 % CI, ± std over seeds where the run has no interval) against FLOPs (fvcore "
            "MACs, batch 1) per dataset level; dashed: the Pareto fronts.",
            plot_pareto,
            "the run has no accuracy (top1) column with values",
        ),
        (
            "accuracy_vs_latency",
            "Success rate (top; bars: 95 % Clopper–Pearson CI) and mean top-1 (bottom, secondary; bars: 95 % "
            "CI) against median latency (batch 1) per dataset level; dashed: the Pareto fronts.",
            plot_accuracy_vs_latency,
            "the run's ok rows have no latency",
        ),
        (
            "accuracy_ladder",
            "The difficulty ladder: the success rate (fraction of trainings that learned) against the "
            "dataset level, one line per configuration; bars: 95 % CI (Clopper–Pearson).",
            plot_accuracy_ladder,
            "the run has fewer than two dataset levels with an ok row",
        ),
        (
            "time_to_learn",
            "Time to learn: Kaplan–Meier fraction of trainings not yet learned against the epoch, per "
            "dataset level; band: 95 % CI; ticks: trainings censored at their last evaluated epoch.",
            plot_time_to_learn,
            "no training stores a learning curve of two or more evaluated epochs (column curve)",
        ),
        (
            "performance_profiles",
            "Performance profiles: fraction of trainings with final top-1 at or above τ, per dataset level; "
            "band: 95 % CI (Clopper–Pearson); dotted: the learned threshold.",
            plot_performance_profiles,
            "the run has no ok training with a top-1",
        ),
        (
            "learning_curves",
            "Validation top-1 against epoch per dataset level: mean over seeds (thick) and each seed (thin); "
            "dotted: the learned threshold.",
            plot_learning_curves,
            "the rows store no learning curve with two or more epochs (column curve)",
        ),
        (
            "reach_vs_distance",
            "Reach: validation accuracy against the distance between the two marked glyphs, one line per "
            "configuration: the mean over its trainings that learned (at least 75 % at the nearest distance; "
            "k/n in the legend), band: 95 % Student interval over them; the tables give the mean of all.",
            functools.partial(plot_reach_vs_distance, styles_of=series_styles),
            "the run has no reach trainings with per-image results",
        ),
        (
            "reach_bra_s_k",
            "Reach: BRA's mean reach (tokens) over S (n_win) × k (topk), beside its FLOPs.",
            plot_reach_bra,
            "the run has no reach trainings of BRA over two or more S or k",
        ),
        (
            "reach_vs_cost",
            "Reach: mean reach (bars: 95 % CI over seeds) against FLOPs and latency; dashed: Pareto front.",
            functools.partial(plot_reach_vs_cost, styles_of=series_styles),
            "the run has no reach trainings with per-image results",
        ),
    ]
    reach = is_reach_run(df)
    return [
        Plot(name, caption, functools.partial(fn, df, manifest=manifest), why)
        for name, caption, fn, why in listed
        if reach or name not in REACH_PLOTS
    ]
