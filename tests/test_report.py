"""attnbench.report: tables, plots and index.html from small results files made in the test.

Two kinds of run folders are made here. ``write_small_run`` writes hand-made rows (numbers chosen
to make the best value of each column obvious). ``write_counted_run`` counts real FLOPs and
parameters of ``bra`` and ``vanilla`` with ``attnbench.count_flops``; its timings and memory are
FAKE (a fixed rate per MAC), labelled so in the rows (``study``) and in ``manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

import attnbench
from attnbench.kinds.sweep.kind import flops_detail
from attnbench.kinds.sweep.tables import comparison_tables
from attnbench.report import add_arguments, report_from_args, write_report
from attnbench.report._document import Table, best_mask
from attnbench.report._results import latex_labels, load_results, mechanism_labels
from attnbench.report.plots import mechanism_styles
from attnbench.store import ResultsStore

FAKE = "synthetic-test-data: timings and memory are FAKE"
BASE = {"batch": 4, "dtype": "float32", "device": "cpu", "error": "", "study": FAKE}


def small_rows() -> list[dict]:
    rows = []
    for mech, params, flops, thr, top1 in [
        ("vanilla", {}, 4.0e9, 100.0, 0.80),
        ("bra", {"n_win": 7, "topk": 4}, 2.0e9, 150.0, 0.82),
        ("my_plugin", {"window": 3}, 3.0e9, 120.0, None),
    ]:
        for p in ("forward", "forward_backward"):
            lat = 1000 * 4 / thr * (3 if p == "forward_backward" else 1)
            rows.append(
                {
                    **BASE,
                    "mechanism": mech,
                    "H": 28,
                    "W": 28,
                    "C": 64,
                    "num_heads": 2,
                    "pass": p,
                    "status": "ok",
                    "flops": flops,
                    "params": 1.6e4,
                    "latency_ms": lat,
                    "latency_iqr_ms": lat / 20,
                    "throughput": 4000 / lat,
                    "peak_mem_mb": flops / 1e8,
                    "top1": top1,
                    **params,
                }
            )
    rows.append(
        {**rows[0], "H": 56, "W": 56, "status": "error", "error": "CUDA out of memory. Tried to allocate"}
    )
    rows.append(
        {**rows[2], "H": 56, "W": 56, "status": "skipped", "error": "H not divisible by n_win", "flops": None}
    )
    return rows


def write_run(run_dir: Path, rows: list[dict], note: str = FAKE) -> Path:
    """A run folder holding ``rows``, written through the store as a run writes them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(run_dir)
    for i, row in enumerate(rows):
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        store.add({"point_id": f"{i:016x}", "status": "ok", "pass": "forward", **clean})
    store.close()
    (run_dir / "manifest.json").write_text(
        json.dumps({"note": note, "environments": {"cpu": {"torch": "x"}}})
    )
    return run_dir


def write_counted_run(run_dir: Path, sizes=(14, 28), n_wins=(2, 7), topks=(1, 4), C=32, heads=2) -> Path:
    """Real FLOPs/params of bra and vanilla; FAKE latency (1 ms per 10 MMACs), throughput and memory."""
    rows = []
    points = [("vanilla", {})] + [
        ("bra", {"n_win": s, "topk": k, "backend": "sdpa"}) for s in n_wins for k in topks
    ]
    for H in sizes:
        for mech, params in points:
            if mech == "bra" and (H % params["n_win"] or params["topk"] > params["n_win"] ** 2):
                continue
            m = attnbench.build_mechanism(mech, C, heads, **params)
            report = attnbench.count_flops(m, torch.zeros(1, H, H, C), cross_check=False)
            for p, factor in (("forward", 1.0), ("forward_backward", 3.0)):
                lat = factor * BASE["batch"] * report.total / 1e7  # FAKE
                oom = mech == "vanilla" and H == max(sizes) and p == "forward_backward"
                rows.append(
                    {
                        **BASE,
                        "mechanism": mech,
                        "H": H,
                        "W": H,
                        "C": C,
                        "num_heads": heads,
                        "pass": p,
                        "status": "error" if oom else "ok",
                        "error": "FAKE: CPU out of memory" if oom else "",
                        "flops": report.total,
                        "flops_detail": json.dumps(flops_detail(m, report, H, H)),
                        "flops_analytic": sum(m.analytic_flops(H, H).values()),
                        "params": sum(t.numel() for t in m.parameters()),
                        "latency_ms": None if oom else lat,
                        "latency_iqr_ms": None if oom else lat / 25,
                        "throughput": None if oom else 1000 * BASE["batch"] / lat,
                        "peak_mem_mb": None if oom else 0.5 + report.total / 2e6 * factor,
                        **params,
                    }
                )
    return write_run(run_dir, rows)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    run = write_run(tmp_path_factory.mktemp("small"), small_rows())
    write_report(run, formats=("png",))
    return run


