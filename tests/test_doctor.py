"""``attnbench doctor``: the environment probes, every backend against the mechanism's reference, a
wrong backward caught and named, exit codes, and the run folder a report reads."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest
import torch

import attnbench  # noqa: F401 - registers the mechanisms; torchvision before timm
from attnbench.cli import main
from attnbench.doctor import EXIT_BAD_INPUT, EXIT_FAILED, TOLERANCE, doctor_study
from attnbench.kinds.doctor.kind import PROBES, relative_error
from attnbench.registry import build_mechanism, get_mechanism

WRONG_BACKWARD = textwrap.dedent(
    '''
    """Global attention whose output projection's backward is twice what it should be."""
    import torch
    from torch import nn

    import attnbench


    class _Doubled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad


    @attnbench.register_mechanism("doubled_grad")
    class DoubledGrad(attnbench.AttentionMechanism):
        def __init__(self, dim: int, num_heads: int) -> None:
            super().__init__(dim, num_heads)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, H, W, C = x.shape
            q, k, v = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            out = out.transpose(1, 2).reshape(B, H, W, C)
            return self.proj(_Doubled.apply(out))

        def analytic_flops(self, H, W):
            N, C = H * W, self.dim
            return {"qkv": 3 * N * C * C, "attention": 2 * N * N * C, "proj": N * C * C}
    '''
)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_relative_error_is_scaled_by_the_reference_and_floored():
    ref = torch.tensor([0.0, 2.0, -4.0])
    assert relative_error(ref + torch.tensor([0.0, 0.4, 0.0]), ref) == pytest.approx(0.1)
    assert relative_error(torch.tensor([1e-6]), torch.tensor([0.0])) == pytest.approx(1e-6)  # absolute
    assert relative_error(torch.tensor([1e-6]), torch.tensor([1e-9]), floor=1.0) == pytest.approx(1e-6 - 1e-9)
    assert relative_error(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")


def test_backends_reference_and_default_are_declared_by_the_mechanisms():
    bra, nat = get_mechanism("bra"), get_mechanism("neighborhood")
    assert set(bra.backends()) == {"reference", "sdpa", "bmm", "masked", "flex"}
    assert bra.reference_backend == "reference" and nat.reference_backend == "torch"
    assert get_mechanism("vanilla").backends() == () and get_mechanism("vanilla").reference_backend is None
    x = torch.randn(2, 28, 28, 32)
    m = build_mechanism("bra", 32, 2)
    assert m.backend_unavailable(x, "flex") is not None  # FlexAttention: CUDA only
    assert m.backend_unavailable(x, "masked") is None
    with torch.no_grad():
        assert m.chosen_backend(x) in bra.backends()
    n = build_mechanism("neighborhood", 32, 2)
    assert n.chosen_backend(x) == "tiled"  # auto on CPU never takes natten
    if n.backend_unavailable(x, "natten") is None:  # natten installed: its CPU path has no backward
        assert "backward" in n.backend_unavailable(x, "natten", backward=True)


def test_tolerances_are_ordered_by_precision():
    assert (
        TOLERANCE["float32"]["forward"] < TOLERANCE["float16"]["forward"] <= TOLERANCE["bfloat16"]["forward"]
    )
    for tol in TOLERANCE.values():
        assert tol["forward"] <= tol["backward"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--dtype", "float8"], "--dtype 'float8' is not one of float32, bfloat16, float16"),
        (["--mechanism", "vanila"], "did you mean 'vanilla'"),
        (["--plugin", "no_such_file.py"], "no such file"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(argv, needle, capsys, tmp_path):
    code = main(
        ["doctor", "--device", "cpu", "--out", str(tmp_path / "d"), *argv]
        if "--device" not in argv
        else ["doctor", *argv]
    )
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_cuda_asked_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA device"):
        doctor_study(device="cuda")


@pytest.mark.slow  # 7 s: a doctor run of every check on a planted mechanism
def test_a_wrong_backward_fails_with_its_row_named(tmp_path, capsys, temp_registry):
    plugin = tmp_path / "doubled.py"
    plugin.write_text(WRONG_BACKWARD)
    out = tmp_path / "doctor"
    code = main(
        [
            "doctor",
            "--device",
            "cpu",
            "--quick",
            "--threads",
            "1",
            "--plugin",
            str(plugin),
            "--mechanism",
            "doubled_grad",
            "--mechanism",
            "vanilla",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == EXIT_FAILED
    rows = _rows(out)
    by = {(r["item"], r["check"], r["dtype"]): r for r in rows if r["part"] == "mechanism"}
    ref = by[("doubled_grad", "gradcheck", "float64")]
    assert ref["verdict"] == "FAIL" and "the backward is wrong" in ref["error"]
    assert by[("vanilla", "gradcheck", "float64")]["verdict"] == "PASS"
    assert by[("vanilla", "vs reference", "float32")]["verdict"] == "PASS"
    assert (
        float(by[("vanilla", "vs reference", "float32")]["forward_error"]) < TOLERANCE["float32"]["forward"]
    )
    assert "FAIL doubled_grad float64: the backward is wrong" in printed
    # the environment: one row per probe, in the order of PROBES
    assert [r["item"] for r in rows if r["part"] == "environment"] == list(PROBES)
    # a run folder like any other: its manifest says doctor, the report reads it
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "doctor" and manifest["runs"][-1]["command"][:2] == ["attnbench", "doctor"]
    page = (out / "index.html").read_text()
    assert "doubled_grad" in page and "FAIL" in page
    assert (out / "tables" / "doctor_mechanisms.tex").is_file()
    assert main(["report", str(out)]) == 0


@pytest.mark.slow
def test_every_doctor_starts_afresh(tmp_path, temp_registry):
    out = tmp_path / "doctor"
    argv = [
        "doctor",
        "--device",
        "cpu",
        "--quick",
        "--threads",
        "1",
        "--mechanism",
        "axial",
        "--out",
        str(out),
        "--no-report",
    ]
    assert main(argv) == 0
    assert main(argv) == 0
    assert len(list(tmp_path.glob("doctor.old-*"))) == 1  # the first moved aside, not resumed
    assert not (out / "index.html").exists()


@pytest.mark.slow
def test_every_mechanism_passes_on_cpu_in_float32_and_bfloat16(tmp_path):
    """The acceptance run: all twelve mechanisms, every backend (about 2 minutes on 2 cores)."""
    out = tmp_path / "doctor"
    code = main(["doctor", "--device", "cpu", "--dtype", "float32", "--dtype", "bfloat16", "--out", str(out)])
    rows = _rows(out)
    assert code == 0, [r["error"] for r in rows if r["verdict"] == "FAIL"]
    checked = {r["item"] for r in rows if r["part"] == "mechanism" and r["verdict"] == "PASS"}
    assert len(checked) == 12
