"""BRA: backends against the released algorithm, against plain dense references, FLOPs by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

import attnbench
from mechanisms.bra import BACKENDS, to_regions

SHAPES = [
    # (H, W, C, heads, n_win, topk, auto_pad)
    (28, 28, 32, 2, 7, 4, False),
    (14, 21, 64, 4, 7, 1, False),
    (16, 16, 32, 1, 4, 16, False),
    (13, 17, 32, 2, 4, 3, True),  # non-divisible, padded
    (30, 25, 64, 2, 8, 5, True),
]


def make(H, W, C, heads, n_win, topk, auto_pad, backend="reference", seed=0):
    torch.manual_seed(seed)
    return attnbench.build_mechanism(
        "bra", C, heads, n_win=n_win, topk=topk, auto_pad=auto_pad, backend=backend
    )


FAST = [b for b in BACKENDS if b != "reference"]
NO_CPU_BACKWARD = {"flex"}  # FlexAttention has no backward on CPU


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", SHAPES)
def test_backend_matches_reference(shape, backend):
    H, W, C = shape[:3]
    m = make(*shape)
    grad = backend not in NO_CPU_BACKWARD
    x = torch.randn(2, H, W, C, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        ref = m(x)
        m.attn.backend = backend
        out = m(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if backend in NO_CPU_BACKWARD:
        return
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x, retain_graph=True)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["bmm", "sdpa", "masked"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"qk_dim": 32},  # q/k narrower than v: two head dims
        {"side_dwconv": 0},  # no LCE: the value map output carries no gradient
        {"side_dwconv": 3, "auto_pad": True},
    ],
)
def test_backend_parameter_gradients_match_reference(backend, kwargs):
    """Every parameter's gradient, not only the input's, as the hand-written backward of bmm must give."""
    torch.manual_seed(0)
    params = {"n_win": 4, "topk": 3, **kwargs}
    ref = attnbench.build_mechanism("bra", 64, 2, backend="reference", **params)
    fast = attnbench.build_mechanism("bra", 64, 2, backend=backend, **params)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 15, 13, 64) if params.get("auto_pad") else torch.randn(2, 16, 12, 64)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(x_ref).square().sum().backward()
    fast(x_fast).square().sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_bmm_output_without_gradient_to_the_attention():
    """Only the LCE path carries a gradient: bmm's backward gets no gradient for the attention output."""
    torch.manual_seed(0)
    m = attnbench.build_mechanism("bra", 32, 2, n_win=4, topk=2, backend="bmm")
    qkv = torch.randn(1, 8, 8, 96, requires_grad=True)
    idx = torch.randint(0, 16, (1, 16, 2))
    _, v = m.attn(qkv, idx)
    (g,) = torch.autograd.grad(v.sum(), qkv)
    assert g[..., :64].abs().max() == 0 and torch.all(g[..., 64:] == 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_flex_with_regions_padded_to_kernel_tiles(monkeypatch, shape):
    """Regions padded to whole tiles (as on GPU when M is not a multiple of the tile): forward equals
    the reference, on the CPU's unfused path, which evaluates the mask_mod on every pair."""
    from mechanisms.bra import flex

    monkeypatch.setattr(flex, "CPU_TILE", 64)
    H, W, C = shape[:3]
    m = make(*shape)
    x = torch.randn(2, H, W, C)
    with torch.no_grad():
        ref = m(x)
        m.attn.backend = "flex"
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_flex_block_mask_full_blocks_unless_padded():
    from mechanisms.bra.flex import block_mask

    idx = torch.tensor([[[1, 2], [0, 3], [3, 1], [2, 0]]])  # (B=1, R=4, k=2)
    exact = block_mask(idx, 64, 64)  # regions of whole tiles: every routed block is full
    assert exact.kv_num_blocks.sum() == 0 and exact.full_kv_num_blocks.tolist() == [[[2, 2, 2, 2]]]
    padded = block_mask(idx, 49, 64)  # 49 tokens padded to 64: the same blocks, partial
    assert padded.full_kv_num_blocks.sum() == 0 and padded.kv_num_blocks.tolist() == [[[2, 2, 2, 2]]]
    dense = padded.to_dense()[0, 0]  # (R, R) blocks visited
    assert dense.tolist() == [[0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0]]


def low_precision_errors(m, x, backend, dtype):
    """Max |error| of ``backend`` and of ``reference``, both run in ``dtype``, against fp32 reference:
    outputs and input gradients, as (fast_out, ref_out, fast_grad, ref_grad)."""
    x = x.detach().requires_grad_(True)
    exact = m.float()(x)
    (g_exact,) = torch.autograd.grad(exact.square().sum(), x)
    errors = {}
    for name in ("reference", backend):
        m.attn.backend = name
        m_t, x_t = m.to(dtype), x.detach().to(dtype).requires_grad_(True)
        out = m_t(x_t)
        (g,) = torch.autograd.grad(out.float().square().sum(), x_t)
        errors[name] = ((out.float() - exact).abs().max(), (g.float() - g_exact).abs().max())
        m.float()
    return (*errors[backend], *errors["reference"])


@pytest.mark.parametrize("backend", ["bmm", "sdpa", "masked"])
def test_bf16_on_cpu_no_less_accurate_than_the_released_algorithm(backend):
    """Stated bf16 tolerance: a backend's error against the fp32 reference is at most twice the
    error of the released algorithm run in bf16 (plus 1e-3), outputs and input gradients. A fixed
    tolerance does not work: bf16 projections alone move outputs by ~0.1 here, for every backend."""
    m = make(28, 28, 64, 2, 7, 4, False)
    out_err, grad_err, ref_out_err, ref_grad_err = low_precision_errors(
        m, torch.randn(2, 28, 28, 64), backend, torch.bfloat16
    )
    assert out_err <= 2 * ref_out_err + 1e-3, (out_err, ref_out_err)
    assert grad_err <= 2 * ref_grad_err + 1e-3, (grad_err, ref_grad_err)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", SHAPES + [(64, 64, 64, 2, 4, 4, False), (56, 56, 64, 2, 7, 1, False)])
def test_backend_matches_reference_gpu(shape, backend, dtype):
    """On CUDA: every backend, forward and backward; fp32 within 1e-4 of the reference, bf16 no less
    accurate than the released algorithm in bf16 (see the CPU bf16 test)."""
    H, W, C = shape[:3]
    m = make(*shape).cuda()
    x = torch.randn(2, H, W, C, device="cuda")
    if dtype == torch.bfloat16:
        out_err, grad_err, ref_out_err, ref_grad_err = low_precision_errors(m, x, backend, dtype)
        assert out_err <= 2 * ref_out_err + 1e-3, (out_err, ref_out_err)
        assert grad_err <= 2 * ref_grad_err + 1e-3, (grad_err, ref_grad_err)
        return
    x.requires_grad_(True)
    ref = m(x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    m.attn.backend = backend
    out = m(x)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-3)


def dense_bra(m, x, allowed):
    """Plain dense attention over all tokens with a boolean (N, N) mask per batch, + LCE, + wo."""
    B, H, W, C = x.shape
    qk, h = m.qk_dim, m.num_heads
    q, k, v = m.qkv(x).split([qk, qk, C], dim=-1)
    lepe = m.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    q = q.reshape(B, H * W, h, qk // h).transpose(1, 2)
    k = k.reshape(B, H * W, h, qk // h).transpose(1, 2)
    v = v.reshape(B, H * W, h, C // h).transpose(1, 2)
    logits = (q @ k.transpose(-2, -1)) * qk**-0.5  # the quirk: whole qk dim
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, H, W, C)
    return m.wo(out + lepe)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_topk_all_regions_is_dense_attention_plus_lce(backend):
    m = make(16, 16, 32, 2, 4, 16, False, backend=backend)
    x = torch.randn(2, 16, 16, 32)
    allowed = torch.ones(2, 256, 256, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(m(x), dense_bra(m, x, allowed), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("H,W,S,k", [(28, 28, 7, 4), (12, 16, 4, 2), (14, 14, 7, 1)])
def test_matches_masked_dense_over_routed_regions(backend, H, W, S, k):
    """Independent reference: routing recomputed by hand, then a token mask over the routed regions."""
    C = 32
    m = make(H, W, C, 2, S, k, False, backend=backend)
    x = torch.randn(2, H, W, C)
    with torch.no_grad():
        q, kk, _ = m.qkv(x).split([C, C, C], dim=-1)
        # region of each token, row-major over the S x S grid
        region = (torch.arange(H)[:, None] // (H // S)) * S + torch.arange(W)[None, :] // (W // S)
        region = region.flatten()  # (N,)
        onehot = F.one_hot(region, S * S).float()  # (N, S²)
        counts = onehot.sum(0)
        q_r = (onehot.T @ q.reshape(2, H * W, C)) / counts[:, None]  # region means (B, S², C)
        k_r = (onehot.T @ kk.reshape(2, H * W, C)) / counts[:, None]
        idx = torch.topk(q_r @ k_r.transpose(1, 2), k, dim=-1).indices  # (B, S², k)
        routed = torch.zeros(2, S * S, S * S, dtype=torch.bool).scatter_(2, idx, True)
        allowed = routed[:, region][:, :, region]  # (B, N, N): key region routed from query region
        expected = dense_bra(m, x, allowed)
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)


def test_auto_pad_pads_input_before_projection():
    """Padded tokens carry the qkv bias (the released behaviour): equal to padding by hand and cropping."""
    m = make(13, 17, 32, 2, 4, 3, True)
    x = torch.randn(1, 13, 17, 32)
    xp = F.pad(x, (0, 0, 0, 3, 0, 3))  # to 16 x 20
    m_nopad = make(16, 20, 32, 2, 4, 3, False)
    m_nopad.load_state_dict(m.state_dict())
    torch.testing.assert_close(m(x), m_nopad(xp)[:, :13, :17], rtol=1e-6, atol=1e-6)


def test_count_flops_equals_hand_derivation():
    """MACs of a BRA layer derived by hand from its shapes, batch 1."""
    H = W = 28
    C, S, k = 64, 7, 4
    m = make(H, W, C, 2, S, k, False)
    N = H * W
    M = N // S**2  # 16 tokens per region
    hand = (
        N * C * 3 * C  # qkv projection
        + S**2 * S**2 * C  # routing affinity (S² x C) @ (C x S²)
        + N * (k * M) * C * 2  # QK^T and AV over k*M keys per query
        + N * C * 5 * 5  # depthwise 5x5 LCE
        + N * C * C  # output projection
    )
    for backend in BACKENDS:
        m.attn.backend = backend
        report = attnbench.count_flops(m, torch.randn(1, H, W, C))
        assert report.total == hand
        assert report.torch_total == hand
        assert not report.uncounted
    assert sum(m.analytic_flops(H, W).values()) == hand
    assert report.by_module["attn"] == N * k * M * C * 2
    assert report.by_module["router"] == S**4 * C


def test_analytic_flops_use_padded_size():
    m = make(13, 17, 32, 2, 4, 3, True)
    assert m.analytic_flops(13, 17) == m.analytic_flops(16, 20)
    assert m.analytic_flops(13, 17)["attention"] == 16 * 20 * 3 * (16 * 20 // 16) * 64


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"topk": 50}, "topk"),  # > n_win^2 = 49
        ({"topk": 0}, "topk"),
        ({"n_win": 0}, "n_win"),
        ({"side_dwconv": 4}, "side_dwconv"),
        ({"qk_dim": 33}, "qk_dim"),
        ({"backend": "cuda_magic"}, "backend"),
        ({"auto_pad": "yes"}, "auto_pad"),
        ({"n_wins": 7}, "n_win"),  # unknown, closest suggested
    ],
)
def test_bad_parameters_name_themselves(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as err:
        attnbench.build_mechanism("bra", 64, 2, **kwargs)
    if "topk" in kwargs and kwargs["topk"] == 50:
        assert "49" in str(err.value)


def test_non_divisible_without_auto_pad_is_a_clear_error():
    m = make(28, 28, 32, 2, 8, 4, False)
    with pytest.raises(ValueError, match="auto_pad"):
        m(torch.randn(1, 28, 28, 32))


def test_to_regions_layout():
    x = torch.arange(16.0).view(1, 4, 4, 1)
    r = to_regions(x, 2)  # 2x2 regions of 2x2 tokens, row-major
    assert r[0, 1, :, 0].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert math.prod(r.shape) == 16


@pytest.mark.parametrize(
    "H,C,topk,expected",
    [
        *[(56, 64, 1, "bmm"), (28, 128, 4, "bmm"), (14, 256, 16, "masked")],  # BiFormer-T stages 1-3
        (112, 64, 4, "sdpa"),  # 256 tokens per region x 4: bmm's score blocks would be large
    ],
)
def test_auto_dispatch_on_cpu_is_logged(caplog, H, C, topk, expected):
    m = attnbench.build_mechanism("bra", C, C // 32, n_win=7, topk=topk)
    with caplog.at_level("DEBUG", logger="mechanisms.bra"):
        m(torch.randn(1, H, H, C))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"backend {expected!r} chosen" in messages
    assert "'flex' skipped: FlexAttention has no backward on CPU" in messages


def test_auto_takes_sdpa_for_inference_where_it_trains_with_bmm(caplog):
    m = attnbench.build_mechanism("bra", 128, 4, n_win=7, topk=4)
    with caplog.at_level("DEBUG", logger="mechanisms.bra"), torch.no_grad():
        m(torch.randn(1, 28, 28, 128))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "backend 'sdpa' chosen" in messages and "'bmm' skipped: no gradient needed" in messages
