"""``attnbench check``: the pass/fail table, exit codes, and failures that say how to fix them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
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
        (FlopsFarOff, "flops", "off by", "fix analytic_flops term by term"),
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
    assert f"analytic {analytic:,} MACs vs counted {counted:,}" in row[1]


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


def test_constraints_check_catches_refused_shape_that_runs(fresh_registry):
    class Inconsistent(Healthy):
        def forward(self, x: Tensor) -> Tensor:  # checks C itself but never asks check_input
            if x.shape[-1] != self.dim:
                raise ValueError(f"expected C = {self.dim}")
            return self.attend(x)

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
