"""Models studies (``kind: models``): validation, one row per model, resume, Ctrl-C and the models table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import attnbench.kinds.models.kind as models_kind
from attnbench.cli import main
from attnbench.kinds.models.kind import model_point_id
from attnbench.kinds.models.schema import ModelsFile, ModelSpec
from attnbench.report import write_report
from attnbench.runner import run_study
from attnbench.store import ResultsStore
from attnbench.study import StudyError, load_study

ROOT = Path(__file__).resolve().parent.parent

# Line numbers matter: the cases below replace whole lines. BiFormer-T at 64x64 needs n_win 2 (the
# stage maps are 16, 8, 4); the second entry keeps n_win 7 and fails at run time: an error row.
BASE = """\
name: tiny_models
kind: models
resolution: 64
batch: 1
device: cpu
threads: 1
repeats: 2
warmup: 1
measure: [params, flops, latency, memory]
models:
  - name: biformer_tiny
    family: "BiFormer (Zhu et al., CVPR 2023)"
    kwargs: {n_win: 2, topks: [1, 2, 4, -2]}
    published: {params_m: 13.1, gflops: 2.2, top1: 81.4, source: "the README"}
    counted: {params_m: 13.14, gflops: 2.228, source: "fvcore on the released code"}
  - name: biformer_tiny
    family: "BiFormer (Zhu et al., CVPR 2023)"
    counted: {params_m: 13.14, gflops: 0.177, source: "our count", resolution: 64}
