"""The report of an ablation run, from a synthetic run folder made here (no training).

Three dataset levels, three seeds, 400 validation images; the per-image results are built so that
the answers are known: BRA (S=4, k=4) is right wherever the baseline (Global) is and on extra
images (resolved, better), BRA (S=2, k=1) is right on a subset of the baseline's images (resolved,
worse), Swin equals the baseline image for image on the easy level (difference exactly 0) and lacks
seed 2 on the hard one (an error row), so the pairing there drops the baseline's seed 2.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnbench.kinds.ablation.accuracy import ablation_summary, ablation_tables
from attnbench.report import write_report
from attnbench.report._results import load_results, mechanism_labels
from attnbench.store import ResultsStore

N_IMAGES = 400
SEEDS = (0, 1, 2)
LEVELS = [("easy, contour 4", 4, 0.9), ("medium, contour 8", 8, 0.75), ("hard, contour 14", 14, 0.6)]
CONFIGS = [  # mechanism, params, FLOPs (MACs), params, latency (ms)
    ("vanilla", {}, 22.4e6, 1.42e6, 3.0),
    ("bra", {"n_win": 4, "topk": 4}, 19.3e6, 1.43e6, 4.5),
    ("bra", {"n_win": 2, "topk": 1}, 17.0e6, 1.43e6, 2.5),
    ("swin", {}, 18.8e6, 1.42e6, 3.2),
]


def _hex(correct: np.ndarray) -> str:
    return np.packbits(correct, bitorder="little").tobytes().hex()


def ablation_rows(per_image: bool = True, seeds: tuple[int, ...] = SEEDS) -> list[dict]:
    rng = np.random.default_rng(17)
    rows = []
    for index, (level, contour, p) in enumerate(LEVELS):
        hardness = rng.random(N_IMAGES)  # the level's images, the same for every configuration and seed
        for seed in seeds:
            base = hardness + rng.normal(0, 0.05, N_IMAGES) < p
            extra = rng.random(N_IMAGES) < 0.3
            results = {
                ("vanilla", ()): base,
                ("bra", (4, 4)): base | extra,  # right wherever the baseline is, and more
                ("bra", (2, 1)): base & (rng.random(N_IMAGES) > 0.15),  # a subset of the baseline's
                ("swin", ()): base.copy() if index == 0 else hardness + rng.normal(0, 0.05, N_IMAGES) < p,
            }
            for mech, params, flops, n_params, latency in CONFIGS:
                correct = results[(mech, tuple(params.values()))]
                top1 = 100 * correct.mean()
                failed = mech == "swin" and index == 2 and seed == 2
                row = {
                    "mechanism": mech,
                    **params,
                    "seed": seed,
                    "dataset": "pathfinder",
                    "level": level,
                    "level_index": index,
                    "contour_length": contour,
                    "n_distractors": 2,
                    "paddle_gap": 1,
                    "resolution": 32,
                    "H": 32,
                    "W": 32,
                    "C": None,  # the backbone's stages have different widths
                    "num_heads": None,
                    "batch": 64,
                    "dtype": "float32",
                    "device": "cpu",
                    "pass": "train",
                    "status": "error" if failed else "ok",
                    "error": "synthetic: training diverged" if failed else "",
                    "top1": None if failed else top1,
                    "flops": flops,
                    "params": n_params,
                    "latency_ms": latency,
                    "latency_iqr_ms": latency / 20,
                    "unstable": int(mech == "swin" and index == 0 and seed == 0),
                }
                if per_image and not failed:
                    curve = [[e, 50 + (top1 - 50) * e / 5 + rng.normal(0, 1)] for e in range(1, 5)]
                    row.update(
                        val_correct=_hex(correct), val_n=N_IMAGES, curve=json.dumps([*curve, [5, top1]])
                    )
                rows.append(row)
    return rows


def write_ablation_run(run_dir: Path, rows: list[dict], baseline: str | None = "vanilla") -> Path:
    """A run folder holding ``rows`` and a manifest naming the baseline, as an ablation run writes them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(run_dir)
    for i, row in enumerate(rows):
        store.add({"point_id": f"{i:016x}", "study": "synthetic-ablation", **row})
    store.close()
    manifest = {
        "note": "synthetic-test-data: accuracies, per-image results and latencies are made up",
        "kind": "ablation",
        "study": {"name": "synthetic-ablation", "kind": "ablation"},
        "conditions": {"levels": [lv for lv, _, _ in LEVELS], "seeds": list(SEEDS), "pass": "train"},
        "environments": {"cpu": {"torch": "x"}},
    }
    if baseline:
        manifest["conditions"]["baseline"] = baseline
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def _frame(run: Path) -> pd.DataFrame:
    df = load_results(run)
    df["label"] = mechanism_labels(df)
    return df


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = write_ablation_run(tmp_path_factory.mktemp("ablation") / "run", ablation_rows())
    write_report(run, formats=("png",))
    return run


