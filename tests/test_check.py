"""``attnbench check``: the pass/fail table, exit codes, and failures that say how to fix them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attnbench
from attnbench import registry
from attnbench.check import EXIT_BAD_TARGET, EXIT_FAILED, EXIT_OK, main_check
from attnbench.conformance import CHECKS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_registry(monkeypatch):
    saved = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_loaded_plugins", {})
    yield registry
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


class Healthy(attnbench.AttentionMechanism):
    """Global attention, correct: the base the broken ones below change in one place."""

    def __init__(self, dim: int, num_heads: int, *, min_size: int = 2) -> None:
        super().__init__(dim, num_heads)
        attnbench.check_param(min_size >= 1, "min_size", min_size, "an int >= 1")
        self.min_size = min_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def check_input(self, H: int, W: int) -> None:
        if min(H, W) < self.min_size:
            raise ValueError(f"{self.name}: {H}x{W} is smaller than min_size = {self.min_size}")

    def attend(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(*qkv.unbind(0))  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        return self.attend(x)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        N, C = H * W, self.dim
        return {"qkv": 3 * N * C * C, "attention": 2 * N * N * C, "proj": N * C * C}


class WrongShape(Healthy):
    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        return self.attend(x)[:, :-1]  # drops the last row


class NoInputGradient(Healthy):
    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        return self.attend(x.detach())  # the input path is cut


class FlopsFarOff(Healthy):
    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        N, C = H * W, self.dim
        return {"qkv": 3 * N * C * C, "proj": N * C * C}  # forgets the attention products


class LyingConstraints(Healthy):
    def check_input(self, H: int, W: int) -> None:  # accepts everything ...
        pass

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        if x.shape[1] != x.shape[2]:  # ... but square maps only really work
            raise RuntimeError("shape '[1, 5, 9]' is invalid for input")
        return self.attend(x)


def _register(name: str, cls: type) -> None:
    attnbench.register_mechanism(name)(type(cls.__name__, (cls,), {"__module__": __name__}))


def _rows(out: str) -> dict[str, tuple[str, str]]:
    """check -> (PASS/FAIL, reason) from the printed table."""
    rows = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[1] in ("PASS", "FAIL"):
            rows[parts[0]] = (parts[1], parts[2])
    return rows


def test_passes_on_a_zoo_mechanism(capsys):
    assert main_check("vanilla") == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("vanilla: VanillaAttention (")
    assert _rows(out) == {check: ("PASS", "") for check in CHECKS}
    assert f"vanilla: {len(CHECKS)} of {len(CHECKS)} checks passed" in out


def test_healthy_test_mechanism_passes(fresh_registry, capsys):
    _register("_t_healthy", Healthy)
    assert main_check("_t_healthy") == EXIT_OK, capsys.readouterr().out


@pytest.mark.parametrize(
    ("cls", "check", "problem", "fix"),
    [
        (WrongShape, "shape", "returned (2, 27, 28, 32)", "return a (B, H, W, C) tensor"),
        (NoInputGradient, "gradients", "no (finite, non-zero) gradient reaches the input", "do not detach"),
        (FlopsFarOff, "flops", "off by", "check analytic_flops term by term"),
        (
            LyingConstraints,
            "constraints",
            "5x9 map crashed (RuntimeError",
            "support that shape, or refuse it",
        ),
    ],
)
def test_broken_mechanism_fails_with_reason_and_fix(fresh_registry, capsys, cls, check, problem, fix):
    name = f"_t_{cls.__name__.lower()}"
    _register(name, cls)
    assert main_check(name) == EXIT_FAILED
    out = capsys.readouterr().out
    rows = _rows(out)
    status, reason = rows[check]
    assert status == "FAIL"
    assert problem in reason and f"Fix: {fix}" in reason, reason
    assert f"failed: {check}" in out.splitlines()[-1]
    if cls is not WrongShape:  # one defect, one failing row
        assert [c for c, (s, _) in rows.items() if s == "FAIL"] == [check]


def test_flops_failure_gives_both_numbers(fresh_registry, capsys):
    _register("_t_flops", FlopsFarOff)
    main_check("_t_flops", checks=["flops"])
    (row,) = _rows(capsys.readouterr().out).values()
    m = FlopsFarOff(32, 2)
    analytic = sum(m.analytic_flops(28, 28).values())
    counted = analytic + 2 * 28**4 * 32
    reason = row[1]
    assert f"analytic {analytic:,} MACs vs counted {counted:,}" in reason
    assert f"the count is {counted - analytic:,} MACs higher" in reason and "tolerance 0%" in reason
    assert f"scaled_dot_product_attention {2 * 28**4 * 32:,}" in reason  # the operator the analytic missed
    assert f"linear {4 * 28 * 28 * 32 * 32:,}" in reason and "analytic by term: qkv" in reason
    assert "docs/flops.md" in reason


def test_flops_failure_shows_a_tiny_difference_as_non_zero(fresh_registry, capsys):
    class OffBy14(Healthy):
        def analytic_flops(self, H: int, W: int) -> dict[str, int]:
            return {**super().analytic_flops(H, W), "stray": 14}

    _register("_t_offby14", OffBy14)
    main_check("_t_offby14", checks=["flops"])
    (row,) = _rows(capsys.readouterr().out).values()
    counted = sum(Healthy(32, 2).analytic_flops(28, 28).values())
    assert "the count is 14 MACs lower" in row[1]
    assert f"(off by {14 / counted * 100:.3g}%, tolerance 0%)" in row[1]
    assert "0.00%" not in row[1]


def test_file_target_checks_every_mechanism_it_registers(fresh_registry, tmp_path, capsys):
    plugin = tmp_path / "two.py"
    plugin.write_text(
        textwrap.dedent(
            """
            from attnbench import register_mechanism
            from tests.test_check import Healthy, NoInputGradient

            @register_mechanism("_t_file_good")
            class Good(Healthy):
                pass

            @register_mechanism("_t_file_bad")
            class Bad(NoInputGradient):
                pass
            """
        )
    )
    assert main_check(str(plugin), checks=["shape", "gradients"]) == EXIT_FAILED
    out = capsys.readouterr().out
    bad, good = out.split("\n\n")  # in name order
    assert good.startswith("_t_file_good: Good (") and str(plugin.name) in good.splitlines()[0]
    assert "_t_file_good: 2 of 2 checks passed" in good
    assert _rows(bad)["gradients"][0] == "FAIL"
    assert not list(tmp_path.glob("__pycache__")), "checking a file must not write bytecode beside it"


def test_a_crashing_check_says_how_to_see_the_traceback(fresh_registry, capsys):
    class Crashes(Healthy):
        def forward(self, x: Tensor) -> Tensor:
            raise ZeroDivisionError("boom")

    _register("_t_crash", Crashes)
    assert main_check("_t_crash", checks=["determinism"]) == EXIT_FAILED
    _, reason = _rows(capsys.readouterr().out)["determinism"]
    assert "crashed: ZeroDivisionError: boom" in reason
    assert "Fix: see the traceback with attnbench.conformance.CHECKS['determinism']" in reason


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("vanila", "unknown mechanism 'vanila'; did you mean 'vanilla'?"),
        ("no_such_file.py", "no such file: 'no_such_file.py'"),
        ("sub/dir/", "no such file"),
    ],
)
def test_bad_target_exits_2_with_a_hint(capsys, target, message):
    assert main_check(target) == EXIT_BAD_TARGET
    captured = capsys.readouterr()
    assert message in captured.err and not captured.out


def test_missing_file_suggests_the_closest_py_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_attention.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "pooled_sra.py").write_text("")
    assert main_check("my_atention.py") == EXIT_BAD_TARGET
    assert "no such file: 'my_atention.py'; did you mean 'my_attention.py'?" in capsys.readouterr().err
    assert main_check("plugins/poold_sra.py") == EXIT_BAD_TARGET  # the given folder is searched too
    assert "did you mean 'plugins/pooled_sra.py'?" in capsys.readouterr().err
    assert main_check("unrelated.py") == EXIT_BAD_TARGET
    assert "did you mean" not in capsys.readouterr().err


def test_file_that_registers_nothing_or_fails_to_import(fresh_registry, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    assert main_check(str(notes)) == EXIT_BAD_TARGET
    assert "is not a .py file" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    assert main_check(str(empty)) == EXIT_BAD_TARGET
    assert "registers no mechanism" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    assert main_check(str(broken)) == EXIT_BAD_TARGET
    assert "loading" in (err := capsys.readouterr().err) and "ModuleNotFoundError" in err


def test_name_without_py_suggests_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zzqx_mine.py").write_text("")
    assert main_check("zzqx_mine") == EXIT_BAD_TARGET
    assert "did you mean the file 'zzqx_mine.py'?" in capsys.readouterr().err


def test_unknown_check_name(capsys):
    assert main_check("vanilla", checks=["flopz"]) == EXIT_BAD_TARGET
    assert "unknown check 'flopz'; did you mean 'flops'?" in capsys.readouterr().err


def test_base_class_refuses_what_check_input_refuses(fresh_registry):
    class NoCheckCall(Healthy):
        def forward(self, x: Tensor) -> Tensor:  # never asks check_input: the base class does
            return self.attend(x)

    _register("_t_nocheckcall", NoCheckCall)
    from attnbench.conformance import check_constraints

    check_constraints(attnbench.get_mechanism("_t_nocheckcall"))
    with pytest.raises(ValueError, match="smaller than min_size"):
        NoCheckCall(32, 2)(torch.zeros(1, 1, 1, 32))


def test_constraints_check_catches_a_mechanism_that_goes_around_the_base_check(fresh_registry):
    class Inconsistent(Healthy):
        def _check_shape(self, x: Tensor) -> None:  # checks C but never asks check_input
            if x.shape[-1] != self.dim:
                raise ValueError(f"expected C = {self.dim}")

    _register("_t_inconsistent", Inconsistent)
    from attnbench.conformance import CheckFailure, check_constraints

    with pytest.raises(CheckFailure, match=r"check_input\(1, 1\) refuses the map .* but forward ran"):
        check_constraints(attnbench.get_mechanism("_t_inconsistent"))


def test_bfloat16_failure_is_reported(fresh_registry, capsys):
    class Fp32Only(Healthy):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x).float()

    _register("_t_fp32", Fp32Only)
    assert main_check("_t_fp32", checks=["bfloat16"]) == EXIT_FAILED
    _, reason = _rows(capsys.readouterr().out)["bfloat16"]
    assert "bf16 output is torch.float32" in reason and "Fix:" in reason


def test_example_plugin_file_passes(fresh_registry, capsys):
    assert main_check(str(ROOT / "examples" / "sra_attention.py")) == EXIT_OK
    assert f"sra: {len(CHECKS)} of {len(CHECKS)} checks passed" in capsys.readouterr().out


# A PVT-v2-style spatial-reduction attention as a researcher writes it: no _check_shape, no
# check_input, keys and values from an average-pooled map. Every check must pass as written.
PVT_POOL = """
import torch.nn.functional as F
from torch import nn

