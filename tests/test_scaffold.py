"""``attnbench new``: the skeleton passes ``attnbench check`` as written; names and paths are validated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnbench
import mechanisms
from attnbench import registry
from attnbench.check import main_check
from attnbench.conformance import CHECKS
from attnbench.scaffold import class_name, main_new, render

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_registry(monkeypatch):
    saved = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_loaded_plugins", {})
    yield registry
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_skeleton_passes_check_out_of_the_box(fresh_registry, tmp_path, capsys):
    assert main_new("my_attn", tmp_path, False) == 0
    path = tmp_path / "my_attn.py"
    assert f"wrote {path}" in capsys.readouterr().out
    assert main_check(str(path)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("my_attn: MyAttnAttention (")
    assert f"my_attn: {len(CHECKS)} of {len(CHECKS)} checks passed" in out


def test_skeleton_interface(fresh_registry, tmp_path):
    main_new("my_attn", tmp_path, False)
    assert attnbench.load_plugin(tmp_path / "my_attn.py") == ["my_attn"]
    cls = attnbench.get_mechanism("my_attn")
    params = cls.hyperparameters()
    assert {k: (p.type_name, p.default) for k, p in params.items()} == {
        "qkv_bias": ("bool", True),
        "qk_scale": ("float | None", None),
        "max_tokens": ("int", 4096),
    }
    with pytest.raises(ValueError, match=r"parameter 'max_tokens' = 0 is out of range; allowed: an int >= 1"):
        attnbench.build_mechanism("my_attn", 32, 2, max_tokens=0)
    with pytest.raises(ValueError, match="parameter 'qk_scale' = -1.0"):
        attnbench.build_mechanism("my_attn", 32, 2, qk_scale=-1.0)
    m = attnbench.build_mechanism("my_attn", 32, 2, max_tokens=100)
    with pytest.raises(ValueError, match=r"my_attn: a 11x10 map has 110 tokens, .* max_tokens >= 110"):
        m(torch.randn(1, 11, 10, 32))
    assert set(m.analytic_flops(8, 8)) == {"qkv_proj", "scores", "weighted_sum", "out_proj"}


def test_skeleton_is_global_attention(fresh_registry, tmp_path):
    """The reference forward is ordinary multi-head attention: equal to vanilla with the same weights."""
    main_new("my_attn", tmp_path, False)
    attnbench.load_plugin(tmp_path / "my_attn.py")
    mine = attnbench.build_mechanism("my_attn", 32, 4).eval()
    vanilla = attnbench.build_mechanism("vanilla", 32, 4).eval()
    vanilla.load_state_dict(mine.state_dict())
    x = torch.randn(2, 7, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), vanilla(x), atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_skeleton_is_ruff_clean(tmp_path):
    path = tmp_path / "a_rather_long_mechanism_name_for_line_lengths.py"
    path.write_text(render(path.stem))
    config = str(ROOT / "pyproject.toml")
    for cmd in (["check"], ["format", "--check"]):
        done = subprocess.run(
            ["ruff", *cmd, "--no-cache", "--config", config, str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_refuses_to_overwrite_without_force(fresh_registry, tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text("# my work\n")
    assert main_new("mine", path, False) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert path.read_text() == "# my work\n"
    assert main_new("mine", path, True) == 0
    assert '@register_mechanism("mine")' in path.read_text()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("my-attn", "must be a Python identifier that is not a keyword; try 'my_attn'"),
        ("2fast", "try 'attn_2fast'"),
        ("lambda", "try 'lambda_attention'"),
        ("_hidden", "starts with '_'"),
        ("bra", "'bra' is already registered"),
        ("torch", "is an importable module"),
    ],
)
def test_bad_names_write_nothing(tmp_path, capsys, name, message):
    assert main_new(name, tmp_path, False) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_out_paths(fresh_registry, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main_new("here_attn", None, False) == 0  # default: ./NAME.py
    assert (tmp_path / "here_attn.py").is_file()
    assert main_new("deep_attn", tmp_path / "a" / "b" / "x.py", False) == 0  # parents are made
    assert (tmp_path / "a" / "b" / "x.py").is_file()
    assert main_new("txt_attn", tmp_path / "x.txt", False) == 2
    assert "must be a .py file or an existing folder" in capsys.readouterr().err


def test_next_steps_for_the_mechanisms_package(fresh_registry, tmp_path, monkeypatch, capsys):
    """Written into the mechanisms package, the name is part of the zoo (and --force may rewrite it)."""
    monkeypatch.setattr(mechanisms, "__path__", [*mechanisms.__path__, str(tmp_path)])
    assert main_new("zoo_attn", tmp_path, False) == 0
    assert "attnbench check zoo_attn " in capsys.readouterr().out
    monkeypatch.setattr(registry, "_loaded_builtin", False)
    try:
        assert "zoo_attn" in attnbench.available_mechanisms()
        assert main_new("zoo_attn", tmp_path, True) == 0  # registered by that very file: no clash
    finally:
        sys.modules.pop("mechanisms.zoo_attn", None)


def test_class_name():
    assert class_name("my_attn") == "MyAttnAttention"
    assert class_name("linear_attention") == "LinearAttention"
    assert class_name("sra") == "SraAttention"
