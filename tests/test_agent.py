"""Agent attention: against the released AgentAttention's forward, re-written here on (B, N, C) tokens."""

import pytest
import torch
import torch.nn.functional as F

import attnbench

BIASES = ("an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias")


def released_agent_attention(w, x, hw, heads, agent_num, window):
    """Agent-Swin's ``AgentAttention.forward`` with the weights ``w`` (its state dict), x (B, N, C).

    On the map the biases were built for (``window``) it is the classification module; on any other
    map the row and column biases are summed and interpolated bilinearly to the map, as the
    released detection and segmentation backbones do (their agent grid equals the pool grid here,
    so their second interpolation, over the agent axis, is the identity and is left out).
    """
    B, N, C = x.shape
    h, wd = hw
    d = C // heads
    scale = d**-0.5
    side = int(agent_num**0.5)
    own_map = (h, wd) == (window, window)
    q, k, v = F.linear(x, w["qkv.weight"], w["qkv.bias"]).reshape(B, N, 3, C).permute(2, 0, 1, 3)
    agents = F.adaptive_avg_pool2d(q.reshape(B, h, wd, C).permute(0, 3, 1, 2), (side, side))
    agents = agents.reshape(B, C, agent_num).permute(0, 2, 1)  # (B, A, C)

    def split(t):  # (B, L, C) -> (B, heads, L, d)
        return t.reshape(B, t.shape[1], heads, d).permute(0, 2, 1, 3)

    q, k, v, agents = split(q), split(k), split(v), split(agents)

    table = F.interpolate(w["an_bias"], size=(h, wd), mode="bilinear").reshape(1, heads, agent_num, N)
    rows_cols = w["ah_bias"] + w["aw_bias"]  # (1, heads, A, s, s)
    if not own_map:
        rows_cols = F.interpolate(rows_cols[0], size=(h, wd), mode="bilinear")[None]
    to_tokens = table + rows_cols.reshape(1, heads, agent_num, N)
    agent_v = torch.softmax(agents * scale @ k.transpose(-2, -1) + to_tokens, dim=-1) @ v  # (B, m, A, d)

    table = F.interpolate(w["na_bias"], size=(h, wd), mode="bilinear").reshape(1, heads, agent_num, N)
    rows_cols = w["ha_bias"] + w["wa_bias"]  # (1, heads, s, s, A)
    if not own_map:
        rows_cols = F.interpolate(rows_cols[0].permute(0, 3, 1, 2), size=(h, wd), mode="bilinear")
        rows_cols = rows_cols.permute(0, 2, 3, 1)[None]
    to_agents = table.transpose(-2, -1) + rows_cols.reshape(1, heads, N, agent_num)
    out = torch.softmax(q * scale @ agents.transpose(-2, -1) + to_agents, dim=-1) @ agent_v  # (B, m, N, d)

    out = out.transpose(1, 2).reshape(B, N, C)
    v_map = v.transpose(1, 2).reshape(B, h, wd, C).permute(0, 3, 1, 2)
    local = F.conv2d(v_map, w["dwc.weight"], w["dwc.bias"], padding=1, groups=C)  # (B, C, h, w)
    out = out + local.flatten(2).transpose(1, 2)
    return F.linear(out, w["proj.weight"], w["proj.bias"])


def build(dim=32, heads=2, seed=0, **kw):
    torch.manual_seed(seed)
    m = attnbench.build_mechanism("agent", dim, heads, **kw)
    with torch.no_grad():  # biases well away from their 0.02 init, so a misplaced one shows
        for name in BIASES:
            getattr(m, name).normal_(0.0, 0.5)
    return m


def grads_of(params, inputs):
    return [p.grad.clone() for p in params] + [t.grad.clone() for t in inputs]


