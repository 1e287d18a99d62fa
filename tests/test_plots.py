"""The data each plot draws: bands are the stored quantiles, no series hides another, one unit per
figure, a legend names only what is drawn, labels do not collide, single-x plots are not drawn."""

from __future__ import annotations

import colorsys
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection

from attnbench.kinds.ablation.plots import plot_pareto
from attnbench.kinds.models.report import plot_models
from attnbench.kinds.sweep.plots import plot_bra_heatmaps, plot_flops_vs_s, plot_flops_vs_tokens, plot_speed
from attnbench.report._results import load_results, mechanism_labels
from attnbench.report.plots import RC, Series, Style, coinciding, series_styles, spread_positions
from tests.test_report import BASE, small_rows, write_counted_run, write_run


def timed_rows() -> list[dict]:
    """FAKE samples, skewed so that the median ± IQR/2 is not the 25th-75th percentile band."""
    rows = []
    for mech, params, base in [("vanilla", {}, 10.0), ("bra", {"n_win": 7, "topk": 4}, 4.0)]:
        for H in (28, 56):
            samples = [base * H / 28 * f for f in (1.0, 1.01, 1.02, 1.03, 1.5, 2.5)]
            rows.append(
                {
                    **BASE,
                    **params,
                    "mechanism": mech,
                    "H": H,
                    "W": H,
                    "C": 64,
                    "num_heads": 2,
                    "pass": "forward",
                    "status": "ok",
                    "flops": 1e8 * H,
                    "latency_ms": float(np.median(samples)),
                    "latency_iqr_ms": float(np.subtract(*np.percentile(samples, [75, 25]))),
                    "latency_samples_ms": json.dumps(samples),
                    "throughput": 4000 / float(np.median(samples)),
                    "peak_mem_mb": 10.0,
                }
            )
    return rows


def _frame(tmp_path, rows):
    df = load_results(write_run(tmp_path, rows))
    df["label"] = mechanism_labels(df)
    return df


def test_latency_band_edges_are_the_stored_samples_quartiles(tmp_path):
    df = _frame(tmp_path, timed_rows())
    with matplotlib.rc_context(RC):
        fig = plot_speed(df)
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for band, (_, rows) in zip(bands, df.groupby("mechanism", sort=False)):
        samples = [json.loads(s) for s in rows.sort_values("H")["latency_samples_ms"]]
        lo, hi = np.percentile(samples, 25, axis=1), np.percentile(samples, 75, axis=1)
        ys = band.get_paths()[0].vertices[:, 1]
        assert np.allclose(sorted(set(np.round(ys, 9))), sorted(np.round([*lo, *hi], 9)))
        median = rows.sort_values("H")["latency_ms"].to_numpy()
        assert not np.allclose(lo, median - rows.sort_values("H")["latency_iqr_ms"].to_numpy() / 2)


def test_a_plot_with_a_single_x_value_is_not_drawn(tmp_path):
    df = _frame(tmp_path, [r for r in timed_rows() if r["H"] == 28])
    assert plot_speed(df) is None and plot_flops_vs_tokens(df) is None


def test_coinciding_series_are_drawn_side_by_side_and_named(tmp_path):
    rows = timed_rows()
    rows += [{**r, "mechanism": "swin", "n_win": None, "topk": None} for r in rows if r["mechanism"] == "bra"]
    df = _frame(tmp_path, rows)
    with matplotlib.rc_context(RC):
        fig = plot_flops_vs_tokens(df)
    ax = fig.axes[0]
    xs = [tuple(line.get_xdata()) for line in ax.get_lines()]
    assert len(set(xs)) == len(xs)  # offset: no two lines share their x positions
    notes = [t.get_text() for t in ax.texts]
    assert any("BRA = Swin" in n and "drawn side by side" in n for n in notes)
    a = Series("a", np.array([1.0, 2.0]), np.array([1.0, 2.0]), Style("k", "o"))
    b = Series("b", np.array([1.0, 2.0]), np.array([1.02, 2.0]), Style("k", "s"))
    c = Series("c", np.array([1.0, 2.0]), np.array([1.5, 2.0]), Style("k", "^"))
    assert coinciding([a, b, c]) == [[0, 1]]


