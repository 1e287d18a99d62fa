"""The report of an ablation run (``kind: ablation``): the outcome analysis first (did each training
learn; :mod:`attnbench.kinds.ablation.analysis`), then, secondary and exploratory, the mean top-1 with
confidence intervals and paired differences against a baseline.

An ablation row is one trained backbone: a configuration (mechanism and its parameter values,
labelled as everywhere in the report, e.g. ``BRA (S=4, k=4)``), a seed and a dataset level
(``level``, ordered by ``level_index``). The trainings are bimodal (each learns or stays near
chance), so a mean over seeds describes neither mode; the primary statistics count learned
trainings (:mod:`attnbench.kinds.ablation.analysis`). The secondary ones are kept: per level and
configuration, :func:`ablation_summary` gives the mean top-1 over the seeds with its 95 % interval
and the paired difference against the baseline (``conditions.baseline`` of the manifest; else
``vanilla`` where the run has it, else its first mechanism), both from :mod:`attnbench.stats`:

- rows with per-image results (``val_correct``, ``val_n``): the Student interval over seeds and
  validation images, the difference paired image by image and seed by seed;
- older rows without them: the Student interval over seeds alone, and with fewer than
  :data:`attnbench.stats.MIN_SEEDS` seeds no interval (mean ± std instead), as the table note says.

:func:`ablation_tables` writes one such (secondary) table per level, :func:`ablation_findings` the
summary's sentences (the outcome findings first when given the outcome analysis),
:func:`method_text` the method paragraph; the plots are in :mod:`attnbench.report.plots` and read
:func:`ablation_summary`, :func:`learning_curves` and :mod:`attnbench.kinds.ablation.analysis`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from attnbench import stats
from attnbench.report._document import Doc, Table, Tex, latex_escape
from attnbench.report._results import UNSTABLE_NOTE, decimals_for, latex_labels, plain, scaled_unit

__all__ = [
    "ablation_findings",
    "ablation_summary",
    "ablation_tables",
    "baseline_mechanism",
    "learning_curves",
    "method_text",
]

DASH = "—"


def baseline_mechanism(df: pd.DataFrame, manifest: dict[str, Any] | None = None) -> tuple[str, str]:
    """The baseline's mechanism name and where it came from: the manifest's ``conditions.baseline``
    when the run has rows of it; else ``vanilla`` if present; else the run's first mechanism."""
    names = list(dict.fromkeys(str(m) for m in df["mechanism"])) if not df.empty else []
    given = ((manifest or {}).get("conditions") or {}).get("baseline")
    if given and given in names:
        return str(given), "the study's baseline"
    why = f"the study's baseline {given!r} has no rows, so " if given else "the run names no baseline, so "
    if "vanilla" in names:
        return "vanilla", why + "vanilla"
    if names:
        return names[0], why + "its first mechanism"
    return "", why + "none"


