"""The report of a models run (``kind: models``): our counts beside the released code's and the papers'.

:func:`write_models_report` writes ``tables/models.md`` and ``.tex`` (booktabs): per model its
parameters and fvcore GMACs, the numbers counted on the released code and our difference to them
in %, the published numbers, throughput and peak memory of the inference forward, and the
published top-1, with numbered sources under the table. Best throughput and lowest memory are
bold. Rows measured under other conditions (an edited study resumed into the same folder) get
tables of their own. Also ``plots/models_speed_vs_gmacs.*``, ``report.md`` and ``index.html``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from attnbench.report._document import Doc, Table, Tex, best_mask, latex_escape
from attnbench.report._results import decimals_for, device_label, load_manifest, plain
from attnbench.report.html import files_doc, index_html
from attnbench.report.options import ReportOptions
from attnbench.report.plots import (
    EXTRA_COLORS,
    EXTRA_MARKERS,
    PALETTE,
    RC,
    note_box,
    overlapping_points,
    place_point_labels,
    save,
)
from attnbench.report.references import cite, cite_keys, strip_file_refs, write_bib

__all__ = ["OPTIONS", "models_tables", "plot_models", "write", "write_models_report"]

CONDITIONS = ["resolution", "batch", "dtype", "device", "pass"]
NUMERIC = (
    "resolution batch params params_m flops gflops flops_torch latency_ms latency_iqr_ms latency_n "
    "throughput peak_mem_mb published_params_m published_gflops published_top1 published_resolution "
    "counted_params_m counted_gflops counted_resolution params_diff_counted_pct gflops_diff_counted_pct "
    "params_diff_published_pct gflops_diff_published_pct"
).split()
# one colour and marker per family: Okabe-Ito first, then Tol's muted
FAMILY_COLORS = PALETTE + EXTRA_COLORS
FAMILY_MARKERS = ["s", "D", "^", "o", "v", "P", "X", "*", *EXTRA_MARKERS]
PLOT_NAME = "models_speed_vs_gmacs"


def _load(run_dir: Path) -> pd.DataFrame:
    from attnbench.report._results import rows_frame

    df = rows_frame(run_dir)
    for col in NUMERIC:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("model", "family", "kwargs", "status", "error", "dtype", "device", "pass"):
        if col in df.columns:
            df[col] = df[col].astype("string").fillna("")
    df["label"] = [_label(m, k) for m, k in zip(df["model"], df.get("kwargs", [""] * len(df)))]
    return df


def _label(model: str, kwargs: str) -> str:
    import json

    try:
        args = json.loads(kwargs) if kwargs else {}
    except ValueError:
        args = {}
    if not args:
        return model
    return f"{model} ({', '.join(f'{k}={v}' for k, v in args.items())})"


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _pair(a: float | None, b: float | None, fmt: str = "{}") -> str:
    """``13.14 / 2.228``; a missing side is ``—``; both missing: ``—``."""
    if a is None and b is None:
        return "—"
    return " / ".join("—" if v is None else fmt.format(v) for v in (a, b))


def _signed(value: float) -> str:
    """``+0.02``, ``-1.50``; ``0.00`` for anything that rounds to zero (no ``-0.00``)."""
    text = f"{value:+.2f}"
    return "0.00" if float(text) == 0 else text


def _groups(df: pd.DataFrame, manifest: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """``(table name, rows)`` per set of conditions; ``models`` for the study's current ones."""
    cols = [c for c in CONDITIONS if c in df.columns]
    current = manifest.get("conditions") or {}
    groups = list(df.groupby(cols, sort=False, dropna=False)) if cols else [((), df)]
    keyed = []
    for key, rows in groups:
        values = dict(zip(cols, key if isinstance(key, tuple) else (key,)))
        is_current = bool(current) and all(str(plain(values[c])) == str(current.get(c)) for c in cols)
        keyed.append((not is_current, values, rows))
    keyed.sort(key=lambda item: item[0])  # the current conditions first, then run order
    out = []
    for i, (_, values, rows) in enumerate(keyed):
        slug = re.sub(r"[^A-Za-z0-9]+", "-", "_".join(plain(v) for v in values.values())).strip("-").lower()
        out.append(("models" if i == 0 else f"models_{slug}", rows))
    return out


def _device_name(rows: pd.DataFrame, manifest: dict[str, Any]) -> str:
    envs = manifest.get("environments", {})
    names = {envs.get(e, {}).get("device_name") for e in rows.get("env_id", [])}
    names.discard(None)
    return ", ".join(sorted(names)) if names else device_label(rows["device"].iloc[0])


