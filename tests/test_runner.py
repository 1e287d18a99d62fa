"""The runner: columns, manifest, resume, failures, skipped points, memory (in-process; the worker
process, the store and the noise guard have their own tests)."""

from __future__ import annotations

import csv
import hashlib
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from attnbench import AttentionMechanism, register_mechanism
from attnbench.executors import LocalExecutor
from attnbench.memory import CPU_METHOD, peak_memory
from attnbench.runner import run_study as _run_study
from attnbench.study import load_study


def run_study(study, **kwargs):
    """The runner in this process: the test mechanisms are registered here, not in a worker."""
    return _run_study(study, executor=LocalExecutor("none"), **kwargs)


REQUIRED_COLUMNS = (
    "mechanism H W C num_heads batch dtype device pass n_win topk status error flops flops_torch "
    "flops_analytic params latency_ms latency_iqr_ms throughput peak_mem_mb"
).split()

# how the test mechanism misbehaves: Ctrl-C after this many forward calls; OOM when H is this
MISBEHAVE: dict[str, int | None] = {"interrupt_after": None, "oom_at_H": None, "build_error": None}


class _Linear(AttentionMechanism):
    """A linear map standing in for attention; misbehaves on command (test mechanism)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        if MISBEHAVE["build_error"]:
            raise RuntimeError("cannot build today")
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_shape(x)
        if MISBEHAVE["interrupt_after"] is not None:
            MISBEHAVE["interrupt_after"] -= 1
            if MISBEHAVE["interrupt_after"] < 0:
                raise KeyboardInterrupt
        if x.shape[1] == MISBEHAVE["oom_at_H"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (simulated)")
        return self.proj(x)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        return {"proj": H * W * self.dim * self.dim}


@pytest.fixture
def linear_mechanism(temp_registry):
    register_mechanism("_test_linear")(_Linear)
    MISBEHAVE.update(interrupt_after=None, oom_at_H=None, build_error=None)
    yield "_test_linear"
    MISBEHAVE.update(interrupt_after=None, oom_at_H=None, build_error=None)


def write_study(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(body)
    return path


def read_rows(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run_dir / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


SMALL = """\
name: small
device: cpu
threads: 1
measure: [flops, params, latency, memory]
passes: [forward, forward_backward]
repeats: 2
warmup: 0
sweep:
  resolution: [14]
  dim: [32]
  num_heads: [2]
mechanisms:
  - vanilla
  - name: bra
    params: {n_win: [7, 4], topk: 2}