def _levels(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: its level's label and position (``level`` and ``level_index``; older rows: dataset
    and resolution, in the order they appear)."""
    if "level" in df.columns and df["level"].notna().any():
        label = df["level"].astype("string").fillna("")
    else:
        name = df["dataset"].astype(str) if "dataset" in df.columns else pd.Series("data", index=df.index)
        side = df["resolution"] if "resolution" in df.columns else df.get("H")
        label = name + ("" if side is None else ", " + side.map(lambda v: f"{plain(v)} px"))
    order = {lv: i for i, lv in enumerate(dict.fromkeys(label))}
    if "level_index" in df.columns and pd.to_numeric(df["level_index"], errors="coerce").notna().all():
        index = pd.to_numeric(df["level_index"]).astype(int)
    else:
        index = label.map(order).astype(int)
    return label.astype(str), index


def _seed(row: pd.Series, fallback: int) -> Any:
    value = row.get("seed")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return fallback
    return int(value) if math.isfinite(value) and value.is_integer() else fallback


def _per_image(rows: pd.DataFrame) -> tuple[dict[int, dict[Any, np.ndarray]] | None, str]:
    """Per row index of ``rows`` (ok rows of one level) its decoded per-image results, or None and
    why the level falls back to seeds only."""
    if "val_correct" not in rows.columns or "val_n" not in rows.columns:
        return None, "no row stores val_correct, as in runs made before it was stored"
    texts = rows["val_correct"]
    ns = pd.to_numeric(rows["val_n"], errors="coerce")
    have = texts.notna() & (texts.astype(str).str.len() > 0) & ns.notna()
    if not have.all():
        return None, f"{int((~have).sum())} of {len(rows)} rows store no val_correct"
    if ns.nunique() != 1:
        return None, f"the rows hold different numbers of validation images ({sorted(set(ns.astype(int)))})"
    out = {}
    for i, text, n in zip(rows.index, texts, ns):
        try:
            out[i] = stats.decode_correct(str(text), int(n))
        except ValueError as e:
            return None, f"a row's val_correct cannot be read: {e}"
    return out, ""


def ablation_summary(
    df: pd.DataFrame,
    baseline: str | None = None,
    *,
    manifest: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per (level, configuration): mean top-1 with its 95 % interval, the difference to the
    baseline with its interval, cost and speed.

    Args:
        df: the run's rows with a ``label`` column (:func:`attnbench.report._results.mechanism_labels`).
        baseline: the baseline's mechanism name (its first configuration is the baseline); default:
            :func:`baseline_mechanism` (the manifest's, else ``vanilla``, else the first mechanism).
        manifest: the run's ``manifest.json``, for ``conditions.baseline``.

    Returns:
        Columns ``level``, ``level_index``, ``label``, ``mechanism``, ``is_baseline``, ``status``
        (``ok`` or why there is no number), ``n_seeds``, ``n_images``, ``method``, ``top1``, ``lo``,
        ``hi``, ``std``, ``diff``, ``diff_lo``, ``diff_hi``, ``resolved``, ``sentence``, ``flops``,
        ``params``, ``latency_ms``, ``unstable``, and the :class:`attnbench.stats.Estimate` and
        :class:`attnbench.stats.Difference` objects (``estimate``, ``difference``). ``attrs`` holds
        ``baseline`` (its label), ``baseline_why`` and ``fallback`` (level -> why seeds only).
    """
    columns = [
        *("level", "level_index", "label", "mechanism", "is_baseline", "status", "n_seeds", "n_images"),
        *("method", "top1", "lo", "hi", "std", "diff", "diff_lo", "diff_hi", "resolved", "sentence"),
        *("flops", "params", "latency_ms", "unstable", "estimate", "difference"),
    ]
    if df.empty:
        return pd.DataFrame(columns=columns)
    if baseline is None:
        baseline, why = baseline_mechanism(df, manifest)
    else:
        why = "the baseline asked for"
    df = df.copy()
    df["level_"], df["level_index_"] = _levels(df)
    labels = list(dict.fromkeys(df["label"].astype(str)))
    base_rows = df[df["mechanism"] == baseline]
    base_label = str(base_rows["label"].iloc[0]) if not base_rows.empty else ""
    out, fallback = [], {}
    for (index, level), rows in df.groupby(["level_index_", "level_"], sort=True):
        ok = rows[(rows["status"] == "ok") & pd.to_numeric(rows["top1"], errors="coerce").notna()]
        images, why_not = _per_image(ok) if not ok.empty else (None, "")
        if images is None and why_not:
            fallback[level] = why_not
        runs: dict[str, dict[Any, Any]] = {}
        for label in labels:
            mine = ok[ok["label"].astype(str) == label]
            seeds: dict[Any, Any] = {}
            for k, (i, r) in enumerate(mine.iterrows()):  # a seed run twice: the last row counts
                seeds[_seed(r, k)] = images[i] if images is not None else float(r["top1"])
            runs[label] = seeds
        base = runs.get(base_label) or {}
        for label in labels:
            mine = rows[rows["label"].astype(str) == label]
            if mine.empty:
                continue
            seeds = runs[label]
            entry: dict[str, Any] = dict.fromkeys(columns, math.nan)
            entry.update(
                level=level,
                level_index=int(index),
                label=label,
                mechanism=str(mine["mechanism"].iloc[0]),
                is_baseline=label == base_label,
                n_seeds=len(seeds),
                estimate=None,
                difference=None,
                sentence="",
                resolved=False,
                unstable=_unstable(mine[mine["status"] == "ok"]),
            )
            for col in ("flops", "params", "latency_ms"):
                values = pd.to_numeric(mine[col], errors="coerce") if col in mine.columns else pd.Series()
                entry[col] = float(values.mean()) if values.notna().any() else math.nan
            if not seeds:
                entry["status"] = _status_word(mine)
                out.append(entry)
                continue
            entry["status"] = "ok"
            if images is not None:
                est = stats.accuracy_ci(seeds)
            else:
                est = stats.seed_accuracy_ci(seeds)
            entry.update(
                estimate=est,
                method=est.method,
                n_images=est.n_images,
                top1=est.mean,
                lo=est.lo,
                hi=est.hi,
                std=est.std,
            )
            if label != base_label and base and set(seeds) & set(base):
                if images is not None:
                    d = stats.paired_difference(seeds, base)
                else:
                    d = stats.seed_difference(seeds, base)
                entry.update(
                    difference=d,
                    diff=d.diff,
                    diff_lo=d.lo,
                    diff_hi=d.hi,
                    resolved=d.resolved,
                    sentence=stats.sentence(d, label, base_label),
                )
            elif label != base_label:
                entry["sentence"] = (
                    f"{label} vs {base_label}: no baseline run at this level"
                    if not base
                    else f"{label} vs {base_label}: no seed in common"
                )
            out.append(entry)
    summary = pd.DataFrame(out, columns=columns)
    summary.attrs.update(
        baseline=base_label, baseline_mechanism=baseline, baseline_why=why, fallback=fallback
    )
    return summary