@pytest.mark.parametrize(
    "H,W,kw",
    [
        (14, 14, {}),  # defaults: 49 agents on the 14x14 map the biases were built for
        (7, 7, {"agent_num": 9, "bias_size": 7, "dim": 64, "heads": 4}),
        (10, 13, {"agent_num": 16}),  # another map: the biases are interpolated
        (5, 6, {"agent_num": 49, "bias_size": 8}),  # fewer tokens than agents
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
    ref = released_agent_attention(weights, tokens, (H, W), heads, m.agent_num, m.bias_size)
    (ref * probe.reshape(2, H * W, dim)).sum().backward()

    torch.testing.assert_close(out.reshape(2, H * W, dim), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.reshape(2, H * W, dim), tokens.grad, rtol=1e-5, atol=1e-5)
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, weights[name].grad, rtol=1e-5, atol=1e-5, msg=name)


def test_one_agent_per_token_is_two_dense_attentions():
    """With the pool grid equal to the map the agents are the queries themselves: agent attention is
    dense attention of q over the keys, then dense attention of q over q with those outputs as values."""
    m = build(agent_num=16, bias_size=4)
    with torch.no_grad():
        for name in BIASES:
            getattr(m, name).zero_()
    x = torch.randn(2, 4, 4, 32)
    q, k, v = m.qkv(x).reshape(2, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)  # each (B, m, N, d)
    scores = lambda a, b: (a @ b.transpose(-2, -1) * 16**-0.5).softmax(-1)  # noqa: E731
    out = scores(q, q) @ (scores(q, k) @ v)  # (B, m, N, d)
    out = out.transpose(1, 2).reshape(2, 4, 4, 32)
    v_map = v.transpose(1, 2).reshape(2, 4, 4, 32).permute(0, 3, 1, 2)
    out = m.proj(out + m.dwc(v_map).permute(0, 2, 3, 1))
    torch.testing.assert_close(m(x), out, rtol=1e-5, atol=1e-5)


def test_a_single_agent_gives_every_token_the_same_attention_output():
    m = build(agent_num=1)
    x = torch.randn(1, 6, 9, 32)
    with torch.no_grad():
        m.dwc.weight.zero_()
        m.dwc.bias.zero_()
        y = m(x)
    torch.testing.assert_close(y, y[:, :1, :1].expand_as(y), rtol=1e-5, atol=1e-6)


def test_row_and_column_biases_are_read_as_built_on_their_own_map():
    m = build(agent_num=9, bias_size=6)
    agent_bias, query_bias = m.position_biases(6, 6)
    an = F.interpolate(m.an_bias, size=(6, 6), mode="bilinear")  # (m, A, 6, 6)
    h, a, r, c = 1, 4, 2, 5  # head, agent, row, column
    expected = an[h, a, r, c] + m.ah_bias[0, h, a, r, 0] + m.aw_bias[0, h, a, 0, c]
    torch.testing.assert_close(agent_bias[0, h, a, r * 6 + c], expected)
    na = F.interpolate(m.na_bias, size=(6, 6), mode="bilinear")
    expected = na[h, a, r, c] + m.ha_bias[0, h, r, 0, a] + m.wa_bias[0, h, 0, c, a]
    torch.testing.assert_close(query_bias[0, h, r * 6 + c, a], expected)


def test_state_dict_keys_and_shapes_are_the_released_modules():
    # AgentAttention(dim=96, window_size=(14, 14), num_heads=3, agent_num=49) of agent_swin.py
    released = {
        "qkv.weight": (288, 96),
        "qkv.bias": (288,),
        "proj.weight": (96, 96),
        "proj.bias": (96,),
        "dwc.weight": (96, 1, 3, 3),
        "dwc.bias": (96,),
        "an_bias": (3, 49, 7, 7),
        "na_bias": (3, 49, 7, 7),
        "ah_bias": (1, 3, 49, 14, 1),
        "aw_bias": (1, 3, 49, 1, 14),
        "ha_bias": (1, 3, 14, 1, 49),
        "wa_bias": (1, 3, 1, 14, 49),
    }
    m = attnbench.build_mechanism("agent", 96, 3, agent_num=49, bias_size=14)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == released


@pytest.mark.parametrize("H,W,kw", [(56, 56, {}), (28, 28, {"agent_num": 9, "bias_size": 28}), (13, 30, {})])
def test_analytic_flops_equal_the_count(H, W, kw):
    m = attnbench.build_mechanism("agent", 64, 2, **kw)
    report = attnbench.count_flops(m, torch.randn(1, H, W, 64), cross_check=False)
    assert report.uncounted == {}
    assert report.total == sum(m.analytic_flops(H, W).values())


@pytest.mark.parametrize(
    "kw,match",
    [({"agent_num": 10}, "agent_num"), ({"agent_num": 0}, "agent_num"), ({"bias_size": 0}, "bias_size")],
)
def test_bad_parameters_name_themselves(kw, match):
    with pytest.raises(ValueError, match=match):
        attnbench.build_mechanism("agent", 32, 2, **kw)


PATHFINDER = {"name": "pathfinder", "resolution": 32, "difficulty": "easy"}


@pytest.mark.parametrize(
    "backbone",
    [
        {"preset": "stl-nano"},
        # Agent-Swin-T's per-stage agent counts scaled to the nano maps, biases built for each map
        {
            "preset": "stl-nano",
            "stage_params": {
                "agent": [{"agent_num": n, "bias_size": s} for n, s in ((9, 16), (16, 8), (4, 4), (4, 2))]
            },
        },
    ],
)
def test_ablation_backbone_builds_and_runs(backbone):
    from attnbench.ablation import build_for_dataset

    model = build_for_dataset("agent", {}, PATHFINDER, backbone)
    x = model.example_input(2)
    assert model(x).shape == (2, 2)
