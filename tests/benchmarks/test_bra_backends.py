"""Micro-benchmarks of BRA's backends on BiFormer-T's stage shapes at 224² (batch 8, S = 7).

Skipped by default (``--benchmark-skip`` in pyproject); run them with
``python -m pytest tests/benchmarks --benchmark-only`` and compare runs with pytest-benchmark's
``--benchmark-autosave`` / ``--benchmark-compare`` so a change to a backend shows its speed change.
"""

import pytest
import torch

import attnbench
from mechanisms.bra import BACKENDS

# (H = W, C, topk): stages 1-3 of BiFormer-T at 224x224 input
STAGES = {"stage1": (56, 64, 1), "stage2": (28, 128, 4), "stage3": (14, 256, 16)}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("pass_", ["forward", "forward_backward"])
def test_bra_backend_speed(benchmark, stage, backend, pass_):
    H, C, topk = STAGES[stage]
    if backend == "flex" and DEVICE == "cpu":
        pytest.skip("flex is forward-only and unfused on CPU")
    torch.manual_seed(0)
    m = attnbench.build_mechanism("bra", C, C // 32, n_win=7, topk=topk, backend=backend).to(DEVICE)
    x = torch.randn(8, H, H, C, device=DEVICE, requires_grad=pass_ == "forward_backward")

    def step():
        if pass_ == "forward":
            with torch.no_grad():
                m(x)
        else:
            m(x).sum().backward()
        _sync()

    step()  # warm-up (and compilation for flex on CUDA)
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