def _unstable(rows: pd.DataFrame) -> bool:
    if "unstable" not in rows.columns or "latency_ms" not in rows.columns:
        return False
    timed = rows[pd.to_numeric(rows["latency_ms"], errors="coerce").notna()]
    return bool(timed["unstable"].astype(str).isin(["1", "1.0", "True", "true"]).any())


def _status_word(rows: pd.DataFrame) -> str:
    statuses = sorted(set(rows["status"].astype(str)) - {"ok"})
    return "/".join(statuses) if statuses else "no top-1"


def _cell(value: float, lo: float, hi: float, std: float, digits: int = 1, sign: bool = False) -> str:
    """``64.3 [62.1, 66.4]`` with an interval, ``61.0 ± 0.4`` without one, ``61.0`` with neither."""
    text = stats.signed(value, digits, sign)
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{text} [{stats.signed(lo, digits)}, {stats.signed(hi, digits)}]"
    if math.isfinite(std):
        return f"{text} ± {std:.{digits}f}"
    return text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "level"


def ablation_tables(summary: pd.DataFrame, df: pd.DataFrame) -> list[Table]:
    """One table per level: each configuration's top-1 with its 95 % interval, its difference to
    the baseline with its interval and whether it is resolved, FLOPs, parameters and latency.

    Args:
        summary: :func:`ablation_summary`'s frame.
        df: the rows it was made from (for the LaTeX labels).
    """
    if summary.empty:
        return []
    tex_of = latex_labels(df)
    base = summary.attrs.get("baseline", "")
    tables = []
    for (level, _), part in summary.groupby(["level", "level_index"], sort=False):
        part = pd.concat([part[part["is_baseline"]], part[~part["is_baseline"]]])
        seeds = sorted({int(n) for n in part["n_seeds"] if n})
        columns: list[tuple[str, list[str], list[bool]]] = []
        if len(seeds) > 1:
            columns.append(("Seeds", [str(int(n)) for n in part["n_seeds"]], [False] * len(part)))
        top = [_cell(r.top1, r.lo, r.hi, r.std) if r.status == "ok" else r.status for r in part.itertuples()]
        columns.append(("Top-1 (%)", top, [False] * len(part)))
        delta, resolved, bold = [], [], []
        for r in part.itertuples():
            if r.is_baseline:
                delta.append("baseline")
                resolved.append(DASH)
            elif isinstance(r.difference, stats.Difference):
                d = r.difference
                delta.append(_cell(d.diff, d.lo, d.hi, math.nan, sign=True))
                resolved.append(("yes" if d.resolved else "no") if d.has_ci else DASH)
            else:
                delta.append(DASH)
                resolved.append(DASH)
            bold.append(bool(r.resolved))
        columns.append(("Δ top-1 (points)", delta, bold))
        columns.append(("Resolved", resolved, [False] * len(part)))
        for col, title, unit, note in (
            ("flops", "FLOPs", "MACs", "fvcore"),
            ("params", "Params", "", ""),
            ("latency_ms", "Latency", "ms", "median"),
        ):
            values = [float(v) for v in part[col]]
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                continue
            div, shown = scaled_unit(max(finite), unit) if col != "latency_ms" else (1.0, unit)
            digits = decimals_for([v / div for v in finite])
            cells = []
            for v, shaky in zip(values, part["unstable"]):
                text = f"{v / div:.{digits}f}" if math.isfinite(v) else DASH
                cells.append(text + ("†" if col == "latency_ms" and shaky and math.isfinite(v) else ""))
            inner = ", ".join(p for p in (shown, note) if p)
            columns.append((f"{title} ({inner})" if inner else title, cells, [False] * len(part)))
        rows = [
            [Tex(r.label, tex_of.get(r.label, latex_escape(r.label))), *(c[1][j] for c in columns)]
            for j, r in enumerate(part.itertuples())
        ]
        bold_rows = [[False, *(c[2][j] for c in columns)] for j in range(len(part))]
        n_images = {int(n) for n in part["n_images"] if pd.notna(n)}
        what = f"{seeds[0]} seed{'s' if seeds[0] != 1 else ''}" if len(seeds) == 1 else "seeds as listed"
        if n_images:
            what += f", {max(n_images)} validation images"
        tables.append(
            Table(
                name=f"ablation_{_slug(str(level))}",
                caption=f"Secondary (exploratory): mean top-1 on {level} ({what}); Δ: difference to {base}",
                header=["Configuration", *(c[0] for c in columns)],
                rows=rows,
                bold=bold_rows,
                align="l" + "r" * len(columns),
                note=_table_note(part, summary, str(level)),
            )
        )
    return tables


