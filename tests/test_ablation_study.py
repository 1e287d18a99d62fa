"""Ablation studies (``measure: [accuracy, ...]``): validation, one row per run, resume, error rows,
Ctrl-C and the comparison table with top-1."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import attnbench.kinds.ablation.kind as ablation_kind
from attnbench.ablation import run_key
from attnbench.cli import main
from attnbench.kinds.ablation.schema import AblationFile
from attnbench.study import StudyError, load_study

IN_PROCESS = ["--isolation", "none"]  # the tests below patch training in this process

# Line numbers matter: the validation cases replace whole lines.
BASE = """\
name: tiny_ablation
device: cpu
threads: 1
seed: 0
measure: [accuracy, flops, params]
dataset: {name: pathfinder, version: 3, difficulty: easy, train_size: 64, val_size: 32, seed: 0}
backbone: {preset: stl-nano}
train: {epochs: 1, batch: 32, lr: 1.0e-3, warmup_epochs: 0, seeds: [0]}
mechanisms:
  - vanilla
  - name: bra
    params: {n_win: [4], topk: [2]}
"""


def _write(tmp_path: Path, text: str = BASE, **lines: str) -> Path:
    """The study with lines replaced: ``line_6="..."`` replaces line 6 (1-based)."""
    rows = text.splitlines()
    for key, value in lines.items():
        rows[int(key.split("_")[1]) - 1] = value
    path = tmp_path / "study.yaml"
    path.write_text("\n".join(rows) + "\n")
    return path


def _study_with_cache(tmp_path: Path, **lines: str) -> Path:
    dataset = (
        "dataset: {name: pathfinder, version: 3, resolution: 32, difficulty: easy, train_size: 64, "
        "val_size: 32, seed: 0, "
        f"cache_dir: {tmp_path / 'pf-cache'}}}"
    )
    return _write(tmp_path, line_6=dataset, **lines)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_load_study_gives_an_ablation_study(tmp_path):
    study = load_study(_write(tmp_path))
    assert isinstance(study, AblationFile)
    assert study.kind == "ablation" and study.seeds == (0,)
    assert [(s.name, s.combinations()) for s in study.mechanisms] == [
        ("vanilla", [{}]),
        ("bra", [{"n_win": 4, "topk": 2}]),
    ]
    assert "seeds" not in study.train and study.train["epochs"] == 1
    assert len(study.runs()) == 2


STUDIES = Path(__file__).resolve().parent.parent / "studies"


def test_the_repository_study_validates():
    # the version-4 study: one rung, 12 seeds each drawing its own images, declared contrasts
    study = load_study(STUDIES / "ablation.yaml")
    assert isinstance(study, AblationFile)
    assert len(study.runs()) == 60  # 5 mechanisms x 12 seeds
    assert all(d.get("train_images") == "per_seed" and "version" not in d for d in study.datasets)
    assert study.analysis["declared"] and study.analysis["learned_top1"] == 70.0
    assert study.analysis["contrasts"] == [[m, "vanilla"] for m in ("bra", "swin", "neighborhood", "agent")]
    assert study.train["learned_top1"] == 70 and study.train["give_up_epoch"] == 6
    assert [d["n_distractors"] for d in study.datasets] == [2]  # the pilot's choice
    assert study.baseline == "vanilla" and study.backbone["before_attn_dwconv"] == 3
    # the pilot: the baseline alone, on seeds the main study does not use
    pilot = load_study(STUDIES / "ablation-pilot.yaml")
    assert {r[1] for r in pilot.runs()} == {"vanilla"}
    assert not set(pilot.seeds) & set(study.seeds)
    assert study.analysis["primary"] == ["counts"]  # the default


def test_the_redeclared_study_and_its_pilots_validate():
    # one distractor, 4 epochs, final top-1 a co-primary endpoint; the pilots on seeds of their own
    main = load_study(STUDIES / "ablation-main.yaml")
    assert len(main.runs()) == 60 and main.train["epochs"] == 4
    assert [d["n_distractors"] for d in main.datasets] == [1]
    assert main.analysis["primary"] == ["counts", "final"] and main.analysis["declared"]
    pilots = [load_study(STUDIES / f"ablation-pilot{n}.yaml") for n in ("", "2", "3")]
    seeds = [set(p.seeds) for p in pilots]
    assert not set.union(*seeds) & set(main.seeds) and sum(map(len, seeds)) == len(set.union(*seeds))
    assert pilots[2].train["epochs"] == 4 and pilots[1].train["epochs"] == 5


@pytest.mark.slow  # builds 18 stl-s32 backbones
def test_the_gpu_study_validates_on_a_cpu():
    gpu = load_study(STUDIES / "ablation-gpu.yaml", device="cpu")  # validated here, run on a GPU
    assert len(gpu.runs()) == 216 and gpu.analysis["declared"]
    assert all(d.get("train_images") == "per_seed" and d["resolution"] == 64 for d in gpu.datasets)


def test_the_version_3_study_keeps_the_shipped_run_keys():
    study = load_study(STUDIES / "ablation-v3.yaml")
    assert len(study.runs()) == 72  # 3 contour lengths x 8 mechanisms x 3 seeds
    assert [d.get("contour_length", 4) for d in study.datasets] == [4, 5, 6]
    assert all(d["version"] == 3 for d in study.datasets)
    runs = study.runs()
    assert [r[3] for r in runs[:24]] == [0] * 24  # seed by seed: every level and mechanism once first
    # every training of results/ablation-v3 is a run of this study, under the key it was trained with
    shipped = {p.name for p in (STUDIES.parent / "results" / "ablation-v3" / "ablation").iterdir()}
    keys = {run_key(m, p, d, study.backbone, study.train, seed) for d, m, p, seed in runs}
    assert keys == shipped


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ({"line_12": "    params: {n_win: [5], topk: [2]}"}, ":11: mechanisms[1]: with n_win=5, topk=2: "),
        ({"line_12": "    params: {topk: [0]}"}, ":11: mechanisms[1]: with topk=0: "),
        (
            {"line_6": "dataset: {name: pathfinder, resolutoin: 32}"},
            ":6: dataset.resolutoin: unknown key; did you mean 'resolution'?",
        ),
        ({"line_6": "dataset: {name: mnist}"}, ":6: dataset: dataset.name = 'mnist'"),
        (
            {"line_10": "  - vanila"},
            ":10: mechanisms[0].name: unknown mechanism 'vanila'; did you mean 'vanilla'?",
        ),
        ({"line_8": "train: {epochs: 0, seeds: [0]}"}, ":8: train: train.epochs = 0 is out of range"),
        ({"line_8": "train: {epochs: 1, seeds: [-1]}"}, ":8: train.seeds[0]: expected an int >= 0, got -1"),
        ({"line_5": "measure: [accuracy, latnecy]"}, ":5: measure[1]: 'latnecy' is not one of"),
        ({"line_3": "sweep: {dim: [32]}"}, ":3: sweep: unknown key; an ablation study has no sweep"),
        (
            {"line_4": "analysis: {primary: [count]}"},
            ":4: analysis.primary[0]: 'count' is not one of ['counts', 'final']; did you mean 'counts'?",
        ),
        ({"line_4": "analysis: {primary: []}"}, ":4: analysis.primary: is an empty list"),
        (
            {"line_4": "analysis: {contrasts: [[bra, bra]]}"},
            ":4: analysis.contrasts[0]: compares 'bra' with itself",
        ),
    ],
)
def test_validation_errors_name_file_line_and_key(tmp_path, capsys, lines, expected):
    path = _write(tmp_path, **lines)
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert any(expected in p for p in info.value.problems), info.value.problems
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()  # nothing written


@pytest.mark.slow  # 14 s: trainings, a resume and a report (early-stop tests train in the default run)
def test_run_gives_rows_resumes_without_training_and_reports(tmp_path, capsys, monkeypatch):
    path = _study_with_cache(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    rows = _rows(out)
    assert [(r["mechanism"], r["n_win"], r["topk"], r["seed"]) for r in rows] == [
        ("vanilla", "", "", "0"),
        ("bra", "4", "2", "0"),
    ]
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["dataset"] == "pathfinder" and row["resolution"] == "32" and row["pass"] == "train"
        assert 0 <= float(row["top1"]) <= 100 and row["top5"] == ""  # 2 classes: no top-5
        assert row["epochs"] == "1" and float(row["train_time_s"]) > 0 and float(row["final_train_loss"]) > 0
        assert int(row["params"]) > 0 and int(row["flops"]) > 0
        assert row["device"] == "cpu" and row["dtype"] == "float32" and row["env_id"] and row["point_id"]
        assert (out / row["workdir"] / "result.json").is_file()
    assert rows[0]["flops"] != rows[1]["flops"]  # the attention differs, so does the count
    (table_path,) = (out / "tables").glob("ablation_*.md")  # one table per dataset level
    table = table_path.read_text()
    assert "Top-1" in table and "| Global |" in table and "| BRA (S=4, k=2) |" in table
    assert rows[0]["val_correct"] and rows[0]["curve"].startswith("[[1, ")
    assert (out / "maps" / "all.png").is_file()  # the report drew the attention maps
    assert (out / "index.html").is_file() and (out / "manifest.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation_kind, "train_and_evaluate", no_training)
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), "--no-report", *IN_PROCESS]) == 0
    assert "resuming: 2 runs already measured are kept" in capsys.readouterr().out
    assert _rows(out) == rows  # kept as they were, timestamps included


@pytest.mark.slow  # trains twice; test_run_gives_rows... keeps an ablation run in the default suite
def test_a_kept_workdir_is_read_back_not_retrained(tmp_path):
    """A finished training whose row is missing (a copied folder) gives its row from result.json."""
    path = _study_with_cache(tmp_path, line_11="  - swin", line_12="")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    first = _rows(out)
    for name in ("results.db", "results.csv"):  # the rows are gone, the trained workdirs are not
        (out / name).unlink()
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    again = _rows(out)
    assert [r["top1"] for r in again] == [r["top1"] for r in first]
    assert [r["train_time_s"] for r in again] == [r["train_time_s"] for r in first]  # not retrained


def test_a_failing_run_is_an_error_row_and_the_study_goes_on(tmp_path, monkeypatch):
    path = _study_with_cache(tmp_path)
    real = ablation_kind.train_and_evaluate

    def fail_bra(mechanism, *args, **kwargs):
        if mechanism == "bra":
            raise RuntimeError("boom")
        return real(mechanism, *args, **kwargs)

    monkeypatch.setattr(ablation_kind, "train_and_evaluate", fail_bra)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report", *IN_PROCESS]) == 0
    rows = {r["mechanism"]: r for r in _rows(out)}
    assert rows["vanilla"]["status"] == "ok"
    assert rows["bra"]["status"] == "error" and "RuntimeError: boom" in rows["bra"]["error"]
    assert rows["bra"]["top1"] == "" and int(rows["bra"]["flops"]) > 0  # counted without training

    monkeypatch.setattr(ablation_kind, "train_and_evaluate", real)
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report", *IN_PROCESS]) == 0
    assert {r["mechanism"]: r["status"] for r in _rows(out)} == {"vanilla": "ok", "bra": "ok"}  # retried


def test_ctrl_c_exits_130_and_keeps_what_finished(tmp_path, monkeypatch, capsys):
    path = _study_with_cache(tmp_path)
    real = ablation_kind.train_and_evaluate

    def interrupt_bra(mechanism, *args, **kwargs):
        if mechanism == "bra":
            raise KeyboardInterrupt
        return real(mechanism, *args, **kwargs)

    monkeypatch.setattr(ablation_kind, "train_and_evaluate", interrupt_bra)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-report", *IN_PROCESS]) == 130
    assert [r["mechanism"] for r in _rows(out)] == ["vanilla"]
    assert "resume with: attnbench run" in capsys.readouterr().err


def test_other_executors_are_refused(tmp_path, capsys):
    from attnbench.executors import ExecutorError
    from attnbench.runner import run_study

    class Remote:
        name = "ray"

    with pytest.raises(ExecutorError, match="run it with --executor local, not --executor ray"):
        run_study(load_study(_write(tmp_path)), out_dir=tmp_path / "run", executor=Remote())  # type: ignore[arg-type]
