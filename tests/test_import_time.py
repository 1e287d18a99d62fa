"""The command line answers ``--help`` without importing torch and the rest; the lazy public names.

Each check runs in a fresh interpreter, since this test process has long imported everything.
There is no wall-clock assertion (the suite must pass on a loaded machine); the measured time of
``build_parser`` and every ``--help`` is printed (``pytest -s``) for a person to read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import attnbench
from attnbench.report.options import METRIC_KEYS

HEAVY = ("torch", "timm", "natten", "matplotlib", "pandas", "ray", "fvcore")

HELP_EVERY_COMMAND = """
import argparse, contextlib, io, json, sys, time

start = time.perf_counter()
import attnbench.cli

parser = attnbench.cli.build_parser()
sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
codes = {}
for argv in (["--help"], *([name, "--help"] for name in sub.choices)):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            codes[" ".join(argv)] = exc.code
        codes["main " + " ".join(argv)] = attnbench.cli.main(argv)
seconds = time.perf_counter() - start
heavy = sorted(m for m in %r if m in sys.modules)
print(json.dumps({"commands": list(sub.choices), "codes": codes, "heavy": heavy, "seconds": seconds}))
"""


def _run(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_nothing_heavy():
    out = _run(HELP_EVERY_COMMAND % (HEAVY,))
    print(f"build_parser and --help of {len(out['commands'])} commands: {out['seconds']:.3f} s")
    assert {"list", "run", "report", "check", "new"} <= set(out["commands"])
    assert set(out["codes"].values()) == {0}, out["codes"]
    assert out["heavy"] == [], f"--help imported {out['heavy']}: import them inside the _cmd_* function"


def test_importing_attnbench_and_the_report_options_imports_nothing_heavy():
    out = _run(
        f"""
        import json, sys
        import attnbench, attnbench.report, attnbench.report.options
        print(json.dumps({{"heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
        """
    )
    assert out["heavy"] == []


def test_public_names_are_imported_on_first_use():
    from attnbench import count_flops, register_mechanism  # noqa: F401

    for name in attnbench.__all__:
        assert getattr(attnbench, name).__name__ == name
        assert name in dir(attnbench)
    assert isinstance(attnbench.__version__, str)
    try:
        attnbench.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("attnbench.no_such_name did not raise AttributeError")


@pytest.mark.slow  # a fresh interpreter importing timm and building a model
def test_import_attnbench_models_registers_the_seed_models_with_timm():
    out = _run(
        """
        import json
        import attnbench
        import timm  # works on a CPU-only torchvision: import attnbench patched it first

        before = timm.is_model("biformer_tiny")
        import attnbench.models

        model = timm.create_model("biformer_tiny", num_classes=10)
        print(json.dumps({"before": before, "classes": model.num_classes}))
        """
    )
    assert out == {"before": False, "classes": 10}


def test_report_options_list_every_metric():
    from attnbench.kinds.sweep.tables import METRICS

    assert list(METRIC_KEYS) == list(METRICS)
