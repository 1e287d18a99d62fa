"""MaxViT multi-axis attention: against timm's MaxViT modules, against dense masked attention, FLOPs."""

import pytest
import torch

import attnbench

NANO = {"preset": "stl-nano"}
PATHFINDER = {"name": "pathfinder", "resolution": 32, "difficulty": "easy"}


def timm_pair(C: int, heads: int, window: int, grid: int):
    """timm's block and grid ``PartitionAttentionCl`` in the configuration of its maxvit_*_tf models."""
    from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl

    cfg = MaxxVitTransformerCfg(
        dim_head=C // heads,
        head_first=False,
        rel_pos_type="bias_tf",
        norm_eps=1e-5,
        window_size=window,
        grid_size=grid,
    )
    return PartitionAttentionCl(C, "block", cfg), PartitionAttentionCl(C, "grid", cfg)


def load_into_timm(m, block, grid) -> dict[str, torch.nn.Parameter]:
    """Copy our weights into timm's modules; returns our parameter name -> timm's parameter."""
    pairs = {}
    for ours, theirs in ((m.block_attn, block.attn), (m.grid_attn, grid.attn)):
        prefix = "block_attn" if ours is m.block_attn else "grid_attn"
        for name, target in (
            ("qkv.weight", theirs.qkv.weight),
            ("qkv.bias", theirs.qkv.bias),
            ("proj.weight", theirs.proj.weight),
            ("proj.bias", theirs.proj.bias),
            ("relative_position_bias_table", theirs.rel_pos.relative_position_bias_table),
        ):
            pairs[f"{prefix}.{name}"] = target
    pairs["grid_norm.weight"], pairs["grid_norm.bias"] = grid.norm1.weight, grid.norm1.bias
    ours = dict(m.named_parameters())
    assert set(pairs) == set(ours)
    with torch.no_grad():
        for name, target in pairs.items():
            assert target.shape == ours[name].shape, name
            target.copy_(ours[name])
    return pairs


def timm_forward(block, grid, x: torch.Tensor) -> torch.Tensor:
    """The two attention sub-layers through timm's own partition-attend-reverse, FFNs left out."""
    y = block._partition_attn(x)
    return y + grid._partition_attn(grid.norm1(x + y))


