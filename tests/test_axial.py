"""Axial attention: against dense row/column (stripe) masked attention, receptive fields, FLOPs, errors."""

import pytest
import torch

import attnbench
from mechanisms.axial import AxialAttention


def dense(q, k, v, allowed):
    """q, k, v (B, heads, N, d); allowed (heads or 1, N, N) bool; scale d^-0.5."""
    logits = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    return logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def same_stripe(H, W, stripe):
    """(N, N) masks: same horizontal stripe (rows i // s), same vertical stripe (columns j // s)."""
    rows = torch.arange(H).repeat_interleave(W)  # (N,) row-major tokens
    cols = torch.arange(W).repeat(H)
    row_ok = (rows[:, None] // stripe) == (rows[None, :] // stripe)
    col_ok = (cols[:, None] // stripe) == (cols[None, :] // stripe)
    return row_ok, col_ok


def split_heads(t, B, N, heads):
    return t.reshape(B, N, heads, -1).transpose(1, 2)  # (B, heads, N, d); head h = channels [h·d, (h+1)·d)


def dense_axial(m: AxialAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain attention over all H·W tokens with an explicit mask per step (or per head group)."""
    B, H, W, C = x.shape
    N, h = H * W, m.num_heads
    row_ok, col_ok = same_stripe(H, W, m.stripe)
    x = x.reshape(B, N, C)
    if m.mode == "sequential":
        for qkv, allowed in ((m.qkv_row, row_ok), (m.qkv_col, col_ok)):
            q, k, v = (split_heads(t, B, N, h) for t in qkv(x).chunk(3, dim=-1))
            x = dense(q, k, v, allowed[None]).transpose(1, 2).reshape(B, N, C)
    else:
        q, k, v = (split_heads(t, B, N, h) for t in m.qkv(x).chunk(3, dim=-1))
        allowed = torch.stack([row_ok] * (h // 2) + [col_ok] * (h // 2))  # first half of heads: rows
        x = dense(q, k, v, allowed).transpose(1, 2).reshape(B, N, C)
    return m.proj(x).reshape(B, H, W, C)


CASES = [
    # (H, W, C, heads, mode, stripe)
    (14, 14, 32, 2, "sequential", 1),
    (12, 20, 64, 4, "sequential", 1),
    (14, 28, 32, 2, "sequential", 2),
    (14, 14, 32, 2, "parallel", 1),
    (12, 20, 64, 4, "parallel", 1),
    (14, 28, 32, 2, "parallel", 2),
    (14, 21, 64, 4, "parallel", 7),  # CSWin's last-stage stripe width
]


@pytest.mark.parametrize("H,W,C,heads,mode,stripe", CASES)
def test_matches_dense_masked_attention(H, W, C, heads, mode, stripe):
    m = attnbench.build_mechanism("axial", C, heads, mode=mode, stripe=stripe)
    x = torch.randn(2, H, W, C)
    torch.testing.assert_close(m(x), dense_axial(m, x), rtol=1e-5, atol=1e-5)


def input_gradient_support(m, H, W, i, j):
    """Which input tokens the output token (i, j) depends on."""
    x = torch.randn(1, H, W, m.dim, requires_grad=True)
    m(x)[0, i, j].sum().backward()
    return x.grad[0].abs().sum(-1) > 0  # (H, W)


def test_sequential_reaches_the_whole_map():
    m = attnbench.build_mechanism("axial", 32, 2)
    assert input_gradient_support(m, 12, 14, 5, 9).all()


@pytest.mark.parametrize("stripe", [1, 2])
def test_parallel_sees_only_its_cross(stripe):
    m = attnbench.build_mechanism("axial", 32, 2, mode="parallel", stripe=stripe)
    H, W, i, j = 12, 14, 5, 9
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[(i // stripe) * stripe : (i // stripe + 1) * stripe, :] = True
    expected[:, (j // stripe) * stripe : (j // stripe + 1) * stripe] = True
    assert torch.equal(input_gradient_support(m, H, W, i, j), expected)


@pytest.mark.parametrize("H,W,C,heads,mode,stripe", CASES)
def test_analytic_flops_equal_counted(H, W, C, heads, mode, stripe):
    m = attnbench.build_mechanism("axial", C, heads, mode=mode, stripe=stripe)
    analytic = m.analytic_flops(H, W)
    report = attnbench.count_flops(m, torch.randn(1, H, W, C), cross_check=False)
    assert report.uncounted == {}
    assert sum(analytic.values()) == report.total
    attention = analytic["row_attention"] + analytic["col_attention"]
    assert attention == report.by_operator["scaled_dot_product_attention"]
    if mode == "sequential":
        assert analytic["qkv_row_proj"] == report.by_module["qkv_row"]
        assert analytic["qkv_col_proj"] == report.by_module["qkv_col"]
    else:
        assert analytic["qkv_proj"] == report.by_module["qkv"]
    assert analytic["out_proj"] == report.by_module["proj"]


def test_flops_by_hand():
    """Each query sees W keys along its row and H along its column: 2·C MACs per key (QKᵀ, AV)."""
    H, W, C = 56, 28, 64
    N = H * W
    seq = attnbench.build_mechanism("axial", C, 2)
    par = attnbench.build_mechanism("axial", C, 2, mode="parallel")
    assert sum(seq.analytic_flops(H, W).values()) == 7 * N * C * C + 2 * N * (H + W) * C
    assert sum(par.analytic_flops(H, W).values()) == 4 * N * C * C + N * (H + W) * C


@pytest.mark.parametrize(
    "heads,params,needle",
    [
        (2, {"stripe": 0}, "stripe"),
        (2, {"mode": "diagonal"}, "mode"),
        (1, {"mode": "parallel"}, "num_heads"),
        (4, {"mode": "parallel", "stripe": -2}, "stripe"),
    ],
)
def test_bad_parameters_raise_naming_them(heads, params, needle):
    with pytest.raises(ValueError, match=needle):
        attnbench.build_mechanism("axial", 32, heads, **params)
    with pytest.raises(ValueError, match=needle):
        AxialAttention(32, heads, **params)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_map_not_divisible_by_stripe_raises(mode):
    m = attnbench.build_mechanism("axial", 32, 2, mode=mode, stripe=4)
    with pytest.raises(ValueError, match="stripe = 4"):
        m(torch.randn(1, 12, 10, 32))
    with pytest.raises(ValueError, match="stripe"):
        m.check_input(10, 12)
    m.check_input(12, 16)


def test_state_dict_names():
    seq = attnbench.build_mechanism("axial", 32, 2)
    par = attnbench.build_mechanism("axial", 32, 2, mode="parallel")
    assert {k.split(".")[0] for k in seq.state_dict()} == {"qkv_row", "qkv_col", "proj"}
    assert {k.split(".")[0] for k in par.state_dict()} == {"qkv", "proj"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_cuda_matches_cpu(mode):
    m = attnbench.build_mechanism("axial", 64, 2, mode=mode, stripe=2)
    x = torch.randn(2, 28, 28, 64, requires_grad=True)
    ref = m(x)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)
    mc, xc = m.cuda(), x.detach().cuda().requires_grad_(True)
    out = mc(xc)
    (grad,) = torch.autograd.grad(out.square().sum(), xc)
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=1e-3, atol=1e-3)
