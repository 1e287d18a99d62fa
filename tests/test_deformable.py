"""DAT deformable attention: against a plain per-head reference with hand-written bilinear sampling."""

import pytest
import torch
import torch.nn.functional as F

import attnbench


def bilinear(img, y, x):
    """Sample img (C, H, W) at (y, x) in [-1, 1] (align_corners=True, zeros outside) -> (C, *y.shape)."""
    C, H, W = img.shape
    py = (y + 1) / 2 * (H - 1)  # pixel coordinates
    px = (x + 1) / 2 * (W - 1)
    y0, x0 = py.floor(), px.floor()
    out = img.new_zeros(C, *y.shape)
    for yi, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xi, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            inside = (yi >= 0) & (yi <= H - 1) & (xi >= 0) & (xi <= W - 1)
            corner = img[:, yi.clamp(0, H - 1).long(), xi.clamp(0, W - 1).long()]
            out = out + corner * (wy * wx * inside)
    return out


def conv1x1(conv, t):
    """A 1x1 conv applied to channels-last t (..., Cin)."""
    return t @ conv.weight.flatten(1).T + conv.bias


def reference_dat(m, x):
    """DAT's DAttentionBaseline step by step: per batch element, offset group and head."""
    B, H, W, C = x.shape
    g, heads, d = m.n_groups, m.num_heads, m.head_dim
    cg, s, kk = C // g, m.offset_stride, m.offset_kernel
    Hk, Wk = -(-H // s), -(-W // s)
    ref_y = (torch.arange(Hk) + 0.5) / Hk * 2 - 1
    ref_x = (torch.arange(Wk) + 0.5) / Wk * 2 - 1
    qy = ((torch.arange(H) + 0.5) / H * 2 - 1).repeat_interleave(W)  # query centres, row-major
    qx = ((torch.arange(W) + 0.5) / W * 2 - 1).repeat(H)
    dw, ln, pw = m.conv_offset[0], m.conv_offset[1].norm, m.conv_offset[3]
    q = conv1x1(m.proj_q, x)  # (B, H, W, C)
    out = []
    for b in range(B):
        sampled = torch.zeros(C, Hk, Wk)
        pos = []
        for gi in range(g):
            ch = slice(gi * cg, (gi + 1) * cg)
            if m.no_off:
                off = torch.zeros(2, Hk, Wk)
            else:
                h = F.conv2d(q[b, :, :, ch].permute(2, 0, 1)[None], dw.weight, dw.bias, s, kk // 2, groups=cg)
                h = F.gelu(F.layer_norm(h[0].permute(1, 2, 0), (cg,), ln.weight, ln.bias))  # (Hk, Wk, cg)
                off = torch.einsum("oc,hwc->ohw", pw.weight.flatten(1), h)  # (2, Hk, Wk): dy, dx
                off = off.tanh() * m.offset_range_factor / torch.tensor([Hk, Wk]).view(2, 1, 1)
            py, px = ref_y[:, None] + off[0], ref_x[None, :] + off[1]  # (Hk, Wk)
            sampled[ch] = bilinear(x[b, :, :, ch].permute(2, 0, 1), py, px)
            pos.append((py.flatten(), px.flatten()))
        xs = sampled.flatten(1).T  # (Ns, C)
        k, v = conv1x1(m.proj_k, xs), conv1x1(m.proj_v, xs)
        qb = q[b].reshape(H * W, C)
        o = torch.zeros(H * W, C)
        for h in range(heads):
            hs = slice(h * d, (h + 1) * d)
            logits = qb[:, hs] @ k[:, hs].T * d**-0.5  # (HW, Ns)
            if m.use_pe:
                py, px = pos[h // (heads // g)]
                dy, dx = (qy[:, None] - py[None]) * 0.5, (qx[:, None] - px[None]) * 0.5
                logits = logits + bilinear(m.rpe_table[h][None], dy, dx)[0]
            o[:, hs] = logits.softmax(-1) @ v[:, hs]
        out.append(conv1x1(m.proj_out, o).reshape(H, W, C))
    return torch.stack(out)


def build(seed=0, dim=32, heads=2, **kw):
    torch.manual_seed(seed)
    return attnbench.build_mechanism("deformable", dim, heads, **kw)


@pytest.mark.parametrize(
    "H,W,kw",
    [
        (14, 14, {}),  # DAT-T stage 3: stride 1, table built for this map
        (14, 14, {"offset_stride": 2}),
        (12, 18, {"offset_stride": 3, "q_size": 7}),  # table built for another size
        (14, 14, {"use_pe": False}),
    ],
)
def test_zero_offsets_match_attention_over_the_sampled_reference_grid(H, W, kw):
    m = build(no_off=True, **kw)
    x = torch.randn(2, H, W, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_dat(m, x), rtol=1e-5, atol=1e-5)


def test_zeroed_offset_projection_is_the_no_offset_ablation():
    x = torch.randn(2, 14, 14, 32)
    m = build(offset_stride=2)
    torch.nn.init.zeros_(m.conv_offset[3].weight)
    no_off = build(offset_stride=2, no_off=True)
    with torch.no_grad():
        torch.testing.assert_close(m(x), no_off(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "H,W,kw",
    [
        (14, 14, {"n_groups": 2, "dim": 64, "heads": 4}),
        (13, 10, {"offset_stride": 2, "offset_kernel": 3, "offset_range_factor": 3.0}),
    ],
)
def test_deformed_sampling_matches_reference(H, W, kw):
    m = build(**kw)
    x = torch.randn(2, H, W, m.dim)
    with torch.no_grad():
        ref = reference_dat(m, x)
        out = m(x)
        grid = m.sample_positions(m.proj_q(x.permute(0, 3, 1, 2)))
    assert not torch.allclose(grid[0], grid[0, 0, 0])  # offsets really move the points
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_offsets_stay_within_range_factor_cells():
    m = build(offset_stride=2, offset_range_factor=2.0)
    with torch.no_grad():
        m.conv_offset[3].weight.mul_(100.0)  # saturate tanh
        x = torch.randn(1, 14, 14, 32)
        pos = m.sample_positions(m.proj_q(x.permute(0, 3, 1, 2)))  # (1, 7, 7, 2)
    centres = (torch.arange(7) + 0.5) / 7 * 2 - 1
    ref = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1)
    assert (pos[0] - ref).abs().max() <= 2.0 / 7 + 1e-6
    assert (pos[0] - ref).abs().max() > 1.9 / 7


def test_gradient_reaches_offset_network():
    m = build(offset_stride=2)
    x = torch.randn(2, 14, 14, 32)
    m(x).square().sum().backward()
    for name, p in m.conv_offset.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert m.rpe_table.grad.abs().sum() > 0


def test_no_off_freezes_offset_network():
    m = build(no_off=True)
    assert all(not p.requires_grad for p in m.conv_offset.parameters())
    assert m.proj_q.weight.requires_grad


def test_state_dict_keys_and_shapes_are_the_released_modules():
    # DAttentionBaseline of the CVPR 2022 code, 96 channels, 3 heads, 3 groups, ksize 5, q size 14
    m = build(dim=96, heads=3, n_groups=3, q_size=14)
    released = {
        "conv_offset.0.weight": (32, 1, 5, 5),
        "conv_offset.0.bias": (32,),
        "conv_offset.1.norm.weight": (32,),
        "conv_offset.1.norm.bias": (32,),
        "conv_offset.3.weight": (2, 32, 1, 1),
        "rpe_table": (3, 27, 27),
        **{f"proj_{p}.weight": (96, 96, 1, 1) for p in ("q", "k", "v", "out")},
        **{f"proj_{p}.bias": (96,) for p in ("q", "k", "v", "out")},
    }
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == released


@pytest.mark.parametrize(
    "H,W,kw",
    [
        (14, 14, {}),
        (28, 21, {"offset_stride": 4, "offset_kernel": 7, "n_groups": 2}),
        (14, 14, {"no_off": True}),
        (9, 16, {"use_pe": False, "offset_stride": 2}),
    ],
)
def test_analytic_flops_equal_fvcore_count(H, W, kw):
    m = build(**kw)
    report = attnbench.count_flops(m, torch.randn(1, H, W, 32), cross_check=False)
    assert not report.uncounted
    analytic = m.analytic_flops(H, W)
    assert sum(analytic.values()) == report.total
    # the two grid_sample calls are counted by fvcore's handle: 4 per output element
    assert report.by_operator["grid_sampler"] == analytic["key_sampling"] + analytic["position_bias"]


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"n_groups": 3}, "n_groups"),
        ({"n_groups": 0}, "n_groups"),
        ({"offset_kernel": 4}, "offset_kernel"),
        ({"offset_stride": 0}, "offset_stride"),
        ({"offset_range_factor": 0.0}, "offset_range_factor"),
        ({"q_size": 0}, "q_size"),
    ],
)
def test_bad_parameters_raise_naming_them(kw, needle):
    with pytest.raises(ValueError, match=needle):
        attnbench.build_mechanism("deformable", 32, 2, **kw)


def test_wrong_channels_raise():
    m = build()
    with pytest.raises(ValueError, match="channels-last"):
        m(torch.randn(1, 32, 14, 14))