def _table_note(part: pd.DataFrame, summary: pd.DataFrame, level: str) -> str:
    base = summary.attrs.get("baseline", "")
    method = set(part["method"].dropna()) - {math.nan}
    parts = []
    if stats.IMAGES_AND_SEEDS in method:
        parts.append(
            "[a, b]: 95 % interval over seeds and validation images (each part with its own Student "
            "quantile, method under Run); Δ is paired with the baseline seed by seed and image by image."
        )
    else:
        why = summary.attrs.get("fallback", {}).get(level, "no per-image results")
        parts.append(
            f"Seeds only ({why}): [a, b] is the 95 % Student interval over seeds where a configuration "
            f"has at least {stats.MIN_SEEDS}; ± is the "
            "standard deviation over seeds where it has fewer (no interval, nothing resolved)."
        )
    parts.append(
        f"Δ: top-1 minus {base}'s, in points; resolved (bold): its interval excludes 0. FLOPs: "
        "multiply-accumulates of one image (batch 1), fvcore convention (1 MAC = 1 FLOP)."
    )
    if part["unstable"].any():
        parts.append(UNSTABLE_NOTE)
    return " ".join(parts)


def ablation_findings(summary: pd.DataFrame, *, quiet_when_empty: bool = False) -> Doc:
    """The summary's secondary, exploratory lines: every configuration against the baseline in words
    (``X beats Y by d points (95 % CI a–b)``, or not resolved), per level. No configuration is named
    most accurate here: only the outcome analysis (:func:`attnbench.kinds.ablation.analysis.report_findings`,
    which puts its own lines first) names a best one, and only when resolved."""
    doc = Doc()
    if summary.empty:
        if not quiet_when_empty:
            doc.para("No ablation row to summarise.")
        return doc
    base = summary.attrs.get("baseline", "")
    why = summary.attrs.get("baseline_why", "")
    doc.para(
        "**Secondary (exploratory): mean top-1.** These intervals describe the mean over seeds of "
        "bimodal trainings, which no training need reach; they support no claim on their own. "
        f"Each configuration against **{base}** ({why}), per dataset level: a difference is resolved "
        "when its 95 % interval excludes 0 (method under Run)."
    )
    for (level, _), part in summary.groupby(["level", "level_index"], sort=False):
        lines = [s for s in part["sentence"] if s]
        lines += [f"{r.label}: {r.status}, no top-1" for r in part.itertuples() if r.status != "ok"]
        if not lines:
            continue
        doc.para(f"**{level}**:")
        doc.bullets(lines)
    return doc