def test_variants_share_their_family_hue_and_differ_by_marker_and_line(tmp_path):
    rows = [
        {**r, "n_win": s, "topk": k}
        for r in timed_rows()
        if r["mechanism"] == "bra"
        for s in (4, 7)
        for k in (1, 4, 16)
    ]
    df = _frame(tmp_path, [*rows, *[r for r in timed_rows() if r["mechanism"] == "vanilla"]])
    styles = series_styles(df)
    bra = {k: v for k, v in styles.items() if k.startswith("BRA")}
    # one hue, shaded by S (dark S = 4, light S = 7); marker and line tell the variants apart
    hues = {round(colorsys.rgb_to_hsv(*matplotlib.colors.to_rgb(s.color))[0], 2) for s in bra.values()}
    assert len(bra) == 6 and len(hues) == 1 and len({s.color for s in bra.values()}) == 2
    assert len({(s.marker, s.linestyle) for s in bra.values()}) == 6
    assert {s.marker for k, s in bra.items() if "S=4" in k} != {
        s.marker for k, s in bra.items() if "S=7" in k
    }
    assert styles["Global"].color != next(iter(bra.values())).color


def test_direct_labels_are_spread_apart():
    pos = spread_positions([0.5, 0.5, 0.51, 0.9], gap=0.05)
    ordered = sorted(pos)
    assert all(b - a >= 0.05 - 1e-9 for a, b in zip(ordered, ordered[1:]))
    assert max(pos) <= 1.0


def test_heatmaps_use_one_unit_and_no_exponents(tmp_path):
    run = write_counted_run(tmp_path / "run", sizes=(14, 28, 56))
    df = load_results(run)
    df["label"] = mechanism_labels(df)
    with matplotlib.rc_context(RC):
        fig = plot_bra_heatmaps(df)
    units = {ax.get_ylabel().split(",")[0] for ax in fig.axes if "MACs" in ax.get_ylabel()}
    assert len(units) == 1, units
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts and not any("e+" in t or "e-" in t for t in texts)


def test_legends_name_only_what_is_drawn(tmp_path):
    from attnbench.kinds.sweep.formula import run_formula_check

    run = write_counted_run(tmp_path / "run", sizes=(14, 28), n_wins=(2, 7), topks=(1,))
    df = load_results(run)
    check = run_formula_check(df)
    with matplotlib.rc_context(RC):
        fig = plot_flops_vs_s(check)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    stars = [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "*"]
    assert ("paper's S*" in labels) == bool(stars)
    acc = pd.DataFrame(
        [{**r, "top1": 0.6, "seed": 0} for r in small_rows() if r["mechanism"] == "vanilla" and r["H"] == 28]
    )
    acc["oom"] = False
    acc["label"] = mechanism_labels(acc)
    with matplotlib.rc_context(RC):
        fig = plot_pareto(acc)
    assert "Pareto front" not in [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_models_plot_labels_do_not_overlap():
    names = ["biformer_tiny", "biformer_small", "biformer_stl", "swin_tiny_patch4_window7_224", "maxvit_t"]
    df = pd.DataFrame(
        {
            "model": names,
            "label": names,
            "family": ["BiFormer"] * 3 + ["Swin", "MaxViT"],
            "status": "ok",
            "gflops": [2.2, 4.5, 4.6, 4.5, 5.6],
            "throughput": [18.0, 9.0, 9.9, 11.0, 6.0],
            "peak_mem_mb": [60.0, 108.0, 123.0, 121.0, 163.0],
            "resolution": 224,
            "batch": 1,
            "dtype": "float32",
            "device": "cpu",
        }
    )
    with matplotlib.rc_context(RC):
        fig = plot_models(df)
    renderer = FigureCanvasAgg(fig).get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text() in names]
        assert len(boxes) == len(names)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), (a, b)
    notes = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().startswith("Markers")]
    assert any("swin_tiny_patch4_window7_224" in n for n in notes)  # hidden behind biformer_stl


@pytest.mark.parametrize("fn", [plot_speed, plot_flops_vs_tokens])
def test_line_plots_label_every_series(tmp_path, fn):
    df = _frame(tmp_path, timed_rows())
    with matplotlib.rc_context(RC):
        fig = fn(df)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("Global") for t in texts) and any(t.startswith("BRA") for t in texts)


def test_growth_plots_leave_out_configurations_measured_at_one_size():
    """A run that measures each configuration at its own shape (BRA's backends) has no growth to
    draw: the series of one point are left out, and with none left the plot is not drawn."""
    rows = timed_rows()
    one_each = pd.DataFrame([r for r in rows if (r["mechanism"], r["H"]) in {("vanilla", 28), ("bra", 56)}])
    one_each["label"] = mechanism_labels(one_each)
    assert plot_flops_vs_tokens(one_each) is None and plot_speed(one_each) is None
    mixed = pd.DataFrame([r for r in rows if r["mechanism"] == "bra" or r["H"] == 28])
    mixed["label"] = mechanism_labels(mixed)
    with matplotlib.rc_context(RC):
        fig = plot_flops_vs_tokens(mixed)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("BRA") for t in labels) and not any(t.startswith("Global") for t in labels)
