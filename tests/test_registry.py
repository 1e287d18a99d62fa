"""Registry: names, duplicates, suggestions, parameter validation, plugins, entry points."""

import pytest
import torch

import attnbench
from attnbench import AttentionMechanism, register_mechanism


def test_builtin_mechanisms_registered():
    names = attnbench.available_mechanisms()
    assert {"bra", "vanilla"} <= set(names)
    assert names == sorted(names)


def test_hyperparameters_read_from_signature():
    params = attnbench.get_mechanism("bra").hyperparameters()
    assert list(params)[:2] == ["n_win", "topk"]
    assert params["n_win"].default == 7 and params["n_win"].annotation is int
    assert params["backend"].choices[0] == "auto" and "reference" in params["backend"].choices
    assert params["qk_dim"].type_name == "int | None"


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match="did you mean 'bra'"):
        attnbench.build_mechanism("bar", 64, 2)


def test_wrong_type_names_parameter_and_expected_type():
    with pytest.raises(ValueError, match=r"'n_win' = 7.5 .* expected int"):
        attnbench.build_mechanism("bra", 64, 2, n_win=7.5)


def test_bad_dim_and_heads():
    with pytest.raises(ValueError, match="num_heads"):
        attnbench.build_mechanism("vanilla", 64, 5)
    with pytest.raises(ValueError, match="dim"):
        attnbench.build_mechanism("vanilla", 0, 1)


def test_duplicate_name_refused(temp_registry):
    @register_mechanism("_dup")
    class A(AttentionMechanism):
        pass

    with pytest.raises(ValueError, match="already registered"):

        @register_mechanism("_dup")
        class B(AttentionMechanism):
            pass


def test_parameter_without_default_refused(temp_registry):
    with pytest.raises(TypeError, match="needs a default"):

        @register_mechanism("_nodefault")
        class A(AttentionMechanism):
            def __init__(self, dim: int, num_heads: int, *, size: int) -> None:
                super().__init__(dim, num_heads)


PLUGIN = """
import torch
from attnbench import AttentionMechanism, register_mechanism

@register_mechanism("_plugin_identity")
class Identity(AttentionMechanism):
    def __init__(self, dim: int, num_heads: int, *, gain: float = 1.0) -> None:
        super().__init__(dim, num_heads)
        self.gain = gain

    def forward(self, x):
        return x * self.gain

    def analytic_flops(self, H, W):
        return {"none": 0}
"""


def test_plugin_file_registers_once(tmp_path, temp_registry):
    path = tmp_path / "my_attn.py"
    path.write_text(PLUGIN)
    assert attnbench.load_plugin(path) == ["_plugin_identity"]
    assert attnbench.load_plugin(path) == ["_plugin_identity"]  # second load is a no-op
    m = attnbench.build_mechanism("_plugin_identity", 8, 2, gain=2)
    assert m.gain == 2.0 and torch.equal(m(torch.ones(1, 2, 2, 8)), torch.full((1, 2, 2, 8), 2.0))


def test_plugin_path_must_exist(tmp_path):
    with pytest.raises(ValueError, match="not an existing .py file"):
        attnbench.load_plugin(tmp_path / "missing.py")