"""

REQUIRED_COLUMNS = (
    "model family resolution batch dtype device status error params params_m flops gflops flops_torch "
    "flops_uncounted latency_ms latency_iqr_ms throughput peak_mem_mb mem_method published_params_m "
    "published_gflops published_top1 published_source counted_params_m counted_gflops counted_source "
    "params_diff_counted_pct gflops_diff_counted_pct params_diff_published_pct gflops_diff_published_pct"
).split()


def study_text(base: str | None = None, **lines: str) -> str:
    """``base`` (default: BASE without kwargs) with line N (1-based, keyword ``l<N>``) replaced.

    Validation builds each model that has kwargs (about 3 s for BiFormer-T on a busy CPU), so the
    validation cases leave them out unless they test them (the second entry becomes BiFormer-S).
    """
    out = (base or BASE).splitlines()
    if base is None:
        out[12] = "    # (kwargs left out)"
        out[15] = "  - name: biformer_small"
    for key, text in lines.items():
        out[int(key[1:]) - 1] = text
    return "\n".join(out) + "\n"


def run_invalid(tmp_path: Path, capsys, text: str) -> tuple[str, list[str]]:
    study = tmp_path / "study.yaml"
    study.write_text(text)
    out = tmp_path / "out"
    rc = main(["run", str(study), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert not out.exists()  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
    return str(study), err.strip().splitlines()


def read_rows(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run_dir / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# ---------------------------------------------------------------------------------------------
# Validation


def test_valid_models_study_and_the_paper_table_load():
    study = load_study(ROOT / "studies" / "paper_table.yaml")
    assert isinstance(study, ModelsFile)
    assert (study.kind, study.resolution, study.batch, study.dtype) == ("models", 224, 1, "float32")
    assert [m.name for m in study.models][:2] == ["biformer_tiny", "biformer_small"]
    assert dict(study.models[6].published)["params_m"] == 77.0  # debiformer_base: kept as published
    assert dict(study.models[6].counted)["params_m"] == 95.5


SCHEMA_ERRORS = {
    "unknown top key": ({"l9": "mesure: [params]"}, 9, "mesure: unknown key; did you mean 'measure'?"),
    "sweep key": ({"l9": "sweep: {dim: [32]}"}, 9, "a models study has no sweep"),
    "unknown model": (
        {"l11": "  - name: biformer_tiy"},
        11,
        "models[0].name: unknown model 'biformer_tiy'; did you mean 'biformer_tiny'",
    ),
    "resolution zero": ({"l3": "resolution: 0"}, 3, "resolution: must be a positive int, got 0"),
    "batch list": ({"l4": "batch: [1, 2]"}, 4, "batch: expected a positive int, got a list [1, 2]"),
    "batch text": ({"l4": "batch: one"}, 4, "batch: expected a positive int, got 'one' (str)"),
    "dtype list": ({"l5": "device: cpu\ndtype: [float32, bfloat16]"}, 6, "dtype: expected one dtype"),
    "float16 on cpu": ({"l5": "device: cpu\ndtype: float16"}, 6, "float16 is not supported on CPU"),
    "gflops text": (
        {"l14": '    published: {params_m: 13.1, gflops: "2.2G", top1: 81.4, source: "the README"}'},
        14,
        "models[0].published.gflops: expected a positive number, got '2.2G'",
    ),
    "top1 over 100": (
        {"l14": '    published: {params_m: 13.1, gflops: 2.2, top1: 814, source: "the README"}'},
        14,
        "models[0].published.top1: expected a percentage in (0, 100], got 814",
    ),
    "numbers without a source": (
        {"l15": "    counted: {params_m: 13.14, gflops: 2.228}"},
        15,
        "models[0].counted.source: missing; say where these numbers come from",
    ),
    "unknown entry key": (
        {"l12": '    familly: "BiFormer"'},
        12,
        "models[0].familly: unknown key; did you mean 'family'?",
    ),
    "kwargs not a mapping": ({"l13": "    kwargs: [n_win, 2]"}, 13, "models[0].kwargs: expected a mapping"),
    "kwargs that cannot build": (
        {"l13": "    kwargs: {n_wins: 2}"},
        13,
        "models[0].kwargs: timm.create_model('biformer_tiny', **kwargs) failed: TypeError",
    ),
    "same model twice": (
        {"l16": "  - name: biformer_tiny"},
        16,
        "models[1].name: 'biformer_tiny' with these kwargs is already models[0]",
    ),
}


@pytest.mark.parametrize("case", list(SCHEMA_ERRORS))
def test_schema_error_names_file_line_and_key(tmp_path, capsys, case):
    replace, line, message = SCHEMA_ERRORS[case]
    path, problems = run_invalid(tmp_path, capsys, study_text(**replace))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: "), problems
    assert message in problems[0], problems


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    text = study_text(l3="resolution: -4", l7="repeats: 0", l11="  - name: swin_tiny_patch4_window7")
    path, problems = run_invalid(tmp_path, capsys, text)
    assert [p.split(": ")[0:2] for p in problems] == [
        [f"{path}:3", "resolution"],
        [f"{path}:7", "repeats"],
        [f"{path}:11", "models[0].name"],
    ]
    assert "did you mean 'swin_tiny_patch4_window7_224'" in problems[2]


def test_missing_or_empty_models_and_an_unknown_kind(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("kind: models\nresolution: 224\n")
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert info.value.problems == [
        f"{path}:1: models: missing; list at least one model (- name: biformer_tiny)"
    ]
    path.write_text("kind: models\nmodels: []\n")
    with pytest.raises(StudyError, match=r"s.yaml:2: models: expected a non-empty list"):
        load_study(path)
    path.write_text(
        "kind: model\nsweep: {resolution: [14], dim: [32], num_heads: [2]}\nmechanisms: [vanilla]\n"
    )
    with pytest.raises(
        StudyError,
        match=r"s.yaml:1: kind: 'model' is not one of \['sweep', 'models', 'ablation', 'peers'\]; did you",
    ):
        load_study(path)


def test_point_id_ignores_reference_numbers_but_not_kwargs():
    study = load_study(ROOT / "studies" / "paper_table.yaml")
    spec = study.models[0]
    args = ("cpu", {"repeats": 10}, {"device_name": "x"})
    base = model_point_id(study, spec, *args)
    other_refs = ModelSpec(spec.name, "another family", spec.kwargs, published=(("params_m", 1.0),))
    assert model_point_id(study, other_refs, *args) == base
    assert model_point_id(study, ModelSpec(spec.name, kwargs=(("bra_backend", "sdpa"),)), *args) != base


# ---------------------------------------------------------------------------------------------
# Running and reporting


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    path = folder / "study.yaml"
    path.write_text(BASE)
    run_dir = folder / "run"
    assert main(["run", str(path), "--out", str(run_dir), "--quiet"]) == 0
    return path, run_dir


def test_one_row_per_model_with_every_column(tiny_run):
    _, run_dir = tiny_run
    columns, rows = read_rows(run_dir)
    assert [c for c in REQUIRED_COLUMNS if c not in columns] == []
    assert [(r["model"], r["status"]) for r in rows] == [("biformer_tiny", "ok"), ("biformer_tiny", "error")]
    ok, failed = rows
    assert json.loads(ok["kwargs"]) == {"n_win": 2, "topks": [1, 2, 4, -2]}
    assert (ok["resolution"], ok["batch"], ok["dtype"], ok["device"], ok["pass"]) == (
        "64",
        "1",
        "float32",
        "cpu",
        "forward",
    )
    assert int(ok["params"]) == 13_142_760  # BiFormer-T: 13.14M, n_win does not change the weights
    assert float(ok["params_m"]) == pytest.approx(13.1428)
    assert float(ok["gflops"]) == pytest.approx(int(ok["flops"]) / 1e9, abs=1e-4)
    assert ok["flops_uncounted"] == "{}"
    assert int(ok["latency_n"]) == 2 and len(json.loads(ok["latency_samples_ms"])) == 2
    assert float(ok["throughput"]) == pytest.approx(1000 / float(ok["latency_ms"]), rel=1e-3)
    assert float(ok["peak_mem_mb"]) > 13.14e6 * 4 / 2**20  # at least the fp32 weights
    # references: the params diffs are computed; GMACs only where the reference is at 64x64
    assert (ok["published_top1"], ok["published_source"], ok["counted_resolution"]) == (
        "81.4",
        "the README",
        "224",
    )
    assert float(ok["params_diff_counted_pct"]) == pytest.approx(100 * (13.14276 - 13.14) / 13.14, abs=1e-3)
    assert float(ok["params_diff_published_pct"]) == pytest.approx(100 * (13.14276 - 13.1) / 13.1, abs=1e-3)
    assert ok["gflops_diff_counted_pct"] == "" and ok["gflops_diff_published_pct"] == ""
    # n_win 7 cannot split the 16x16 stage-1 map: an error row that still has its params
    assert "not divisible by n_win = 7" in failed["error"] and "forward: the same error" in failed["error"]
    assert failed["flops"] == "" and failed["latency_ms"] == "" and failed["params"] == "13142760"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["study"]["kind"] == "models" and manifest["runs"][-1]["status"] == "completed"
    assert manifest["conditions"] == {
        "resolution": 64,
        "batch": 1,
        "dtype": "float32",
        "device": "cpu",
        "pass": "forward",
    }
    assert set(manifest["columns"]) >= set(REQUIRED_COLUMNS)


def test_the_report_is_a_models_table(tiny_run):
    _, run_dir = tiny_run
    for name in ["index.html", "report.md", "tables/models.md", "tables/models.tex"]:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "plots" / "models_speed_vs_gmacs.png").is_file()
    md = (run_dir / "tables" / "models.md").read_text()
    header = md.splitlines()[2]
    for title in [
        "Params (M)",
        "GMACs (fvcore) @64",
        "Counted on released code",
        "Diff vs counted",
        "Published",
    ]:
        assert title in header
    assert (
        "Throughput (img/s)" in header and "Peak memory (MiB)" in header and "Top-1 (%, published)" in header
    )
    ok_line = next(line for line in md.splitlines() if line.startswith("| biformer_tiny (n_win=2"))
    assert "| 13.14 |" in ok_line and "13.14 / 2.228 [1]" in ok_line and "13.1 / 2.2 [2]" in ok_line
    assert "+0.02 / —" in ok_line and "| 81.4 |" in ok_line
    error_line = next(line for line in md.splitlines() if line.startswith("| biformer_tiny |"))
    assert "| error |" in error_line and "13.14 / 0.177 [3]" in error_line
    assert "[1] fvcore on the released code; [2] the README; [3] our count" in md
    assert "**" not in ok_line  # one measured row: nothing to call best
    tex = (run_dir / "tables" / "models.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"GMACs (fvcore) @64" in tex
    html = (run_dir / "index.html").read_text()
    assert (
        'id="models"' in html
        and "not divisible by n_win = 7" in html
        and 'src="plots/models_speed_vs_gmacs.png"' in html
    )


def test_best_throughput_and_memory_are_bold(tiny_run, tmp_path):
    _, run_dir = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    store = ResultsStore(copy)
    fast = dict(store.rows()[0], point_id="f" * 16, model="test_vit", kwargs="{}", throughput=1000.0)
    store.add({**fast, "peak_mem_mb": 2.5})
    store.close()
    write_report(copy, plots=False)
    md = (copy / "tables" / "models.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| test_vit"))
    assert "**1000**" in line and "**2.5**" in line
    with pytest.raises(
        ValueError, match=r"\['sort'\] select rows or columns of other kinds of run; .* is a models run"
    ):
        write_report(copy, sort="flops")


@pytest.mark.slow  # a second models run; the models run itself stays in the default suite
def test_resume_keeps_ok_rows_retries_errors_and_refreshes_references(tiny_run, tmp_path, capsys):
    path, run_dir = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    _, before = read_rows(copy)
    edited = tmp_path / "study.yaml"
    edited.write_text(path.read_text().replace("top1: 81.4", "top1: 81.5"))
    assert main(["run", str(edited), "--out", str(copy), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "resuming: 1 models already measured are kept" in out
    assert "reference numbers of 1 kept rows updated" in out
    _, after = read_rows(copy)
    assert [r["point_id"] for r in after] == [r["point_id"] for r in before]
    assert after[0]["latency_samples_ms"] == before[0]["latency_samples_ms"]  # not measured again
    assert after[0]["published_top1"] == "81.5"
    assert after[1]["status"] == "error" and after[1]["timestamp"] >= before[1]["timestamp"]
    assert len(json.loads((copy / "manifest.json").read_text())["runs"]) == 2


def test_ctrl_c_saves_the_rows_and_exits_130(tmp_path, capsys, monkeypatch):
    path = tmp_path / "study.yaml"
    path.write_text(
        study_text(l9="measure: [params]", l11="  - name: test_vit", l16="  - name: biformer_tiny")
    )
    calls = []
    real = models_kind._measure_entry

    def interrupt_second(kind, ctx, task):
        calls.append(task.label)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(kind, ctx, task)

    monkeypatch.setattr(models_kind, "_measure_entry", interrupt_second)
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run_dir), "--isolation", "none"]) == 130
    err = capsys.readouterr().err
    assert "resume with: attnbench run" in err and str(run_dir) in err
    _, rows = read_rows(run_dir)
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["flops"] == ""  # params only
    assert json.loads((run_dir / "manifest.json").read_text())["runs"][-1]["status"] == "interrupted"
    resumed = []
    monkeypatch.setattr(
        models_kind,
        "_measure_entry",
        lambda kind, ctx, task: resumed.append(task.payload.name) or real(kind, ctx, task),
    )
    args = ["run", str(path), "--out", str(run_dir), "--quiet", "--no-report", "--isolation", "none"]
    assert main(args) == 0
    _, rows = read_rows(run_dir)
    assert [(r["model"], r["status"]) for r in rows] == [("test_vit", "ok"), ("biformer_tiny", "ok")]
    assert resumed == ["biformer_tiny"]  # the first model is not measured again


def test_a_folder_of_another_kind_is_refused(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(BASE)
    study = load_study(path)
    sweep = tmp_path / "sweep"
    sweep.mkdir()  # a sweep run of an older attnbench: a CSV of mechanism rows
    header = "point_id,pass,status,mechanism,H,W\n"
    (sweep / "results.csv").write_text(header + "ab" * 8 + ",forward,ok,vanilla,8,8\n")
    assert run_study(study, out_dir=sweep, quiet=True) == 2
    assert "holds rows that record no kind of study" in capsys.readouterr().err
