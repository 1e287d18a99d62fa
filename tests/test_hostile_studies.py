"""Hostile study files get one clear line and exit 2 from ``attnbench run``: never a traceback, a
hang, all the memory, or a silent exit (issue: hostile studies and damaged run folders).

Each case runs under a memory cap (``resource.RLIMIT_AS`` in a child process), so a regression
fails the test instead of taking the machine.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnbench.cli import CONFIRM_POINTS, main
from tests.test_planted_links import STUDY

MEMORY_CAP = 3 << 30  # bytes of address space for a child `attnbench run` (torch alone maps ~1.5 GiB)


@pytest.fixture(autouse=True)
def _fresh_registry(temp_registry):
    """Each test's plugin registers "evil" anew (the registrations are dropped afterwards)."""
    yield


def _run_capped(cases: list[list[str]], timeout: float = 300) -> list[dict]:
    """``attnbench <args>`` for each case, one after the other in one child process whose address
    space is capped (one import of torch for all): each case's exit code and stderr."""
    code = textwrap.dedent(
        f"""
        import contextlib, io, json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_CAP}, {MEMORY_CAP}))
        from attnbench.cli import main
        out = []
        for args in {cases!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(args)
            out.append({{"rc": rc, "stderr": err.getvalue()}})
        print(json.dumps(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _alias_bomb(key: str) -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{key}\n"


HOSTILE = {  # name: (study text, what the one problem says)
    "alias-bomb-description": (
        _alias_bomb("description: *a8\n" + STUDY),
        "expands to more than 100,000 values",
    ),
    "alias-bomb-sweep": (
        _alias_bomb(STUDY.replace("resolution: [14]", "resolution: *a8")),
        "expands to more than 100,000",
    ),
    "nested-20000": ("name: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply"),
    "nested-41": ("name: " + "[" * 40 + "]" * 40 + "\n", "nested 41 levels deep; at most 32"),
    "recursive": ("a: &a [*a]\n" + STUDY, "recursive"),
    "seed": (
        STUDY.replace("batch: 1", "batch: 1\nseed: 1180591620717411303424"),
        "seed: must be at most 4,294,967,295",
    ),
    "size": (
        STUDY.replace("[14]", "[100000000000000000000000]"),
        "must be at most 2,147,483,647, got 100000000000000000000000",
    ),
}


def test_hostile_study_files_are_one_clear_problem_each(tmp_path):
    cases = []
    for name, (text, _) in HOSTILE.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        cases.append(["run", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name)])
    for (name, (_, expected)), got in zip(HOSTILE.items(), _run_capped(cases)):
        err = got["stderr"]
        assert got["rc"] == 2, (name, err[-2000:])
        assert expected in err and "Traceback" not in err, (name, err[-2000:])
        assert len(err) < 2000, name  # no value spelled out at length
        assert not (tmp_path / name).exists(), name


def test_a_file_that_never_ends_is_not_read(tmp_path, capsys):
    assert main(["run", "/dev/zero", "--out", str(tmp_path / "run")]) == 2
    assert "cannot read the study file: it is not a regular file" in capsys.readouterr().err
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20) + "\n" + STUDY)
    assert main(["run", str(big), "--out", str(tmp_path / "run")]) == 2
    assert "larger than 1 MiB" in capsys.readouterr().err


def test_a_huge_parameter_grid_is_refused_before_any_module_is_built(tmp_path, capsys):
    values = ", ".join(str(i) for i in range(1, 1001))
    path = tmp_path / "study.yaml"
    path.write_text(
        STUDY.replace(
            "  - name: vanilla", f"  - name: bra\n    params: {{n_win: [{values}], topk: [{values}]}}"
        )
    )
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "the parameter grid has 1,000,000 combinations (1000 n_win x 1000 topk); at most 1,000" in err


def test_a_large_study_asks_first(tmp_path, capsys):
    sizes = ", ".join(str(14 + i) for i in range(CONFIRM_POINTS // 2 + 1))
    path = tmp_path / "study.yaml"
    path.write_text(
        STUDY.replace("dim: [32]", "dim: [32, 64]").replace("resolution: [14]", f"resolution: [{sizes}]")
    )
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2  # no terminal to ask on: refused
    err = capsys.readouterr().err
    assert f"{2 * (CONFIRM_POINTS // 2 + 1):,} points (more than {CONFIRM_POINTS:,}); give --yes" in err
    assert not out.exists()


def _plugin_study(tmp_path: Path, plugin: str) -> Path:
    (tmp_path / "evil.py").write_text(textwrap.dedent(plugin))
    path = tmp_path / "study.yaml"
    path.write_text("plugins: [evil.py]\n" + STUDY.replace("  - name: vanilla", "  - name: evil"))
    return path


EVIL_INIT = """
    import time
    from attnbench import AttentionMechanism, register_mechanism

    @register_mechanism("evil")
    class Evil(AttentionMechanism):
        def __init__(self, dim, num_heads):
            super().__init__(dim, num_heads)
            {body}

        def forward(self, x):
            return x
"""


@pytest.mark.plugin_trial
def test_a_plugin_that_exits_the_process_while_imported(tmp_path, capsys):
    path = _plugin_study(tmp_path, "import os\nos._exit(0)\n")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "validating the study ended early (exit code 0)" in err and "os._exit" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # waits out the trial's time limit (10 s here)
@pytest.mark.plugin_trial
@pytest.mark.parametrize("where", ["import", "init"])
def test_a_plugin_that_hangs_is_stopped(tmp_path, capsys, monkeypatch, where):
    import attnbench.study._trial as trial_module

    monkeypatch.setattr(trial_module, "TRIAL_SECONDS", 10.0)
    plugin = "while True:\n    pass\n" if where == "import" else EVIL_INIT.format(body="time.sleep(3600)")
    path = _plugin_study(tmp_path, plugin)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "did not finish in 10 s: a plugin hangs" in capsys.readouterr().err


@pytest.mark.slow  # two child processes that import torch (4 s)
@pytest.mark.plugin_trial
def test_a_well_behaved_plugin_passes_the_trial(tmp_path, capsys):
    from attnbench.study._trial import has_plugins, trial

    path = _plugin_study(tmp_path, EVIL_INIT.format(body="pass"))
    assert has_plugins(path) and trial(path, None) is None
    bad = _plugin_study(tmp_path, "raise ImportError('no such thing')\n")
    # the trial runs to its end; the problem is for the validation in this process to say
    assert main(["run", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "importing 'evil.py' failed: ImportError: no such thing" in capsys.readouterr().err


BAD_OUTPUTS = {  # mechanism: (its forward's return, what the row's error says)
    "evil_nan": ("x * float('nan')", "the output has 6272 non-finite values (NaN or inf) of 6272"),
    "evil_shape": ("x[..., :1]", "the output has shape (1, 14, 14, 1), not the input's (1, 14, 14, 32)"),
    "evil_none": ("None", "the output is a NoneType, not a tensor"),
    "evil_long": ("x.long()", "the output is torch.int64, not the input's torch.float32"),
}


@pytest.mark.parametrize("measure", ["[params]", pytest.param("[flops]", marks=pytest.mark.slow)])
def test_a_study_that_times_nothing_still_checks_the_output(tmp_path, measure):
    plugin = "from attnbench import AttentionMechanism, register_mechanism\n"
    for name, (result, _) in BAD_OUTPUTS.items():
        plugin += textwrap.dedent(
            f"""
            @register_mechanism("{name}")
            class C_{name}(AttentionMechanism):
                def forward(self, x):
                    return {result}
            """
        )
    path = _plugin_study(tmp_path, plugin)
    entries = "".join(f"  - name: {name}\n" for name in BAD_OUTPUTS)
    text = (
        path.read_text()
        .replace("  - name: evil\n", entries)
        .replace("measure: [params]", f"measure: {measure}")
    )
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = {r["mechanism"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(BAD_OUTPUTS)
    for name, (_, expected) in BAD_OUTPUTS.items():
        assert rows[name]["status"] == "error" and rows[name]["error"] == f"forward: {expected}", rows[name]


@pytest.mark.parametrize(
    "content", ["[]", '"x"', '{"k": []}', '{"KEY": {"method": "M", "peak_gmacs_s": "fast"}}']
)
def test_a_peak_cache_of_the_wrong_shape_is_measured_again(tmp_path, monkeypatch, content):
    from attnbench import peak

    monkeypatch.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(peak, "_measure", lambda device, dtype, threads: 12.5)
    key = "env|cpu|float32|1"
    (tmp_path / "peak.json").write_text(content.replace("KEY", key).replace('"M"', json.dumps(peak.METHOD)))
    peak.peak_gmacs_s.cache_clear()
    try:
        assert peak.peak_gmacs_s("cpu", "float32", 1, "env")["peak_gmacs_s"] == 12.5
    finally:
        peak.peak_gmacs_s.cache_clear()
    assert json.loads((tmp_path / "peak.json").read_text())[key]["peak_gmacs_s"] == 12.5  # rewritten