"""


def test_csv_columns_rows_and_manifest(tmp_path, capsys):
    path = write_study(tmp_path, SMALL)
    run_dir = tmp_path / "run"
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False) == 0
    columns, rows = read_rows(run_dir)
    for col in REQUIRED_COLUMNS + ["point_id", "qkv_bias", "side_dwconv", "backend", "mem_method"]:
        assert col in columns
    assert len(rows) == 3 * 2  # (vanilla, bra S=7, bra S=4) x 2 passes
    assert len({r["point_id"] for r in rows}) == 6

    by = {(r["mechanism"], r["n_win"], r["pass"]): r for r in rows}
    van = by[("vanilla", "", "forward")]
    assert van["status"] == "ok" and van["error"] == ""
    assert van["topk"] == "" and van["qkv_bias"] == "True"  # parameters of other mechanisms are empty
    assert int(van["flops"]) == int(van["flops_analytic"]) == 4 * 196 * 32 * 32 + 2 * 196 * 196 * 32
    assert van["flops_uncounted"] == "{}"
    assert int(van["params"]) == 4 * 32 * 32 + 4 * 32
    samples = json.loads(van["latency_samples_ms"])
    assert len(samples) == int(van["latency_n"]) == 2
    assert float(van["throughput"]) == pytest.approx(1 / (float(van["latency_ms"]) / 1e3), rel=1e-3)
    assert float(van["peak_mem_mb"]) > 0 and van["mem_method"] == CPU_METHOD

    bra7 = by[("bra", "7", "forward_backward")]
    assert bra7["status"] == "ok" and bra7["topk"] == "2" and bra7["qkv_bias"] == ""
    assert bra7["qk_dim"] == "None"  # a parameter that applies, at its default None
    skipped = by[("bra", "4", "forward")]  # 14 is not divisible by 4
    assert skipped["status"] == "skipped"
    assert "not divisible by n_win = 4" in skipped["error"]
    for col in ("flops", "params", "latency_ms", "latency_iqr_ms", "throughput", "peak_mem_mb"):
        assert skipped[col] == ""  # not measured is empty, never 0

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["study"]["name"] == "small"
    assert manifest["study"]["sha256"] == hashlib.sha256(SMALL.encode()).hexdigest()
    assert manifest["threads"] == 1 and manifest["device"] == "cpu"
    assert manifest["protocol"]["repeats"] == 2 and manifest["protocol"]["threads"] == 1
    env = manifest["environments"][van["env_id"]]
    assert env["torch_version"] == torch.__version__ and env["device_name"].startswith("CPU")
    assert env["torch_threads"] == 1 and "natten" in env["packages"]
    run = manifest["runs"][-1]
    assert run["status"] == "completed" and run["rows_written"] == 6
    assert run["load_average_start"] is None or run["load_average_start"] >= 0
    assert run["env_id"] == van["env_id"] and run["protocol_id"] == van["protocol_id"]
    assert van["threads"] == "1" and van["unstable"] in ("0", "1")
    assert env["git"] is None or len(env["git"]["commit"]) == 40
    assert CPU_METHOD in manifest["memory_methods"] and "flops" in manifest["columns"]


def test_unmeasured_columns_are_empty(tmp_path, linear_mechanism):
    body = SMALL.replace("[flops, params, latency, memory]", "[params]").replace("  - vanilla\n", "")
    body = body.replace("name: bra\n    params: {n_win: [7, 4], topk: 2}", f"name: {linear_mechanism}")
    run_dir = tmp_path / "run"
    assert run_study(load_study(write_study(tmp_path, body)), out_dir=run_dir, quiet=True, report=False) == 0
    _, rows = read_rows(run_dir)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for col in ("flops", "flops_torch", "latency_ms", "throughput", "peak_mem_mb", "mem_method"):
        assert {r[col] for r in rows} == {""}
    assert {r["params"] for r in rows} == {str(32 * 32 + 32)}


RESUME = """\
name: resume
device: cpu
threads: 1
measure: [params, latency]
passes: [forward]
repeats: 1
warmup: 0
sweep:
  resolution: [8, 10, 12, 14, 16]
  dim: [16]
  num_heads: [1]
mechanisms:
  - _test_linear