def test_the_summary_gives_the_known_answers(tmp_path):
    df = _frame(write_ablation_run(tmp_path / "run", ablation_rows()))
    s = ablation_summary(df, manifest={"conditions": {"baseline": "vanilla"}})
    assert s.attrs["baseline"] == "Global" and not s.attrs["fallback"]
    assert list(dict.fromkeys(s["level"])) == [lv for lv, _, _ in LEVELS]  # the study's order
    assert set(s["label"]) == {"Global", "BRA (S=4, k=4)", "BRA (S=2, k=1)", "Swin"}
    by = s.set_index(["level", "label"])
    for level, _, _ in LEVELS:
        better, worse = by.loc[(level, "BRA (S=4, k=4)")], by.loc[(level, "BRA (S=2, k=1)")]
        assert better["resolved"] and better["diff_lo"] > 0
        assert better["sentence"].startswith(
            f"BRA (S=4, k=4) beats Global by {better['diff']:.1f} points (95 % CI "
        )
        assert worse["resolved"] and worse["diff_hi"] < 0
        assert worse["sentence"].startswith(f"Global beats BRA (S=2, k=1) by {-worse['diff']:.1f} points")
        base = by.loc[(level, "Global")]
        assert base["is_baseline"] and base["lo"] < base["top1"] < base["hi"]
        assert (base["n_seeds"], base["n_images"], base["method"]) == (3, N_IMAGES, "images and seeds")
    same = by.loc[("easy, contour 4", "Swin")]
    assert (same["diff"], same["diff_lo"], same["diff_hi"], same["resolved"]) == (0.0, 0.0, 0.0, False)
    assert "Swin vs Global: not resolved (difference +0.0 points, 95 % CI 0.0–0.0)" == same["sentence"]
    hard = by.loc[("hard, contour 14", "Swin")]
    assert hard["n_seeds"] == 2 and hard["difference"].seeds == (0, 1)
    assert hard["sentence"].endswith("paired over seeds 0, 1, leaving out seed 2 of Global (no Swin run)")
    # the study's baseline decides what Δ is against
    s = ablation_summary(df, manifest={"conditions": {"baseline": "swin"}})
    assert s.attrs["baseline"] == "Swin" and s[s["label"] == "Swin"]["is_baseline"].all()


def test_the_report_writes_a_table_per_level_with_resolved_marks(run):
    names = {p.stem for p in (run / "tables").glob("*.md")}
    levels = {"easy-contour-4", "medium-contour-8", "hard-contour-14"}
    # the outcome tables (primary) and the mean top-1 tables (secondary); no cue tables: the
    # manifest lists no datasets
    assert names == {f"{kind}_{lv}" for kind in ("outcomes", "ablation") for lv in levels}
    md = (run / "tables" / "ablation_easy-contour-4.md").read_text()
    assert "| Configuration | Top-1 (%) | Δ top-1 (points) | Resolved | FLOPs (MMACs, fvcore) |" in md
    assert re.search(
        r"\| BRA \(S=4, k=4\) \| [\d.]+ \[[\d.]+, [\d.]+\] \| \*\*\+[\d.]+ \[[\d.]+, [\d.]+\]\*\* \| yes \|",
        md,
    )
    assert re.search(r"\| Swin \| [\d.]+ \[[\d.]+, [\d.]+\] \| \+0\.0 \[0\.0, 0\.0\] \| no \| 18\.8 \|", md)
    assert "| Global |" in md.splitlines()[4]  # the baseline first
    assert "†" in md  # Swin's unstable timing on this level
    hard = (run / "tables" / "ablation_hard-contour-14.md").read_text()
    assert "| Seeds |" in hard  # Swin has two seeds there, the others three
    tex = (run / "tables" / "ablation_easy-contour-4.tex").read_text()
    assert r"BRA ($S{=}4$, $k{=}4$)" in tex and r"$\Delta$ top-1" in tex


def test_the_report_says_it_in_words_and_states_the_method(run):
    report = (run / "report.md").read_text()
    summary = report.split("## Plots")[0]
    assert "Each configuration against **Global** (the study's baseline)" in summary
    assert re.search(r"- BRA \(S=4, k=4\) beats Global by [\d.]+ points \(95 % CI [\d.]+–[\d.]+\)", summary)
    assert re.search(r"- Global beats BRA \(S=2, k=1\) by [\d.]+ points", summary)
    assert "- Swin vs Global: not resolved (difference +0.0 points, 95 % CI 0.0–0.0)" in summary
    assert summary.index("**easy, contour 4**") < summary.index("**hard, contour 14**")
    assert "each part with its own Student quantile" in report and "paired" in report
    html = (run / "index.html").read_text()
    assert "beats Global by" in html and "ablation_easy-contour-4" in html


def test_the_report_draws_the_ablation_plots_only(run):
    pngs = {p.stem for p in (run / "plots").glob("*.png")}
    assert pngs == {
        *("accuracy_vs_flops", "accuracy_vs_latency", "accuracy_ladder", "learning_curves"),
        *("time_to_learn", "performance_profiles"),
    }
    report = (run / "report.md").read_text()
    assert "not drawn" not in report  # the sweep's plots are not listed as missing
    assert "bars: 95 % CI" in report


