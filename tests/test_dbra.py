"""DBRA (DeBiFormer): against a plain step-by-step reference (hand bilinear sampling, masked dense
attention for the routed step, per-head loops), FLOPs, released state-dict keys, errors."""

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


def region_ids(h, w, S):
    """Row-major region of every cell of an h x w grid split into S x S regions, flattened."""
    return ((torch.arange(h) // (h // S))[:, None] * S + (torch.arange(w) // (w // S))[None, :]).flatten()


def reference_dbra(m, x):
    """DeBiFormer's DBRA step by step, one batch element at a time."""
    B, H_in, W_in, C = x.shape
    S, g, heads, topk = m.n_win, m.n_groups, m.num_heads, m.topk
    d, cg, scale = C // heads, C // g, C**-0.5  # the scale is the whole channel dim
    s, kk, side = m.offset_stride, m.offset_kernel, m.side_dwconv

    def pad(n):
        return n + (-n) % S if m.auto_pad else n

    H, W = pad(H_in), pad(W_in)
    Hk, Wk = -(-H // s), -(-W // s)
    Hg, Wg = pad(Hk), pad(Wk)
    N, Ns = H * W, Hg * Wg
    xp = x.new_zeros(B, H, W, C)
    xp[:, :H_in, :W_in] = x
    q, k, v = conv1x1(m.qkv_conv.qkv, xp).split(C, dim=-1)  # (B, H, W, C) each
    ref_y = (torch.arange(Hk) + 0.5) / Hk * 2 - 1
    ref_x = (torch.arange(Wk) + 0.5) / Wk * 2 - 1
    qy = (torch.arange(H) / (H - 1) * 2 - 1).repeat_interleave(W)  # queries at the pixels
    qx = (torch.arange(W) / (W - 1) * 2 - 1).repeat(H)
    tok_region = F.one_hot(region_ids(H, W, S), S * S).float()  # (N, S²)
    agent_region = F.one_hot(region_ids(Hg, Wg, S), S * S).float()  # (Ns, S²)
    dw, ln, pw = m.conv_offset_q[0], m.conv_offset_q[1].norm, m.conv_offset_q[3]
    out = []
    for b in range(B):
        # 1. agents: the input sampled at the deformed grid centres, one offset for y and x
        agents = torch.zeros(Hg, Wg, C)
        pos_y, pos_x = torch.zeros(g, Hg, Wg), torch.zeros(g, Hg, Wg)
        for gi in range(g):
            ch = slice(gi * cg, (gi + 1) * cg)
            h = F.conv2d(q[b, :, :, ch].permute(2, 0, 1)[None], dw.weight, None, s, kk // 2, groups=cg)
            h = F.gelu(F.layer_norm(h[0].permute(1, 2, 0), (cg,), ln.weight, ln.bias))  # (Hk, Wk, cg)
            off = h @ pw.weight.flatten()  # (Hk, Wk): ONE channel
            py = (ref_y[:, None] + off).clamp(-1, 1)
            px = (ref_x[None, :] + off).clamp(-1, 1)
            agents[:Hk, :Wk, ch] = bilinear(xp[b, :, :, ch].permute(2, 0, 1), py, px).permute(1, 2, 0)
            pos_y[gi, :Hk, :Wk], pos_x[gi, :Hk, :Wk] = py, px
        lce = torch.zeros(Hg, Wg, C)
        if side:
            lepe = F.conv2d(v[b].permute(2, 0, 1)[None], m.lepe1.weight, m.lepe1.bias, s, side // 2, groups=C)
            lce[:Hk, :Wk] = lepe[0].permute(1, 2, 0)

        # 2. routing on region means, then masked dense attention of agents over all tokens
        qa = conv1x1(m.proj_q, agents).reshape(Ns, C)
        kb, vb = k[b].reshape(N, C), v[b].reshape(N, C)
        k_mean = tok_region.T @ kb / tok_region.sum(0)[:, None]  # (S², C)
        q_mean = agent_region.T @ qa / agent_region.sum(0)[:, None]
        routed = (q_mean * scale @ k_mean.T).topk(topk, dim=-1).indices  # (S², k)
        allowed = torch.zeros(S * S, S * S, dtype=torch.bool).scatter_(1, routed, True)
        mask = (agent_region @ allowed.float() @ tok_region.T).bool()  # (Ns, N)
        att = torch.zeros(Ns, C)
        for h in range(heads):
            hs = slice(h * d, (h + 1) * d)
            logits = (qa[:, hs] @ kb[:, hs].T * scale).masked_fill(~mask, float("-inf"))
            att[:, hs] = logits.softmax(-1) @ vb[:, hs]
        y = agents + conv1x1(m.unifyheads1, att.reshape(Hg, Wg, C) + lce)

        # 3. inner conv-MLP, LayerNorm
        z = conv1x1(m.mlp.linear1[0], F.layer_norm(y, (C,), m.norm2.weight, m.norm2.bias, eps=1e-6))
        dwc = m.mlp.dwc
        z = z + F.conv2d(z.permute(2, 0, 1)[None], dwc.weight, dwc.bias, 1, 1, groups=z.shape[-1])[0].permute(
            1, 2, 0
        )
        y = y + conv1x1(m.mlp.linear2[0], F.gelu(z))
        y = F.layer_norm(y, (C,), m.norm.weight, m.norm.bias, eps=1e-6).reshape(Ns, C)

        # 4. every full-resolution query over the agents, with the table bias
        k2, v2 = conv1x1(m.proj_k, y), conv1x1(m.proj_v, y)
        qb = q[b].reshape(N, C)
        o = torch.zeros(N, C)
        for h in range(heads):
            hs, gi = slice(h * d, (h + 1) * d), h // (heads // g)
            dy = (qy[:, None] - pos_y[gi].flatten()[None]) * 0.5
            dx = (qx[:, None] - pos_x[gi].flatten()[None]) * 0.5
            logits = qb[:, hs] @ k2[:, hs].T * scale + bilinear(m.rpe_table[h][None], dy, dx)[0]
            o[:, hs] = logits.softmax(-1) @ v2[:, hs]
        out.append(conv1x1(m.proj_out, o).reshape(H, W, C)[:H_in, :W_in])
    return torch.stack(out)


def build(seed=0, dim=64, heads=2, **kw):
    torch.manual_seed(seed)
    return attnbench.build_mechanism("dbra", dim, heads, **kw)


@pytest.mark.parametrize(
    "H,W,kw",
    [
        (56, 56, {}),  # the official defaults: DeBiFormer stage 1 at 224^2, 7 x 7 agents
        (20, 33, {}),  # map and agent grid both padded
        (
            14,
            14,
            {"heads": 4, "n_groups": 2, "offset_kernel": 5, "offset_stride": 2, "topk": 16, "q_size": 14},
        ),
        (
            16,
            16,
            {"n_win": 2, "topk": 2, "offset_stride": 2, "offset_kernel": 3, "auto_pad": False},
        ),  # 16 agents/region
        (14, 14, {"side_dwconv": 0, "offset_stride": 2, "mlp_ratio": 1}),
    ],
)
def test_matches_step_by_step_reference(H, W, kw):
    m = build(**kw)
    x = torch.randn(2, H, W, m.dim)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_dbra(m, x), rtol=1e-5, atol=1e-5)


def test_offsets_move_the_agents_and_are_clamped():
    m = build()
    x = torch.randn(1, 56, 56, 64)
    with torch.no_grad():
        m.conv_offset_q[3].weight.mul_(1e3)  # push far outside the map: clamped to the border
        torch.testing.assert_close(m(x), reference_dbra(m, x), rtol=1e-5, atol=1e-5)


def test_gradient_reaches_offset_network_and_table():
    m = build()
    x = torch.randn(2, 56, 56, 64, requires_grad=True)
    m(x).square().sum().backward()
    for name, p in [*m.conv_offset_q.named_parameters(), ("rpe_table", m.rpe_table)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_state_dict_keys_and_shapes_are_the_released_modules():
    # DeBiLevelRoutingAttention of debi_tiny stage 1 (dim 64, 2 heads, param_size='tiny')
    m = build()
    conv1x1_keys = ("proj_q", "proj_k", "proj_v", "proj_out", "unifyheads1")
    released = {
        "rpe_table": (2, 111, 111),
        "lepe1.weight": (64, 1, 5, 5),
        "lepe1.bias": (64,),
        "qkv_conv.qkv.weight": (192, 64, 1, 1),
        "qkv_conv.qkv.bias": (192,),
        **{f"{p}.weight": (64, 64, 1, 1) for p in conv1x1_keys},
        **{f"{p}.bias": (64,) for p in conv1x1_keys},
        "conv_offset_q.0.weight": (64, 1, 9, 9),
        "conv_offset_q.1.norm.weight": (64,),
        "conv_offset_q.1.norm.bias": (64,),
        "conv_offset_q.3.weight": (1, 64, 1, 1),
        "norm.weight": (64,),
        "norm.bias": (64,),
        "norm2.weight": (64,),
        "norm2.bias": (64,),
        "mlp.linear1.0.weight": (192, 64, 1, 1),
        "mlp.linear1.0.bias": (192,),
        "mlp.dwc.weight": (192, 1, 3, 3),
        "mlp.dwc.bias": (192,),
        "mlp.linear2.0.weight": (64, 192, 1, 1),
        "mlp.linear2.0.bias": (64,),
    }
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == released


@pytest.mark.parametrize(
    "dim,groups,kernel,stride,topk,q",
    [(64, 1, 9, 8, 4, 56), (128, 2, 7, 4, 8, 28), (256, 4, 5, 2, 16, 14), (512, 8, 3, 1, 49, 7)],
)
def test_released_stages_give_seven_by_seven_agents_at_224(dim, groups, kernel, stride, topk, q):
    kw = dict(n_groups=groups, offset_kernel=kernel, offset_stride=stride, topk=topk, q_size=q)
    m = build(dim=dim, heads=dim // 32, **kw)
    assert m.agent_grid_size(q, q) == (7, 7, 7, 7)
    assert m(torch.randn(1, q, q, dim)).shape == (1, q, q, dim)


@pytest.mark.parametrize(
    "H,W,kw",
    [
        (56, 56, {}),
        (20, 33, {}),
        (14, 14, {"heads": 4, "n_groups": 2, "offset_kernel": 5, "offset_stride": 2, "topk": 16}),
        (16, 16, {"n_win": 2, "topk": 2, "offset_stride": 2, "auto_pad": False, "side_dwconv": 0}),
    ],
)
def test_analytic_flops_equal_fvcore_count(H, W, kw):
    m = build(**kw)
    report = attnbench.count_flops(m, torch.randn(1, H, W, m.dim), cross_check=False)
    assert not report.uncounted
    analytic = m.analytic_flops(H, W)
    assert sum(analytic.values()) == report.total
    assert report.by_operator["grid_sampler"] == analytic["agent_sampling"] + analytic["position_bias"]
    assert report.by_operator["matmul"] == analytic["routing"]


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"topk": 50}, "topk"),
        ({"topk": 0}, "topk"),
        ({"n_win": 0}, "n_win"),
        ({"n_groups": 3}, "n_groups"),
        ({"offset_kernel": 8}, "offset_kernel"),
        ({"offset_stride": 0}, "offset_stride"),
        ({"side_dwconv": 4}, "side_dwconv"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"q_size": 0}, "q_size"),
    ],
)
def test_bad_parameters_raise_naming_them(kw, needle):
    with pytest.raises(ValueError, match=needle):
        attnbench.build_mechanism("dbra", 64, 2, **kw)


def test_shapes_that_cannot_work_without_auto_pad():
    m = build(auto_pad=False)
    with pytest.raises(ValueError, match="not divisible by n_win"):
        m(torch.randn(1, 20, 21, 64))
    with pytest.raises(ValueError, match="offset_stride"):  # 28 / 8 -> a 4 x 4 agent grid
        m(torch.randn(1, 28, 28, 64))
    build(auto_pad=True)(torch.randn(1, 28, 28, 64))  # padded: fine