def test_every_output_is_written(small_run):
    for name in ["index.html", "report.md", "formula_check.csv", "formula_report.md"]:
        assert (small_run / name).is_file(), name
    tex = sorted(p.name for p in (small_run / "tables").glob("*.tex"))
    assert "comparison_forward.tex" in tex and "comparison_forward-backward.tex" in tex
    assert any(n.startswith("sweep_flops") for n in tex)
    pngs = {p.stem for p in (small_run / "plots").glob("*.png")}
    # every timed row is at 28×28 (56×56 failed): a latency plot would have a single x, so it is not drawn
    assert {"flops_vs_tokens", "memory_vs_resolution"} <= pngs
    assert "accuracy_vs_flops" not in pngs  # an ablation's plot: a sweep's report neither draws nor lists it
    assert "speed_vs_resolution" not in pngs
    assert (
        "speed_vs_resolution` not drawn: no configuration has an ok latency at two or more resolutions"
        in (small_run / "report.md").read_text()
    )
    assert (small_run / "references.bib").is_file()


def test_comparison_table_bolds_the_best_of_each_column(small_run):
    md = (small_run / "tables" / "comparison_forward.md").read_text()
    assert "FLOPs (GMACs, fvcore)" in md
    bra = next(line for line in md.splitlines() if line.startswith("| BRA"))
    vanilla = next(line for line in md.splitlines() if line.startswith("| Global"))
    assert "**2.00**" in bra  # fewest FLOPs
    assert "**82.0**" in bra  # best top-1, given as a fraction, shown in %
    cells = [c.strip() for c in vanilla.split("|")]  # '', label, params, FLOPs, ...
    assert cells[2] == "**16.0**"  # params tie: every row bold
    assert cells[3] == "4.00"  # vanilla's FLOPs are not the best
    tex = (small_run / "tables" / "comparison_forward.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\textbf{2.00}" in tex
    assert r"my\_plugin" in tex  # escaped
    assert r"BRA~\cite{zhu2023biformer}" in tex and r"fvcore~\cite{fvcore}" in tex
    assert "CPU" in tex and "cpu" not in tex.split(r"\label")[0]  # the caption capitalises the device
    bib = (small_run / "references.bib").read_text()
    assert "@inproceedings{zhu2023biformer," in bib and "@misc{fvcore," in bib


def test_sweep_table_marks_out_of_memory(small_run):
    md = (small_run / "tables" / "sweep_latency_ms_forward.md").read_text()
    assert "28×28" in md and "56×56" in md
    lines = {
        line.split("|")[1].strip(): line.rstrip(" |") for line in md.splitlines() if line.startswith("| ")
    }
    assert lines["Global"].endswith("OOM")
    assert lines["BRA"].endswith("skipped")
    assert lines["my_plugin"].endswith("—")  # not run at 56×56


def test_index_html_is_offline_and_links_existing_files(small_run):
    page = (small_run / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from the network
    for link in re.findall(r'(?:src|href)="([^"#]+)"', page):
        assert (small_run / link).is_file(), link
    assert FAKE in page  # the manifest is shown
    assert "<b>" in page and "comparison_forward" in page


def test_filters_columns_sort_and_group_by(tmp_path):
    run = write_run(tmp_path, small_rows())
    df = load_results(run)
    df["label"] = mechanism_labels(df)
    fwd = df[df["pass"] == "forward"]
    (table,) = comparison_tables(fwd, columns=["flops", "throughput"], sort="-throughput")
    assert table.header == ["Mechanism", "FLOPs (GMACs, fvcore)", "Throughput (img/s)"]
    assert [r[0] for r in table.rows] == ["BRA", "my_plugin", "Global"]
    # sorting by a column that is not shown: by its values all the same (this was a KeyError)
    (table,) = comparison_tables(fwd, columns=["flops", "latency_ms"], sort="-throughput")
    assert [r[0] for r in table.rows] == ["BRA", "my_plugin", "Global"]
    tables = comparison_tables(df, group_by=[])
    assert len(tables) == 1 and any("forward_backward" in r[0] for r in tables[0].rows)
    write_report(run, passes=["forward"], plots=False, formula=False)
    assert not list((run / "tables").glob("*backward*"))
    with pytest.raises(ValueError, match="passes.*'backward'.*present"):
        write_report(run, passes=["backward"], plots=False)
    with pytest.raises(ValueError, match="columns.*'gflops'"):
        write_report(run, columns=["gflops"], plots=False, formula=False)
    with pytest.raises(ValueError, match="resolution.*28×28"):
        write_report(run, resolution=(10, 10), plots=False, formula=False)


def test_command_line_options_reach_write_report(tmp_path):
    run = write_run(tmp_path, small_rows())
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [str(run), "--pass", "forward", "--columns", "flops", "top1", "--sort=-top1", "--resolution", "28x28"]
        + ["--no-plots", "--no-formula"]
    )
    assert report_from_args(args) == run / "index.html"
    md = (run / "tables" / "comparison_forward.md").read_text()  # the name carries the pass
    assert "| Mechanism | FLOPs (GMACs, fvcore) | Top-1 (%) |" in md
    assert md.index("| BRA") < md.index("| Global") < md.index("| my_plugin")  # -top1; no accuracy last
    assert not (run / "plots").exists() and not (run / "formula_check.csv").exists()
    with pytest.raises(SystemExit):
        parser.parse_args([str(run), "--resolution", "28"])


def test_labels_name_only_the_parameters_that_vary(tmp_path):
    rows = small_rows()[:4]
    rows.append({**rows[2], "n_win": 4})
    df = load_results(write_run(tmp_path, rows))
    labels = set(mechanism_labels(df))
    assert labels == {"Global", "BRA (S=7)", "BRA (S=4)"}
    assert latex_labels(df)["BRA (S=4)"] == r"BRA ($S{=}4$)"


def test_missing_results_file_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.db or results.csv"):
        write_report(tmp_path)


def test_palette_is_fixed_per_mechanism_and_distinct():
    from attnbench.registry import available_mechanisms, get_mechanism

    builtin = ["vanilla", "bra", "dbra", "swin", "axial", "neighborhood", "dilated", "deformable", "agent"]
    names = [*builtin, "flatten", "maxvit", "kvt"]
    assert set(names) <= set(available_mechanisms())
    styles = mechanism_styles([*names, "zeta_plugin", "alpha_plugin"])
    for n in names:  # each mechanism's own colour and marker, declared with it
        assert (styles[n].color, styles[n].marker) == (get_mechanism(n).color, get_mechanism(n).marker)
    assert len({s.color for s in styles.values()}) == len(styles)
    assert len({s.marker for s in styles.values()}) == len(styles)
    again = mechanism_styles(["bra", "alpha_plugin"])
    assert again["bra"] == styles["bra"] and again["alpha_plugin"] == styles["alpha_plugin"]


def test_table_renderers():
    t = Table(
        "t",
        "caption 5%",
        ["Name", "FLOPs (GMACs)"],
        [["a_b", "1.0"], ["c", "2.0"]],
        [[False, True], [False, False]],
    )
    assert "| a_b | **1.0** |" in t.to_markdown()
    assert r"a\_b & \textbf{1.0} \\" in t.to_latex() and r"caption 5\%" in t.to_latex()
    assert "<b>1.0</b>" in t.to_html()
    assert best_mask([3.0, None, 1.0, 1.0], higher_is_better=False) == [False, False, True, True]
    assert best_mask([3.0], higher_is_better=True) == [False]


@pytest.mark.slow  # long: run with -m slow
def test_counted_run_draws_every_plot(tmp_path):
    run = write_counted_run(tmp_path / "run")
    index = write_report(run, formats=("png", "svg"))
    pngs = {p.stem for p in (run / "plots").glob("*.png")}
    assert pngs == {
        "flops_vs_tokens",
        "speed_vs_resolution",
        "memory_vs_resolution",
        "bra_s_k_heatmaps",
        "formula_flops_vs_s",
        "formula_scaling",
    }
    assert {p.stem for p in (run / "plots").glob("*.svg")} == pngs
    assert "accuracy_vs_flops" in index.read_text()  # says why it was not drawn
    check = pd.read_csv(run / "formula_check.csv")
    assert set(check["formula"]) == {"quoted", "paper", "analytic"}


def test_labels_name_parameters_off_the_default_even_when_they_do_not_vary(tmp_path):
    rows = [r for r in small_rows()[:4] if r["mechanism"] != "my_plugin"]  # vanilla and bra
    rows = [{**r, "topk": 1} if r["mechanism"] == "bra" else r for r in rows]  # bra's default is 4
    df = load_results(write_run(tmp_path, rows))
    assert set(mechanism_labels(df)) == {"Global", "BRA (k=1)"}
    rows = [{**r, "topk": 4} if r["mechanism"] == "bra" else r for r in rows]  # n_win 7, topk 4: defaults
    df = load_results(write_run(tmp_path / "defaults", rows))
    assert set(mechanism_labels(df)) == {"Global", "BRA"}


OPTION_VALUES = {
    "--columns": [["flops", "latency_ms"], ["top1"], ["top5", "peak_mem_mb"], ["gflops"]],
    "--sort": ["-throughput", "mechanism", "-mechanism", "top1", "-latency_iqr_ms", "gflops"],
    "--group-by": [["pass"], ["dtype"], ["pass", "batch"], ["n_win"], ["nonexistent"]],
    "--pass": [["forward"], ["forward", "forward_backward"], ["backward"]],
    "--dtype": [["float32"], ["float16"]],
    "--device": [["cpu"], ["cuda"]],
    "--resolution": ["28x28", "56x56", "10x10", "28"],
    "--formats": [["png"], ["pdf", "svg"], ["jpeg2"]],
}


def _argv(run: Path, options: dict) -> list[str]:
    argv = ["report", str(run)]
    for flag, value in options.items():
        argv += [flag, *value] if isinstance(value, list) else [f"{flag}={value}"]
    return argv


@pytest.mark.slow  # 37 reports; test_command_line_options_reach_write_report keeps options in the default run
def test_every_option_combination_works_or_says_what_is_wrong_in_one_line(tmp_path, capsys):
    """``attnbench report``'s options, each value alone and in pairs with the others: exit 0, or
    exit 2 with one line naming the problem; never a traceback."""
    from attnbench.cli import main

    run = write_run(tmp_path / "run", small_rows())
    cases = [{flag: v} for flag, values in OPTION_VALUES.items() for v in values]
    cases += [
        {"--sort": "-throughput", "--columns": ["flops", "latency_ms"]},  # the KeyError
        {"--sort": "top1", "--columns": ["flops"], "--pass": ["forward"], "--resolution": "56x56"},
        {"--group-by": [], "--sort": "mechanism", "--dtype": ["float32"]},
        {"--columns": [], "--pass": []},  # options that need values, given none
        {"--columns": ["top1", "top5"], "--group-by": ["pass"], "--device": ["cpu"]},
    ]
    for options in cases:
        fast = [] if "--formats" in options else ["--no-plots"]
        try:
            code = main([*_argv(run, options), *fast, "--no-formula"])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        assert code in (0, 2), (options, code, err)
        assert "Traceback" not in out + err, options
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("attnbench report: "), (options, err)
        else:
            assert out.strip().splitlines()[-1].endswith("index.html"), (options, out)
            assert "attnbench report: " in out and " ..." in out  # progress lines came first


def test_a_mechanism_brings_its_own_look_and_citation(temp_registry, tmp_path):
    """Colour, marker and paper live with the mechanism: a plugin declares them in its one file and
    every plot and the bibliography use them."""
    from attnbench import AttentionMechanism, register_mechanism
    from attnbench.report._results import mechanism_citation
    from attnbench.report.references import bib_entry, write_bib

    @register_mechanism("mine")
    class Mine(AttentionMechanism):
        color = "#123456"
        marker = "8"
        bibtex = "@article{me2026mine,\n  title = {Mine},\n  year = {2026}\n}"

        def forward(self, x):
            return x

    assert mechanism_styles(["mine"])["mine"].color == "#123456"
    assert mechanism_citation("mine")[0] == "me2026mine" and bib_entry("me2026mine").startswith("@article")
    path = write_bib(tmp_path, ["\\cite{me2026mine,zhu2023biformer,nokey}"])
    text = path.read_text()
    assert "me2026mine" in text and "zhu2023biformer" in text and "nokey" not in text


def test_a_plugin_label_names_its_parameters_not_the_measured_columns():
    """FIXED_COLUMNS holds every column the sweep kind writes that is not a parameter: an unloaded
    plugin's label is its name and its own parameters, never pass_macs or flops_detail."""
    from attnbench.kinds.sweep.kind import COLUMN_DOCS
    from attnbench.report._results import FIXED_COLUMNS

    assert set(COLUMN_DOCS) - {"n_win", "topk"} <= FIXED_COLUMNS
    rows = [
        {
            **small_rows()[0],
            "mechanism": "not_loaded",
            "window": w,
            "pass_macs": 1e9 * w,
            "flops_detail": f"{w}",
        }
        for w in (3, 5)
    ]
    assert mechanism_labels(pd.DataFrame(rows)).tolist() == ["not_loaded (window=3)", "not_loaded (window=5)"]
