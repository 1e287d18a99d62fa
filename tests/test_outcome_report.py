"""The outcome analysis of an ablation report (attnbench.kinds.ablation.analysis) on synthetic bimodal runs.

Each training either learns (final top-1 near 90 %, reached at a known epoch) or stays near 50 %;
which ones learn is set per (level, configuration), so the counts, the contrasts and the best
configuration are known. The numbers in the tables are checked against outcomes called
directly. The cue reliance runs on a tiny generated Pathfinder validation split (version 4, easy,
200 images, in a temporary cache) with made-up per-image results.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from attnbench.kinds.ablation import outcomes
from attnbench.kinds.ablation.accuracy import ablation_summary
from attnbench.kinds.ablation.analysis import (
    DEFAULT_LEARNED_TOP1,
    analysis_plan,
    arms_of,
    cue_reliance,
    cue_tables,
    fmt_p,
    outcome_analysis,
    outcome_findings,
    outcome_tables,
    report_findings,
    report_method,
)
from attnbench.report import write_report
from attnbench.report._results import load_results, mechanism_labels
from attnbench.store import ResultsStore

SEEDS = tuple(range(12))
EPOCHS = 10
LEVELS = ["easy, contour 5", "medium, contour 6"]
CONFIGS = {  # label: (mechanism, params, FLOPs, latency ms, trainings that learn per level)
    "Global": ("vanilla", {}, 22.4e6, 3.0, (3, 2)),
    "BRA (S=4, k=4)": ("bra", {"n_win": 4, "topk": 4}, 19.3e6, 4.5, (12, 10)),
    "BRA (S=2, k=1)": ("bra", {"n_win": 2, "topk": 1}, 17.0e6, 2.5, (6, 1)),
    "Swin": ("swin", {}, 18.8e6, 3.2, (0, 0)),
}


def training(seed: int, learns: bool, rng: np.random.Generator, early_stop: bool) -> dict:
    """One synthetic training: a curve evaluated every 2 epochs; a learned one jumps to about 90 %
    at epoch 2, 4 or 6 (and, with early stopping, stops 2 epochs later); an unlearned one stays
    near 50 % (and, with early stopping, gives up at epoch 6 for odd seeds)."""
    learn_at = (2, 4, 6)[seed % 3]
    last = EPOCHS
    if early_stop:
        last = min(EPOCHS, learn_at + 2) if learns else (6 if seed % 2 else EPOCHS)
    final = 86.0 + 0.37 * seed + rng.uniform(0, 0.1) if learns else 50.0 + 0.11 * seed + rng.uniform(0, 0.1)
    curve = []
    for epoch in range(2, last + 1, 2):
        value = final if learns and epoch >= learn_at else 50.0 + rng.uniform(0, 3)
        curve.append([epoch, round(value, 3)])
    curve[-1][1] = round(final, 3)
    row = {"seed": seed, "top1": round(final, 3), "curve": json.dumps(curve)}
    if early_stop:
        row.update(
            epochs_run=last,
            stopped="learned and plateaued"
            if learns and last < EPOCHS
            else "gave up"
            if last < EPOCHS
            else "",
            learned_epoch=learn_at if learns else None,
        )
    return row


def bimodal_rows(
    configs: dict = CONFIGS,
    levels: list[str] = LEVELS,
    seeds: tuple[int, ...] = SEEDS,
    early_stop: bool = True,
    generator_version: int | None = 4,
) -> list[dict]:
    rng = np.random.default_rng(5)
    rows = []
    for index, level in enumerate(levels):
        for mech, params, flops, latency, learning in configs.values():
            for seed in seeds:
                learns = seed < learning[index]  # the first k seeds learn
                row = {
                    "mechanism": mech,
                    **params,
                    "dataset": "pathfinder",
                    "level": level,
                    "level_index": index,
                    "resolution": 32,
                    "H": 32,
                    "W": 32,
                    "C": None,
                    "num_heads": None,
                    "batch": 32,
                    "dtype": "float32",
                    "device": "cpu",
                    "pass": "train",
                    "status": "ok",
                    "error": "",
                    "flops": flops,
                    "params": 1.4e6,
                    "latency_ms": latency,
                    **training(seed, learns, rng, early_stop),
                }
                if generator_version is not None:
                    row["generator_version"] = generator_version
                rows.append(row)
    return rows


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["label"] = mechanism_labels(df)
    return df


def manifest(analysis: dict | None = None, datasets: list | None = None, baseline: str = "vanilla") -> dict:
    conditions: dict = {"baseline": baseline, "train": {"epochs": EPOCHS}}
    if analysis is not None:
        conditions["analysis"] = analysis
    if datasets is not None:
        conditions["datasets"] = datasets
    return {
        "kind": "ablation",
        "study": {"name": "synthetic-bimodal", "kind": "ablation"},
        "conditions": conditions,
    }


DECLARED = {"learned_top1": 75.0, "contrasts": [["bra", "vanilla"], ["swin", "vanilla"]], "alpha": 0.05}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return frame(bimodal_rows())


@pytest.fixture(scope="module")
def declared(df) -> object:
    return outcome_analysis(df, manifest(DECLARED))


def test_the_plan_comes_from_the_manifest_or_the_defaults(df):
    plan = analysis_plan(df, manifest(DECLARED))
    assert (plan.threshold, plan.alpha, plan.declared, plan.given) == (75.0, 0.05, True, True)
    assert plan.contrasts == (("bra", "vanilla"), ("swin", "vanilla"))
    assert "declared in the study file before the run" in plan.words()
    old = analysis_plan(df, manifest())  # a run made before the study declared its analysis
    assert (old.threshold, old.alpha, old.declared, old.given) == (DEFAULT_LEARNED_TOP1, 0.05, False, False)
    assert old.contrasts == (("bra", "vanilla"), ("swin", "vanilla"))  # every mechanism vs the baseline
    assert "not declared before the run" in old.words()
    study_default = analysis_plan(df, manifest({**DECLARED, "declared": False}))
    assert not study_default.declared and "declared no contrasts" in study_default.words()


def test_trainings_read_curves_early_stops_and_censoring(df):
    arms = arms_of(df, manifest())
    assert arms.levels == LEVELS and arms.curves
    arm = arms.trainings[(LEVELS[0], "Global")]
    assert [t.seed for t in arm] == list(SEEDS)
    gave_up = arm[5]  # seed 5 never learns and gives up at epoch 6
    assert gave_up.stopped == "gave up" and gave_up.epochs_run == 6
    assert outcomes.time_to_learn(gave_up, 70) == (6, False)  # censored at its last evaluated epoch
    quick = arms.trainings[(LEVELS[0], "BRA (S=4, k=4)")][0]  # learns at epoch 2, stops at 4
    assert quick.stopped == "learned and plateaued" and outcomes.time_to_learn(quick, 70) == (2, True)


def test_the_numbers_are_those_of_outcomes(df, declared):
    arms = arms_of(df, manifest(DECLARED))
    pairs = [
        ((level, label), (level, "Global"))
        for level in LEVELS
        for label in ("BRA (S=4, k=4)", "BRA (S=2, k=1)", "Swin")
    ]
    direct = outcomes.compare(arms.trainings, pairs, 75.0, 0.05)
    assert [(c.a, c.b) for c in declared.contrasts] == pairs  # one family over both levels
    for got, want in zip(declared.contrasts, direct):
        for name in outcomes.ENDPOINTS:
            g, w = getattr(got, name), getattr(want, name)
            np.testing.assert_equal((g.p, g.p_holm, g.resolved), (w.p, w.p_holm, w.resolved))
    assert declared.family("counts") == 6
    # Holm counts the pairs of both levels: the smallest counts p is multiplied by 6, not by 3
    p = np.array([c.counts.p for c in declared.contrasts])
    assert declared.contrasts[int(p.argmin())].counts.p_holm == pytest.approx(min(1.0, 6 * p.min()))
    one_level = outcomes.compare(arms.trainings, pairs[:3], 75.0)
    assert one_level[0].counts.p_holm < declared.contrasts[0].counts.p_holm
    row = declared.summary.set_index(["level", "label"]).loc[(LEVELS[0], "BRA (S=2, k=1)")]
    rate = outcomes.success_rate(arms.trainings[(LEVELS[0], "BRA (S=2, k=1)")], 75.0)
    km = outcomes.kaplan_meier(arms.trainings[(LEVELS[0], "BRA (S=2, k=1)")], 75.0)
    assert (row["k"], row["n"], row["lo"], row["hi"]) == (6, 12, rate.lo, rate.hi)
    assert row["median_epoch"] == km.median == 6  # seeds 0-5 learn at 2, 4, 6, 2, 4, 6: half by 6


def test_the_table_rows_show_those_numbers(df, declared):
    tables = {t.name: t for t in outcome_tables(declared, df)}
    assert set(tables) == {"outcomes_easy-contour-5", "outcomes_medium-contour-6"}
    md = tables["outcomes_easy-contour-5"].to_markdown()
    c = declared.contrasts[0]  # BRA (S=4, k=4) vs Global on the easy level
    arm = arms_of(df, manifest(DECLARED)).trainings[(LEVELS[0], "BRA (S=4, k=4)")]
    rate = outcomes.success_rate(arm, 75.0)
    top = [t.top1 for t in arm if outcomes.learned(t, 75.0)]
    line = next(x for x in md.splitlines() if x.startswith("| BRA (S=4, k=4) |"))
    parts = [p.strip() for p in line.strip("|").split("|")]
    # seeds learn at epochs 2, 4, 6, 2, ...: half of them have learned by epoch 4
    assert parts[:4] == ["BRA (S=4, k=4)", "12", f"12/12 [{100 * rate.lo:.0f}, {100 * rate.hi:.0f}]", "4"]
    assert parts[4] == f"{np.median(top):.1f} [{min(top):.1f}, {max(top):.1f}]"
    final = [t.top1 for t in arm]
    assert parts[5] == f"{np.median(final):.1f} [{min(final):.1f}, {max(final):.1f}]"
    assert parts[6] == "Global"
    assert parts[7] == f"**{fmt_p(c.counts.p)} ({fmt_p(c.counts.p_holm)})**" and c.counts.resolved
    assert parts[8] == (
        f"**{fmt_p(c.final.p)} ({fmt_p(c.final.p_holm)})**"
        if c.final.resolved
        else f"{fmt_p(c.final.p)} ({fmt_p(c.final.p_holm)})"
    )
    assert parts[9] == (
        f"**{fmt_p(c.time.p)} ({fmt_p(c.time.p_holm)})**"
        if c.time.resolved
        else f"{fmt_p(c.time.p)} ({fmt_p(c.time.p_holm)})"
    )
    assert parts[10] == f"{fmt_p(c.accuracy.p)} ({fmt_p(c.accuracy.p_holm)})"
    assert parts[11].startswith("counts")
    glob = next(x for x in md.splitlines() if x.startswith("| Global |"))
    assert glob.rstrip().endswith("| comparator |") and "3/12 [" in glob
    note = tables["outcomes_easy-contour-5"].note
    assert "≥ 75 % (declared before the run)" in note and "the primary endpoint counts (m = 6)" in note
    assert "Fisher's exact test" in note and "log-rank" in note and "Mann–Whitney" in note
    swin = next(x for x in md.splitlines() if x.startswith("| Swin |"))
    assert "0/12 [0, 26]" in swin and "not reached" in swin


def test_a_declared_co_primary_final_top1_joins_the_primary_family(df):
    both = outcome_analysis(df, manifest({**DECLARED, "primary": ["final", "counts"]}))
    assert both.plan.primary == ("counts", "final")
    m = both.family("counts")
    assert m == both.family("final") == 12 and both.family("time") == 6  # 6 pairs x 2 endpoints
    joint = outcomes.holm([c.counts.p for c in both.contrasts] + [c.final.p for c in both.contrasts])
    assert [c.counts.p_holm for c in both.contrasts] + [c.final.p_holm for c in both.contrasts] == (
        pytest.approx(joint, nan_ok=True)
    )
    table = outcome_tables(both, df)[0]
    assert "Counts (primary): Fisher p (Holm p)" in table.header
    assert "Final top-1 (primary): Mann–Whitney p (Holm p)" in table.header
    assert "the primary endpoints counts and final together (m = 12)" in table.note
    text = outcome_findings(both).to_markdown()
    assert "Two primary endpoints, declared before the run" in text and "final top-1" in text
    assert both.power["family"] == 12
    for odd in (None, "final", ["time"], [3]):  # absent or unreadable: counts alone, as before
        assert outcome_analysis(df, manifest({**DECLARED, "primary": odd})).plan.primary == ("counts",)
    alone = outcome_analysis(df, manifest({**DECLARED, "primary": ["final"]}))
    assert alone.family("final") == 6 and "The primary endpoint, declared before the run, is the final" in (
        outcome_findings(alone).to_markdown()
    )


def test_undeclared_configurations_are_exploratory(df):
    analysis = outcome_analysis(df, manifest({**DECLARED, "contrasts": [["swin", "vanilla"]]}))
    md = outcome_tables(analysis, df)[0].to_markdown()
    bra = next(x for x in md.splitlines() if x.startswith("| BRA (S=4, k=4) |"))
    assert bra.rstrip().endswith("| exploratory |")
    assert analysis.family() == 2  # Swin vs Global at both levels


def test_no_best_is_named_unless_resolved_against_every_other(df, declared):
    for level in LEVELS:  # BRA (S=4, k=4) is never declared against BRA (S=2, k=1) or Swin
        assert declared.best[level].arm is None
    lines = outcome_findings(declared).to_markdown()
    assert "no best configuration is resolved (the highest observed rate is BRA (S=4, k=4)'s" in lines
    assert "most accurate" not in lines
    three = {
        "Global": ("vanilla", {}, 22.4e6, 3.0, (0, 0)),
        "BRA": ("bra", {}, 19.3e6, 4.5, (12, 12)),
        "Swin": ("swin", {}, 18.8e6, 3.2, (0, 1)),
    }
    rows = frame(bimodal_rows(three))
    all_pairs = {
        "learned_top1": 70.0,
        "contrasts": [["bra", "vanilla"], ["bra", "swin"], ["swin", "vanilla"]],
    }
    analysis = outcome_analysis(rows, manifest(all_pairs))
    assert all(analysis.best[level].arm == "BRA" for level in LEVELS)
    text = outcome_findings(analysis).to_markdown()
    assert "best configuration: **BRA**, resolved against every other configuration here" in text
    assert "BRA vs Global: learned 12/12 vs 0/12 (+100 points), Fisher p = <0.001" in text
    assert "**resolved**, BRA learns more often" in text


def test_findings_state_the_plan_power_and_secondary_part(df):
    analysis = outcome_analysis(df, manifest())
    summary = ablation_summary(df, manifest=manifest())
    text = report_findings(summary, analysis).to_markdown()
    assert "**not declared before the run**" in text and "at or above 70 %" in text
    assert text.index("Primary analysis") < text.index("Secondary (exploratory): mean top-1")
    assert "learned (k/n, 95 % CI): Global 3/12" in text
    power = outcomes.fisher_power(0.9, 0.3, 12, 0.05)
    family = outcomes.fisher_power(0.9, 0.3, 12, 0.05 / 6)
    assert "with 12 seeds per arm" in text and f"probability {power:.2f} at α = 0.05" in text
    assert f"{family:.2f} at α/6 = 0.00833" in text
    assert "most accurate" not in text
    method = "\n\n".join(report_method(summary, analysis))
    first, second = method.split("\n\n")
    assert first.startswith("Outcome statistics") and "Kaplan–Meier" in first and "Holm" in first
    assert second.startswith("Secondary, exploratory statistics")


def test_three_seeds_say_that_nothing_can_be_resolved():
    rows = frame(bimodal_rows(seeds=(0, 1, 2), early_stop=False))
    analysis = outcome_analysis(rows, manifest())
    assert analysis.power["n"] == 3 and analysis.power["at_alpha"] == 0.0
    assert "**no counts contrast can be resolved**" in outcome_findings(analysis).to_markdown()


# --- cue reliance on a tiny generated split -------------------------------------------------------

VAL = 200


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A version-4 easy validation split of 200 images (a few seconds), and where the cue misleads."""
    from attnbench.ablation.data import VAL_SEED_OFFSET
    from attnbench.ablation.data.pathfinder import PathfinderConfig, load_markers
    from attnbench.ablation.data.probes import cue_split, straight_line_cue

    cache = tmp_path_factory.mktemp("pathfinder")
    dataset = {
        "name": "pathfinder",
        "difficulty": "easy",
        "resolution": 32,
        "val_size": VAL,
        "seed": 3,
        "cache_dir": str(cache),
        "version": 4,
    }
    cfg = PathfinderConfig.from_dataset(dataset)
    images, labels, markers = load_markers(cfg, VAL, 3 + VAL_SEED_OFFSET, cache)
    cue = straight_line_cue(images, markers, band=5.0, marker_radius=cfg.radius, threshold=0.5 * cfg.contrast)
    labels = labels.astype(bool)
    says = cue_split(cue, labels)
    return dataset, labels, cue, ~labels & says, ~labels & ~says