"""


def test_interrupted_run_resumes_without_duplicates_or_losses(tmp_path, capsys, linear_mechanism):
    path = write_study(tmp_path, RESUME)
    run_dir = tmp_path / "run"
    MISBEHAVE["interrupt_after"] = 5  # 2 forwards per point (probe + 1 sample): Ctrl-C during the 3rd point
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False) == 130
    err = capsys.readouterr().err
    assert "interrupted; 2 rows are saved" in err
    assert f"resume with: attnbench run {path} --out {run_dir}" in err
    _, first = read_rows(run_dir)
    assert [r["H"] for r in first] == ["8", "10"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["runs"][-1]["status"] == "interrupted"

    MISBEHAVE["interrupt_after"] = None
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False) == 0
    _, rows = read_rows(run_dir)
    assert [r["H"] for r in rows] == ["8", "10", "12", "14", "16"]
    assert len({r["point_id"] for r in rows}) == 5
    assert rows[:2] == first  # the measured rows were kept, not measured again
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["interrupted", "completed"]
    assert manifest["runs"][-1]["rows_written"] == 3

    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False) == 0  # nothing left to do
    assert read_rows(run_dir)[1] == rows


def test_oom_point_is_an_error_row_and_the_run_goes_on(tmp_path, linear_mechanism):
    MISBEHAVE["oom_at_H"] = 12
    body = RESUME.replace("passes: [forward]", "passes: [forward, forward_backward]")
    path = write_study(tmp_path, body)
    run_dir = tmp_path / "run"
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False) == 0
    _, rows = read_rows(run_dir)
    assert len(rows) == 10
    bad = [r for r in rows if r["status"] == "error"]
    assert [(r["H"], r["pass"]) for r in bad] == [("12", "forward"), ("12", "forward_backward")]
    assert all("OutOfMemoryError: CUDA out of memory" in r["error"] for r in bad)
    assert all(r["latency_ms"] == "" and r["params"] != "" for r in bad)
    assert all(r["status"] == "ok" and float(r["latency_ms"]) > 0 for r in rows if r["H"] != "12")

    # a re-run retries the error rows and replaces them in place; ok rows stay as they were
    MISBEHAVE["oom_at_H"] = None
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False) == 0
    _, again = read_rows(run_dir)
    assert [r["point_id"] for r in again] == [r["point_id"] for r in rows]
    assert all(r["status"] == "ok" for r in again)
    assert [r for r in again if r["H"] != "12"] == [r for r in rows if r["H"] != "12"]


def test_a_build_failure_is_an_error_row(tmp_path, linear_mechanism):
    study = load_study(write_study(tmp_path, RESUME.replace("[8, 10, 12, 14, 16]", "[8, 10]")))
    MISBEHAVE["build_error"] = 1  # after validation, which built it fine
    assert run_study(study, out_dir=tmp_path / "run", quiet=True, report=False) == 0
    _, rows = read_rows(tmp_path / "run")
    assert [(r["status"], r["error"]) for r in rows] == [
        ("error", "build: RuntimeError: cannot build today")
    ] * 2


def test_fresh_moves_the_old_run_aside(tmp_path, capsys, linear_mechanism):
    path = write_study(tmp_path, RESUME.replace("[8, 10, 12, 14, 16]", "[8]"))
    run_dir = tmp_path / "run"
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False) == 0
    assert run_study(load_study(path), out_dir=run_dir, fresh=True, quiet=True, report=False) == 0
    assert "moved the previous run folder to" in capsys.readouterr().out
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1 and (old[0] / "results.csv").exists()
    assert len(read_rows(run_dir)[1]) == 1


def test_cpu_peak_memory_of_a_known_allocation():
    n = 1 << 20  # 4 MiB of float32, allocated and freed inside the call

    def alloc() -> None:
        a = torch.ones(n)
        b = a * 2  # a second 4 MiB live at the same time
        del a, b

    held = 3 * 1024
    mem = peak_memory(alloc, device="cpu", held_bytes=held)
    assert mem.method == CPU_METHOD
    assert 8 * 2**20 + held <= mem.peak_bytes <= 8 * 2**20 + held + 64 * 1024


def test_a_failing_report_never_loses_results(tmp_path, capsys, monkeypatch, linear_mechanism):
    def broken(run_dir, **kwargs):
        raise RuntimeError("plotting exploded")

    fake = types.ModuleType("attnbench.report")
    fake.__spec__ = importlib.machinery.ModuleSpec("attnbench.report", None)
    fake.write_report = broken
    fake.prepare_report = lambda run_dir, **kwargs: None
    monkeypatch.setitem(sys.modules, "attnbench.report", fake)
    path = write_study(tmp_path, RESUME.replace("[8, 10, 12, 14, 16]", "[8]"))
    assert run_study(load_study(path), out_dir=tmp_path / "run", quiet=True) == 0
    assert "writing the report failed (RuntimeError: plotting exploded)" in capsys.readouterr().err
    assert len(read_rows(tmp_path / "run")[1]) == 1