def _table(name: str, rows: pd.DataFrame, manifest: dict[str, Any]) -> Table:
    first = rows.iloc[0]
    res = int(first["resolution"]) if not pd.isna(first["resolution"]) else None
    sources: list[str] = []

    def marker(source: Any) -> str:
        if source is None or pd.isna(source) or not str(source):
            return ""
        text = strip_file_refs(str(source))
        if text not in sources:
            sources.append(text)
        return f" [{sources.index(text) + 1}]"

    def with_source(text: str, source: Any) -> Tex:
        """``13.1 / 2.2 [2]``; in LaTeX ``13.1 / 2.2~\\cite{...}`` where the source names an entry."""
        mark = marker(source)
        keys = cite_keys(str(source)) if mark else []
        tex = latex_escape(text) + (f"~{cite(keys)}" if keys else latex_escape(mark))
        return Tex(text + mark, tex)

    def fmt_column(values: list[float | None]) -> str:
        return "{:." + str(decimals_for([v for v in values if v is not None])) + "f}"

    records = [r for _, r in rows.iterrows()]
    throughput = [_num(r.get("throughput")) for r in records]
    memory = [_num(r.get("peak_mem_mb")) for r in records]
    tp_fmt, mem_fmt = fmt_column(throughput), fmt_column(memory)
    body = []
    for r, tp, mem in zip(records, throughput, memory):
        missing = "error" if r["status"] == "error" else "—"

        def cell(value: float | None, fmt: str, missing: str = missing) -> str:
            return missing if value is None else fmt.format(value)

        counted = _pair(_num(r.get("counted_params_m")), _num(r.get("counted_gflops")))
        published = _pair(_num(r.get("published_params_m")), _num(r.get("published_gflops")))
        diffs = [_num(r.get("params_diff_counted_pct")), _num(r.get("gflops_diff_counted_pct"))]
        diff = _pair(*[None if d is None else _signed(d) for d in diffs])
        top1 = _num(r.get("published_top1"))
        body.append(
            [
                r["label"],
                cell(_num(r.get("params_m")), "{:.2f}"),
                cell(_num(r.get("gflops")), "{:.3f}"),
                with_source(counted, r.get("counted_source")) if counted != "—" else counted,
                diff,
                with_source(published, r.get("published_source")) if published != "—" else published,
                cell(tp, tp_fmt),
                cell(mem, mem_fmt),
                "—" if top1 is None else plain(top1),
            ]
        )
    bold_tp = best_mask(throughput, higher_is_better=True)
    bold_mem = best_mask(memory, higher_is_better=False)
    bold = [[False] * 6 + [t, m, False] for t, m in zip(bold_tp, bold_mem)]
    at = f" @{res}" if res is not None else ""
    header = [
        "Model",
        Tex("Params (M)", "Params\n(M)"),
        Tex(f"GMACs (fvcore){at}", latex_escape(f"GMACs (fvcore){at}")),
        Tex("Counted on released code (M / GMACs)", "Counted\n(M / GMACs)"),
        Tex("Diff vs counted (%, params / GMACs)", "Diff\n(\\%, M / GMACs)"),
        Tex("Published (M / GMACs)", "Published\n(M / GMACs)"),
        Tex("Throughput (img/s)", "Throughput\n(img/s)"),
        Tex("Peak memory (MiB)", "Memory\n(MiB)"),
        Tex("Top-1 (%, published)", "Top-1\n(\\%, publ.)"),
    ]
    header_groups = [("", 1), ("Ours", 2), ("Released code", 2), ("", 1), ("Inference", 2), ("", 1)]
    size = f"{res}×{res}" if res is not None else "its resolution"
    caption = (
        f"Whole models at {size}, inference (eval, no_grad) at batch {plain(first['batch'])}, "
        f"{first['dtype']}, on {_device_name(rows, manifest)}: our parameter and FLOP counts beside those "
        "counted on the released code and the published ones."
    )
    note = (
        "GMACs: fvcore multiply-accumulates of one image (1 MAC = 1 FLOP, the papers' 'GFLOPs'); "
        "diff = 100 (ours - counted) / counted; throughput = batch / median latency; bold: the best "
        "throughput and the lowest memory; top-1 is ImageNet-1K as published, not measured here."
    )
    tex_note = latex_escape(note).replace("fvcore", "fvcore~" + cite(["fvcore"]), 1)
    if sources:
        listed = "; ".join(f"[{i + 1}] {s}" for i, s in enumerate(sources))
        note += " Sources: " + listed + "."
        uncited = [f"[{i + 1}] {s}" for i, s in enumerate(sources) if not cite_keys(s)]
        if uncited:
            tex_note += " Sources: " + latex_escape("; ".join(uncited)) + "."
    caption = Tex(caption, latex_escape(caption).replace("on cpu", "on CPU"))
    return Table(
        name, caption, header, body, bold=bold, note=Tex(note, tex_note), header_groups=header_groups
    )