def _hex(correct: np.ndarray) -> str:
    return np.packbits(correct, bitorder="little").tobytes().hex()


def cue_rows(split, version: int | None = 4) -> list[dict]:
    """Global traces the path: right on every image but a few; BRA follows the cue: right
    everywhere except the misleading negatives; a third of each does not learn (wrong on half)."""
    _, labels, _, mislead, _ = split
    rng = np.random.default_rng(1)
    configs = {"Global": ("vanilla", {}, 20e6, 3.0, (8,)), "BRA": ("bra", {}, 18e6, 2.0, (8,))}
    rows = bimodal_rows(configs, levels=["easy"], generator_version=version)
    for row in rows:
        learns = row["top1"] > 70
        if not learns:
            correct = rng.random(VAL) < 0.5
        elif row["mechanism"] == "vanilla":
            correct = rng.random(VAL) > 0.02
        else:
            correct = ~mislead
        row.update(val_correct=_hex(correct), val_n=VAL, top1=100 * correct.mean() if learns else row["top1"])
    return rows


def test_cue_reliance_splits_the_negatives_by_the_cue(split):
    from scipy.stats import binomtest

    from attnbench.ablation.data.probes import held_out_accuracy

    dataset, labels, cue, mislead, agree = split
    df = frame(cue_rows(split))
    m = manifest(datasets=[{k: v for k, v in dataset.items() if k != "version"}])  # version from the rows
    analysis = outcome_analysis(df, m)
    result = cue_reliance(df, m, analysis)["easy"]
    assert result.reason is None and result.version == 4
    assert result.held_out == held_out_accuracy(cue, labels, seed=0)
    assert (result.n_agree, result.n_mislead) == (int(agree.sum()), int(mislead.sum()))
    assert result.n_mislead > 0 and result.n_agree > 0
    rows = {r["label"]: r for r in result.rows}
    follower, tracer = rows["BRA"], rows["Global"]
    assert follower["used"] == follower["learned"] == 8
    assert (follower["mislead_k"], follower["mislead_n"]) == (0, 8 * result.n_mislead)
    assert (follower["agree_k"], follower["agree_n"]) == (8 * result.n_agree, 8 * result.n_agree)
    assert follower["diff"] == -100.0 and follower["misled"] == 8
    ci = binomtest(0, 8 * result.n_mislead).proportion_ci(method="exact")
    assert follower["mislead_hi"] == pytest.approx(100 * ci.high)
    assert abs(tracer["diff"]) < 10 and tracer["misled"] == 0
    table = cue_tables({"easy": result}, df)[0]
    md = table.to_markdown()
    assert table.name == "cue_easy" and f"(% right, n = {result.n_mislead})" in md
    cells = r"\| BRA \| 8 \| 100\.0 \[[\d.]+, 100\.0\] \| 0\.0 \[0\.0, [\d.]+\] \| −100\.0 \| 8 of 8 \|"
    assert re.search(cells, md), md
    assert f"alone scores {result.held_out:.1f} %" in table.note
    text = outcome_findings(analysis, {"easy": result}).to_markdown()
    assert "BRA −100.0 points (8 of 8 learned trainings misled)" in text


