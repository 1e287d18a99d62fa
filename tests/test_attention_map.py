"""attention_map (issue 17): every mechanism says where a query looks, and the map is its real attention.

For each registered mechanism on a tiny map: the map's shape and conventions (weights (heads, H, W),
finite, non-negative, summing to 1 where ``normalized``; regions and points on the map), then the
strong check: the query's output rebuilt from the drawn weights and the module's own values
(``proj(Σ_j w_hj · v_hj)`` plus the term the map says it leaves out) equals ``forward``'s.
"""

import pytest
import torch
import torch.nn.functional as F

import attnbench
from attnbench import AttentionMap, AttentionMechanism, register_mechanism

C, HEADS = 16, 2

# name -> (kwargs, H, W, heads): small settings under which every step of the mechanism is exercised
# (swin: a shifted window that wraps; bra and dbra: several routed regions; maxvit: several groups)
CASES = {
    "vanilla": ({}, 8, 8, HEADS),
    "kvt": ({"topk": 10}, 8, 8, HEADS),
    "swin": ({"window_size": 4}, 8, 8, HEADS),
    "neighborhood": ({"kernel_size": 3}, 8, 8, HEADS),
    "dilated": ({"kernel_size": 3, "dilation": 2}, 8, 8, HEADS),
    "bra": ({"n_win": 2, "topk": 2, "side_dwconv": 3}, 8, 8, HEADS),
    "axial": ({"mode": "parallel"}, 8, 8, HEADS),
    "deformable": ({"q_size": 8, "offset_kernel": 3}, 8, 8, HEADS),
    "dbra": (
        {"n_win": 2, "topk": 2, "offset_stride": 2, "offset_kernel": 3, "q_size": 8, "mlp_ratio": 1},
        8,
        8,
        HEADS,
    ),
    "agent": ({"agent_num": 4, "bias_size": 8}, 8, 8, HEADS),
    "flatten": ({"pe_size": 8, "kernel_size": 3}, 8, 8, HEADS),
    "maxvit": ({"window_size": 4}, 8, 8, HEADS),
}

# more settings, checked for shape and conventions only: padding, other modes
EXTRA = [
    ("swin", {"window_size": 4}, 10, 9, HEADS),
    ("bra", {"n_win": 2, "topk": 1, "auto_pad": True}, 9, 7, HEADS),
    ("maxvit", {"window_size": 3, "grid_size": 4}, 9, 10, HEADS),
    ("axial", {"mode": "sequential", "stripe": 2}, 8, 6, HEADS),
    ("deformable", {"q_size": 8, "n_groups": 2, "offset_stride": 2}, 8, 7, HEADS),
    ("dbra", {"n_win": 2, "topk": 1, "offset_stride": 3, "offset_kernel": 3, "q_size": 8}, 9, 8, HEADS),
]


def build(name: str, kwargs: dict, H: int, W: int, heads: int) -> AttentionMechanism:
    torch.manual_seed(0)
    m = attnbench.build_mechanism(name, C, heads, **kwargs).eval()
    try:
        m.check_input(H, W)
    except ValueError as exc:
        pytest.skip(f"{name} does not accept a {H}x{W} map: {exc}")
    # learned biases start at zero in some mechanisms; random ones make the checks see them
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if "bias" in pname.split(".")[-1] or "rpe" in pname or "positional" in pname or "scale" in pname:
                p.normal_(0, 0.3)
    return m


