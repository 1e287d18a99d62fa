"""Swin W-MSA / SW-MSA: against dense masked attention, against timm's WindowAttention, FLOPs, errors."""

import pytest
import torch

import attnbench
from mechanisms.swin import SwinWindowAttention

CASES = [
    # (H, W, C, heads, window_size, shift_size)
    (14, 14, 32, 2, 7, None),  # SW-MSA, shift 3
    (14, 14, 32, 2, 7, 0),  # W-MSA
    (17, 20, 32, 2, 7, None),  # padded to 21 x 21, shifted
    (17, 20, 32, 4, 7, 0),  # padded, not shifted
    (12, 10, 64, 2, 4, 1),  # other window and shift; W padded to 12
    (5, 20, 32, 2, 7, None),  # H fits in one window: wh = 5, no shift along H
    (6, 6, 32, 2, 7, None),  # the whole map is one window, nothing shifted
]


def dense_swin(m: SwinWindowAttention, x: torch.Tensor, shift: int) -> torch.Tensor:
    """Plain attention over all (padded) tokens; a pair may attend only inside one shifted window.

    Written from Swin's definition, not from the module: windows of the padded map offset by the
    shift (no cyclic roll), Swin's bias table looked up by (query - key) offsets, zero padding at
    bottom/right before the projection, crop after.
    """
    B, H, W, C = x.shape
    w, h = m.window_size, m.num_heads
    wh, sh = (H, 0) if H <= w else (w, shift)
    ww, sw = (W, 0) if W <= w else (w, shift)
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    x = torch.cat([x, x.new_zeros(B, Hp - H, W, C)], dim=1)
    x = torch.cat([x, x.new_zeros(B, Hp, Wp - W, C)], dim=2)

    rows = torch.arange(Hp).repeat_interleave(Wp)  # (N,) row of each token, row-major
    cols = torch.arange(Wp).repeat(Hp)
    group = ((rows + wh - sh) // wh) * (Wp + 1) + (cols + ww - sw) // ww  # shifted window of each token
    allowed = group[:, None] == group[None, :]  # (N, N)
    d_row, d_col = rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]
    index = ((d_row + w - 1) * (2 * w - 1) + d_col + w - 1).clamp(0, (2 * w - 1) ** 2 - 1)
    bias = m.relative_position_bias_table[index].permute(2, 0, 1)  # (heads, N, N)

    q, k, v = m.qkv(x).reshape(B, Hp * Wp, 3, h, C // h).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
    logits = q @ k.transpose(-2, -1) * (C // h) ** -0.5 + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, Hp, Wp, C)
    return m.proj(out)[:, :H, :W]


@pytest.mark.parametrize("grad", [False, True], ids=["fused", "training"])
@pytest.mark.parametrize("H,W,C,heads,window,shift", CASES)
def test_matches_dense_masked_attention(H, W, C, heads, window, shift, grad):
    """Both paths: the fused kernels (no gradient) and the written-out training path on CPU."""
    m = attnbench.build_mechanism("swin", C, heads, window_size=window, shift_size=shift)
    with torch.no_grad():  # a non-zero table so that a wrong lookup shows
        m.relative_position_bias_table.normal_(std=1.0)
    x = torch.randn(2, H, W, C)
    ref = dense_swin(m, x, window // 2 if shift is None else shift)
    with torch.set_grad_enabled(grad):
        out = m(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("H,W,C,heads,window,shift", CASES)
def test_gradients_match_dense_masked_attention(H, W, C, heads, window, shift):
    m = attnbench.build_mechanism("swin", C, heads, window_size=window, shift_size=shift)
    with torch.no_grad():
        m.relative_position_bias_table.normal_(std=1.0)
    x = torch.randn(2, H, W, C, requires_grad=True)
    g = torch.randn(2, H, W, C)
    (m(x) * g).sum().backward()
    ours = [x.grad] + [p.grad for p in m.parameters()]
    x.grad = None
    m.zero_grad()
    (dense_swin(m, x, window // 2 if shift is None else shift) * g).sum().backward()
    for got, want in zip(ours, [x.grad] + [p.grad for p in m.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("H,W,wh,ww,sh,sw", [(14, 21, 7, 7, 3, 2), (8, 12, 4, 4, 1, 0), (6, 6, 3, 3, 0, 0)])
def test_partition_is_roll_then_windows_and_merge_inverts_it(H, W, wh, ww, sh, sw):
    from mechanisms.swin import merge_windows, partition_windows

    x = torch.randn(2, H, W, 5, requires_grad=True)
    rolled = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    ref = rolled.view(2, H // wh, wh, W // ww, ww, 5).permute(0, 1, 3, 2, 4, 5)
    windows = partition_windows(x, wh, ww, sh, sw)
    assert torch.equal(windows, ref)
    back = merge_windows(windows, sh, sw)
    assert torch.equal(back, x)
    g = torch.randn_like(windows)
    (windows * g).sum().backward()  # the gradient of a permutation is the inverse permutation
    assert torch.equal(x.grad, merge_windows(g, sh, sw))


def test_shift_changes_the_output():
    m = attnbench.build_mechanism("swin", 32, 2)
    x = torch.randn(1, 14, 14, 32)
    shifted = m(x)
    m.shift_size = 0
    assert not torch.allclose(shifted, m(x), atol=1e-3)


@pytest.mark.parametrize("shift", [0, 3])
def test_matches_timm_swin_block_attention(shift):
    """Same state dict in timm's Swin block: bias table indexing, shift and mask as Swin's."""
    from timm.models.swin_transformer import SwinTransformerBlock

    C, heads, w = 32, 2, 7
    block = SwinTransformerBlock(C, (14, 14), num_heads=heads, window_size=w, shift_size=shift).eval()
    if not hasattr(block, "_attn"):
        pytest.skip("this timm version has no SwinTransformerBlock._attn")
    m = attnbench.build_mechanism("swin", C, heads, window_size=w, shift_size=shift)
    with torch.no_grad():
        m.relative_position_bias_table.normal_(std=1.0)
    block.attn.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(2, 14, 14, C)
    with torch.no_grad():
        torch.testing.assert_close(m(x), block._attn(x), rtol=1e-5, atol=1e-5)


def test_state_dict_names():
    m = attnbench.build_mechanism("swin", 32, 2, window_size=7)
    sd = m.state_dict()
    assert set(sd) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "relative_position_bias_table"}
    assert sd["relative_position_bias_table"].shape == (13 * 13, 2)


def test_bias_table_gets_gradient_through_masked_sdpa():
    m = attnbench.build_mechanism("swin", 32, 2)
    x = torch.randn(2, 17, 20, 32, requires_grad=True)
    m(x).square().mean().backward()
    assert m.relative_position_bias_table.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()


def test_index_cached_in_inference_mode_still_trains():
    m = attnbench.build_mechanism("swin", 32, 2, window_size=5)
    x = torch.randn(1, 15, 15, 32)
    with torch.inference_mode():
        m(x)
    m(x).sum().backward()  # the cached index must not be an inference tensor
    assert m.relative_position_bias_table.grad is not None


@pytest.mark.parametrize("H,W,C,heads,window,shift", CASES)
def test_analytic_flops_equal_counted(H, W, C, heads, window, shift):
    m = attnbench.build_mechanism("swin", C, heads, window_size=window, shift_size=shift)
    analytic = m.analytic_flops(H, W)
    report = attnbench.count_flops(m, torch.randn(1, H, W, C), cross_check=False)
    assert report.uncounted == {}
    assert sum(analytic.values()) == report.total
    assert analytic["qkv_proj"] == report.by_module["qkv"]
    assert analytic["out_proj"] == report.by_module["proj"]
    assert analytic["attention"] == report.by_operator["scaled_dot_product_attention"]


@pytest.mark.parametrize("hw,C,window", [(56, 96, 7), (28, 192, 7), (16, 32, 4)])
def test_flops_match_swin_paper_formula(hw, C, window):
    """Swin paper, Eq. (2): Omega(W-MSA) = 4hwC^2 + 2 M^2 hwC, shifted or not."""
    for shift in (0, None):
        m = attnbench.build_mechanism("swin", C, C // 32, window_size=window, shift_size=shift)
        N = hw * hw
        assert sum(m.analytic_flops(hw, hw).values()) == 4 * N * C * C + 2 * window**2 * N * C


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"window_size": 0}, "window_size"),
        ({"window_size": 7, "shift_size": 7}, "shift_size"),
        ({"window_size": 7, "shift_size": -1}, "shift_size"),
        ({"window_size": 4, "shift_size": 5}, "shift_size"),
    ],
)
def test_bad_parameters_raise_naming_them(params, needle):
    with pytest.raises(ValueError, match=needle):
        attnbench.build_mechanism("swin", 32, 2, **params)


def test_defaults():
    m = attnbench.build_mechanism("swin", 64, 2)
    assert (m.window_size, m.shift_size, m.scale) == (7, 3, 32**-0.5)
    assert attnbench.build_mechanism("swin", 64, 2, window_size=1).shift_size == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    m = attnbench.build_mechanism("swin", 64, 2)
    x = torch.randn(2, 17, 20, 64, requires_grad=True)
    m(x).square().sum().backward()
    ref_out, ref_grad = m(x).detach(), m.relative_position_bias_table.grad.clone()
    m.zero_grad()
    mc, xc = m.cuda(), x.detach().cuda().requires_grad_(True)
    out = mc(xc)
    out.square().sum().backward()
    torch.testing.assert_close(out.cpu(), ref_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mc.relative_position_bias_table.grad.cpu(), ref_grad, rtol=1e-3, atol=1e-3)