def test_cue_reliance_says_why_it_is_skipped(split):
    dataset, *_ = split
    no_version = {k: v for k, v in dataset.items() if k != "version"}
    df = frame(cue_rows(split, version=None))
    cases = [
        (manifest(datasets=[no_version]), "generator version not recorded"),
        (manifest(datasets=[{**no_version, "version": 2}]), "generator version 2 no longer exists"),
        (
            manifest(datasets=[{**no_version, "version": 3, "val_size": 150}]),
            "the rows hold [200] validation",
        ),
        (manifest(), "the manifest lists no datasets"),
        (manifest(datasets=[{"name": "cifar10"}]), "not a Pathfinder level"),
    ]
    for m, why in cases:
        result = cue_reliance(df, m, outcome_analysis(df, m))["easy"]
        assert result.reason is not None and why in result.reason, (why, result.reason)
        assert cue_tables({"easy": result}, df) == []


# --- the whole report -----------------------------------------------------------------------------


def write_run(run_dir: Path, rows: list[dict], m: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(run_dir)
    for i, row in enumerate(rows):
        store.add({"point_id": f"{i:016x}", "study": "synthetic-bimodal", **row})
    store.close()
    (run_dir / "manifest.json").write_text(json.dumps({**m, "environments": {"cpu": {"torch": "x"}}}))
    return run_dir


def test_the_report_puts_the_outcomes_first(tmp_path, split):
    dataset, *_ = split
    rows = cue_rows(split) + [
        {**r, "level": "medium", "level_index": 1}
        for r in bimodal_rows(levels=["medium"], generator_version=None)
    ]
    m = manifest(DECLARED, datasets=[dataset, {"name": "pathfinder", "difficulty": "medium"}])
    m["conditions"]["analysis"] = {**DECLARED, "contrasts": [["bra", "vanilla"]]}
    run = write_run(tmp_path / "run", rows, m)
    write_report(run, plots=False, maps=False)  # draw_all: test_ablation_report, and the test below
    names = {p.stem for p in (run / "tables").glob("*.md")}
    assert {"outcomes_easy", "outcomes_medium", "cue_easy", "ablation_easy", "ablation_medium"} <= names
    assert "cue_medium" not in names  # its version is not recorded
    report = (run / "report.md").read_text()
    summary = report.split("## Plots")[0]
    assert summary.index("Primary analysis") < summary.index("Secondary (exploratory)")
    assert "declared in the study file before the run" in summary
    assert "cue reliance not computed: generator version not recorded" in summary
    assert "Secondary (exploratory): mean top-1 on easy" in (run / "tables" / "ablation_easy.md").read_text()
    assert "Outcome statistics (docs/outcomes.md)" in report.split("## Run")[1]


def test_the_outcome_plots_draw_what_the_arms_hold(df):
    from attnbench.kinds.ablation.plots import (
        plot_accuracy_ladder,
        plot_accuracy_vs_cost,
        plot_performance_profiles,
        plot_time_to_learn,
    )
    from attnbench.report.plots import RC

    m = manifest(DECLARED)
    with matplotlib.rc_context(RC):
        km = plot_time_to_learn(df, m)
        profiles = plot_performance_profiles(df, m)
        ladder = plot_accuracy_ladder(df, m)
        cost = plot_accuracy_vs_cost(df, "flops", m)
    axes = [ax for ax in km.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == LEVELS
    assert "val top-1 < 75 %" in axes[0].get_ylabel()
    notes = [t.get_text() for ax in profiles.axes for t in ax.texts]
    assert not any("BRA (S=4, k=4) = " in n for n in notes)  # no two arms alike here
    legend = [t.get_text() for lg in profiles.legends for t in lg.get_texts()]
    assert "learned threshold (75 %)" in legend and "Swin" in legend
    ax = ladder.axes[0]
    assert "top-1 ≥ 75 %" in ax.get_ylabel()
    heights = sorted(round(y, 3) for line in ax.get_lines() for y in np.atleast_1d(line.get_ydata()))
    assert 100.0 in heights and 0.0 in heights  # BRA (S=4, k=4) learns 12/12 on easy, Swin never
    titles = [a.get_title() for a in cost.axes if a.get_visible()]
    assert titles[:2] == LEVELS and "learned (% of trainings" in cost.axes[0].get_ylabel()
    no_curves = df.drop(columns=["curve"])
    assert plot_time_to_learn(no_curves, m) is None  # no time to learn without curves


def test_old_rows_without_curves_or_new_columns_still_report(tmp_path):
    rows = [
        {k: v for k, v in r.items() if k not in ("curve", "epochs_run", "stopped", "learned_epoch")}
        for r in bimodal_rows(generator_version=None)
    ]
    run = write_run(tmp_path / "old", rows, manifest())
    write_report(run, plots=False, maps=False)
    report = (run / "report.md").read_text()
    assert "**not declared before the run**" in report
    # the time endpoint says nothing then
    assert "stores no learning curve of two or more evaluated epochs" in report
    df = load_results(run)
    assert {"outcomes_easy-contour-5", "ablation_easy-contour-5"} <= {
        p.stem for p in (run / "tables").glob("*.md")
    }
    assert len(df) == len(rows)