from attnbench import AttentionMechanism, register_mechanism


@register_mechanism("_t_pvt_pool")
class PoolSRA(AttentionMechanism):
    def __init__(self, dim: int, num_heads: int, *, sr_ratio: int = 8) -> None:
        super().__init__(dim, num_heads)
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q(x).reshape(B, H * W, h, d).transpose(1, 2)
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), self.sr_ratio, ceil_mode=True)
        kv = self.kv(pooled.flatten(2).transpose(1, 2)).reshape(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))

    def analytic_flops(self, H, W):
        N, C, r = H * W, self.dim, self.sr_ratio
        Nr = -(-H // r) * -(-W // r)
        return {"q": N * C * C, "kv": 2 * Nr * C * C, "attention": 2 * N * Nr * C, "proj": N * C * C}
"""


def test_pvt_style_mechanism_without_boilerplate_passes_every_check(fresh_registry, tmp_path, capsys):
    from attnbench.cli import main

    plugin = tmp_path / "pvt_pool.py"
    plugin.write_text(PVT_POOL)
    assert main(["check", str(plugin)]) == EXIT_OK, capsys.readouterr().out
    assert f"_t_pvt_pool: {len(CHECKS)} of {len(CHECKS)} checks passed" in capsys.readouterr().out
    m = attnbench.build_mechanism("_t_pvt_pool", 32, 2)
    wrong_c = r"PoolSRA \('_t_pvt_pool'\): expected a channels-last \(B, H, W, dim\) tensor with dim = 32"
    with pytest.raises(ValueError, match=wrong_c + r", got shape \(1, 8, 8, 33\)"):
        m(torch.zeros(1, 8, 8, 33))
    with pytest.raises(ValueError, match=r"looks channels-first .*x.permute\(0, 2, 3, 1\)"):
        m(torch.zeros(1, 32, 8, 8))
    report = attnbench.count_flops(m, torch.zeros(1, 28, 28, 32))
    assert report.convention_zero["aten::avg_pool2d"] == 1 and not report.uncounted