def test_plots_show_the_intervals_and_the_front(tmp_path):
    import matplotlib

    from attnbench.kinds.ablation.plots import (
        plot_accuracy_ladder,
        plot_accuracy_vs_cost,
        plot_learning_curves,
    )
    from attnbench.report.plots import RC

    df = _frame(write_ablation_run(tmp_path / "run", ablation_rows()))
    with matplotlib.rc_context(RC):
        fig = plot_accuracy_vs_cost(df, "flops")
        ladder = plot_accuracy_ladder(df)
        curves = plot_learning_curves(df)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    # the success rate on top, one column per level; the mean top-1 (secondary) below
    top, bottom = axes[: len(LEVELS)], axes[len(LEVELS) :]
    assert [ax.get_title() for ax in top] == [lv for lv, _, _ in LEVELS]
    assert all("learned (% of trainings" in ax.get_ylabel() and "95 % CI" in ax.get_ylabel() for ax in top)
    assert all("top-1 (%, mean; bars: 95 % CI)" in ax.get_ylabel() for ax in bottom)
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "Pareto front" in legend and "BRA (S=2, k=1) (3 seeds)" in legend
    assert "Swin (2/3 seeds)" in legend  # one entry per configuration, its seed counts where they differ
    ticks = [t.get_text() for t in ladder.axes[0].get_xticklabels()]
    assert ticks == [lv for lv, _, _ in LEVELS]
    named = {t.get_text() for t in ladder.axes[0].texts}
    assert {"Global", "BRA (S=4, k=4)", "BRA (S=2, k=1)", "Swin"} <= named  # every line labelled
    assert len([ax for ax in curves.axes if ax.get_visible()]) == 3
    old = _frame(write_ablation_run(tmp_path / "old", ablation_rows(per_image=False, seeds=(0, 1))))
    with matplotlib.rc_context(RC):
        fig = plot_accuracy_vs_cost(old, "flops")  # no interval: ± std, and the axis says so
        assert plot_learning_curves(old) is None
    means = [ax for ax in fig.axes if ax.get_visible() and "mean" in ax.get_ylabel()]
    assert len(means) == len(LEVELS) and all("± std over seeds, no CI" in ax.get_ylabel() for ax in means)


def test_rows_without_per_image_results_still_report(tmp_path):
    two = write_ablation_run(tmp_path / "two", ablation_rows(per_image=False, seeds=(0, 1)), baseline=None)
    write_report(two, plots=False)  # the plots of such rows: test_plots_show_the_intervals_and_the_front
    md = (two / "tables" / "ablation_easy-contour-4.md").read_text()
    assert "Seeds only (no row stores val_correct" in md
    assert re.search(r"\| BRA \(S=4, k=4\) \| [\d.]+ ± [\d.]+ \| \+[\d.]+ \| — \|", md)
    report = (two / "report.md").read_text()
    assert "Each configuration against **Global** (the run names no baseline, so vanilla)" in report
    assert "most accurate" not in report  # only a resolved outcome contrast names a best configuration
    assert "**not declared before the run**" in report  # an old manifest: the report's defaults
    assert "no per-image results and fewer than 3 seeds, so no interval" in report
    three = write_ablation_run(tmp_path / "three", ablation_rows(per_image=False))
    s = ablation_summary(_frame(three))
    ok = s[s["status"] == "ok"]
    assert (ok["method"] == "seeds").all()
    assert (ok["lo"].notna() == (ok["n_seeds"] >= 3)).all()  # seeds-only intervals from three seeds on
    assert not math.isnan(s[s["label"] == "Swin"]["diff"].iloc[0])


def test_attention_maps_are_shown_when_the_run_has_them(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "maps").mkdir()
    shutil.copy(copy / "plots" / "accuracy_ladder.png", copy / "maps" / "all.png")  # stands in for a picture
    shutil.copy(copy / "plots" / "accuracy_ladder.png", copy / "maps" / "bra-n_win4-topk4.png")
    erf = 'configuration,file,r50_px\n"BRA (S=4, k=4)",bra-n_win4-topk4,3.0\n'
    (copy / "maps" / "erf.csv").write_text(erf)
    write_report(copy, plots=False)
    html = (copy / "index.html").read_text()
    assert '<section id="maps"><h2>Attention maps</h2>' in html and 'src="maps/all.png"' in html
    assert 'href="maps/erf.csv"' in html
    assert "Attention maps and ERF: BRA (S=4, k=4)." in html  # captions name the configuration, not the file
    assert "## Attention maps" in (copy / "report.md").read_text()
    assert "Attention maps" not in (run / "index.html").read_text()


def test_ablation_tables_fit_a_two_column_page(run, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed; the LaTeX tables were not compiled")
    from tests.test_latex import compile_tables, overfull

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("plots"))
    log = compile_tables(copy)
    assert not overfull(log), overfull(log)


def test_sweep_rows_are_no_ablation():
    from tests.test_report import small_rows

    df = pd.DataFrame(small_rows())
    assert ablation_tables(ablation_summary(df.iloc[:0].assign(label=[])), df) == []