@pytest.mark.parametrize(
    "H,W,C,heads,window,grid",
    [(14, 14, 64, 2, 7, 7), (28, 21, 32, 1, 7, 7), (16, 12, 48, 3, 4, 2), (12, 16, 32, 2, 2, 4)],
)
def test_matches_timm_outputs_and_gradients(H, W, C, heads, window, grid):
    m = attnbench.build_mechanism("maxvit", C, heads, window_size=window, grid_size=grid)
    with torch.no_grad():  # non-trivial bias tables and norm so that a wrong lookup or layout shows
        for p in m.parameters():
            if p.dim() != 2:
                p.normal_(std=0.5).add_(1.0 if p is m.grid_norm.weight else 0.0)
    block, grid_layer = timm_pair(C, heads, window, grid)
    pairs = load_into_timm(m, block, grid_layer)

    x = torch.randn(2, H, W, C, requires_grad=True)
    out, ref = m(x), timm_forward(block, grid_layer, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    weight = torch.randn(out.shape)
    ours = dict(m.named_parameters())
    names = list(pairs)
    got = torch.autograd.grad((out * weight).sum(), [x, *(ours[n] for n in names)])
    want = torch.autograd.grad((ref * weight).sum(), [x, *(pairs[n] for n in names)])
    for name, g, w in zip(["input", *names], got, want):
        # relative to the gradient's scale: a weight gradient sums ~10³ token terms of size ~1,
        # and timm sums them window by window, in another order (measured: <= 3e-7 of the max)
        err, scale = (g - w).abs().max().item(), w.abs().max().item()
        assert err <= 1e-5 * max(scale, 1.0), f"{name}: gradients differ by {err:.3g} (max {scale:.3g})"


def dense_step(attn, x: torch.Tensor) -> torch.Tensor:
    """One partition-attention step as plain attention over all padded tokens under a group mask.

    Written from MaxViT's definition, not from the module: a block group is a window of consecutive
    rows and columns, a grid group is the tokens at the same offset modulo the stride Hp / gh; the
    bias is looked up by (key - query) in the group's own coordinates; zero padding at bottom/right
    before q/k/v, crop after the output projection. An axis no longer than the size is one group.
    """
    B, H, W, C = x.shape
    s, h = attn.size, attn.num_heads
    gh, gw = min(H, s), min(W, s)
    Hp, Wp = -(-H // gh) * gh, -(-W // gw) * gw
    x = torch.cat([x, x.new_zeros(B, Hp - H, W, C)], dim=1)
    x = torch.cat([x, x.new_zeros(B, Hp, Wp - W, C)], dim=2)
    rows = torch.arange(Hp).repeat_interleave(Wp)  # (N,) row of each token, row-major
    cols = torch.arange(Wp).repeat(Hp)
    if attn.partition == "block":
        group = (rows // gh) * Wp + cols // gw
        pos_r, pos_c = rows % gh, cols % gw
    else:
        stride_r, stride_c = Hp // gh, Wp // gw
        group = (rows % stride_r) * Wp + cols % stride_c
        pos_r, pos_c = rows // stride_r, cols // stride_c
    allowed = group[:, None] == group[None, :]  # (N, N)
    d_r = (pos_r[None, :] - pos_r[:, None]).clamp(-(s - 1), s - 1) + s - 1  # key - query
    d_c = (pos_c[None, :] - pos_c[:, None]).clamp(-(s - 1), s - 1) + s - 1
    bias = attn.relative_position_bias_table[:, d_r, d_c]  # (heads, N, N)

    q, k, v = attn.qkv(x).reshape(B, Hp * Wp, 3, h, C // h).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
    logits = q @ k.transpose(-2, -1) * (C // h) ** -0.5 + bias
    out = (logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v).transpose(1, 2)
    return attn.proj(out.reshape(B, Hp, Wp, C))[:, :H, :W]


@pytest.mark.parametrize(
    "H,W,window,grid",
    [
        (14, 14, 7, 7),
        (17, 20, 7, 7),
        (5, 9, 7, 7),
        (6, 6, 7, 7),
        (16, 16, 7, 7),
        (13, 10, 4, 3),
        (8, 8, 4, 2),
    ],
)
def test_matches_dense_masked_attention_also_padded(H, W, window, grid):
    m = attnbench.build_mechanism("maxvit", 32, 2, window_size=window, grid_size=grid)
    with torch.no_grad():
        for attn in (m.block_attn, m.grid_attn):
            attn.relative_position_bias_table.normal_(std=1.0)
    x = torch.randn(2, H, W, 32)
    y = dense_step(m.block_attn, x)
    ref = y + dense_step(m.grid_attn, m.grid_norm(x + y))
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_grid_step_mixes_distant_tokens_and_block_step_does_not():
    m = attnbench.build_mechanism("maxvit", 32, 2).eval()
    x = torch.randn(1, 14, 14, 32, requires_grad=True)
    m.block_attn(x)[0, 0, 0].sum().backward()
    assert x.grad[0, 7:, :].abs().sum() == 0 and x.grad[0, :, 7:].abs().sum() == 0  # one 7x7 window
    x.grad = None
    m.grid_attn(x)[0, 0, 0].sum().backward()
    reached = x.grad[0].abs().sum(-1) > 0  # (14, 14): stride 2, the even rows and columns
    assert reached[::2, ::2].all() and not reached[1::2].any() and not reached[:, 1::2].any()


@pytest.mark.parametrize(
    "H,W,window,grid", [(14, 14, 7, 7), (56, 56, 7, 7), (17, 20, 7, 7), (5, 9, 7, 7), (8, 8, 4, 2)]
)
def test_analytic_flops_equal_counted(H, W, window, grid):
    m = attnbench.build_mechanism("maxvit", 64, 2, window_size=window, grid_size=grid)
    analytic = m.analytic_flops(H, W)
    report = attnbench.count_flops(m, torch.randn(1, H, W, 64), cross_check=False)
    assert report.uncounted == {}
    assert sum(analytic.values()) == report.total
    for step in ("block", "grid"):
        assert analytic[f"{step}_qkv_proj"] == report.by_module[f"{step}_attn.qkv"]
        assert analytic[f"{step}_out_proj"] == report.by_module[f"{step}_attn.proj"]
    assert analytic["grid_norm"] == report.by_module["grid_norm"]
    assert (
        analytic["block_attention"] + analytic["grid_attention"]
        == report.by_operator["scaled_dot_product_attention"]
    )


def test_flops_at_56_match_the_papers_form():
    """With P = G = 7 on a multiple of 7, each step costs 4NC² + 2·49·NC, like a Swin window."""
    N, C = 56 * 56, 64
    m = attnbench.build_mechanism("maxvit", C, 2)
    assert sum(m.analytic_flops(56, 56).values()) == 2 * (4 * N * C * C + 2 * 49 * N * C) + 5 * N * C


def test_state_dict_names_and_shapes():
    sd = attnbench.build_mechanism("maxvit", 32, 2, window_size=7, grid_size=4).state_dict()
    assert sd["block_attn.relative_position_bias_table"].shape == (2, 13, 13)
    assert sd["grid_attn.relative_position_bias_table"].shape == (2, 7, 7)
    assert {k.split(".")[0] for k in sd} == {"block_attn", "grid_norm", "grid_attn"}


def test_index_cached_in_inference_mode_still_trains():
    m = attnbench.build_mechanism("maxvit", 32, 2, window_size=5)
    x = torch.randn(1, 15, 15, 32)
    with torch.inference_mode():
        m(x)
    m(x).sum().backward()
    assert m.block_attn.relative_position_bias_table.grad is not None


def test_defaults_and_bad_parameters():
    m = attnbench.build_mechanism("maxvit", 64, 2)
    assert (m.window_size, m.grid_size, m.qkv_bias, m.grid_norm.eps) == (7, 7, True, 1e-5)
    assert attnbench.build_mechanism("maxvit", 64, 2, window_size=4).grid_size == 4
    for params, needle in (({"window_size": 0}, "window_size"), ({"grid_size": 0}, "grid_size")):
        with pytest.raises(ValueError, match=needle):
            attnbench.build_mechanism("maxvit", 32, 2, **params)


def test_ablation_backbone_builds_and_runs():
    """stl-nano's 16/8/4 maps with P = G = 7: stages 1-2 are padded, stage 3 is one group."""
    from attnbench.ablation import build_for_dataset

    model = build_for_dataset("maxvit", {}, PATHFINDER, NANO)
    x = model.example_input(2)
    assert model(x).shape == (2, 2)
