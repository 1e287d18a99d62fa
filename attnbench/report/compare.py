"""``attnbench compare RUN_A RUN_B``: what changed between two runs of a sweep study, beyond noise.

A user who changes a mechanism, upgrades torch or moves to another machine asks what changed. This
module matches the rows of two run folders on their point and says, per point and pass:

- **latency**: the ratio B / A of the medians, with a 95 % interval from a bootstrap of the stored
  timing samples (each run's samples resampled with replacement, :data:`RESAMPLES` times from a
  fixed seed; the interval is the 2.5 and 97.5 percentiles of the resampled ratio of medians). The
  verdict is **slower** when the interval excludes 1 *and* the ratio is beyond ``1 + threshold`` (a
  difference both real and large enough to matter); **faster** the other way; otherwise **within
  noise**. Rows with fewer than :data:`MIN_SAMPLES` samples on either side get no verdict.
- **memory**: peak memory is one measurement per row, so its ratio has no interval; it is
  **changed** when it moves by more than the threshold.
- **FLOPs and parameters** are counts, not measurements: they must be equal, and any difference is
  reported as a finding (the mechanism itself changed, or the counter did).

Rows are matched on the point: mechanism, its parameters, H, W, C, heads, batch, dtype, pass and
compile mode (the ``point_id`` also hashes the machine, so it differs between machines by design).
Two runs measured under different protocols (threads, repeats, warmup, device type, measured
quantities) are not compared unless asked (``allow_protocol_change``), and then the difference is
printed above the table: a ratio between a 1-thread and a 2-thread run says more about threads than
about the change.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench.report._document import Doc, Table
from attnbench.report._results import (
    latency_samples,
    load_manifest,
    load_results,
    mechanism_labels,
    parameter_columns,
    plain,
)

__all__ = [
    "MIN_SAMPLES",
    "RESAMPLES",
    "THRESHOLD",
    "CompareError",
    "Comparison",
    "compare_runs",
    "protocol_of",
    "ratio_interval",
    "summary_lines",
    "write_comparison",
]

THRESHOLD = 0.05  # a ratio within 1 +- 5 % is no change worth a verdict, whatever the interval
RESAMPLES = 2000  # bootstrap resamples of each row's timing samples
LEVEL = 0.95
MIN_SAMPLES = 3  # timing samples a row needs on each side for an interval
SHAPE_COLUMNS = ("H", "W", "C", "num_heads", "batch", "dtype", "pass", "compile")
PROTOCOL_KEYS = ("threads", "repeats", "warmup", "measure", "passes")


class CompareError(ValueError):
    """Two runs that cannot be compared; the message says why and what to do."""


def protocol_of(run_dir: Path, df: pd.DataFrame) -> dict[str, Any]:
    """What a ratio between two runs depends on besides the change: threads, repeats, warmup, the
    measured quantities and passes (from the manifest's ``protocol``) and the device type (from the
    rows)."""
    manifest = load_manifest(run_dir)
    protocol = manifest.get("protocol") if isinstance(manifest.get("protocol"), dict) else {}
    out = {k: protocol.get(k) for k in PROTOCOL_KEYS if k in protocol}
    if "threads" not in out and "threads" in df.columns and df["threads"].notna().any():
        out["threads"] = int(df["threads"].dropna().iloc[0])
    if "device" in df.columns:
        out["device type"] = sorted({str(d).split(":")[0] for d in df["device"] if str(d)})
    return out


def ratio_interval(
    a: Sequence[float], b: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """(median(b) / median(a), low, high): the ratio of medians and its bootstrap interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ratio = float(np.median(y) / np.median(x))
    rng = np.random.default_rng(seed)
    mx = np.median(rng.choice(x, size=(resamples, x.size), replace=True), axis=1)
    my = np.median(rng.choice(y, size=(resamples, y.size), replace=True), axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(my / mx, [tail, 1 - tail])
    return ratio, float(lo), float(hi)


def _verdict(ratio: float, lo: float, hi: float, threshold: float) -> str:
    if lo > 1 and ratio > 1 + threshold:
        return "slower"
    if hi < 1 and ratio < 1 - threshold:
        return "faster"
    return "within noise"


@dataclasses.dataclass
class Comparison:
    """The matched rows of two runs and what changed.

    Attributes:
        a, b: the run folders.
        protocol_a, protocol_b: :func:`protocol_of` each; ``protocol_changes``: the keys that differ.
        rows: one per matched (point, pass): ``label``, ``shape`` (``H×W, C, heads, batch, dtype,
            pass``), ``n_a``, ``n_b`` (timing samples), ``latency_a``, ``latency_b`` (medians, ms),
            ``ratio``, ``lo``, ``hi``, ``verdict``; ``mem_ratio``, ``mem_verdict``;
            ``flops_a``, ``flops_b``, ``params_a``, ``params_b``, ``counts`` (``equal`` or what differs).
        only_a, only_b: labels of the ok rows with no match in the other run.
        threshold: the smallest ratio change that counts (a fraction).
    """

    a: Path
    b: Path
    protocol_a: dict[str, Any]
    protocol_b: dict[str, Any]
    protocol_changes: list[str]
    rows: pd.DataFrame
    only_a: list[str]
    only_b: list[str]
    threshold: float

    def counts(self) -> dict[str, int]:
        v = self.rows["verdict"] if not self.rows.empty else pd.Series(dtype=str)
        return {k: int((v == k).sum()) for k in ("slower", "faster", "within noise", "no interval")}


def _key_columns(df: pd.DataFrame) -> list[str]:
    params: list[str] = []
    for mech in dict.fromkeys(df["mechanism"].astype(str)):
        params += [c for c in parameter_columns(df, mech) if c not in params]
    return ["mechanism", *params, *(c for c in SHAPE_COLUMNS if c in df.columns)]


def _keyed(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    ok = df[df["status"] == "ok"].copy()
    ok["label"] = mechanism_labels(ok) if not ok.empty else []
    ok["_key"] = [
        json.dumps([plain(r[c]) if c in r and not pd.isna(r[c]) else None for c in columns])
        for _, r in ok.iterrows()
    ]
    return ok.drop_duplicates("_key", keep="last").set_index("_key")


def _shape(r: pd.Series) -> str:
    parts = [f"{plain(r['H'])}×{plain(r['W'])}", f"C {plain(r['C'])}", f"{plain(r['num_heads'])} heads"]
    for col, fmt in (("batch", "batch {}"), ("dtype", "{}"), ("pass", "{}"), ("compile", "compile {}")):
        if col in r and not pd.isna(r[col]) and not (col == "compile" and str(r[col]) in ("none", "")):
            parts.append(fmt.format(plain(r[col])))
    return ", ".join(parts)


def _count_words(a: Any, b: Any, what: str) -> str | None:
    fa, fb = (float(v) if v is not None and not pd.isna(v) else math.nan for v in (a, b))
    if math.isnan(fa) and math.isnan(fb):
        return None
    if fa == fb:
        return None
    return f"{what} {plain(fa)} → {plain(fb)}"


def compare_runs(
    a: str | Path, b: str | Path, *, threshold: float = THRESHOLD, allow_protocol_change: bool = False
) -> Comparison:
    """Match the ok rows of two sweep runs and compare them (see the module docstring).

    Raises:
        CompareError: a folder is not a sweep run, the protocols differ (and that was not allowed),
            or no row matches.
    """
    if not 0 <= threshold < 1:
        raise CompareError(f"--threshold {threshold}: give a fraction in [0, 1), e.g. 0.05 for 5 %")
    a, b = Path(a), Path(b)
    frames = []
    for run in (a, b):
        try:
            df = load_results(run)
        except FileNotFoundError:
            raise CompareError(f"{run} holds no results.db or results.csv; give a run folder") from None
        except ValueError as exc:
            raise CompareError(f"{run}: {exc}; compare reads sweep runs (mechanism rows)") from None
        frames.append(df)
    pa, pb = protocol_of(a, frames[0]), protocol_of(b, frames[1])
    changes = [k for k in dict.fromkeys([*pa, *pb]) if pa.get(k) != pb.get(k)]
    if changes and not allow_protocol_change:
        said = "; ".join(f"{k}: {pa.get(k)!r} in A, {pb.get(k)!r} in B" for k in changes)
        raise CompareError(
            f"the two runs were measured under different protocols ({said}); their ratios would mix the "
            "change with the protocol. Measure both the same way, or pass --allow-protocol-change to "
            "compare them anyway (the differences are then printed with the table)"
        )
    both = pd.concat(frames, ignore_index=True)
    columns = _key_columns(both)
    ka, kb = _keyed(frames[0], columns), _keyed(frames[1], columns)
    common = [k for k in ka.index if k in kb.index]
    if not common:
        raise CompareError(
            f"no ok row of {a} matches one of {b} (on mechanism, parameters, shape, dtype, pass and "
            "compile mode): these runs measured different points"
        )
    out = []
    for key in common:
        ra, rb = ka.loc[key], kb.loc[key]
        sa, sb = latency_samples(ra.get("latency_samples_ms")), latency_samples(rb.get("latency_samples_ms"))
        entry: dict[str, Any] = {
            "label": ra["label"],
            "shape": _shape(ra),
            "n_a": len(sa),
            "n_b": len(sb),
            "latency_a": float(np.median(sa)) if sa else float(ra.get("latency_ms", math.nan)),
            "latency_b": float(np.median(sb)) if sb else float(rb.get("latency_ms", math.nan)),
        }
        if len(sa) >= MIN_SAMPLES and len(sb) >= MIN_SAMPLES:
            ratio, lo, hi = ratio_interval(sa, sb)
            entry.update(ratio=ratio, lo=lo, hi=hi, verdict=_verdict(ratio, lo, hi, threshold))
        else:
            la, lb = entry["latency_a"], entry["latency_b"]
            ratio = lb / la if la and math.isfinite(la) and math.isfinite(lb) else math.nan
            entry.update(ratio=ratio, lo=math.nan, hi=math.nan, verdict="no interval")
        ma, mb = (float(r.get("peak_mem_mb", math.nan)) for r in (ra, rb))
        mem = mb / ma if ma > 0 and math.isfinite(mb) else math.nan
        entry["mem_ratio"] = mem
        entry["mem_verdict"] = (
            "" if not math.isfinite(mem) else ("changed" if abs(mem - 1) > threshold else "same")
        )
        differ = [
            w
            for w in (
                _count_words(ra.get("flops"), rb.get("flops"), "FLOPs"),
                _count_words(ra.get("params"), rb.get("params"), "params"),
            )
            if w
        ]
        entry["counts"] = "; ".join(differ) if differ else "equal"
        for col in ("flops", "params"):
            entry[f"{col}_a"], entry[f"{col}_b"] = ra.get(col), rb.get(col)
        out.append(entry)
    rows = pd.DataFrame(out)
    only_a = [f"{ka.loc[k, 'label']} ({_shape(ka.loc[k])})" for k in ka.index if k not in kb.index]
    only_b = [f"{kb.loc[k, 'label']} ({_shape(kb.loc[k])})" for k in kb.index if k not in ka.index]
    return Comparison(a, b, pa, pb, changes, rows, only_a, only_b, threshold)


# --- rendering ------------------------------------------------------------------------------------


def _fmt_ms(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _fmt_ratio(r: pd.Series) -> str:
    if not math.isfinite(r["ratio"]):
        return "—"
    if not math.isfinite(r["lo"]):
        return f"{r['ratio']:.3f}"
    return f"{r['ratio']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def comparison_table(c: Comparison) -> Table:
    """One row per matched (point, pass)."""
    rows, bold = [], []
    for r in c.rows.itertuples():
        s = pd.Series(r._asdict())
        mem = f"{s['mem_ratio']:.3f} ({s['mem_verdict']})" if math.isfinite(s["mem_ratio"]) else "—"
        rows.append(
            [
                s["label"],
                s["shape"],
                _fmt_ms(s["latency_a"]),
                _fmt_ms(s["latency_b"]),
                _fmt_ratio(s),
                s["verdict"],
                mem,
                s["counts"],
            ]
        )
        flagged = s["verdict"] in ("slower", "faster")
        bold.append([False] * 4 + [flagged, flagged, False, s["counts"] != "equal"])
    threads = c.protocol_b.get("threads")
    return Table(
        name="compare",
        caption=(
            f"B / A per point: A = {c.a.name}, B = {c.b.name}"
            + (f"; {threads} thread{'s' if threads != 1 else ''}" if threads else "")
        ),
        header=[
            "Configuration",
            "Point",
            "A (ms, median)",
            "B (ms, median)",
            "B / A (latency, 95 % CI)",
            "Verdict",
            "B / A (peak memory)",
            "FLOPs, params",
        ],
        rows=rows,
        bold=bold,
        align="llrrrlrl",
        note=(
            f"Latency: medians of each row's timing samples; the interval is a bootstrap ({RESAMPLES} "
            "resamples of each run's samples, fixed seed) of the ratio of medians. Verdict: slower or "
            f"faster when the interval excludes 1 and the ratio moves by more than {c.threshold:.0%}; "
            f"otherwise within noise; no interval: fewer than {MIN_SAMPLES} samples on a side. Peak "
            f"memory is one measurement per row: changed when it moves by more than {c.threshold:.0%}. "
            "FLOPs (fvcore MACs) and parameters are counts and must be equal; a difference is shown."
        ),
    )


def summary_lines(c: Comparison) -> list[str]:
    """What changed, in a few lines (Markdown): the verdicts counted, the largest change each way,
    the counts, a protocol change and unmatched rows."""
    n = c.counts()
    counted = (c.rows["counts"] != "equal").sum() if not c.rows.empty else 0
    lines = [
        f"{len(c.rows)} points matched: **{n['slower']} slower**, **{n['faster']} faster**, "
        f"{n['within noise']} within noise"
        + (f", {n['no interval']} without an interval (too few samples)" if n["no interval"] else "")
        + f" (B / A beyond 1 ± {c.threshold:.0%} with a 95 % interval that excludes 1)",
    ]
    for verdict in ("slower", "faster"):
        part = c.rows[c.rows["verdict"] == verdict] if not c.rows.empty else c.rows
        if not part.empty:
            worst = part.iloc[(part["ratio"] - 1).abs().argmax()]
            lines.append(
                f"most {verdict}: {worst['label']} at {worst['shape']}, B / A = {worst['ratio']:.3f} "
                f"[{worst['lo']:.3f}, {worst['hi']:.3f}]"
            )
    lines.append(
        "FLOPs and parameters equal at every matched point"
        if not counted
        else f"**FLOPs or parameters differ at {counted} points**: the mechanism or the counter changed"
    )
    if c.protocol_changes:
        said = "; ".join(f"{k}: {c.protocol_a.get(k)} → {c.protocol_b.get(k)}" for k in c.protocol_changes)
        lines.append(f"**compared across a protocol change** ({said}): the ratios carry it")
    if c.only_a or c.only_b:
        lines.append(f"unmatched ok rows: {len(c.only_a)} only in A, {len(c.only_b)} only in B")
    return lines


def comparison_doc(c: Comparison) -> Doc:
    """The summary lines, then the table."""
    doc = Doc()
    doc.para(f"**A** = `{c.a}`, **B** = `{c.b}`.")
    doc.bullets(summary_lines(c))
    doc.table(comparison_table(c))
    return doc


def plot_ratios(c: Comparison, path: Path) -> Path | None:
    """The latency ratios with their intervals, one row per matched point, coloured by verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = c.rows[np.isfinite(c.rows["ratio"])] if not c.rows.empty else c.rows
    if rows.empty:
        return None
    colours = {"slower": "#c0392b", "faster": "#27ae60", "within noise": "#7f8c8d", "no interval": "#bdc3c7"}
    height = max(2.5, 0.28 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height))
    y = np.arange(len(rows))[::-1]
    for yi, (_, r) in zip(y, rows.iterrows()):
        colour = colours[r["verdict"]]
        if math.isfinite(r["lo"]):
            ax.plot([r["lo"], r["hi"]], [yi, yi], color=colour, lw=2, solid_capstyle="butt")
        ax.plot(r["ratio"], yi, "o", color=colour, ms=5)
    ax.axvline(1, color="#333", lw=1)
    for edge in (1 - c.threshold, 1 + c.threshold):
        ax.axvline(edge, color="#999", lw=0.8, ls=":")
    lows = [v for v in [*rows["lo"], *rows["ratio"], 1 - c.threshold] if math.isfinite(v)]
    highs = [v for v in [*rows["hi"], *rows["ratio"], 1 + c.threshold] if math.isfinite(v)]
    pad = 0.05 * (max(highs) - min(lows))
    ax.set_xlim(min(lows) - pad, max(highs) + pad)
    parts = [s.split(", ") for s in rows["shape"]]
    varies = [i for i in range(len(parts[0])) if len({tuple(p)[i] if i < len(p) else "" for p in parts}) > 1]
    same = [part for i, part in enumerate(parts[0]) if i not in varies]
    labels = [
        " · ".join([lab, *(p[i] for i in varies if i < len(p))]) for lab, p in zip(rows["label"], parts)
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("latency B / A (median ratio; bar: 95 % bootstrap interval)")
    shown = [k for k in colours if (rows["verdict"] == k).any()]
    handles = [plt.Line2D([], [], color=colours[k], marker="o", lw=2, label=k) for k in shown]
    ax.legend(handles=handles, fontsize=7, loc="best", frameon=False)
    ax.set_title(
        f"A = {c.a.name}, B = {c.b.name}; dotted: 1 ± {c.threshold:.0%}\n{', '.join(same)}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_comparison(c: Comparison, out: Path) -> list[Path]:
    """``compare.md``, ``compare.tex``, ``index.html`` and ``ratios.png`` into ``out``."""
    from attnbench.report.html import index_html

    out.mkdir(parents=True, exist_ok=True)
    doc = comparison_doc(c)
    written = [out / "compare.md", out / "compare.tex", out / "index.html"]
    figure = plot_ratios(c, out / "ratios.png")
    if figure is not None:
        doc.figure("ratios.png", "Latency B / A per matched point, with 95 % bootstrap intervals.")
        written.append(figure)
    written[0].write_text(f"# Comparison: {c.b.name} against {c.a.name}\n\n" + doc.to_markdown())
    written[1].write_text(comparison_table(c).to_latex())
    manifest = {"A": str(c.a), "B": str(c.b), "protocol A": c.protocol_a, "protocol B": c.protocol_b}
    written[2].write_text(
        index_html(
            f"attnbench compare: {c.b.name} against {c.a.name}", [("comparison", "Comparison", doc)], manifest
        )
    )
    return written
