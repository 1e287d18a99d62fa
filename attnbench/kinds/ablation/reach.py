"""The reach study's readings: accuracy against the distance between the two marked glyphs.

A reach run (an ablation run on the ``reach`` dataset, e.g. ``studies/reach.yaml``) stores per
training which validation image it got right (``val_correct``). The validation split is generated
deterministically from the study's ``dataset:`` entry (the manifest's ``conditions``), so the
distance of every image is generated again here (1,400 images of 32 px: well under a second) and
each training's hits are split by distance.

Readings, per configuration (its seeds):

- **accuracy at each distance** d: the mean over seeds of each training's accuracy at d, with the
  95 % Student interval over seeds;
- **reach of a training**: the largest d such that its accuracy is at least :data:`REACH_LEVEL` at
  every distance up to d (0 when the nearest already falls short). 75 % lies 7 standard errors
  above chance (50 %) with 200 images per distance, and below what global attention reaches;
- **slope**: the least-squares slope of a training's accuracy over d (points per token); 0 for a
  mechanism that does not fall off with distance.

A training below :data:`REACH_LEVEL` at the nearest distance has not learned to compare glyphs at
all (trainings are bimodal), which says nothing of reach: it counts as not learned, and the mean
reach and mean slope (each with a 95 % Student interval over seeds) are over the trainings that
learned. The tables list every seed's reach as well (—: not learned).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attnbench import stats
from attnbench.report._document import Doc, Table, Tex, latex_escape
from attnbench.report._results import UNSTABLE_NOTE, latex_labels

__all__ = [
    "REACH_LEVEL",
    "distance_frame",
    "is_reach_run",
    "plot_reach_bra",
    "plot_reach_vs_cost",
    "plot_reach_vs_distance",
    "reach_findings",
    "reach_summary",
    "reach_tables",
]

DASH = "—"
REACH_LEVEL = 75.0  # accuracy (%) at a distance that counts as reached


def is_reach_run(df: pd.DataFrame) -> bool:
    """Whether ``df`` holds trainings on the reach dataset."""
    return "dataset" in df.columns and bool((df["dataset"] == "reach").any())


def _reach_entry(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's one ``dataset:`` entry named reach, as the manifest records the study's conditions."""
    conditions = (manifest or {}).get("conditions")
    entries = conditions.get("datasets") if isinstance(conditions, dict) else None
    found = (
        [e for e in entries if isinstance(e, dict) and e.get("name") == "reach"]
        if isinstance(entries, list)
        else []
    )
    return found[0] if len(found) == 1 else None


@functools.lru_cache(maxsize=4)
def _distances(entry_items: tuple[tuple[str, Any], ...]) -> np.ndarray:
    from attnbench.ablation.data import reach_val_split

    entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in entry_items}
    return reach_val_split(entry)[1].distances


def val_distances(manifest: dict[str, Any] | None) -> np.ndarray | None:
    """The distance of every validation image of the run's reach dataset, in order (None: the
    manifest holds no single reach entry, or it cannot be generated)."""
    entry = _reach_entry(manifest)
    if entry is None:
        return None
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in entry.items()))
    try:
        return _distances(items)
    except (TypeError, ValueError):
        return None


def distance_frame(df: pd.DataFrame, manifest: dict[str, Any] | None) -> pd.DataFrame:
    """One row per (training, distance): ``label``, ``mechanism``, ``n_win``, ``topk``, ``seed``,
    ``d``, ``hits``, ``n`` and ``acc`` (%). Empty when the run is not a reach run or its rows
    store no per-image results."""
    columns = ["label", "mechanism", "n_win", "topk", "seed", "d", "hits", "n", "acc"]
    if not is_reach_run(df) or "val_correct" not in df.columns:
        return pd.DataFrame(columns=columns)
    dist = val_distances(manifest)
    if dist is None:
        return pd.DataFrame(columns=columns)
    rows = df[(df["dataset"] == "reach") & (df["status"] == "ok") & df["val_correct"].notna()]
    out = []
    for _, r in rows.iterrows():
        try:
            n = int(float(r["val_n"]))
            hits = stats.decode_correct(str(r["val_correct"]), n)
        except (TypeError, ValueError):
            continue
        if n != len(dist):
            continue
        for d in np.unique(dist):
            at = dist == d
            k, m = int(hits[at].sum()), int(at.sum())
            out.append(
                [
                    r["label"],
                    r["mechanism"],
                    r.get("n_win"),
                    r.get("topk"),
                    r["seed"],
                    int(d),
                    k,
                    m,
                    100.0 * k / m,
                ]
            )
    return pd.DataFrame(out, columns=columns)


