"""Focused linear attention: against the released FocusedLinearAttention's forward, re-written here on
(B, N, C) tokens, and against the same attention written as an explicit N x N weight matrix."""

import pytest
import torch
import torch.nn.functional as F

import attnbench
from mechanisms.flatten import focus


def encoding_for(w, hw):
    """The released (1, s², C) positional encoding on an h x w map: as is on its own map, else read
    as an s x s map and resized bilinearly (our extension; the release runs on its own map only)."""
    pe = w["positional_encoding"]
    side = int(pe.shape[1] ** 0.5)
    if hw == (side, side):
        return pe
    grid = pe.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=hw, mode="bilinear").flatten(2).transpose(1, 2)


def released_focused_linear_attention(w, x, hw, heads, focusing_factor, kernel_size):
    """FLatten-Swin's ``FocusedLinearAttention.forward``, weights ``w`` (its state dict), x (B, N, C)."""
    B, N, C = x.shape
    h, wd = hw
    q, k, v = F.linear(x, w["qkv.weight"], w["qkv.bias"]).reshape(B, N, 3, C).permute(2, 0, 1, 3)
    k = k + encoding_for(w, hw)
    scale = F.softplus(w["scale"])
    feats = []
    for t in (q, k):
        t = (F.relu(t) + 1e-6) / scale
        length = t.norm(dim=-1, keepdim=True)
        t = t**focusing_factor
        feats.append(t / t.norm(dim=-1, keepdim=True) * length)
    q, k = feats
    q, k, v = (t.reshape(B, N, heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))  # (B, m, N, d)

    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k.transpose(-2, -1) * N**-0.5) @ (v * N**-0.5)
    out = (q @ kv * z).transpose(1, 2).reshape(B, N, C)

    d = C // heads
    v_maps = v.reshape(B * heads, h, wd, d).permute(0, 3, 1, 2)
    rank = F.conv2d(v_maps, w["dwc.weight"], w["dwc.bias"], padding=kernel_size // 2, groups=d)
    out = out + rank.reshape(B, C, N).permute(0, 2, 1)
    return F.linear(out, w["proj.weight"], w["proj.bias"])


def build(dim=32, heads=2, seed=0, **kw):
    torch.manual_seed(seed)
    m = attnbench.build_mechanism("flatten", dim, heads, **kw)
    with torch.no_grad():  # both are zeros at initialisation; make them matter
        m.scale.normal_(0.0, 1.0)
        m.positional_encoding.normal_(0.0, 0.5)
    return m


@pytest.mark.parametrize(
    "H,W,kw",
    [
        (14, 14, {}),  # the map the positional encoding was built for
        (8, 8, {"pe_size": 8, "dim": 64, "heads": 4, "kernel_size": 3}),
        (10, 13, {}),  # another map: the encoding is resized
        (6, 6, {"focusing_factor": 2.0, "pe_size": 6}),
    ],
)
def test_matches_released_forward_and_gradients(H, W, kw):
    dim, heads = kw.pop("dim", 32), kw.pop("heads", 2)
    m = build(dim, heads, **kw)
    x = torch.randn(2, H, W, dim, requires_grad=True)
    weights = {k: v.detach().clone().requires_grad_(True) for k, v in m.state_dict().items()}
    tokens = x.detach().reshape(2, H * W, dim).requires_grad_(True)
    probe = torch.randn(2, H, W, dim)

    out = m(x)
    (out * probe).sum().backward()
    ref = released_focused_linear_attention(weights, tokens, (H, W), heads, m.focusing_factor, m.kernel_size)
    (ref * probe.reshape(2, H * W, dim)).sum().backward()

    torch.testing.assert_close(out.reshape(2, H * W, dim), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.reshape(2, H * W, dim), tokens.grad, rtol=1e-5, atol=1e-5)
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, weights[name].grad, rtol=1e-5, atol=1e-5, msg=name)


