"""Points that cannot take the run down, runs that cannot lose rows, and numbers that do not mix.

The first test runs a study in worker processes (the default isolation) with a plugin mechanism
that misbehaves on command: SIGKILL of its own process (what the OOM killer does), a hang past
point_timeout_s, sys.exit, a wrong output shape and NaN. The others run in this process.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from attnbench.cli import main as cli_main
from attnbench.executors import LocalExecutor
from attnbench.report._results import load_results
from attnbench.runner import run_study
from attnbench.store import RunLock, StoreError
from attnbench.study import load_study

PLUGIN = '''\
import os
import signal
import sys
import time
from typing import Literal

from torch import nn

from attnbench import AttentionMechanism, register_mechanism


@register_mechanism("misbehave")
class Misbehave(AttentionMechanism):
    """A linear map that misbehaves at H = 12 when told to (test plugin)."""

    def __init__(
        self, dim: int, num_heads: int, *, how: Literal["ok", "kill", "hang", "exit", "shape", "nan"] = "ok"
    ):
        super().__init__(dim, num_heads)
        self.how = how
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        if x.shape[1] == 12:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "hang":
                time.sleep(3600)
            if self.how == "exit":
                sys.exit(0)
            if self.how == "shape":
                return self.proj(x)[:, :-1]
            if self.how == "nan":
                return self.proj(x) * float("nan")
        return self.proj(x)

    def analytic_flops(self, H, W):
        return {"proj": H * W * self.dim * self.dim}
'''

STUDY = """\
name: faults
device: cpu
threads: 1
measure: [params, latency]
passes: [forward]
repeats: 2
warmup: 0
point_timeout_s: {timeout}
sweep:
  resolution: [8, 12, 16]
  dim: [8]
  num_heads: [1]
mechanisms:
  - name: misbehave
    params: {{how: [{how}]}}
plugins: [misbehave.py]
"""


@pytest.fixture(autouse=True)
def _forget_plugins(temp_registry):
    """Each test loads the plugin from its own folder: forget the earlier test's registration."""
    saved = dict(temp_registry._loaded_plugins)
    yield
    temp_registry._loaded_plugins.clear()
    temp_registry._loaded_plugins.update(saved)


def _study(tmp_path: Path, how: str = "ok, kill, hang, exit, shape, nan", timeout: float = 4) -> Path:
    (tmp_path / "misbehave.py").write_text(PLUGIN)
    path = tmp_path / "faults.yaml"
    path.write_text(STUDY.format(how=how, timeout=timeout))
    return path


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # long: run with -m slow
def test_killed_hung_exiting_and_wrong_points_become_error_rows_and_the_run_goes_on(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_study(load_study(_study(tmp_path)), out_dir=run_dir, quiet=True, report=False) == 0
    rows = {(r["how"], r["H"]): r for r in _rows(run_dir)}
    assert len(rows) == 18
    for how in ("ok", "kill", "hang", "exit", "shape", "nan"):  # H = 8 and 16 work for every one
        assert rows[(how, "8")]["status"] == rows[(how, "16")]["status"] == "ok"
    assert rows[("ok", "12")]["status"] == "ok"
    errors = {how: rows[(how, "12")]["error"] for how in ("kill", "hang", "exit", "shape", "nan")}
    assert all(rows[(how, "12")]["status"] == "error" for how in errors)
    assert "killed by SIGKILL, most likely out of memory" in errors["kill"]
    assert "no result after 4 s" in errors["hang"] and "point_timeout_s" in errors["hang"]
    assert "SystemExit" in errors["exit"]
    assert "the output has shape (1, 11, 12, 8), not the input's (1, 12, 12, 8)" in errors["shape"]
    assert "non-finite values" in errors["nan"]
    assert all(rows[(how, "12")]["latency_ms"] == "" for how in errors)  # no timings for a bad point
    err = capsys.readouterr().err
    assert "killed by SIGKILL" in err and "the run goes on" in err


def test_an_error_row_is_retried_once_not_forever(tmp_path, capsys):
    path = _study(tmp_path, how="exit")
    run_dir = tmp_path / "run"

    def errors() -> int:
        return sum(r["status"] == "error" for r in _rows(run_dir))

    executor = LocalExecutor("none")  # sys.exit inside a point is an error row in this process too
    for _ in range(2):
        assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=executor) == 0
        assert errors() == 1
    state = sqlite3.connect(run_dir / "results.db").execute("SELECT MAX(attempts) FROM rows").fetchone()
    assert state == (2,)
    capsys.readouterr()
    assert run_study(load_study(path), out_dir=run_dir, report=False, executor=executor) == 0
    assert "1 tasks failed twice and are kept as error rows (--retry-errors" in capsys.readouterr().out
    assert (
        run_study(load_study(path), out_dir=run_dir, report=False, executor=executor, retry_errors=True) == 0
    )
    assert sqlite3.connect(run_dir / "results.db").execute("SELECT MAX(attempts) FROM rows").fetchone() == (
        3,
    )


