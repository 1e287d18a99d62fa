"""NAT / DiNAT: both backends against dense attention under NATTEN's neighborhood mask, FLOPs, errors."""

import logging

import pytest
import torch

import attnbench
from mechanisms.neighborhood import natten_unavailable, neighborhood_index

# (H, W, kernel_size, dilation): square and odd non-square maps, every kernel with and without
# dilation where kernel_size * dilation fits, plus kernel * dilation == map side exactly.
CASES = [
    (H, W, k, d) for H, W in ((14, 14), (13, 17)) for k in (3, 5, 7) for d in (1, 2) if k * d <= min(H, W)
] + [(12, 9, 3, 3)]


def allowed_1d(length: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """(L, L) bool: may query i attend to key j along one axis, by NATTEN's definition.

    Written as NATTEN describes it: query i belongs to dilation group i % d and sits at i // d on
    that group's sub-grid; its window is centred on it, the centre clamped so the window stays
    inside the sub-grid; key j qualifies when it is in the same group and within k // 2 of the
    centre.
    """
    r = kernel_size // 2
    out = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        group = i % dilation
        sub_len = len(range(group, length, dilation))
        centre = min(max(i // dilation, r), sub_len - 1 - r)
        for j in range(length):
            out[i, j] = j % dilation == group and abs(j // dilation - centre) <= r
    return out


def neighborhood_mask(H: int, W: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """(H·W, H·W) bool mask, tokens row-major."""
    rows = allowed_1d(H, kernel_size, dilation)
    cols = allowed_1d(W, kernel_size, dilation)
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(H * W, H * W)


def dense_reference(m, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The module's projections around plain masked softmax attention over all H·W tokens."""
    B, H, W, C = x.shape
    h, d = m.num_heads, C // m.num_heads
    q, k, v = (t.reshape(B, H * W, h, d).transpose(1, 2) for t in m.qkv(x).chunk(3, dim=-1))  # (B, h, N, d)
    logits = (q @ k.transpose(-2, -1)) * d**-0.5  # (B, h, N, N)
    logits = logits.masked_fill(~mask, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, H, W, C)
    return m.proj(out)


def build(kernel_size: int, dilation: int, backend: str, dim: int = 32, heads: int = 2):
    torch.manual_seed(0)
    if dilation == 1:
        return attnbench.build_mechanism("neighborhood", dim, heads, kernel_size=kernel_size, backend=backend)
    return attnbench.build_mechanism(
        "dilated", dim, heads, kernel_size=kernel_size, dilation=dilation, backend=backend
    )


def test_reference_mask_sees_exactly_k_squared_keys_including_itself():
    for H, W, k, d in CASES:
        mask = neighborhood_mask(H, W, k, d)
        assert (mask.sum(-1) == k * k).all()
        assert mask.diagonal().all()


def test_reference_mask_shifts_inward_at_corners():
    # 1-D, L = 9, k = 5: query 0 sees 0..4 (not -2..2), query 8 sees 4..8, query 4 is centred
    a = allowed_1d(9, 5, 1)
    assert a[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert a[8].nonzero().flatten().tolist() == [4, 5, 6, 7, 8]
    assert a[4].nonzero().flatten().tolist() == [2, 3, 4, 5, 6]
    # dilation 2 on L = 9: group 1 is {1, 3, 5, 7}; k = 3 keeps query 7 on 3, 5, 7
    b = allowed_1d(9, 3, 2)
    assert b[7].nonzero().flatten().tolist() == [3, 5, 7]
    assert b[0].nonzero().flatten().tolist() == [0, 2, 4]


@pytest.mark.parametrize("H, W, k, d", CASES)
def test_window_index_matches_reference_mask(H, W, k, d):
    idx = neighborhood_index(H, W, k, d)  # (N, k²)
    from_index = torch.zeros(H * W, H * W, dtype=torch.bool)
    from_index.scatter_(1, idx, True)
    assert torch.equal(from_index, neighborhood_mask(H, W, k, d))


@pytest.mark.parametrize("H, W, k, d", CASES)
def test_natten_forward_matches_dense(H, W, k, d):
    m = build(k, d, "natten")
    x = torch.randn(2, H, W, 32)
    with torch.no_grad():
        out = m(x)
        ref = dense_reference(m, x, neighborhood_mask(H, W, k, d))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "tiled"])
@pytest.mark.parametrize("H, W, k, d", CASES + [(30, 23, 7, 3), (33, 40, 5, 1)])
def test_torch_backends_forward_and_backward_match_dense(H, W, k, d, backend):
    m = build(k, d, backend)
    x = torch.randn(2, H, W, 32, requires_grad=True)
    params = [x, m.qkv.weight, m.qkv.bias, m.proj.weight]
    out = m(x)
    grads = torch.autograd.grad(out.square().sum(), params)
    ref = dense_reference(m, x, neighborhood_mask(H, W, k, d))
    ref_grads = torch.autograd.grad(ref.square().sum(), params)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["natten", "tiled", "torch"])
def test_window_as_large_as_the_map_is_global_attention(backend):
    # NATTEN hands this case to its dense attention operator; both backends must agree with it
    m = build(7, 1, backend)
    x = torch.randn(1, 7, 7, 32)
    with torch.no_grad():
        out = m(x)
        ref = dense_reference(m, x, torch.ones(49, 49, dtype=torch.bool))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def chosen(caplog, m, x) -> str:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mechanisms.neighborhood"):
        m(x)
    return " ".join(r.getMessage() for r in caplog.records)


def test_auto_picks_tiled_on_cpu_and_explicit_natten_runs_inference(caplog):
    m = build(3, 1, "auto")
    x = torch.randn(1, 14, 14, 32)
    with torch.no_grad():
        msg = chosen(caplog, m, x)
        assert "backend 'tiled'" in msg and "unfused FlexAttention" in msg
    msg = chosen(caplog, m, x)  # grad enabled, parameters require grad
    assert "backend 'tiled'" in msg and "gradient" in msg
    m.backend = "natten"
    with torch.no_grad():
        assert "backend 'natten'" in chosen(caplog, m, x)
    m.requires_grad_(False)
    assert "backend 'natten'" in chosen(caplog, m, x)  # frozen weights, plain input: nothing to train


def test_explicit_natten_refused_where_natten_has_no_kernel(caplog):
    # FlexAttention (NATTEN's CPU path) wants a power-of-two head_dim; 48 / 2 heads = 24
    m = build(3, 2, "natten", dim=48, heads=2)
    x = torch.randn(1, 14, 14, 48)
    with torch.no_grad(), pytest.raises(RuntimeError, match="head_dim=24"):
        m(x)


def test_explicit_natten_refuses_cpu_training():
    m = build(3, 1, "natten")
    with pytest.raises(RuntimeError, match="use 'tiled' or 'auto'"):
        m(torch.randn(1, 14, 14, 32))


@pytest.mark.parametrize("backend", ["auto", "natten", "tiled", "torch"])
@pytest.mark.parametrize(
    "name, params", [("neighborhood", {}), ("dilated", {}), ("dilated", {"dilation": 3})]
)
def test_flop_count_equals_analytic(name, params, backend):
    m = attnbench.build_mechanism(name, 32, 2, backend=backend, **params)
    H, W = 22, 25
    report = attnbench.count_flops(m, torch.randn(1, H, W, 32))
    analytic = m.analytic_flops(H, W)
    N, C, k2 = H * W, 32, 49
    assert analytic == {"qkv_proj": 3 * N * C * C, "attention": 2 * N * k2 * C, "out_proj": N * C * C}
    assert report.uncounted == {}
    assert report.total == sum(analytic.values())
    assert report.by_operator == {
        "linear": analytic["qkv_proj"] + analytic["out_proj"],
        "matmul": analytic["attention"],
    }
    assert report.torch_total == report.total  # FlopCounterMode cross-check, halved to MACs


@pytest.mark.parametrize("kernel_size", [0, 1, 2, 4, -3])
def test_bad_kernel_size(kernel_size):
    for name in ("neighborhood", "dilated"):
        with pytest.raises(ValueError, match="'kernel_size'.*odd int >= 3"):
            attnbench.build_mechanism(name, 32, 2, kernel_size=kernel_size)


def test_bad_dilation_and_backend():
    with pytest.raises(ValueError, match="'dilation' = 0.*>= 1"):
        attnbench.build_mechanism("dilated", 32, 2, dilation=0)
    with pytest.raises(ValueError, match="'backend'.*'natten'"):
        attnbench.build_mechanism("neighborhood", 32, 2, backend="cuda")
    with pytest.raises(ValueError, match="unknown parameter 'dilation'"):
        attnbench.build_mechanism("neighborhood", 32, 2, dilation=2)  # that is the 'dilated' mechanism


def test_map_smaller_than_kernel_times_dilation():
    m = attnbench.build_mechanism("dilated", 32, 2, kernel_size=7, dilation=2)
    m.check_input(14, 20)
    with pytest.raises(ValueError, match=r"kernel_size \* dilation = 7 \* 2 = 14 exceeds the 13x20 map") as e:
        m.check_input(13, 20)
    assert "kernel_size <= 5 or dilation <= 1" in str(e.value)
    with pytest.raises(ValueError, match="exceeds the 13x20 map"):
        m(torch.randn(1, 13, 20, 32))
    with pytest.raises(ValueError, match="min"):
        attnbench.build_mechanism("neighborhood", 32, 2, kernel_size=7)(torch.randn(1, 6, 30, 32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("H, W, k, d", [(14, 14, 7, 1), (13, 17, 5, 2)])
def test_natten_cuda_forward_and_backward_match_torch_backend(H, W, k, d):
    m = build(k, d, "natten").cuda()
    x = torch.randn(2, H, W, 32, device="cuda", requires_grad=True)
    q = torch.randn(2, H, W, 2, 16, device="cuda", requires_grad=True)
    why = natten_unavailable(q, q, q)
    if why is not None:
        pytest.skip(why)
    out = m(x)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    m.backend = "torch"
    ref = m(x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)