def corners_and_centre(H: int, W: int) -> list[tuple[int, int]]:
    return [(0, 0), (H // 2, W // 2), (H - 1, W - 1)]


def check_conventions(m: AttentionMechanism, x: torch.Tensor, query: tuple[int, int]) -> AttentionMap:
    _, H, W, _ = x.shape
    with torch.no_grad():
        a = m.attention_map(x, query)
    assert isinstance(a, AttentionMap)
    assert a.query == query
    assert a.weights.shape == (m.num_heads, H, W)
    assert torch.isfinite(a.weights).all()
    assert (a.weights >= 0).all()
    if a.normalized:
        torch.testing.assert_close(a.weights.sum((1, 2)), torch.ones(m.num_heads), rtol=0, atol=1e-5)
    for reg in a.regions:
        assert reg.height >= 1 and reg.width >= 1, reg
        assert 0 <= reg.top and reg.top + reg.height <= H, reg
        assert 0 <= reg.left and reg.left + reg.width <= W, reg
    if a.points is not None:
        assert a.points.shape[0] == m.num_heads and a.points.shape[2] == 2
        assert a.point_weights is not None and a.point_weights.shape == a.points.shape[:2]
        assert torch.isfinite(a.points).all() and (a.point_weights >= 0).all()
        r0, r1, c0, c1 = points_bounds(m, H, W)
        assert (a.points[..., 0] >= r0).all() and (a.points[..., 0] <= r1).all()
        assert (a.points[..., 1] >= c0).all() and (a.points[..., 1] <= c1).all()
    assert a.note
    return a


def points_bounds(m: AttentionMechanism, H: int, W: int) -> tuple[float, float, float, float]:
    """(lowest row, highest row, lowest col, highest col) a point may take. DAT's offsets reach up to
    offset_range_factor key-grid cells past the outer reference points (grid_sample reads zeros
    there); DBRA's agents lie on its padded map; others stay on the map."""
    if m.name == "deformable":
        Hk, Wk = m.key_grid_size(H, W)
        sr, sc = ((m.offset_range_factor + 1) / k * (n - 1) / 2 for k, n in ((Hk, H), (Wk, W)))
        return -sr, H - 1 + sr, -sc, W - 1 + sc
    if m.name == "dbra":
        Hp, Wp = m.padded_size(H, W)
        return 0, Hp - 1, 0, Wp - 1
    return 0, H - 1, 0, W - 1


@pytest.mark.parametrize("name", attnbench.available_mechanisms())
def test_every_mechanism_draws_its_map(name):
    kwargs, H, W, heads = CASES.get(name, ({}, 14, 14, HEADS))
    cls = attnbench.get_mechanism(name)
    if not cls.has_attention_map() and not cls.__module__.startswith("mechanisms."):
        pytest.skip(f"{name} comes from {cls.__module__}, outside this repository, and has no attention_map")
    m = build(name, kwargs, H, W, heads)
    assert type(m).has_attention_map(), f"{name} has no attention_map"
    x = torch.randn(1, H, W, C)
    for query in corners_and_centre(H, W):
        check_conventions(m, x, query)


@pytest.mark.parametrize("name,kwargs,H,W,heads", EXTRA, ids=[f"{c[0]}-{c[2]}x{c[3]}" for c in EXTRA])
def test_padded_and_other_modes(name, kwargs, H, W, heads):
    m = build(name, kwargs, H, W, heads)
    x = torch.randn(1, H, W, C)
    for query in corners_and_centre(H, W):
        check_conventions(m, x, query)


def per_head(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Σ_j w_hj · v_hj for weights (m, H, W) and a value map v (H, W, C): (C,), heads concatenated."""
    m, H, W = weights.shape
    return torch.einsum("mhw,hwmd->md", weights, v.reshape(H, W, m, -1)).reshape(-1)


def values(m: AttentionMechanism, x: torch.Tensor, layer=None) -> torch.Tensor:
    """The v channels of a Linear(C -> 3C) q | k | v projection of x: (H, W, C)."""
    return (layer or m.qkv)(x)[0, ..., 2 * C :]


def dwc(conv: torch.nn.Conv2d, v: torch.Tensor, query: tuple[int, int]) -> torch.Tensor:
    """A depthwise conv over the value map v (H, W, c) read at the query: (c,)."""
    return conv(v.permute(2, 0, 1)[None])[0, :, query[0], query[1]]


def rebuilt_output(
    m: AttentionMechanism, x: torch.Tensor, a: AttentionMap
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the query's output rebuilt from the map, forward's output at the query), both (C,)."""
    r, c = a.query
    name, w = m.name, a.weights
    if name in ("vanilla", "kvt", "swin", "neighborhood", "dilated"):
        return m.proj(per_head(w, values(m, x))), m(x)[0, r, c]
    if name == "axial" and m.mode == "parallel":  # heads: row half then column half, as concatenated
        return m.proj(per_head(w, values(m, x))), m(x)[0, r, c]
    if name == "axial":  # one head: the flow through the row step, then the column step's v projection
        assert m.num_heads == 1
        row_mix = per_head(w, values(m, x, m.qkv_row))
        v_col = F.linear(row_mix, m.qkv_col.weight[2 * C :], m.qkv_col.bias[2 * C :])
        return m.proj(v_col), m(x)[0, r, c]
    if name == "bra":  # + the LCE, a depthwise conv on v that the map leaves out
        v = m.qkv(x)[0, ..., 2 * m.qk_dim :]
        return m.wo(per_head(w, v) + dwc(m.lepe, v, a.query)), m(x)[0, r, c]
    if name == "agent":  # + the depthwise conv on v
        v = values(m, x)
        return m.proj(per_head(w, v) + dwc(m.dwc, v, a.query)), m(x)[0, r, c]
    if name == "flatten":  # + the depthwise conv on each head's v (one conv shared by the heads)
        v = values(m, x)
        H, W = v.shape[:2]
        rank = m.dwc(v.reshape(H, W, m.num_heads, -1).permute(2, 3, 0, 1))[:, :, r, c].reshape(-1)
        return m.proj(per_head(w, v) + rank), m(x)[0, r, c]
    if name == "maxvit":  # the block step alone: what the map draws
        return m.block_attn.proj(per_head(w, values(m.block_attn, x))), m.block_attn(x)[0, r, c]
    if name == "deformable":
        # keys are x sampled bilinearly, then proj_v: Σ_j p_j v_j = Σ_n w_n proj_v(x)_n + b_v (1 - Σ_n w_n),
        # w the point weights splatted onto the grid (grid_sample reads zeros outside the map)
        v = m.proj_v(x.permute(0, 3, 1, 2))[0].permute(1, 2, 0)  # (H, W, C)
        missing = (1 - w.sum((1, 2)))[:, None] * m.proj_v.bias.view(m.num_heads, -1)  # (m, d)
        out = per_head(w, v) + missing.reshape(-1)
        return F.conv2d(out.view(1, C, 1, 1), m.proj_out.weight, m.proj_out.bias).view(C), m(x)[0, r, c]
    if name == "dbra":  # the agents' values are refined tokens, not input positions: rebuild from points
        captured = {}
        handle = m.proj_v.register_forward_hook(lambda mod, args, out: captured.setdefault("v", out))
        want = m(x)[0, r, c]
        handle.remove()
        v = captured["v"][0].reshape(m.num_heads, m.head_dim, -1)  # (m, d, Ns)
        out = torch.einsum("mp,mdp->md", a.point_weights, v).reshape(1, C, 1, 1)
        return F.conv2d(out, m.proj_out.weight, m.proj_out.bias).view(C), want
    raise AssertionError(f"no rebuild rule for {name}")


RECONSTRUCTED = [
    *[(name, *CASES[name]) for name in CASES],
    ("axial", {"mode": "sequential"}, 8, 8, 1),
    ("axial", {"mode": "parallel", "stripe": 2}, 8, 6, 4),
    ("swin", {"window_size": 4, "shift_size": 0}, 8, 8, HEADS),
    ("dilated", {"kernel_size": 3, "dilation": 3}, 10, 9, HEADS),
    *[("bra", {"n_win": 2, "topk": 3, "backend": b}, 8, 8, HEADS) for b in ("reference", "bmm", "masked")],
    ("agent", {"agent_num": 9, "bias_size": 6}, 7, 8, HEADS),
]


@pytest.mark.parametrize(
    "name,kwargs,H,W,heads", RECONSTRUCTED, ids=[f"{c[0]}-{i}" for i, c in enumerate(RECONSTRUCTED)]
)
def test_map_rebuilds_the_query_output(name, kwargs, H, W, heads):
    """The drawn weights are the mechanism's attention: they give back forward's output at the query."""
    m = build(name, kwargs, H, W, heads)
    x = torch.randn(1, H, W, C)
    with torch.no_grad():
        for query in corners_and_centre(H, W):
            got, want = rebuilt_output(m, x, m.attention_map(x, query))
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=f"{name} at {query}")


def test_a_mechanism_without_the_hook_says_how_to_add_it(temp_registry):
    @register_mechanism("no_map_for_test")
    class NoMap(AttentionMechanism):
        def forward(self, x):
            return x

    assert not NoMap.has_attention_map()
    with pytest.raises(NotImplementedError, match=r"has no attention_map\(x, query\).*attnbench maps"):
        NoMap(C, HEADS).attention_map(torch.randn(1, 4, 4, C), (0, 0))


def test_every_shipped_mechanism_has_the_hook():
    shipped = [
        n
        for n in attnbench.available_mechanisms()
        if attnbench.get_mechanism(n).__module__.startswith("mechanisms.")
    ]
    assert len(shipped) >= 12
    assert [n for n in shipped if not attnbench.get_mechanism(n).has_attention_map()] == []


def test_query_off_the_map_is_a_value_error():
    m = build("vanilla", {}, 4, 4, HEADS)
    with pytest.raises(ValueError, match="query"):
        m.attention_map(torch.randn(1, 4, 4, C), (4, 0))
