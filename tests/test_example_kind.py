"""A kind is its folder and one registration line: the example kind of tests/example_kind runs,
reports, resumes, is refused where it does not belong, and joins the JSON Schema, with nothing in
attnbench naming it."""

from __future__ import annotations

import json

import pytest

import attnbench  # noqa: F401  (before timm: the CPU-wheel workaround)
from attnbench import kind as kinds
from attnbench.cli import main
from attnbench.store import load_rows

STUDY = """kind: count
name: tiny-count
device: cpu
mechanisms: [vanilla, swin, bra]
dim: 32
num_heads: 2
"""


@pytest.fixture
def count_kind():
    kinds.register_kind("count", "tests.example_kind")  # the one line a new kind needs
    yield
    kinds.KINDS.pop("count")


def test_the_example_kind_runs_resumes_and_reports(tmp_path, count_kind, capsys):
    path = tmp_path / "count.yaml"
    path.write_text(STUDY)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--isolation", "none"]) == 0
    _, rows = load_rows(out)
    params = {r["mechanism"]: r["params"] for r in rows if r["status"] == "ok"}
    assert set(params) == {"vanilla", "swin", "bra"} and all(n > 0 for n in params.values())
    assert json.loads((out / "manifest.json").read_text())["kind"] == "count"
    fewest = min(params, key=params.get)
    assert f"Fewest parameters: **{fewest}**" in (out / "report.md").read_text()
    assert (out / "tables" / "count.tex").is_file() and (out / "index.html").is_file()

    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), "--isolation", "none"]) == 0  # resumed: nothing to do
    assert "3 ok" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert main(["report", str(out), "--sort", "params"]) == 2  # a sweep's option: refused, one line
    err = capsys.readouterr().err
    assert "select rows or columns of other kinds of run" in err and "Traceback" not in err


def test_a_sweep_into_its_folder_is_refused(tmp_path, count_kind, capsys):
    path = tmp_path / "count.yaml"
    path.write_text(STUDY)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report", "--isolation", "none"]) == 0
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "device: cpu\nmeasure: params\nsweep: {resolution: 8, dim: 32, num_heads: 2}\nmechanisms: [vanilla]\n"
    )
    assert main(["run", str(sweep), "--out", str(out), "--quiet"]) == 2
    assert "holds a count run" in capsys.readouterr().err


def test_the_loader_and_the_schema_know_it_only_once_registered(tmp_path, capsys):
    from attnbench.study import StudyError, json_schema, load_study

    path = tmp_path / "count.yaml"
    path.write_text(STUDY)
    with pytest.raises(
        StudyError, match=r"kind: 'count' is not one of \['sweep', 'models', 'ablation', 'peers'\]"
    ):
        load_study(path)
    assert '"CountFile"' not in json.dumps(json_schema())
    kinds.register_kind("count", "tests.example_kind")
    try:
        study = load_study(path)
        assert (study.kind, study.mechanisms, study.dim, study.path) == (
            "count",
            ["vanilla", "swin", "bra"],
            32,
            path,
        )
        assert study.sha256 and study.text == STUDY
        assert '"CountFile"' in json.dumps(json_schema())
        path.write_text(STUDY.replace("swin", "swim"))
        with pytest.raises(
            StudyError,
            match=r"count.yaml:4: mechanisms: 'swim' is no registered mechanism; did you mean 'swin'",
        ):
            load_study(path)
    finally:
        kinds.KINDS.pop("count")


def test_a_run_of_a_kind_not_registered_is_refused_in_one_line(tmp_path, count_kind, capsys):
    path = tmp_path / "count.yaml"
    path.write_text(STUDY)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report", "--isolation", "none"]) == 0
    kinds.KINDS.pop("count")
    try:
        assert main(["report", str(out)]) == 2
    finally:
        kinds.register_kind("count", "tests.example_kind")  # the fixture removes it again
    err = capsys.readouterr().err
    assert "holds a 'count' run, a kind with no report here" in err and "register_kind" in err
    assert "Traceback" not in err


def test_registering_a_package_that_is_no_kind_is_refused():
    with pytest.raises(ValueError, match=r"no module not_a_package\.kind"):
        kinds.register_kind("nothing", "not_a_package")
    with pytest.raises(ValueError, match="identifier"):
        kinds.register_kind("two words", "tests.example_kind")
    assert "nothing" not in kinds.KINDS
