"""What a report reads out says how sure it is, and its rough edges are gone: no fastest named
within noise, no stale files, † on timed cells only, fixed table names, family colours."""

from __future__ import annotations

import pandas as pd

from tests.test_compare import _run


def test_the_summary_names_no_fastest_within_noise(tmp_path):
    from attnbench.report import write_report

    close = _run(tmp_path / "close", 3, slow={"swin": 1.33})  # Swin ~3.99 ms against Global's 4.0
    write_report(close, plots=False, formula=False)
    summary = (close / "report.md").read_text()
    assert "fastest at 28×28: **within noise** between" in summary and "includes 1" in summary
    apart = _run(tmp_path / "apart", 3)  # Swin 3 ms, Global 4 ms
    write_report(apart, plots=False, formula=False)
    summary = (apart / "report.md").read_text()
    assert "fastest at 28×28: **Swin**" in summary and "Global / Swin = 1.3" in summary


def test_a_report_with_other_options_leaves_no_stale_files(tmp_path):
    from attnbench.report import write_report

    run = _run(tmp_path / "run", 1)
    write_report(run, formula=False, formats=("png",))
    before = {p.name for p in (run / "tables").iterdir()}
    assert "comparison_forward.md" in before and "comparison_forward-backward.md" in before
    (run / "plots").mkdir(exist_ok=True)
    (run / "plots" / "speed_vs_resolution.png").write_bytes(b"a plot of an earlier report")
    write_report(run, passes=["forward"], plots=False, formula=False)  # one pass: fewer tables
    after = {p.name for p in (run / "tables").iterdir()}
    assert "comparison_forward.md" in after and "comparison_forward-backward.md" not in after
    assert not list((run / "plots").glob("*.png"))  # no plots this time: none left from before


def test_dagger_marks_timed_cells_only_and_efficiency_is_defined(tmp_path):
    import pandas as pd

    from attnbench.kinds.sweep.tables import comparison_tables
    from attnbench.report._results import mechanism_labels

    df = pd.DataFrame(
        [
            {
                "mechanism": m,
                "H": 28,
                "W": 28,
                "C": 64,
                "num_heads": 2,
                "pass": "forward",
                "status": "ok",
                "latency_ms": ms,
                "peak_mem_mb": 10.0,
                "efficiency": 0.25,
                "unstable": unstable,
            }
            for m, ms, unstable in (("vanilla", 4.0, 1), ("swin", 3.0, 0))
        ]
    )
    df["label"] = mechanism_labels(df)
    (table,) = comparison_tables(df, columns=["latency_ms", "peak_mem_mb", "efficiency"])
    row = next(r for r in table.rows if r[0] == "Global")
    assert row[1].endswith("†") and not row[2].endswith("†")  # latency marked, memory not
    assert "Efficiency: the MACs of the timed call per second" in table.note


def test_family_variants_get_shades_of_the_family_colour():
    from attnbench.report.plots import series_styles

    df = pd.DataFrame(
        {
            "mechanism": ["bra"] * 4 + ["vanilla"],
            "n_win": [4, 4, 7, 7, None],
            "topk": [1, 4, 1, 4, None],
            "label": ["BRA (S=4, k=1)", "BRA (S=4, k=4)", "BRA (S=7, k=1)", "BRA (S=7, k=4)", "Global"],
        }
    )
    styles = series_styles(df)
    bra = {lab: st for lab, st in styles.items() if lab.startswith("BRA")}
    assert len({st.color for st in bra.values()}) == 2  # one shade per S
    assert styles["BRA (S=4, k=1)"].linestyle != styles["BRA (S=4, k=4)"].linestyle  # k by line style


def test_the_roofline_names_its_peak_lines_in_the_legend():
    from attnbench.kinds.sweep.measures import plot_roofline

    rows = [
        {
            "mechanism": m,
            "n_win": s,
            "topk": k,
            "pass": "forward",
            "status": "ok",
            "H": 28,
            "W": 28,
            "C": 64,
            "num_heads": 2,
            "pass_macs": macs,
            "latency_ms": ms,
            "peak_gmacs_s": 40.0,
        }
        for m, s, k, macs, ms in (
            ("bra", 4, 1, 1e8, 5.0),
            ("bra", 4, 4, 2e8, 9.0),
            ("vanilla", None, None, 3e8, 8.0),
        )
    ]
    from attnbench.report._results import mechanism_labels

    df = pd.DataFrame(rows)
    from attnbench.report.plots import series_styles

    fig = plot_roofline(df.assign(label=mechanism_labels(df)), styles_of=series_styles)
    ax = fig.axes[0]
    assert not [t for t in ax.texts if "of peak" in t.get_text()]  # no label for points to cover
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"100% of peak", "10% of peak", "1% of peak"} <= set(labels)
    markers = {c.get_label(): c.get_paths()[0].vertices.shape for c in ax.collections}
    bra = [shape for label, shape in markers.items() if label.startswith("BRA")]
    assert len(bra) == 2 and bra[0] != bra[1], markers  # a marker per variant


def test_captions_state_the_threads_with_the_device():
    from attnbench.kinds.sweep.tables import _conditions

    rows = pd.DataFrame({"pass": ["forward"], "device": ["cpu"], "batch": [1], "threads": [1]})
    assert _conditions(rows, ["pass", "device", "batch"]) == "forward, CPU, batch 1, 1 thread"
    assert _conditions(rows.assign(threads=[11]), ["device"]) == "CPU, 11 threads"
    assert _conditions(rows, ["pass"]) == "forward"  # no device said (a FLOPs table): no threads


def test_growth_exponents_with_intervals():
    import json

    import numpy as np

    from attnbench.kinds.sweep.tables import growth_tables
    from attnbench.report._results import mechanism_labels

    rng = np.random.default_rng(0)
    rows = []
    for mech, power in (("vanilla", 2.0), ("swin", 1.0)):
        for side in (14, 28, 56):
            hw = side * side
            ms = 1e-3 * hw**power
            samples = (ms * np.exp(rng.normal(0, 0.02, 20))).tolist()
            rows.append(
                {
                    "mechanism": mech,
                    "H": side,
                    "W": side,
                    "C": 64,
                    "num_heads": 2,
                    "pass": "forward",
                    "status": "ok",
                    "latency_ms": float(np.median(samples)),
                    "latency_samples_ms": json.dumps(samples),
                    "flops": 10.0 * hw**power,
                    "peak_mem_mb": 0.01 * hw,
                    "device": "cpu",
                    "threads": 1,
                }
            )
    df = pd.DataFrame(rows)
    (table,) = growth_tables(df.assign(label=mechanism_labels(df)))
    got = {r[0]: r for r in table.rows}
    lat, lo, hi = (
        float(x) for x in got["Global"][2].replace("[", "").replace("]", "").replace(",", "").split()
    )
    assert abs(lat - 2.0) < 0.02 and lo <= lat <= hi and hi - lo < 0.05
    assert got["Global"][3] == "2.00" and got["Swin"][3] == "1.00" and got["Swin"][4] == "1.00"
    assert "1 thread" in table.caption and "exponent 2" in table.note