def _reach_of(acc: pd.Series) -> int:
    """The largest d with accuracy >= REACH_LEVEL at every distance up to d (``acc`` indexed by d)."""
    reach = 0
    for d, value in acc.sort_index().items():
        if value < REACH_LEVEL:
            break
        reach = int(d)
    return reach


def _mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else math.nan, math.nan, math.nan
    half = stats.student_interval(0.0, [(float(v.var(ddof=1)) / len(v), len(v) - 1)])[1]
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def reach_summary(frame: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (in the run's order): ``by_d`` ({d: (mean, lo, hi)}), ``reach``,
    ``reach_lo``, ``reach_hi``, ``reaches`` (per seed), ``slope``, ``slope_lo``, ``slope_hi``,
    ``n_seeds``, and the cost columns ``flops``, ``latency_ms``, ``unstable`` of its rows."""
    if frame.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(df["label"]))
    out = []
    for label, part in sorted(frame.groupby("label", sort=False), key=lambda kv: order.index(kv[0])):
        per_seed = part.pivot_table(index="seed", columns="d", values="acc")
        by_d = {int(d): _mean_ci(per_seed[d].dropna()) for d in per_seed.columns}
        reaches = [_reach_of(row.dropna()) for _, row in per_seed.iterrows()]
        learned = [r > 0 for r in reaches]
        kept = per_seed[np.array(learned)]  # the trainings that learned, for the plot
        by_d_learned = {int(d): _mean_ci(kept[d].dropna()) for d in kept.columns} if len(kept) else {}
        ds = np.array(per_seed.columns, dtype=float)
        slopes = [float(np.polyfit(ds, row.to_numpy(float), 1)[0]) for _, row in per_seed.iterrows()]
        rows = df[(df["label"] == label) & (df["status"] == "ok")]
        reach, lo, hi = _mean_ci([r for r, ok in zip(reaches, learned) if ok])
        lo, hi = max(lo, 0.0), min(hi, float(max(by_d)))  # a reach lies in [0, the farthest d]
        slope, slo, shi = _mean_ci([v for v, ok in zip(slopes, learned) if ok])
        first = part.iloc[0]
        out.append(
            {
                "label": label,
                "mechanism": first["mechanism"],
                "n_win": first["n_win"],
                "topk": first["topk"],
                "by_d": by_d,
                "by_d_learned": by_d_learned,
                "reach": reach,
                "reach_lo": lo,
                "reach_hi": hi,
                "reaches": sorted(reaches, reverse=True),
                "learned": sum(learned),
                "slope": slope,
                "slope_lo": slo,
                "slope_hi": shi,
                "n_seeds": len(per_seed),
                "n_per_d": sorted({int(n) for n in part["n"]}),
                "flops": pd.to_numeric(rows.get("flops"), errors="coerce").median(),
                "latency_ms": pd.to_numeric(rows.get("latency_ms"), errors="coerce").median(),
                "unstable": bool(pd.to_numeric(rows.get("unstable"), errors="coerce").fillna(0).any()),
            }
        )
    return pd.DataFrame(out)


def _interval(mean: float, lo: float, hi: float, digits: int) -> str:
    if not math.isfinite(mean):
        return DASH
    text = f"{mean:.{digits}f}"
    return f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else text


def reach_tables(summary: pd.DataFrame, df: pd.DataFrame) -> list[Table]:
    """Two tables: accuracy at each distance (means over seeds), and each configuration's reach and
    slope with their intervals beside its FLOPs and latency."""
    if summary.empty:
        return []
    tex_of = latex_labels(df)
    ds = sorted({d for by_d in summary["by_d"] for d in by_d})
    label_cells = [Tex(lab, tex_of.get(lab, latex_escape(lab))) for lab in summary["label"]]
    seeds = sorted(set(summary["n_seeds"]))
    seeds_text = f"{seeds[0]} seeds" if len(seeds) == 1 else "seeds as listed"
    by_distance = Table(
        name="reach_by_distance",
        caption=f"Accuracy (%) at each distance d (tokens, Chebyshev) between the two marked glyphs; "
        f"mean over {seeds_text}",
        header=["Configuration", *(f"d={d}" for d in ds)],
        rows=[
            [cell, *(f"{r.by_d[d][0]:.1f}" if d in r.by_d else DASH for d in ds)]
            for cell, r in zip(label_cells, summary.itertuples())
        ],
        note=f"Chance is 50 %. Each training's accuracy at d is over the validation images at d "
        f"({_per_d(summary)}); the 95 % intervals over seeds are drawn in reach_vs_distance.",
    )
    rows = []
    for cell, r in zip(label_cells, summary.itertuples()):
        latency = f"{r.latency_ms:.2f}" + ("†" if r.unstable else "") if math.isfinite(r.latency_ms) else DASH
        rows.append(
            [
                cell,
                f"{r.learned}/{r.n_seeds}",
                _interval(r.reach, r.reach_lo, r.reach_hi, 1),
                " ".join(str(x) if x else DASH for x in r.reaches),
                _interval(r.slope, r.slope_lo, r.slope_hi, 1),
                f"{r.flops / 1e6:.2f}" if math.isfinite(r.flops) else DASH,
                latency,
            ]
        )
    summary_table = Table(
        name="reach_summary",
        caption=f"Reach (tokens) and fall-off with distance per configuration ({seeds_text}), beside "
        "its cost",
        header=[
            "Configuration",
            "Learned",
            "Reach (tokens)",
            "Per seed",
            "Slope (points/token)",
            "FLOPs (MMACs)",
            "Latency (ms)",
        ],
        rows=rows,
        note=f"Reach of a training: the largest d up to which its accuracy is at least {REACH_LEVEL:g} % at "
        "every distance (0: not even the nearest). Slope: least-squares slope of its accuracy over d. "
        "[a, b]: 95 % Student interval over seeds. FLOPs: multiply-accumulates of one image (fvcore, "
        "batch 1). Learned: trainings at or above that level at the nearest distance; reach and slope "
        "are over them (per seed, —: not learned). Latency: median, batch 1, one thread"
        + (f". {UNSTABLE_NOTE}" if summary["unstable"].any() else "."),
    )
    return [by_distance, summary_table]


def _per_d(summary: pd.DataFrame) -> str:
    """How many validation images each distance holds, from the rows."""
    counts = sorted({n for ns in summary["n_per_d"] for n in ns})
    return (
        f"{counts[0]} images per distance"
        if len(counts) == 1
        else f"{counts[0]}-{counts[-1]} images per distance"
    )


def reach_findings(summary: pd.DataFrame) -> Doc:
    """One line per configuration: its reach and where its accuracy falls, in words."""
    doc = Doc()
    if summary.empty:
        return doc
    doc.para(
        f"**Reach** (exploratory readings beside the declared contrasts): the largest distance up to which a "
        f"training stays at or above {REACH_LEVEL:g} % at every distance, mean [95 % CI] over the "
        "trainings that learned (at or above it at the nearest distance; —: a seed that did not)."
    )
    lines = []
    for r in summary.itertuples():
        near, far = min(r.by_d), max(r.by_d)
        seeds = ", ".join(str(x) if x else DASH for x in r.reaches)
        if not r.learned:
            lines.append(
                f"{r.label}: learned in none of {r.n_seeds} seeds ({r.by_d[near][0]:.1f} % at d = {near}, "
                f"{r.by_d[far][0]:.1f} % at d = {far}): no reading of its reach"
            )
            continue
        lines.append(
            f"{r.label}: learned {r.learned} of {r.n_seeds}; reach "
            f"{_interval(r.reach, r.reach_lo, r.reach_hi, 1)} tokens (seeds: "
            f"{seeds}); {r.by_d[near][0]:.1f} % at d = {near}, "
            f"{r.by_d[far][0]:.1f} % at d = {far}; slope {_interval(r.slope, r.slope_lo, r.slope_hi, 1)} "
            "points per token"
        )
    doc.bullets(lines)
    return doc


# --- plots ---------------------------------------------------------------------------------------


def _summary_for_plot(df: pd.DataFrame, manifest: dict[str, Any] | None) -> pd.DataFrame:
    if not is_reach_run(df):
        return pd.DataFrame()
    return reach_summary(distance_frame(df, manifest), df)


def _is_bra_grid(r: Any) -> bool:
    return r.mechanism == "bra" and pd.notna(r.n_win) and pd.notna(r.topk)


def plot_reach_vs_distance(
    df: pd.DataFrame, manifest: dict[str, Any] | None = None, *, styles_of: Callable[[pd.DataFrame], dict]
) -> Figure | None:
    """Accuracy against distance, one line per configuration with its 95 % band over seeds: the
    mechanisms (left; BRA at the preset's S and k) and BRA over S and k (right)."""
    summary = _summary_for_plot(df, manifest)
    if summary.empty:
        return None
    styles = styles_of(df[df["label"].isin(set(summary["label"]))])
    bra = summary[[_is_bra_grid(r) for r in summary.itertuples()]]
    others = summary[[not _is_bra_grid(r) for r in summary.itertuples()]]
    default = _default_bra(bra)
    if default is not None:
        others = pd.concat([others, bra[bra["label"] == default]])
    panels = [("Each mechanism", others)] + (
        [("BRA over S (n_win) and k (topk)", bra)] if len(bra) > 1 else []
    )
    height = 4.0 * len(panels) + 0.6
    fig = Figure(figsize=(7.0, height))
    axes = fig.subplots(len(panels), 1, squeeze=False).ravel()
    fig.subplots_adjust(left=0.1, right=0.66, top=1 - 0.7 / height, bottom=0.5 / height, hspace=0.35)
    for ax, (title, part) in zip(axes, panels):
        for r in part.itertuples():
            by_d = r.by_d_learned or r.by_d  # none learned: the mean of every training, thin
            ds = sorted(by_d)
            mean = np.array([by_d[d][0] for d in ds])
            lo = np.array([by_d[d][1] for d in ds])
            hi = np.array([by_d[d][2] for d in ds])
            st = styles[r.label]
            label = f"{r.label} ({r.learned}/{r.n_seeds})"
            ax.plot(ds, mean, ms=4, lw=1.4 if r.learned else 0.7, label=label, **st.kwargs())
            if np.isfinite(lo).all():
                ax.fill_between(
                    ds, np.clip(lo, 0, 100), np.clip(hi, 0, 100), color=st.color, alpha=0.12, lw=0
                )
        ax.axhline(50, color="grey", ls=":", lw=1)
        ax.axhline(REACH_LEVEL, color="grey", ls="--", lw=0.8)
        ax.set_ylim(35, 102)
        ax.set_xlabel("distance d between the marked glyphs (tokens)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    fig.suptitle(
        "Accuracy against distance: mean over the trainings that learned (k/n in the legend; thin: "
        "none did,\nthe mean of all), band 95 % CI over them; dotted: chance, dashed: "
        f"{REACH_LEVEL:g} %",
        fontsize=10,
    )
    return fig


def _default_bra(bra: pd.DataFrame) -> str | None:
    """The BRA configuration of the preset (S = 4, k = 4) where the run has it, else the first."""
    if bra.empty:
        return None
    hit = bra[(bra["n_win"].astype(float) == 4) & (bra["topk"].astype(float) == 4)]
    return str((hit if not hit.empty else bra).iloc[0]["label"])


def plot_reach_bra(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> Figure | None:
    """BRA's mean reach over S x k (left) beside its FLOPs (right)."""
    summary = _summary_for_plot(df, manifest)
    bra = summary[[_is_bra_grid(r) for r in summary.itertuples()]] if not summary.empty else summary
    if bra.empty or bra["n_win"].nunique() < 2 and bra["topk"].nunique() < 2:
        return None
    s_values = sorted({int(float(v)) for v in bra["n_win"]})
    k_values = sorted({int(float(v)) for v in bra["topk"]})
    grids = {name: np.full((len(s_values), len(k_values)), np.nan) for name in ("reach", "flops")}
    learned = np.full((len(s_values), len(k_values)), "", dtype=object)
    for r in bra.itertuples():
        i, j = s_values.index(int(float(r.n_win))), k_values.index(int(float(r.topk)))
        grids["reach"][i, j] = r.reach
        grids["flops"][i, j] = r.flops / 1e6
        learned[i, j] = f"{r.learned}/{r.n_seeds} learned"
    fig = Figure(figsize=(9.6, 1.4 + 1.1 * len(s_values)))
    axes = fig.subplots(1, 2)
    far = max(max(b) for b in bra["by_d"])
    for ax, (name, title, fmt, cmap, vmax) in zip(
        axes,
        [
            (
                "reach",
                f"reach (tokens, of {far}): mean over the trainings that learned",
                "{:.1f}",
                "viridis",
                far,
            ),
            ("flops", "FLOPs (MMACs, fvcore, one image)", "{:.2f}", "magma_r", None),
        ],
    ):
        grid = grids[name]
        colours = matplotlib.colormaps[cmap].with_extremes(bad="#dddddd")
        im = ax.imshow(
            np.ma.masked_invalid(grid),
            cmap=colours,
            vmin=0 if name == "reach" else None,
            vmax=vmax,
            aspect="auto",
        )
        for i in range(len(s_values)):
            for j in range(len(k_values)):
                value = grid[i, j]
                text = fmt.format(value) if np.isfinite(value) else DASH
                if name == "reach" and learned[i, j]:
                    text += f"\n{learned[i, j]}"
                dark = np.isfinite(value) and (
                    im.norm(value) < 0.5 if name == "reach" else im.norm(value) > 0.5
                )
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(k_values)), [str(k) for k in k_values])
        ax.set_yticks(range(len(s_values)), [str(s) for s in s_values])
        ax.set_xlabel("k (regions routed, topk)")
        ax.set_ylabel("S (regions per side, n_win)")
        ax.set_title(title, fontsize=9)
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("BRA's reach over S and k, beside its cost", fontsize=10)
    fig.tight_layout()
    return fig


def plot_reach_vs_cost(
    df: pd.DataFrame, manifest: dict[str, Any] | None = None, *, styles_of: Callable[[pd.DataFrame], dict]
) -> Figure | None:
    """Mean reach (bars: 95 % CI over seeds) against FLOPs (left) and latency (right), with the
    Pareto front (dashed): what each token of reach costs."""
    summary = _summary_for_plot(df, manifest)
    if summary.empty:
        return None
    styles = styles_of(df[df["label"].isin(set(summary["label"]))])
    costs = [
        ("flops", 1e6, "FLOPs (MMACs, fvcore, one image)"),
        ("latency_ms", 1.0, "median latency (ms, batch 1, one thread)"),
    ]
    costs = [c for c in costs if summary[c[0]].notna().any()]
    fig = Figure(figsize=(4.6 * len(costs) + 2.4, 4.3))
    axes = fig.subplots(1, len(costs), squeeze=False).ravel()
    handles = {}
    for ax, (col, div, xlabel) in zip(axes, costs):
        x = summary[col].to_numpy(float) / div
        y = summary["reach"].fillna(0.0).to_numpy(float)  # none learned: drawn hollow at 0
        for r, xi in zip(summary.itertuples(), x):
            st = styles[r.label]
            if not r.learned:
                h = ax.plot(xi, 0.0, ls="none", ms=6, color=st.color, marker=st.marker, fillstyle="none")[0]
                handles.setdefault(f"{r.label} (none learned)", h)
                continue
            err = [[r.reach - r.reach_lo], [r.reach_hi - r.reach]] if math.isfinite(r.reach_lo) else None
            h = ax.errorbar(
                xi,
                r.reach,
                yerr=err,
                ls="none",
                ms=6,
                capsize=2,
                color=st.color,
                marker=st.marker,
                fillstyle=st.fillstyle,
            )
            handles.setdefault(r.label, h)
        front = stats.pareto_front(list(x), list(summary["reach"].to_numpy(float)))  # the learned only
        ax.set_ylim(-0.4, max(summary["by_d"].map(max)) + 0.6)
        if len(front) > 1:
            ax.plot(x[front], y[front], ls="--", color="grey", lw=1, zorder=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("reach (tokens)")
        ax.set_title(f"Reach against {xlabel.split(' (')[0]}", fontsize=10)
    fig.suptitle(
        "What reach costs: mean reach over the trainings that learned (bars: 95 % CI); hollow: none "
        "learned; dashed: Pareto front",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7, frameon=False)
    return fig