def test_equals_the_explicit_weight_matrix():
    """Linear attention computed the quadratic way: the N x N weights φ(q_i)·φ(k_j), each row divided
    by its sum (plus N·1e-6, the release's 1e-6 on the mean), times V."""
    m = build()
    H, W, heads, d = 9, 11, 2, 16
    N = H * W
    x = torch.randn(2, H, W, 32)
    with torch.no_grad():
        q, k, v = m.qkv(x).reshape(2, N, 3, 32).unbind(2)
        k = k + m.position_encoding(H, W)
        scale = F.softplus(m.scale)
        q = focus((q.relu() + 1e-6) / scale, 3.0)
        k = focus((k.relu() + 1e-6) / scale, 3.0)
        out = torch.empty(2, N, 32)
        for h in range(heads):
            c = slice(h * d, (h + 1) * d)
            weights = q[:, :, c] @ k[:, :, c].transpose(1, 2)  # (B, N, N), all >= 0
            out[:, :, c] = weights @ v[:, :, c] / (weights.sum(-1, keepdim=True) + N * 1e-6)
        v_maps = v.reshape(2, H, W, heads, d).permute(0, 3, 4, 1, 2).reshape(2 * heads, d, H, W)
        rank = m.dwc(v_maps).reshape(2, heads * d, N).transpose(1, 2)
        expected = m.proj(out + rank).reshape(2, H, W, 32)
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)


def test_focusing_keeps_the_norm_and_sharpens_the_direction():
    t = torch.rand(5, 8) + 0.1
    torch.testing.assert_close(focus(t, 1.0), t)
    f = focus(t, 3.0)
    torch.testing.assert_close(f.norm(dim=-1), t.norm(dim=-1))
    share = lambda u: u.max(-1).values / u.sum(-1)  # noqa: E731 - the largest channel's share
    assert (share(f) > share(t)).all()


def test_state_dict_keys_and_shapes_are_the_released_modules():
    # FocusedLinearAttention(dim=96, window_size=(14, 14), num_heads=3) of flatten_swin.py
    released = {
        "qkv.weight": (288, 96),
        "qkv.bias": (288,),
        "proj.weight": (96, 96),
        "proj.bias": (96,),
        "dwc.weight": (32, 1, 5, 5),
        "dwc.bias": (32,),
        "scale": (1, 1, 96),
        "positional_encoding": (1, 196, 96),
    }
    m = attnbench.build_mechanism("flatten", 96, 3, pe_size=14)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == released


@pytest.mark.parametrize("H,W,kw", [(56, 56, {}), (28, 28, {"pe_size": 28}), (13, 30, {"kernel_size": 3})])
def test_analytic_flops_equal_the_count(H, W, kw):
    m = attnbench.build_mechanism("flatten", 64, 2, **kw)
    report = attnbench.count_flops(m, torch.randn(1, H, W, 64), cross_check=False)
    assert report.uncounted == {}
    assert report.total == sum(m.analytic_flops(H, W).values())


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"focusing_factor": 0.0}, "focusing_factor"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"pe_size": 0}, "pe_size"),
    ],
)
def test_bad_parameters_name_themselves(kw, match):
    with pytest.raises(ValueError, match=match):
        attnbench.build_mechanism("flatten", 32, 2, **kw)


PATHFINDER = {"name": "pathfinder", "resolution": 32, "difficulty": "easy"}


@pytest.mark.parametrize(
    "backbone",
    [
        {"preset": "stl-nano"},
        {"preset": "stl-nano", "stage_params": {"flatten": [{"pe_size": s} for s in (16, 8, 4, 2)]}},
    ],
)
def test_ablation_backbone_builds_and_runs(backbone):
    from attnbench.ablation import build_for_dataset

    model = build_for_dataset("flatten", {}, PATHFINDER, backbone)
    x = model.example_input(2)
    assert model(x).shape == (2, 2)
