"""What a 2026 reader asks of a sweep: compiled beside eager, efficiency against the machine's own
peak, where the time goes (phases) and the largest batch that fits (max_batch)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch

import attnbench
from attnbench.executors import LocalExecutor
from attnbench.kinds._frontier import _probe
from attnbench.peak import peak_gmacs_s
from attnbench.phases import collect, phase
from attnbench.runner import run_study
from attnbench.study import StudyError, load_study

PLUGIN = '''\
import torch
from torch import nn

from attnbench import AttentionMechanism, register_mechanism


@register_mechanism("_no_compile")
class NoCompile(AttentionMechanism):
    """A linear map whose compilation fails (the test makes torch.compile fail for it)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(x)

    def analytic_flops(self, H, W):
        return {"proj": H * W * self.dim * self.dim}
'''


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_phases_are_exclusive_and_add_up():
    with collect() as phases:
        with phase("outer"):
            time.sleep(0.02)
            with phase("inner"):
                time.sleep(0.03)
        time.sleep(0.01)
    assert set(phases) == {"outer", "inner", "other"}
    assert phases["inner"] >= 25 and phases["outer"] >= 15  # ms; the inner sleep is not the outer's
    assert phases["outer"] < phases["outer"] + phases["inner"]
    with phase("unused"):  # outside collect: nothing happens, nothing is kept
        pass
    with pytest.raises(RuntimeError, match="already active"), collect(), collect():
        pass


def test_bra_marks_its_phases_and_they_sum_to_the_call():
    m = attnbench.build_mechanism("bra", 32, 2, n_win=7, topk=2, backend="sdpa")
    x = torch.randn(2, 28, 28, 32)
    with torch.no_grad(), collect() as phases:
        t0 = time.perf_counter()
        m(x)
        total = (time.perf_counter() - t0) * 1e3
    assert {"projections", "routing", "attention", "gather", "layout", "lce"} <= set(phases)
    assert sum(phases.values()) == pytest.approx(total, rel=0.25, abs=2.0)


@pytest.mark.slow  # 3.5 s: a compiled study end to end
def test_compile_axis_efficiency_and_phases_in_rows(tmp_path, monkeypatch, temp_registry):
    monkeypatch.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path / "cache"))
    peak_gmacs_s.cache_clear()  # measured again, into this test's cache folder
    real_compile = torch.compile

    def compile_or_fail(module, **kwargs):  # as a backend whose code generation fails would
        if getattr(module, "name", "") != "_no_compile":
            return real_compile(module, **kwargs)

        def failing(*args):
            raise RuntimeError("BackendCompilerFailed: C++ compile error (simulated)")

        return failing

    monkeypatch.setattr(torch, "compile", compile_or_fail)
    (tmp_path / "no_compile.py").write_text(PLUGIN)
    study = tmp_path / "s.yaml"
    study.write_text(
        """\
device: cpu
threads: 1
measure: [flops, params, latency, phases]
passes: [forward]
compile: [none, default]
repeats: 3
warmup: 1
sweep: {resolution: [8], dim: 16, num_heads: 2}
mechanisms: [vanilla, _no_compile]
plugins: [no_compile.py]
"""
    )
    run_dir = tmp_path / "run"
    assert (
        run_study(
            load_study(study), out_dir=run_dir, quiet=True, report=False, executor=LocalExecutor("none")
        )
        == 0
    )
    rows = {(r["mechanism"], r["compile"]): r for r in _rows(run_dir)}
    assert len(rows) == 4 and len({r["point_id"] for r in rows.values()}) == 4
    eager, compiled = rows[("vanilla", "none")], rows[("vanilla", "default")]
    assert eager["status"] == compiled["status"] == "ok"
    assert eager["flops"] == compiled["flops"] and eager["params"] == compiled["params"]  # not the mode's
    assert eager["compile_s"] == "" and float(compiled["compile_s"]) > 0 and compiled["graph_breaks"] == "0"
    for row in (eager, compiled):
        achieved = int(row["pass_macs"]) / (float(row["latency_ms"]) / 1e3) / 1e9
        assert float(row["achieved_gmacs_s"]) == pytest.approx(achieved, rel=1e-3)
        assert float(row["efficiency"]) == pytest.approx(achieved / float(row["peak_gmacs_s"]), rel=1e-3)
    assert int(eager["pass_macs"]) == int(eager["flops"])  # forward at batch 1
    assert set(json.loads(eager["phases_ms"])) == {"projections", "attention", "other"}
    assert compiled["phases_ms"] == ""  # compiled code runs no phase marks
    # a compile failure is an error row of that mode only
    assert rows[("_no_compile", "none")]["status"] == "ok"
    bad = rows[("_no_compile", "default")]
    assert bad["status"] == "error" and "forward (compile default):" in bad["error"]
    assert "C++ compile error (simulated)" in bad["error"]
    # the peak is measured once per environment and kept
    cache = json.loads((tmp_path / "cache" / "peak.json").read_text())
    assert len(cache) == 1 and next(iter(cache.values()))["peak_gmacs_s"] == float(eager["peak_gmacs_s"])


@pytest.mark.slow  # long: run with -m slow
def test_max_batch_finds_the_largest_batch_within_the_budget(tmp_path):
    point = load_study(_max_batch_study(tmp_path, budget=1.0)).points()[0]
    peak = {b: _probe(point, "forward", b, "cpu", 1, 0, ()) for b in range(1, 6)}
    budget = (peak[3] + peak[4]) / 2  # batches up to 3 fit, 4 does not
    run_dir = tmp_path / "run"
    study = load_study(_max_batch_study(tmp_path, budget=budget))
    assert run_study(study, out_dir=run_dir, quiet=True, report=False, executor=LocalExecutor("none")) == 0
    (row,) = _rows(run_dir)
    assert row["status"] == "ok", row["error"]
    assert int(row["max_batch"]) == 3
    assert float(row["max_batch_peak_mb"]) == pytest.approx(peak[3], rel=1e-3)
    assert float(row["max_batch_budget_mb"]) == pytest.approx(budget, abs=0.01)


def _max_batch_study(tmp_path: Path, budget: float) -> Path:
    path = tmp_path / "frontier.yaml"
    path.write_text(
        f"""\
device: cpu
threads: 1
measure: [max_batch]
memory_budget_mib: {budget}
max_batch_cap: 6
sweep: {{resolution: [16], dim: 16, num_heads: 2}}
mechanisms: [vanilla]
"""
    )
    return path


def test_max_batch_on_cpu_needs_a_budget(tmp_path):
    path = _max_batch_study(tmp_path, 1.0)
    path.write_text(path.read_text().replace("memory_budget_mib: 1.0\n", ""))
    with pytest.raises(StudyError, match="memory_budget_mib: max_batch on CPU needs a memory budget"):
        load_study(path)