def models_tables(df: pd.DataFrame, manifest: dict[str, Any]) -> list[Table]:
    """One table per set of conditions (the study's current ones first, named ``models``)."""
    if df.empty:
        return []
    return [_table(name, rows, manifest) for name, rows in _groups(df, manifest)]


def plot_models(df: pd.DataFrame) -> Figure | None:
    """Throughput and peak memory against GMACs, one labelled point per model, coloured by family."""
    ok = df[(df["status"] == "ok") & df["gflops"].notna()]
    panels = [(c, t) for c, t in (("throughput", "throughput (img/s)"), ("peak_mem_mb", "peak memory (MiB)"))]
    panels = [(c, t) for c, t in panels if c in ok.columns and ok[c].notna().any()]
    if ok.empty or not panels:
        return None
    families = list(dict.fromkeys(ok["family"].replace("", "(no family)")))
    style = {
        f: (FAMILY_COLORS[i % len(FAMILY_COLORS)], FAMILY_MARKERS[i % len(FAMILY_MARKERS)])
        for i, f in enumerate(families)
    }
    first = ok.iloc[0]
    fig = Figure(figsize=(6 * len(panels), 4.6))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.12, wspace=0.25)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (col, title) in zip(axes, panels):
        rows = ok[ok[col].notna()].sort_values(col, ascending=False)
        for r in rows.itertuples():
            family = r.family or "(no family)"
            color, mark = style[family]
            ax.scatter(r.gflops, getattr(r, col), color=color, marker=mark, s=50, label=family, zorder=3)
        ax.set_xlabel(f"GMACs (fvcore, batch 1, {int(first['resolution'])}×{int(first['resolution'])})")
        ax.set_ylabel(title)
        ax.set_title(f"{title.split(' (')[0].capitalize()} vs GMACs")
        ax.margins(x=0.18, y=0.15)
        ax.set_xlim(ax.get_xlim())  # fixed before the labels are placed around the points
        ax.set_ylim(ax.get_ylim())
        place_point_labels(ax, list(rows["gflops"]), list(rows[col]), list(rows["label"]))
        touching = overlapping_points(ax, list(rows["gflops"]), list(rows[col]), list(rows["label"]))
        note_box(ax, touching, head="Markers that overlap:")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(
        unique.values(),
        unique.keys(),
        loc="upper center",
        ncol=min(2, len(unique)),
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.suptitle(
        f"Inference at batch {plain(first['batch'])}, {first['dtype']}, {device_label(first['device'])}",
        fontsize=10,
    )
    return fig


def write_models_report(
    run_dir: str | Path,
    *,
    plots: bool = True,
    formats: Sequence[str] = ("png", "svg"),
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``tables/models.{md,tex}``, ``references.bib``, the plot, ``report.md`` and ``index.html``
    of a models run.

    Returns:
        The path of ``index.html``.
    """
    say = progress or (lambda line: None)
    run_dir = Path(run_dir)
    df = _load(run_dir)
    say(f"{len(df)} model rows read; writing the tables")
    manifest = load_manifest(run_dir)
    tables = models_tables(df, manifest)
    for table in tables:
        table.write(run_dir / "tables")
    write_bib(run_dir, [t.to_latex() for t in tables])

    summary = _summary(df, run_dir)
    tables_doc = Doc()
    for table in tables:
        tables_doc.details(table.caption, _one(table))
    if not tables:
        tables_doc.para("No rows yet.")
    plots_doc = Doc()
    if plots:
        say("drawing the plot")
        primary = _groups(df, manifest)[0][1] if not df.empty else df
        with matplotlib.rc_context(RC):
            fig = plot_models(primary) if not primary.empty else None
            if fig is None:
                plots_doc.para(f"`{PLOT_NAME}` not drawn: no ok row has GMACs with a throughput or memory.")
            else:
                path = save(fig, run_dir / "plots", PLOT_NAME, formats)[0]
                plots_doc.figure(
                    path.relative_to(run_dir).as_posix(),
                    "Throughput and peak memory of the inference forward against fvcore GMACs, per model.",
                )

    say("writing report.md and index.html")
    findings = _findings(df)
    markdown = Doc()
    markdown.heading(f"Report of {run_dir.name}", 1)
    markdown.extend(findings)
    markdown.heading("Plots")
    markdown.extend(plots_doc)
    markdown.heading("Tables")
    for table in tables:
        markdown.table(table)
    markdown.heading("Run")
    markdown.extend(summary)
    (run_dir / "report.md").write_text(markdown.to_markdown())

    sections = [("summary", "Summary", findings), ("plots", "Plots", plots_doc)]
    sections += [("tables", "Tables", tables_doc), ("run", "Run", summary)]
    sections.append(("files", "Files", files_doc(run_dir)))
    index = run_dir / "index.html"
    index.write_text(index_html(f"attnbench report: {run_dir.name}", sections, manifest))
    return index


def _one(table: Table) -> Doc:
    doc = Doc()
    doc.table(table)
    return doc


def _findings(df: pd.DataFrame) -> Doc:
    """One screen: the fastest, the leanest and the cheapest model, and how our counts compare."""
    doc = Doc()
    ok = df[df["status"] == "ok"] if not df.empty else df
    lines = []
    for col, what, pick, unit in (
        ("throughput", "highest throughput", "max", "img/s"),
        ("peak_mem_mb", "lowest peak memory", "min", "MiB"),
        ("gflops", "fewest GMACs", "min", "GMACs"),
    ):
        if col in ok.columns and ok[col].notna().sum() >= 2:
            best = ok.loc[getattr(ok[col], f"idx{pick}")()]
            lines.append(f"{what}: **{best['label']}**, {best[col]:.4g} {unit}")
    if "gflops_diff_counted_pct" in ok.columns and ok["gflops_diff_counted_pct"].notna().any():
        worst = ok["gflops_diff_counted_pct"].abs().max()
        lines.append(f"our GMACs are within {worst:.2f} % of the count on the released code for every model")
    doc.bullets(lines)
    failed = int((df["status"] == "error").sum()) if not df.empty else 0
    if failed:
        doc.para(f"**{failed} model(s) failed**; see Run.")
    if not lines and not failed:
        doc.para("No ok model row yet.")
    return doc


def _summary(df: pd.DataFrame, run_dir: Path) -> Doc:
    doc = Doc()
    counts = df["status"].value_counts()
    doc.para(
        f"`{run_dir.name}`: {len(df)} model rows in `results.csv` ("
        + ", ".join(f"{n} {s or 'no status'}" for s, n in counts.items())
        + ")."
    )
    families = [f"`{r['label']}`: {r['family']}" for _, r in df.iterrows() if r["family"]]
    doc.bullets(families)
    doc.para(
        "Conventions: parameters in millions; FLOPs are fvcore multiply-accumulates of one image "
        "(batch 1, fp32, CPU; one MAC = one FLOP, as the BiFormer, Swin and DAT papers count), the seed "
        "models counted on BRA's reference backend; 'counted' numbers were taken by fvcore on the released "
        "code (timm's count for the baselines); latency is the median of the timing samples of the "
        "inference forward at the row's batch, throughput = batch / median latency; peak memory in MiB "
        "(2²⁰ bytes)."
    )
    uncounted = [
        f"`{r['label']}`: {r['flops_uncounted']}"
        for _, r in df.iterrows()
        if isinstance(r.get("flops_uncounted"), str) and r["flops_uncounted"] not in ("", "{}")
    ]
    if uncounted:
        doc.para("Operators no FLOP handle counted (their FLOPs are missing from the totals):")
        doc.bullets(uncounted)
    failed = df[df["status"] == "error"]
    if not failed.empty:
        doc.para(f"{len(failed)} model(s) failed:")
        doc.bullets([f"`{r['label']}`: {str(r['error'])[:200]}" for _, r in failed.iterrows()])
    return doc


OPTIONS: tuple[str, ...] = ()  # the models table is one table per (device, dtype, batch): no selection


def write(run_dir: Path, options: ReportOptions, say: Callable[[str], None]) -> Path:
    """The report of a models run (:func:`write_models_report`)."""
    return write_models_report(run_dir, plots=options.plots, formats=options.formats, progress=say)
