"""The Ray executor: same rows as the local one, failures become error rows, resume and Ctrl-C."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

from attnbench.cli import main as cli_main
from attnbench.executors import ExecutorError, LocalExecutor, RayExecutor
from attnbench.runner import run_study
from attnbench.study import load_study

ray = pytest.importorskip("ray")

# columns that legitimately differ between two measurements of the same point
MEASURED = {
    *("latency_ms", "latency_iqr_ms", "latency_samples_ms", "throughput", "peak_mem_mb", "timestamp"),
    *("load_avg", "load_avg_end", "other_cpu", "steal_pct", "unstable", "unstable_why"),  # the noise guard
}

PLUGIN = '''\
import os

from torch import nn

from attnbench import AttentionMechanism, register_mechanism


@register_mechanism("{name}")
class Failing(AttentionMechanism):
    """A linear map whose forward fails (test plugin)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        with open({attempts!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        if {crash} and os.getpid() != {driver_pid}:
            os._exit(3)  # the worker dies, as on a segfault or the OOM killer
        raise RuntimeError("boom in forward")
'''

STUDY = """\
name: {name}
device: cpu
threads: 1
measure: {measure}
passes: {passes}
repeats: 2
warmup: 0
sweep:
  resolution: {resolution}
  dim: [32]
  num_heads: [2]
mechanisms:
{mechanisms}
plugins: [failing.py]
"""


def write_study(folder: Path, *, mechanism: str, crash: bool = False, **fields: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    attempts = str(folder / "attempts.txt")
    plugin = PLUGIN.format(name=mechanism, attempts=attempts, crash=crash, driver_pid=os.getpid())
    (folder / "failing.py").write_text(plugin)
    values = {
        "name": "ray_small",
        "measure": "[flops, params, latency, memory]",
        "passes": "[forward, forward_backward]",
        "resolution": "[14]",
        "mechanisms": f"  - vanilla\n  - name: bra\n    params: {{n_win: 7, topk: 2}}\n  - {mechanism}",
        **fields,
    }
    path = folder / "study.yaml"
    path.write_text(STUDY.format(**values))
    return path


def read_rows(run_dir: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with open(run_dir / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    by_id = {r["point_id"]: r for r in rows}
    assert len(by_id) == len(rows), "duplicate point_ids"
    return list(reader.fieldnames or []), by_id


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def ray_instance():
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",  # a new instance even where `ray start` left a cluster running
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def both_runs(ray_instance, tmp_path_factory):
    """The same study (vanilla, bra, a mechanism failing in forward) run locally and on Ray."""
    from attnbench import registry

    saved = dict(registry._REGISTRY)
    folder = tmp_path_factory.mktemp("both")
    study = load_study(write_study(folder, mechanism="_ray_boom"))
    local_dir, ray_dir = folder / "local", folder / "ray"
    assert run_study(study, out_dir=local_dir, quiet=True, report=False, executor=LocalExecutor()) == 0
    executor = RayExecutor()
    assert run_study(study, out_dir=ray_dir, quiet=True, report=False, executor=executor) == 0
    yield study, local_dir, ray_dir, executor
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


@pytest.mark.slow  # a local Ray instance and several tasks: tens of seconds
def test_ray_rows_equal_local_rows(both_runs):
    _, local_dir, ray_dir, executor = both_runs
    assert executor.submitted == 3  # one task per point, both passes in it
    local_cols, local = read_rows(local_dir)
    ray_cols, remote = read_rows(ray_dir)
    assert ray_cols == local_cols
    assert set(remote) == set(local) and len(remote) == 6  # same point_ids: same machine, same protocol
    for pid, row in remote.items():
        for col in ray_cols:
            if col not in MEASURED:
                assert row[col] == local[pid][col], (row["mechanism"], row["pass"], col)
        if row["status"] == "ok":
            assert float(row["latency_ms"]) > 0 and float(row["peak_mem_mb"]) > 0
    statuses = {(r["mechanism"], r["pass"]): r["status"] for r in remote.values()}
    assert statuses == {
        ("vanilla", "forward"): "ok",
        ("vanilla", "forward_backward"): "ok",
        ("bra", "forward"): "ok",
        ("bra", "forward_backward"): "ok",
        ("_ray_boom", "forward"): "error",
        ("_ray_boom", "forward_backward"): "error",
    }
    boom = [r for r in remote.values() if r["mechanism"] == "_ray_boom"]
    assert all("RuntimeError: boom in forward" in r["error"] and r["params"] != "" for r in boom)


@pytest.mark.slow  # a local Ray instance and several tasks: tens of seconds
def test_ray_manifest_records_the_workers(both_runs):
    _, _, ray_dir, _ = both_runs
    _, rows = read_rows(ray_dir)
    m = manifest(ray_dir)
    run = m["runs"][-1]
    assert run["status"] == "completed" and run["rows_written"] == 6
    assert run["executor"]["name"] == "ray" and run["executor"]["task_resources"] == {"CPU": 1}
    host = socket.gethostname()
    assert set(m["workers"]) == {host}
    worker = m["workers"][host]
    assert worker["env_id"] == run["env_id"] == next(iter(rows.values()))["env_id"]
    assert worker["environment"]["torch_threads"] == 1 and worker["environment"]["device_type"] == "cpu"
    assert len(m["measured_by"]) == 3 and set(m["measured_by"].values()) == {host}  # one entry per task
    assert m["environments"][run["env_id"]]["torch_version"] == torch.__version__


@pytest.mark.slow  # a local Ray instance and several tasks: tens of seconds
def test_ray_rerun_submits_only_unfinished_points(both_runs, tmp_path):
    study, _, ray_dir, _ = both_runs
    run_dir = tmp_path / "ray"
    shutil.copytree(ray_dir, run_dir)
    _, before = read_rows(run_dir)
    executor = RayExecutor()
    assert run_study(study, out_dir=run_dir, quiet=True, report=False, executor=executor) == 0
    assert executor.submitted == 1  # only the failing point: error rows are retried, ok rows are not
    _, after = read_rows(run_dir)
    assert set(after) == set(before)
    for pid, row in before.items():
        if row["status"] != "error":
            assert after[pid] == row
    assert manifest(run_dir)["runs"][-1]["rows_written"] == 2


@pytest.mark.slow  # a local Ray instance and several tasks: tens of seconds
def test_a_crashing_task_is_retried_once_then_an_error_row(ray_instance, tmp_path, temp_registry):
    path = write_study(
        tmp_path,
        mechanism="_ray_crash",
        crash=True,
        measure="[params, latency]",
        passes="[forward]",
        mechanisms="  - vanilla\n  - _ray_crash",
    )
    executor = RayExecutor()
    run_dir = tmp_path / "run"
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=executor) == 0
    _, rows = read_rows(run_dir)
    by_mech = {r["mechanism"]: r for r in rows.values()}
    assert by_mech["vanilla"]["status"] == "ok"
    crash = by_mech["_ray_crash"]
    assert crash["status"] == "error" and crash["params"] == ""
    assert crash["error"].startswith("ray task failed 2 times; last: WorkerCrashedError")
    attempts = (tmp_path / "attempts.txt").read_text().split()
    assert len(attempts) == 2 and len(set(attempts)) == 2  # two worker processes, one attempt each


@pytest.mark.slow  # a local Ray instance and several tasks: tens of seconds
def test_ctrl_c_cancels_outstanding_tasks_and_the_rerun_finishes(
    ray_instance, tmp_path, temp_registry, monkeypatch
):
    path = write_study(
        tmp_path,
        mechanism="_ray_unused",
        measure="[params, latency]",
        passes="[forward]",
        resolution="[8, 10, 12, 14]",
        mechanisms="  - vanilla",
    )
    real_wait, calls = ray.wait, []

    def wait(refs, **kwargs):
        if kwargs.get("timeout") is None:  # the result loop (the probe waits with a timeout)
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real_wait(refs, **kwargs)

    monkeypatch.setattr(ray, "wait", wait)
    run_dir = tmp_path / "run"
    executor = RayExecutor()
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=executor) == 130
    assert executor.submitted == 4 and executor.cancelled == 3
    _, first = read_rows(run_dir)
    assert len(first) == 1 and manifest(run_dir)["runs"][-1]["status"] == "interrupted"

    monkeypatch.setattr(ray, "wait", real_wait)
    executor = RayExecutor()
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=executor) == 0
    assert executor.submitted == 3
    _, rows = read_rows(run_dir)
    assert sorted(int(r["H"]) for r in rows.values()) == [8, 10, 12, 14]
    assert all(r["status"] == "ok" for r in rows.values())
    assert {pid: rows[pid] for pid in first} == first  # the saved row was kept as it was


@pytest.mark.slow  # a local Ray instance and several tasks: tens of seconds
def test_a_study_no_node_can_run_is_refused_before_anything_is_written(ray_instance, tmp_path, temp_registry):
    path = write_study(tmp_path, mechanism="_ray_unused2", mechanisms="  - vanilla")
    path.write_text(path.read_text().replace("threads: 1", "threads: 64"))
    study = load_study(path)
    with pytest.raises(ExecutorError, match="no node of the Ray cluster offers 64 CPUs"):
        run_study(study, out_dir=tmp_path / "run", quiet=True, report=False, executor=RayExecutor())
    assert not (tmp_path / "run").exists()


TINY = """\
device: cpu
threads: 1
measure: [params]
passes: [forward]
sweep: {resolution: 8, dim: 8, num_heads: 1}
mechanisms: [vanilla]
"""


@pytest.mark.slow  # a local Ray instance
def test_cli_runs_a_study_on_ray_and_records_how(ray_instance, tmp_path, capsys):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY)
    run_dir = tmp_path / "run"
    argv = ["run", str(study), "--out", str(run_dir), "--executor", "ray", "--no-report"]
    assert cli_main(argv) == 0
    assert "via Ray on 1 node" in capsys.readouterr().out
    _, rows = read_rows(run_dir)
    assert [r["status"] for r in rows.values()] == ["ok"]
    command = manifest(run_dir)["runs"][-1]["command"]
    assert command == ["attnbench", "run", str(study), "--out", str(run_dir), "--executor", "ray"]


def test_cli_refuses_a_bad_executor_choice(tmp_path, capsys, monkeypatch):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY)
    assert cli_main(["run", str(study), "--address", "auto"]) == 2
    assert "needs the ray executor (--executor ray)" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    assert cli_main(["run", str(study), "--executor", "ray"]) == 2
    assert 'pip install "attnbench[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.gpu
def test_a_cuda_study_runs_one_gpu_per_task(ray_instance, tmp_path, temp_registry):
    if not torch.cuda.is_available() or ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("needs a CUDA device visible to Ray")
    path = write_study(
        tmp_path,
        mechanism="_ray_unused3",
        measure="[params, latency, memory]",
        passes="[forward]",
        resolution="[14, 28]",
        mechanisms="  - vanilla",
    )
    path.write_text(path.read_text().replace("device: cpu", "device: cuda"))
    run_dir = tmp_path / "run"
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=RayExecutor()) == 0
    _, rows = read_rows(run_dir)
    assert [r["status"] for r in rows.values()] == ["ok", "ok"]
    assert {r["device"] for r in rows.values()} == {"cuda"}
    m = manifest(run_dir)
    assert m["runs"][-1]["executor"]["task_resources"] == {"GPU": 1, "CPU": 1}
    env = m["environments"][m["runs"][-1]["env_id"]]
    assert env["device_name"] == torch.cuda.get_device_name(0)
