"""The reach readings (attnbench.kinds.ablation.reach): per-distance accuracy from the stored per-image
results, each training's reach and slope, the tables and the plots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from attnbench import stats
from attnbench.kinds.ablation import reach as rr

REACH = {
    "name": "reach",
    "resolution": 32,
    "patch": 4,
    "glyph": 4,
    "mark": "bright",
    "distances": [1, 2, 3, 4],
}
MANIFEST = {"conditions": {"datasets": [{**REACH, "val_size": 160, "seed": 0}]}}  # as the runner records it


@pytest.fixture(scope="module")
def dist():
    d = rr.val_distances(MANIFEST)
    assert d is not None and len(d) == 160 and sorted(set(d.tolist())) == [1, 2, 3, 4]
    return d


def _row(label, mechanism, seed, correct, **extra):
    return {
        "label": label,
        "mechanism": mechanism,
        "seed": seed,
        "dataset": "reach",
        "status": "ok",
        "val_correct": stats.encode_correct(np.asarray(correct, bool)),
        "val_n": len(correct),
        "flops": 5e6,
        "latency_ms": 1.0,
        "unstable": 0,
        **extra,
    }


def _frame(dist):
    rows = []
    for seed in (1, 2, 3):
        rows.append(_row("Global", "vanilla", seed, np.ones(len(dist))))
        rows.append(_row("Local", "neighborhood", seed, dist <= 1 + seed % 2))  # reach 2, 1, 2
    rows.append(_row("BRA (S=4, k=1)", "bra", 1, np.arange(len(dist)) % 2 == 0, n_win=4, topk=1))  # chance
    rows.append(_row("BRA (S=4, k=4)", "bra", 1, np.ones(len(dist)), n_win=4, topk=4))
    return pd.DataFrame(rows)


def test_accuracy_is_split_by_distance_and_reach_is_where_it_first_falls_short(dist):
    df = _frame(dist)
    frame = rr.distance_frame(df, MANIFEST)
    local = frame[(frame["label"] == "Local") & (frame["seed"] == 1)].set_index("d")["acc"]
    assert local.to_dict() == {1: 100.0, 2: 100.0, 3: 0.0, 4: 0.0}
    assert set(frame["n"]) == {40}  # 20 of each class at each of the four distances
    summary = rr.reach_summary(frame, df).set_index("label")
    assert summary.loc["Global", "reach"] == 4 and summary.loc["Global", "slope"] == pytest.approx(0)
    assert summary.loc["Local", "reaches"] == [2, 2, 1]
    assert summary.loc["Local", "reach"] == pytest.approx(5 / 3)
    lo, hi = summary.loc["Local", "reach_lo"], summary.loc["Local", "reach_hi"]
    assert lo < 5 / 3 < hi
    assert summary.loc["Local", "slope"] < -30  # falls off with distance
    # a training at chance at the nearest distance did not learn: counted, not given a reach
    bra = summary.loc["BRA (S=4, k=1)"]
    assert bra["learned"] == 0 and math.isnan(bra["reach"]) and bra["reaches"] == [0]


def test_tables_findings_and_plots(dist):
    df = _frame(dist)
    summary = rr.reach_summary(rr.distance_frame(df, MANIFEST), df)
    by_distance, table = rr.reach_tables(summary, df)
    assert by_distance.header == ["Configuration", "d=1", "d=2", "d=3", "d=4"]
    assert "(40 images per distance)" in by_distance.note
    text = table.to_markdown()
    assert "2 2 1" in text and "0/1" in text and "—" in text
    assert "\\begin{tabular}" in table.to_latex()
    lines = rr.reach_findings(summary).to_markdown()
    assert (
        "BRA (S=4, k=1): learned in none of 1 seeds" in lines and "Local: learned 3 of 3; reach 1.7" in lines
    )
    from attnbench.report.plots import series_styles

    assert rr.plot_reach_bra(df, MANIFEST) is not None
    for plot in (rr.plot_reach_vs_distance, rr.plot_reach_vs_cost):
        assert plot(df, MANIFEST, styles_of=series_styles) is not None


def test_a_run_that_is_not_reach_has_no_readings():
    df = pd.DataFrame([{"label": "Global", "mechanism": "vanilla", "dataset": "pathfinder", "status": "ok"}])
    assert rr.distance_frame(df, MANIFEST).empty
    assert rr.plot_reach_vs_distance(df, MANIFEST, styles_of=dict) is None
    assert rr.val_distances({"conditions": {"datasets": "not a list"}}) is None
    assert rr.val_distances({}) is None