def method_text(summary: pd.DataFrame) -> str:
    """The secondary method paragraph: what the accuracy interval covers, how it is computed, the
    pairing, the fallback (:func:`attnbench.kinds.ablation.analysis.report_method` puts the outcome
    statistics before it)."""
    base = summary.attrs.get("baseline", "the baseline") if not summary.empty else "the baseline"
    text = (
        "Secondary, exploratory statistics (attnbench.stats): a top-1 is the mean over seeds of each "
        "seed's top-1 on the level's validation images (the same images, in the same order, for every "
        "configuration and seed of a level). Its 95 % interval covers both sources of chance, each part "
        "with its own Student quantile: the seeds (the variance of the per-seed top-1 over the number of "
        "seeds; with 3 seeds t = 4.30) and the images (the variance over images of each image's result "
        "averaged over the seeds, over the number of images); the half-width is the square root of the "
        f"sum of t² × part. Δ is a configuration's top-1 minus {base}'s, paired: the same parts computed "
        "on the per-image differences, seed s with seed s and image i with image i, so that what the two "
        "share (hard images, the seed) cancels; only the seeds both have are paired, and the sentences "
        "name any left out. A difference is resolved when its 95 % interval excludes 0. (In simulations "
        "of two identical mechanisms over 3 seeds this calls at most 5 % of differences resolved; the "
        "percentile bootstrap over seeds and images used before called up to 27 %.) The mean of bimodal "
        "trainings is no training's accuracy, so these intervals support no claim on their own."
    )
    fallback = summary.attrs.get("fallback", {}) if not summary.empty else {}
    if fallback:
        levels = "; ".join(f"{lv}: {why}" for lv, why in fallback.items())
        text += (
            f" Levels without per-image results [{levels}] get the Student interval over seeds only, "
            f"and with fewer than {stats.MIN_SEEDS} seeds no interval: mean ± standard deviation over seeds, "
            "and no difference is called resolved."
        )
    return text


def learning_curves(df: pd.DataFrame) -> pd.DataFrame:
    """The rows' learning curves (``curve``: JSON list of [epoch, top-1]) as one row per (level,
    configuration, seed, epoch), with columns ``level``, ``level_index``, ``label``, ``mechanism``,
    ``seed``, ``epoch``, ``top1``; empty when the run stored none."""
    columns = ["level", "level_index", "label", "mechanism", "seed", "epoch", "top1"]
    if "curve" not in df.columns or df.empty:
        return pd.DataFrame(columns=columns)
    level, index = _levels(df)
    out = []
    for k, (i, r) in enumerate(df.iterrows()):
        if r.get("status") != "ok" or not isinstance(r["curve"], str) or not r["curve"].strip():
            continue
        try:
            points = json.loads(r["curve"])
        except ValueError:
            continue
        for point in points if isinstance(points, list) else []:
            try:
                epoch, top1 = float(point[0]), float(point[1])
            except (TypeError, ValueError, IndexError):
                continue
            out.append(
                [level[i], int(index[i]), str(r["label"]), str(r["mechanism"]), _seed(r, k), epoch, top1]
            )
    return pd.DataFrame(out, columns=columns)
