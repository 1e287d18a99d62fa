"""The BRA formula check: formula terms by hand, the count split into terms, and the scaling fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import attnbench
from attnbench.kinds.sweep.formula import (
    VARIANTS,
    check_rows,
    formula_doc,
    formula_terms,
    loglog_slope,
    paper_bound,
    paper_formula,
    paper_optimal_s,
    run_formula_check,
    stored_point,
)
from attnbench.kinds.sweep.kind import count_point, flops_detail


def bra_row(H, W, n_win, topk, C=32, heads=2, **extra):
    """A BRA row as the sweep stores it: its count, and the count by term (flops_detail)."""
    m = attnbench.build_mechanism("bra", C, heads, n_win=n_win, topk=topk)
    report = attnbench.count_flops(m, torch.zeros(1, H, W, C), cross_check=False)
    return {
        "mechanism": "bra",
        "H": H,
        "W": W,
        "C": C,
        "num_heads": heads,
        "n_win": n_win,
        "topk": topk,
        "status": "ok",
        "pass": "forward",
        "flops": report.total,
        "flops_uncounted": json.dumps(report.uncounted),
        "flops_detail": json.dumps(flops_detail(m, report, H, W)),
        **extra,
    }


def test_published_terms_by_hand():
    # H = W = 28, C = 32, S = 7, k = 4: HW = 784 tokens, HW/S² = 16 tokens per region
    quoted = formula_terms("quoted", 28, 28, 32, 7, 4)
    paper = formula_terms("paper", 28, 28, 32, 7, 4)
    assert quoted["qkv_proj"][1] == paper["qkv_proj"][1] == 3 * 784 * 32 * 32 == 2_408_448
    assert quoted["routing"][1] == paper["routing"][1] == 2 * 7**4 * 32 == 153_664
    assert quoted["attention"][1] == 2 * 784 * 4 * 32 == 200_704
    assert paper["attention"][1] == 2 * 784 * 4 * 16 * 32 == 3_211_264
    with pytest.raises(ValueError, match="'quoted' or 'paper'"):
        formula_terms("analytic", 28, 28, 32, 7, 4)


def test_measured_terms_by_hand_and_ratios():
    point = count_point(28, 28, 32, 2, {"n_win": 7, "topk": 4})
    assert point["measured"] == {
        "qkv_proj": 784 * 32 * 96,  # Linear(C -> 3C)
        "routing": 49 * 49 * 32,  # (S², C) @ (C, S²): S⁴C MACs
        "attention": 784 * 4 * 16 * (32 + 32),  # each query: k·HW/S² keys, QKᵀ and AV
        "lce": 784 * 32 * 25,  # 5x5 depthwise
        "out_proj": 784 * 32 * 32,
    }
    rows = pd.DataFrame(check_rows(point))
    ratio = rows.set_index(["formula", "term"])["ratio"]
    assert ratio["paper", "routing"] == ratio["quoted", "routing"] == 2.0  # the "2 for the top-k"
    assert ratio["paper", "attention"] == 1.0
    assert ratio["quoted", "attention"] == 1 / 16  # drops the HW/S² tokens per region
    assert ratio["paper", "lce"] == 0.0 and ratio["paper", "out_proj"] == 0.0  # not in the formula
    assert (rows.loc[rows["formula"] == "analytic", "ratio"] == 1.0).all()


@pytest.mark.parametrize(
    "H,W,n_win,topk,auto_pad", [(28, 28, 7, 4, False), (30, 25, 7, 3, True), (16, 16, 4, 16, False)]
)
def test_each_variant_adds_up_to_the_counted_total(H, W, n_win, topk, auto_pad):
    params = {"n_win": n_win, "topk": topk, "auto_pad": auto_pad}
    point = count_point(H, W, 32, 2, params)
    m = attnbench.build_mechanism("bra", 32, 2, **params, backend="sdpa")
    total = attnbench.count_flops(m, torch.zeros(1, H, W, 32)).total
    assert point["total"] == total
    rows = pd.DataFrame(check_rows(point))
    for variant in VARIANTS:
        assert rows.loc[rows["formula"] == variant, "measured_macs"].sum() == total


def test_padding_uses_the_padded_size():
    point = count_point(30, 30, 32, 2, {"n_win": 7, "topk": 4, "auto_pad": True})
    assert (point["geometry"]["H_pad"], point["geometry"]["W_pad"]) == (35, 35)
    rows = pd.DataFrame(check_rows(point)).set_index(["formula", "term"])
    # 35·35 = 1225 tokens, 25 per region
    assert rows.loc[("paper", "attention"), "analytic_macs"] == 2 * 1225 * 4 * 25 * 32
    assert rows.loc[("paper", "attention"), "measured_macs"] == 1225 * 4 * 25 * 64


def test_paper_optimum_and_bound():
    HW, C, k = 56 * 56, 64, 4
    s_star = paper_optimal_s(HW, k)
    assert s_star == pytest.approx((k * HW**2 / 2) ** (1 / 6))
    assert paper_formula(HW, C, s_star, k) == pytest.approx(paper_bound(HW, C, k), rel=1e-12)
    grid = np.linspace(1, 64, 2000)
    assert min(paper_formula(HW, C, s, k) for s in grid) >= paper_bound(HW, C, k) * (1 - 1e-9)
    sizes = np.array([14, 28, 56, 112, 224]) ** 2
    sdep = [paper_bound(n, C, k) - 3 * n * C * C for n in sizes]
    assert loglog_slope(sizes, sdep) == pytest.approx(4 / 3)
    assert math.isnan(loglog_slope([10, 10], [1, 2]))


def test_run_check_sweep_scaling_and_report():
    rows = [bra_row(H, H, S, 1) for H in (14, 28) for S in (2, 7, 14)]
    rows += [{**r, "pass": "forward_backward"} for r in rows]  # same points: counted once
    rows.append({**bra_row(28, 28, 7, 1), "mechanism": "vanilla"})
    rows.append({**bra_row(28, 28, 4, 1), "flops_detail": None})  # measured before the detail was stored
    rows.append({**bra_row(14, 14, 7, 2), "status": "error", "flops": None})  # no count: not a point
    check = run_formula_check(pd.DataFrame(rows))
    assert len(check.points) == 6
    assert len(check.problems) == 1 and "1 BRA row(s) store no count by term" in check.problems[0]
    assert "scripts/store-flops-detail.py" in check.problems[0]
    best = check.scaling.set_index("H")["best_n_win"]
    assert best[14] == 7 and best[28] == 7  # measured argmin over the swept S
    assert check.scaling.set_index("H")["s_star"][28] == pytest.approx(paper_optimal_s(784, 1))
    (slopes,) = check.slopes.itertuples()
    assert 1.0 < slopes.slope_measured_total < 2.0
    assert slopes.crossover_hw == 32**3 / 2
    text = formula_doc(check).to_markdown()
    assert "`paper` gets QKV projection, token-to-token attention exactly" in text
    assert "region routing (×2)" in text
    assert "leaves out LCE (depthwise conv on v) and output projection" in text
    assert "`analytic` equals the count" in text
    assert f"{slopes.slope_measured_total:.3f}" in text


def test_cells_as_a_csv_gives_them_back():
    """results.csv holds every cell as text: the count as '123.0', the detail as its JSON."""
    row = {k: str(v) for k, v in bra_row(28, 28, 7, 4, qk_dim="None", auto_pad="False").items()}
    row["flops"] = f"{float(row['flops']):.1f}"
    check = run_formula_check(pd.DataFrame([row]))
    assert not check.problems
    (point,) = check.points.itertuples()
    assert (point.n_win, point.topk, point.qk_dim, point.auto_pad) == (7, 4, 32, False)
    assert stored_point(row)["total"] == count_point(28, 28, 32, 2, {"n_win": 7, "topk": 4})["total"]


def test_no_bra_rows_means_no_check():
    assert run_formula_check(pd.DataFrame([{**bra_row(28, 28, 7, 4), "mechanism": "vanilla"}])) is None


def test_an_old_folder_gets_its_count_by_term_from_the_script(tmp_path, capsys):
    """Rows measured before flops_detail existed: the check says how to add it, and the script adds
    exactly what the sweep stores (same totals; a row whose count differs is left as it was)."""
    import runpy

    from attnbench.report._results import load_results
    from tests.test_report import write_run

    fresh = [bra_row(14, 14, 7, 1), bra_row(28, 28, 7, 4, auto_pad="False", qk_dim="None")]
    old = [{k: v for k, v in r.items() if k != "flops_detail"} for r in fresh]
    old.append({**old[0], "H": 21, "W": 21})  # a count that does not match the rebuilt module
    run = write_run(tmp_path / "run", old)
    check = run_formula_check(load_results(run))
    assert check.points.empty and "3 BRA row(s) store no count by term" in check.problems[0]
    script = runpy.run_path("scripts/store-flops-detail.py")
    assert script["main"]([str(run)]) == 0
    out = capsys.readouterr().out
    assert "flops_detail added to 2 row(s); 1 left as they were" in out and "21x21" in out
    check = run_formula_check(load_results(run))
    assert len(check.points) == 2 and "1 BRA row(s) store no count by term" in check.problems[0]
    stored = {json.dumps(r["flops_detail"]) for r in fresh}
    from attnbench.store import load_rows

    assert {json.dumps(r["flops_detail"]) for r in load_rows(run)[1] if r.get("flops_detail")} == stored


def test_a_sweep_stores_the_count_by_term_and_the_report_builds_nothing(tmp_path, monkeypatch):
    from attnbench.cli import main
    from attnbench.mechanism import AttentionMechanism
    from attnbench.report import write_report

    study = tmp_path / "s.yaml"
    study.write_text(
        "device: cpu\nmeasure: flops\nsweep: {resolution: [14, 28], dim: 32, num_heads: 2}\n"
        "mechanisms:\n  - name: bra\n    params: {n_win: 7, topk: [1, 4]}\n"
    )
    run = tmp_path / "run"
    assert main(["run", str(study), "--out", str(run), "--quiet", "--no-report", "--isolation", "none"]) == 0

    def built(*args, **kwargs):
        raise AssertionError("the report built a mechanism")

    monkeypatch.setattr(AttentionMechanism, "__init__", built)
    monkeypatch.setattr(attnbench.flops, "count_flops", built)
    write_report(run, plots=False)
    check = pd.read_csv(run / "formula_check.csv")
    assert len(check[["H", "topk"]].drop_duplicates()) == 4
