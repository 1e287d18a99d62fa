"""The command line: ``attnbench list`` and ``attnbench run`` end to end, exit codes."""

from __future__ import annotations

import csv
import json
import signal

import pytest
import torch

from attnbench.cli import build_parser, main

STUDY = """\
name: cli
device: cpu
threads: 1
measure: [flops, params, latency]
passes: [forward]
repeats: 2
warmup: 0
sweep:
  resolution: [14]
  dim: [32]
  num_heads: [2]
mechanisms:
  - vanilla
  - name: bra
    params: {n_win: 7, topk: [1, 4]}
"""

PLUGIN = '''
from torch import nn
from attnbench import AttentionMechanism, register_mechanism


@register_mechanism("_test_cli_ctrl_c")
class CtrlC(AttentionMechanism):
    """Presses Ctrl-C on its first forward (test plugin)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        raise KeyboardInterrupt
'''


def test_list_shows_every_mechanism_with_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "bra: Bi-Level Routing Attention (BiFormer, CVPR 2023), legacy released variant." in out
    assert "    n_win: int = 7\n" in out and "    topk: int = 4\n" in out
    assert "    qk_dim: int | None = None\n" in out
    assert "    backend: 'auto' | 'reference' | 'sdpa'" in out  # a Literal lists its choices
    assert "vanilla: Global multi-head self-attention." in out


def test_list_with_a_missing_plugin_is_a_usage_error(tmp_path, capsys):
    assert main(["list", "--plugin", str(tmp_path / "none.py")]) == 2
    assert "is not an existing .py file" in capsys.readouterr().err


def test_run_writes_results_and_prints_a_summary(tmp_path, capsys):
    study = tmp_path / "cli.yaml"
    study.write_text(STUDY)
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert "3 points x 1 passes = 3 rows on cpu" in printed
    assert "GMACs(fvcore)" in printed and "ms(median)" in printed  # the summary table
    assert "3 ok, 0 skipped, 0 errors, " in printed  # then the unstable count, which depends on the load
    assert f"results in {out / 'results.db'} (export: {out / 'results.csv'})" in printed
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["mechanism"], r["topk"], r["status"]) for r in rows] == [
        ("vanilla", "", "ok"),
        ("bra", "1", "ok"),
        ("bra", "4", "ok"),
    ]
    assert (out / "manifest.json").exists()

    # the same command again resumes: nothing left to measure, nothing re-measured
    assert main(["run", str(study), "--out", str(out), "--quiet", "--no-report"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith("attnbench: 3 ok, 0 skipped, 0 errors, ") and len(printed) <= 2
    with open(out / "results.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, capsys, temp_registry):
    (tmp_path / "ctrl_c.py").write_text(PLUGIN)
    study = tmp_path / "s.yaml"
    study.write_text(STUDY.replace("  - vanilla\n", "  - _test_cli_ctrl_c\n") + "plugins: [ctrl_c.py]\n")
    out = tmp_path / "out"
    # Ctrl-C reaches the attnbench process: in this process the plugin raising it stands in
    assert (
        main(["run", str(study), "--out", str(out), "--quiet", "--no-report", "--isolation", "none"]) == 130
    )
    err = capsys.readouterr().err
    assert f"resume with: attnbench run {study} --out {out} --device cpu --isolation none" in err
    assert "0 rows are saved" in err and (out / "results.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_device_override_is_validated(tmp_path, capsys):
    study = tmp_path / "cli.yaml"
    study.write_text(STUDY)
    assert main(["run", str(study), "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{study}:2: --device: cuda was asked for but torch.cuda.is_available() is False")
    assert not (tmp_path / "out").exists()


def test_usage_errors_and_help(capsys):
    assert main([]) == 2
    assert main(["run"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_parser_has_one_entry_per_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"list", "run"} <= set(sub.choices)


SIGTERM_PLUGIN = '''
import os
import signal

from torch import nn
from attnbench import AttentionMechanism, register_mechanism


@register_mechanism("_test_cli_sigterm")
class Term(AttentionMechanism):
    """Sends its own process SIGTERM on its first forward, as `kill PID` would (test plugin)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        os.kill(os.getpid(), signal.SIGTERM)
        return self.proj(x)
'''


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigterm_stops_the_run_like_ctrl_c_and_the_manifest_says_so(tmp_path, capsys, temp_registry):
    (tmp_path / "term.py").write_text(SIGTERM_PLUGIN)
    study = tmp_path / "s.yaml"
    # vanilla's three rows first, then the plugin's point receives SIGTERM
    study.write_text(
        STUDY.replace("  - name: bra\n", "  - _test_cli_sigterm\n  - name: bra\n") + "plugins: [term.py]\n"
    )
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    code = main(["run", str(study), "--out", str(out), "--quiet", "--no-report", "--isolation", "none"])
    assert code == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the run's only
    err = capsys.readouterr().err
    assert "interrupted; 1 rows are saved" in err and f"resume with: attnbench run {study}" in err
    last = json.loads((out / "manifest.json").read_text())["runs"][-1]
    assert last["status"] == "interrupted" and last["rows_written"] == 1 and last["finished"]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_an_ignored_sighup_stays_ignored_during_a_run():
    """`nohup attnbench run ...` ignores SIGHUP; the run must not take that back."""
    from attnbench import cli

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with cli._stop_signals_interrupt():
            during = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)
        assert during == (signal.SIG_IGN, cli._raise_interrupt)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_quiet_run_prints_no_report_progress_and_no_formula_check_without_bra(tmp_path, capsys):
    from tests.test_planted_links import STUDY

    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    assert main(["run", str(study), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "drawing" not in out and "writing the tables" not in out and "BRA formula check" not in out
    assert out.strip().splitlines()[-1].startswith("attnbench: report: ")  # where the report is
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "BRA formula check" not in capsys.readouterr().out  # the study has no BRA row


def test_the_console_table_shows_swept_parameters():
    from attnbench.kinds.sweep.kind import SweepKind

    rows = [
        {
            "mechanism": "bra",
            "n_win": 7,
            "topk": 1,
            "H": 28,
            "W": 28,
            "C": 64,
            "num_heads": 2,
            "status": "ok",
        },
        {
            "mechanism": "bra",
            "n_win": 7,
            "topk": 4,
            "H": 28,
            "W": 28,
            "C": 64,
            "num_heads": 2,
            "status": "ok",
        },
        {"mechanism": "vanilla", "H": 28, "W": 28, "C": 64, "num_heads": 2, "status": "ok"},
    ]
    text = SweepKind().summary_table(rows)
    assert "bra topk=1" in text and "bra topk=4" in text and "n_win" not in text  # n_win does not vary
