"""Study validation: every kind of problem is one line naming file, line and key; exit 2; nothing
written. The models and ablation kinds' own problems are in test_model_study.py and
test_ablation_study.py, the JSON Schema in test_study_schema.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from attnbench.cli import main
from attnbench.kinds.sweep.schema import Point
from attnbench.registry import available_mechanisms
from attnbench.study import StudyError, load_study

# line numbers matter: the cases below replace whole lines of this study
BASE = """\
name: t
device: cpu
dtype: float32
batch: 1
measure: [params]
passes: [forward]
repeats: 2
sweep:
  resolution: [14, 28]
  dim: [32]
  num_heads: [2]
mechanisms:
  - name: vanilla
  - name: bra
    params: {n_win: [7], topk: [1, 4]}
"""


def study_text(**lines: str) -> str:
    """BASE with line N (1-based, keyword ``l<N>``) replaced."""
    out = BASE.splitlines()
    for key, text in lines.items():
        out[int(key[1:]) - 1] = text
    return "\n".join(out) + "\n"


def run_invalid(tmp_path: Path, capsys, text: str, keep: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """``attnbench run`` of ``text``: exit 2, no traceback, nothing written beside the study and the
    files it ``keep``s; returns the study's path and the problem lines."""
    study = tmp_path / "study.yaml"
    study.write_text(text)
    out = tmp_path / "out"
    rc = main(["run", str(study), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert not out.exists()  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["study.yaml", *keep])
    return str(study), err.strip().splitlines()


def test_valid_study_expands_the_product(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(BASE)
    study = load_study(path)
    assert (study.name, study.device, study.measure, study.passes) == ("t", "cpu", ("params",), ("forward",))
    points = study.points()
    # vanilla: 2 resolutions; bra: 1 x 2 params x 2 resolutions
    assert len(points) == 2 + 4
    assert points[2] == Point("bra", (("n_win", 7), ("topk", 1)), 14, 14, 32, 2, 1, "float32")
    assert points[2].full_params()["side_dwconv"] == 5  # defaults fill the rest


def test_h_w_lists_pairs_and_scalar_axes(tmp_path):
    path = tmp_path / "s.yaml"
    text = study_text(l9="  H: [14, 28]\n  W: 21", l3="dtype: [float32, bfloat16]", l4="batch: [1, 2]")
    path.write_text(text)
    study = load_study(path)
    assert study.resolutions == ((14, 21), (28, 21))
    assert study.dtypes == ("float32", "bfloat16") and study.batches == (1, 2)
    path.write_text(study_text(l9="  resolution: [[14, 21], 28]"))
    assert load_study(path).resolutions == ((14, 21), (28, 28))


SCHEMA_ERRORS = {
    "yaml syntax": (
        {"l5": "measure: [params]]"},
        5,
        "YAML syntax error",
    ),
    "unknown key": (
        {"l7": "repeat: 2"},
        7,
        "repeat: unknown key; did you mean 'repeats'?",
    ),
    "top-level key in sweep": (
        {"l11": "  num_heads: [2]\n  batch: [1, 2]"},
        12,
        "sweep.batch: unknown key; 'batch' is a top-level key, not a sweep axis",
    ),
    "wrong type": (
        {"l7": "repeats: many"},
        7,
        "repeats: expected a positive int, got 'many' (str)",
    ),
    "wrong type in list": (
        {"l6": "passes: [forward, 3]"},
        6,
        "passes[1]: 3 is not one of ['forward', 'forward_backward']",
    ),
    "non-positive size": (
        {"l9": "  resolution: [14, 0]"},
        9,
        "sweep.resolution[1]: must be a positive int, got 0",
    ),
    "non-positive dim": (
        {"l10": "  dim: -32"},
        10,
        "sweep.dim: must be a positive int, got -32",
    ),
    "unknown mechanism": (
        {"l13": "  - name: vanila"},
        13,
        "mechanisms[0].name: unknown mechanism 'vanila'; did you mean 'vanilla'?",
    ),
    "parameter out of range": (
        {"l15": "    params: {n_win: [7], topk: [1, 64]}"},
        15,
        "mechanisms[1].params.topk: with n_win=7, topk=64: parameter 'topk' = 64 is out of range; "
        "allowed: 1 <= topk <= n_win^2 = 49",
    ),
    "unknown parameter": (
        {"l15": "    params: {n_win: [7], topkk: [1]}"},
        15,
        "mechanisms[1].params.topkk: mechanism 'bra': unknown parameter 'topkk'; did you mean 'topk'?",
    ),
    "parameter of wrong type": (
        {"l15": "    params: {n_win: [seven], topk: [1]}"},
        15,
        "mechanisms[1].params.n_win[0]: mechanism 'bra': parameter 'n_win' = 'seven' has type str; "
        "expected int",
    ),
    "float16 on cpu": (
        {"l3": "dtype: float16"},
        3,
        "dtype: float16 is not supported on CPU",
    ),
}


@pytest.mark.parametrize("case", list(SCHEMA_ERRORS))
def test_schema_error_names_file_line_and_key(tmp_path, capsys, case):
    replace, line, message = SCHEMA_ERRORS[case]
    path, problems = run_invalid(tmp_path, capsys, study_text(**replace))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: "), problems
    assert message in problems[0]


def test_block_list_items_report_their_own_line(tmp_path, capsys):
    text = study_text(l9="  resolution:\n    - 14\n    - 0")
    path, problems = run_invalid(tmp_path, capsys, text)
    assert problems == [f"{path}:11: sweep.resolution[1]: must be a positive int, got 0"]


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    text = study_text(l2="device: gpu", l7="repeats: 0", l13="  - name: vanila")
    path, problems = run_invalid(tmp_path, capsys, text)
    assert [p.split(": ")[0:2] for p in problems] == [
        [f"{path}:2", "device"],
        [f"{path}:7", "repeats"],
        [f"{path}:13", "mechanisms[0].name"],
    ]
    assert "did you mean 'cuda'?" in problems[0]


def test_missing_sections_and_duplicate_keys(tmp_path, capsys):
    text = "name: t\nname: u\nmechanisms: [vanilla]\n"
    path, problems = run_invalid(tmp_path, capsys, text)
    assert f"{path}:2: name: duplicate key (the later value would win)" in problems
    assert any(p.startswith(f"{path}:1: sweep: missing") for p in problems)


def test_no_head_count_divides_dim(tmp_path, capsys):
    path, problems = run_invalid(tmp_path, capsys, study_text(l11="  num_heads: [3]"))
    assert problems[0].startswith(f"{path}:11: sweep.num_heads: no num_heads in [3] divides a dim in [32]")


def test_missing_file_and_non_mapping(tmp_path, capsys):
    rc = main(["run", str(tmp_path / "nope.yaml")])
    assert rc == 2 and "cannot read the study file" in capsys.readouterr().err
    path, problems = run_invalid(tmp_path, capsys, "- just\n- a list\n")
    assert problems == [f"{path}:1: the study must be a YAML mapping of keys (name, sweep, mechanisms, ...)"]


PLUGIN = '''
from torch import nn
from attnbench import AttentionMechanism, check_param, register_mechanism


@register_mechanism("_test_plugin_linear")
class PluginLinear(AttentionMechanism):
    """A linear map standing in for attention (test plugin)."""

    def __init__(self, dim: int, num_heads: int, *, width: int = 2) -> None:
        super().__init__(dim, num_heads)
        check_param(width >= 1, "width", width, "an int >= 1")
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(x)
'''


def test_plugins_load_before_names_are_checked(tmp_path, temp_registry):
    (tmp_path / "plug.py").write_text(textwrap.dedent(PLUGIN))
    path = tmp_path / "s.yaml"
    path.write_text(
        study_text(l13="  - name: _test_plugin_linear\n    params: {width: [1, 3]}") + "plugins: [plug.py]\n"
    )
    study = load_study(path)
    assert [p.mechanism for p in study.points()].count("_test_plugin_linear") == 4
    assert not (tmp_path / "__pycache__").exists()  # validation leaves no bytecode behind

    path.write_text(
        study_text(l13="  - name: _test_plugin_linear\n    params: {width: 0}") + "plugins: [plug.py]\n"
    )
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert info.value.problems == [
        f"{path}:14: mechanisms[0].params.width: parameter 'width' = 0 is out of range; allowed: an int >= 1"
    ]


def test_a_mechanism_that_cannot_be_built_is_a_study_problem(tmp_path, temp_registry):
    plugin = PLUGIN.replace("self.proj = nn.Linear(dim, dim)", "raise RuntimeError('no kernel here')")
    (tmp_path / "plug.py").write_text(plugin.replace("_test_plugin_linear", "_test_plugin_broken"))
    path = tmp_path / "s.yaml"
    path.write_text(study_text(l13="  - _test_plugin_broken") + "plugins: [plug.py]\n")
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert info.value.problems == [
        f"{path}:13: mechanisms[0]: building it failed: RuntimeError: no kernel here"
    ]


def test_missing_plugin_is_a_study_problem(tmp_path, capsys):
    path, problems = run_invalid(tmp_path, capsys, BASE + "plugins:\n  - nothere.py\n")
    assert problems[0].startswith(f"{path}:17: plugins[0]: plugin ")
    assert "is not an existing .py file" in problems[0]


def test_a_mechanism_entry_can_override_sweep_axes(tmp_path):
    """Paired settings (BiFormer's stages): an entry's own sweep replaces the study's axes it names."""
    path = tmp_path / "s.yaml"
    path.write_text(
        BASE
        + "  - name: bra\n"
        + "    sweep: {resolution: [14], dim: [64], num_heads: [2]}\n"
        + "    params: {n_win: 7, topk: 16}\n"
    )
    points = [p for p in load_study(path).points() if dict(p.params).get("topk") == 16]
    assert [(p.H, p.W, p.dim, p.num_heads) for p in points] == [(14, 14, 64, 2)]


def test_a_bad_entry_sweep_names_its_key(tmp_path, capsys):
    text = BASE + "  - name: vanilla\n    sweep: {resolution: [0], heads: [2]}\n"
    path, err = run_invalid(tmp_path, capsys, text)
    assert any(f"{path}:17: mechanisms[2].sweep.resolution" in line for line in err), err
    assert any("mechanisms[2].sweep.heads: unknown key" in line for line in err), err


def test_measure_and_passes_default_when_left_out(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(BASE.replace("measure: [params]\n", "").replace("passes: [forward]\n", ""))
    study = load_study(path)
    assert study.measure == ("flops", "params", "latency", "memory")
    assert study.passes == ("forward",)


def test_a_list_item_given_twice_is_a_problem_at_its_index(tmp_path, capsys):
    path, problems = run_invalid(tmp_path, capsys, study_text(l6="passes: [forward, forward]"))
    assert problems == [f"{path}:6: passes[1]: 'forward' is listed twice"]


def test_an_entry_whose_axes_fit_no_head_count_names_its_own_sweep(tmp_path, capsys):
    text = BASE + "  - name: vanilla\n    sweep: {dim: [30], num_heads: [4]}\n"
    path, problems = run_invalid(tmp_path, capsys, text)
    assert problems == [
        f"{path}:17: mechanisms[2].sweep.num_heads: no num_heads in [4] divides a dim in [30]"
    ]
    text = BASE + "  - name: vanilla\n    sweep: {num_heads: [3]}\n"  # with the study's dim 32
    path, problems = run_invalid(tmp_path, capsys, text)
    assert problems == [
        f"{path}:17: mechanisms[2].sweep.num_heads: no num_heads in [3] divides a dim in [32]"
    ]


# ---------------------------------------------------------------------------------------------
# kind, threads and point_timeout_s


def test_kind_threads_and_point_timeout_default(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(BASE)
    study = load_study(path)
    assert (study.kind, study.threads, study.point_timeout_s) == ("sweep", None, 900.0)
    path.write_text(BASE + "threads: 2\npoint_timeout_s: 30\n")
    assert (load_study(path).threads, load_study(path).point_timeout_s) == (2, 30.0)
    path.write_text(BASE + "point_timeout_s: null\n")
    assert load_study(path).point_timeout_s is None  # no limit


def test_models_and_ablation_studies_have_the_new_keys_too(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("kind: models\nmodels: [swin_tiny_patch4_window7_224]\n")
    study = load_study(path)
    assert (study.kind, study.threads, study.point_timeout_s) == ("models", None, 900.0)
    path = tmp_path / "a.yaml"
    dataset = "{name: pathfinder, version: 3, resolution: 32, difficulty: easy, train_size: 64, val_size: 32}"
    path.write_text(f"dataset: {dataset}\ntrain: {{epochs: 1}}\nmechanisms: [vanilla]\n")
    study = load_study(path)
    assert (study.kind, study.threads, study.point_timeout_s) == ("ablation", None, 21600.0)  # trains
    path.write_text(f"point_timeout_s: null\ndataset: {dataset}\nmechanisms: [vanilla]\n")
    assert load_study(path).point_timeout_s is None


@pytest.mark.parametrize("value", ["0", "-5", "soon", ".inf", "[10]"])
def test_point_timeout_must_be_a_positive_number(tmp_path, capsys, value):
    path, problems = run_invalid(tmp_path, capsys, BASE + f"point_timeout_s: {value}\n")
    assert len(problems) == 1 and problems[0].startswith(
        f"{path}:16: point_timeout_s: expected a positive "
    ), problems


def test_the_device_flag_is_named_in_its_problem(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the problem is a missing CUDA device")
    path = tmp_path / "s.yaml"
    path.write_text(BASE)
    with pytest.raises(StudyError) as info:
        load_study(path, device="cuda")
    assert info.value.problems == [
        f"{path}:2: --device: cuda was asked for but torch.cuda.is_available() is False; use auto or cpu"
    ]


# ---------------------------------------------------------------------------------------------
# Plugins that fail while imported


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import sys\nsys.exit(0)\n", "importing 'plug.py' called sys.exit(0)"),
        ("import sys\nsys.exit()\n", "importing 'plug.py' called sys.exit()"),
        ("raise RuntimeError('no GPU here')\n", "importing 'plug.py' failed: RuntimeError: no GPU here"),
    ],
)
def test_a_plugin_that_exits_or_raises_is_a_study_problem(tmp_path, capsys, temp_registry, body, message):
    (tmp_path / "plug.py").write_text(body)
    text = study_text(l13="  - name: _test_from_plug") + "plugins: [plug.py]\n"
    path, problems = run_invalid(tmp_path, capsys, text, keep=("plug.py",))
    assert problems == [
        f"{path}:13: mechanisms[0].name: unknown mechanism '_test_from_plug' (a plugin failed to load) "
        f"(registered: {', '.join(available_mechanisms())})",
        f"{path}:16: plugins[0]: {message}",
    ]


def test_ctrl_c_while_a_plugin_loads_still_stops(tmp_path, temp_registry):
    (tmp_path / "plug.py").write_text("raise KeyboardInterrupt\n")
    path = tmp_path / "s.yaml"
    path.write_text(BASE + "plugins: [plug.py]\n")
    with pytest.raises(KeyboardInterrupt):
        load_study(path)