def _hold(run_dir: str, ready, release) -> None:
    with RunLock(Path(run_dir), ["attnbench", "run", "studies/other.yaml"]):
        ready.set()
        release.wait(60)


def test_a_second_run_into_a_busy_folder_is_refused_at_once(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mp = multiprocessing.get_context("spawn")
    ready, release = mp.Event(), mp.Event()
    other = mp.Process(target=_hold, args=(str(run_dir), ready, release))
    other.start()
    try:
        assert ready.wait(60)
        code = cli_main(
            ["run", str(_study(tmp_path, how="ok")), "--out", str(run_dir), "--no-report", "--quiet"]
        )
        assert code == 2
        err = capsys.readouterr().err
        assert f"is being written by pid {other.pid}" in err and "studies/other.yaml" in err
        assert "Traceback" not in err
        assert not (run_dir / "results.db").exists()
    finally:
        release.set()
        other.join(30)


def test_without_out_a_run_writes_to_runs_not_results(tmp_path, monkeypatch):
    path = _study(tmp_path, how="ok")
    monkeypatch.chdir(tmp_path)
    assert run_study(load_study(path), quiet=True, report=False, executor=LocalExecutor("none")) == 0
    assert (tmp_path / "runs" / "faults" / "results.db").is_file()
    assert not (tmp_path / "results").exists()


def test_a_protocol_change_is_refused_and_an_older_mixed_folder_kept_apart(tmp_path, capsys):
    path = _study(tmp_path, how="ok")
    run_dir = tmp_path / "run"
    codes = []
    for threads in (1, 2):
        path.write_text(path.read_text().replace(f"threads: {3 - threads}", f"threads: {threads}"))
        codes.append(
            run_study(
                load_study(path), out_dir=run_dir, quiet=True, report=False, executor=LocalExecutor("none")
            )
        )
    assert codes == [0, 2]
    err = capsys.readouterr().err
    assert "holds rows measured under another protocol (threads 1 -> 2" in err and "--fresh" in err
    rows = _rows(run_dir)
    assert len(rows) == 3  # nothing of the refused run was written
    # a folder that already mixes protocols (an older attnbench kept both): the report keeps one
    from attnbench.store import ResultsStore

    store = ResultsStore(run_dir)
    for r in rows:
        store.add(
            {**r, "point_id": "f" + str(r["point_id"])[1:], "protocol_id": "0ther0protoc0", "threads": 1}
        )
    store.close()
    df = load_results(run_dir)
    assert len(df) == 3 and "3 of 6 rows were measured under another protocol" in df.attrs["left_out"]


def test_bad_out_folders_are_one_line_and_exit_2(tmp_path, capsys):
    study = str(_study(tmp_path, how="ok"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert cli_main(["run", study, "--out", str(a_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == f"attnbench run: {a_file} is a file, not a folder; give --out a folder (new or a run folder)"
    )
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "results.db").write_bytes(b"garbage" * 200)
    assert cli_main(["run", study, "--out", str(damaged), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not an SQLite database" in err and "--fresh" in err and "Traceback" not in err


def test_a_full_disk_during_the_run_keeps_earlier_rows_and_prints_the_resume(tmp_path, capsys, monkeypatch):
    from attnbench.store import ResultsStore

    real_add = ResultsStore.add
    calls = {"n": 0}

    def add(self, row, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreError(f"cannot write to {self.db_path} (database or disk is full); free the disk")
        return real_add(self, row, **kw)

    monkeypatch.setattr(ResultsStore, "add", add)
    run_dir = tmp_path / "run"
    path = _study(tmp_path, how="ok")
    assert (
        run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=LocalExecutor("none"))
        == 1
    )
    err = capsys.readouterr().err
    assert "disk is full" in err and f"resume with: attnbench run {path} --out {run_dir}" in err
    assert len(_rows(run_dir)) == 1  # the row before the failure is intact


def test_ctrl_c_while_starting_prints_the_command_to_run_again(tmp_path, capsys, monkeypatch):
    import attnbench.study

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(attnbench.study, "load_study", interrupted)
    study = str(_study(tmp_path, how="ok"))
    assert cli_main(["run", study, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert f"interrupted before measuring; run again with: attnbench run {study} --out" in err


@pytest.mark.parametrize("mark", [True, False])
def test_unstable_rows_are_counted_and_marked(tmp_path, capsys, monkeypatch, mark):
    from attnbench.kinds import _common

    monkeypatch.setattr(
        _common, "unstable_reasons", lambda row: ["other processes kept 1.5 cores busy"] if mark else []
    )
    run_dir = tmp_path / "run"
    path = _study(tmp_path, how="ok")
    assert (
        run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=LocalExecutor("none"))
        == 0
    )
    out = capsys.readouterr().out
    assert f"3 ok, 0 skipped, 0 errors, {3 if mark else 0} unstable" in out
    assert {r["unstable"] for r in _rows(run_dir)} == {"1" if mark else "0"}


@pytest.mark.slow  # 4.5 s: two worker processes; the one-worker fault tests stay in the default run
def test_two_workers_side_by_side_give_the_same_rows_and_faults(tmp_path):
    """--workers 2: every point once, the same statuses as one worker, a killed point still only its own."""
    path = _study(tmp_path, how="ok, kill, exit")
    run_dir = tmp_path / "run"
    executor = LocalExecutor("process", workers=2)
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=executor) == 0
    rows = _rows(run_dir)
    assert sorted((r["how"], r["H"]) for r in rows) == sorted(
        (how, H) for how in ("ok", "kill", "exit") for H in ("8", "12", "16")
    )
    status = {(r["how"], r["H"]): r["status"] for r in rows}
    assert sorted(k for k, s in status.items() if s == "error") == [("exit", "12"), ("kill", "12")]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["runs"][-1]["executor"] == {"name": "local", "isolation": "process", "workers": 2}


def test_workers_need_process_isolation_and_the_local_executor():
    from attnbench.executors import make_executor

    with pytest.raises(ValueError, match="needs isolation 'process'"):
        LocalExecutor("none", workers=2)
    with pytest.raises(ValueError, match="int >= 1"):
        LocalExecutor("process", workers=0)
    with pytest.raises(ValueError, match="local executor"):
        make_executor("ray", None, "process", 2)


def test_retry_unstable_measures_only_the_unstable_rows_again(tmp_path, capsys, monkeypatch):
    from attnbench import runner
    from attnbench.kinds import _common

    path, run_dir = _study(tmp_path, how="ok"), tmp_path / "run"
    marked = {"on": True}

    def reasons(row):
        return ["other processes kept 1 core busy"] if marked["on"] else []

    # the guard when measuring, and when the runner picks the rows to retry (a busy CI machine's
    # load average would otherwise mark the rows again)
    monkeypatch.setattr(_common, "unstable_reasons", reasons)
    monkeypatch.setattr(runner, "unstable_reasons", reasons)
    none = LocalExecutor("none")
    assert run_study(load_study(path), out_dir=run_dir, quiet=True, report=False, executor=none) == 0
    before = {r["H"]: r for r in _rows(run_dir)}
    assert {r["unstable"] for r in before.values()} == {"1"}
    marked["on"] = False
    capsys.readouterr()
    kwargs = {"out_dir": run_dir, "quiet": True, "report": False, "executor": none}
    assert run_study(load_study(path), retry_unstable=True, **kwargs) == 0
    assert "measuring again 3 tasks with unstable rows" in capsys.readouterr().out
    after = {r["H"]: r for r in _rows(run_dir)}
    assert {r["unstable"] for r in after.values()} == {"0"}
    assert all(after[H]["timestamp"] >= before[H]["timestamp"] for H in before)
    # nothing unstable left: a second retry measures nothing
    assert run_study(load_study(path), retry_unstable=True, **kwargs) == 0
    assert "measuring again" not in capsys.readouterr().out


def test_a_folder_from_another_machine_is_refused_naming_what_differs(tmp_path, capsys, monkeypatch):
    """Rows measured on another CPU (or torch): the refusal names the environment field that
    changed, not the protocol's descriptions."""
    import attnbench.environment as environment

    path = _study(tmp_path, how="ok")
    run_dir = tmp_path / "run"
    run = lambda: run_study(  # noqa: E731
        load_study(path), out_dir=run_dir, quiet=True, report=False, executor=LocalExecutor("none")
    )
    real = environment.collect_environment
    monkeypatch.setattr(
        environment, "collect_environment", lambda *a, **k: {**real(*a, **k), "device_name": "CPU: Old"}
    )
    assert run() == 0
    monkeypatch.setattr(environment, "collect_environment", real)
    assert run() == 2
    err = capsys.readouterr().err
    assert "holds rows measured under another protocol (device_name 'CPU: Old' -> " in err
    assert "measure" not in err.split("(")[1].split(")")[0]  # no protocol key is named: none changed
