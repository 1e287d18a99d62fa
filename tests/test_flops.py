"""count_flops: the fvcore (MAC) convention, our extra handles, and no silent undercount."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnbench
import attnbench.flops


class Cdist(nn.Module):
    def forward(self, x):
        return torch.cdist(x, x)


class Sdpa(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_uncounted_names_the_op_no_handler_covers():
    report = attnbench.count_flops(Cdist(), torch.randn(1, 8, 4))
    assert "aten::cdist" in report.uncounted
    assert report.total == 0


def test_sdpa_is_counted_in_macs_and_cross_checked():
    q = torch.randn(2, 3, 10, 8)
    k = torch.randn(2, 3, 12, 8)
    v = torch.randn(2, 3, 12, 16)
    report = attnbench.count_flops(Sdpa(), q, k, v)
    expected = 2 * 3 * 10 * 12 * (8 + 16)  # QK^T and AV, one MAC each
    assert report.total == expected
    assert report.torch_total == expected  # FlopCounterMode's 2 FLOPs/MAC halved
    assert not report.uncounted


def test_linear_and_depthwise_conv_follow_fvcore():
    m = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.Conv2d(8, 16, 1))
    report = attnbench.count_flops(m, torch.randn(1, 8, 10, 10))
    assert report.total == 10 * 10 * 8 * 25 + 10 * 10 * 8 * 16
    assert report.by_module["0"] == 10 * 10 * 8 * 25


def test_elementwise_ops_are_free_by_convention_not_uncounted():
    m = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Softmax(-1))
    report = attnbench.count_flops(m, torch.randn(3, 4))
    assert report.total == 3 * 4 * 4
    assert not report.uncounted
    assert "aten::gelu" in report.convention_zero


def test_tensor_creation_is_free_not_uncounted():
    class Creates(nn.Module):
        def forward(self, x):
            c = x.shape[-1]
            eye = torch.eye(c, dtype=x.dtype)
            mask = torch.triu(torch.ones(c, c)) + torch.zeros(c) + torch.full((c,), 2.0)
            return x @ eye + mask[0] + torch.arange(c).to(x.dtype)

    report = attnbench.count_flops(Creates(), torch.randn(1, 4, 4, 8))
    assert report.total == 4 * 4 * 8 * 8 and not report.uncounted, report.uncounted
    assert {"aten::eye", "aten::triu"} <= set(report.convention_zero)  # (ones, zeros: traced as constants)


def test_mode_restored_after_counting():
    m = nn.Linear(2, 2).train()
    attnbench.count_flops(m, torch.randn(1, 2))
    assert m.training


class Fn(nn.Module):
    """Wraps one function of the input, to count it alone."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _count(fn, *inputs):
    return attnbench.count_flops(Fn(fn), *inputs)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: F.avg_pool2d(x, 2),
        lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
        lambda x: F.adaptive_max_pool2d(x, 3),
        lambda x: F.avg_pool2d(x, 8, ceil_mode=True),
        lambda x: F.pad(x, (1, 2, 3, 4)),
        lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"),
        lambda x: torch.roll(x, (3, 3), (2, 3)),
        lambda x: x.cumsum(-1),
    ],
    ids=[
        "avg_pool2d",
        "max_pool2d",
        "adaptive_max_pool2d",
        "avg_pool2d_ceil",
        "pad",
        "pad_reflect",
        "roll",
        "cumsum",
    ],
)
def test_pooling_padding_roll_cumsum_are_free_and_listed(fn):
    report = _count(fn, torch.randn(1, 4, 10, 10))
    assert report.total == 0 and not report.uncounted
    assert sum(report.convention_zero.values()) >= 1, report.convention_zero


def test_free_ops_are_listed_with_call_counts():
    def fn(x):
        x = torch.roll(x, 1, 2) + torch.roll(x, -1, 3)
        return F.avg_pool2d(x, 2) + F.max_pool2d(x, 2) + F.avg_pool2d(x.cumsum(-1), 2)

    zero = _count(fn, torch.randn(1, 4, 8, 8)).convention_zero
    assert zero["aten::roll"] == 2 and zero["aten::avg_pool2d"] == 2 and zero["aten::max_pool2d"] == 1
    assert zero["aten::cumsum"] == 1


def test_adaptive_avg_pool2d_keeps_fvcores_price():
    report = _count(lambda x: F.adaptive_avg_pool2d(x, 7), torch.randn(1, 4, 28, 28))
    assert report.by_operator == {"adaptive_avg_pool2d": 4 * 28 * 28}  # one per input element


@pytest.mark.parametrize(
    ("shape", "mode", "taps"),
    [
        ((1, 4, 6, 6), "nearest", 1),
        ((1, 4, 6, 6), "nearest-exact", 1),
        ((1, 4, 6, 6), "bilinear", 4),
        ((1, 4, 6, 6), "bicubic", 16),
        ((1, 4, 6), "linear", 2),
        ((1, 4, 6), "nearest", 1),
        ((1, 4, 3, 6, 6), "trilinear", 8),
    ],
)
def test_interpolation_costs_its_taps_per_output_element(shape, mode, taps):
    x = torch.randn(*shape)
    out = F.interpolate(x, scale_factor=2, mode=mode)
    report = _count(lambda t: F.interpolate(t, scale_factor=2, mode=mode), x)
    assert report.total == taps * out.numel() and not report.uncounted


def test_antialiased_interpolation_is_priced_as_its_mode():
    x = torch.randn(1, 4, 12, 12)
    for mode, taps in (("bilinear", 4), ("bicubic", 16)):
        report = _count(lambda t, m=mode: F.interpolate(t, size=(5, 5), mode=m, antialias=True), x)
        assert report.total == taps * 4 * 5 * 5 and not report.uncounted


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("bhnd,bhne->bhde", [(1, 2, 787, 16), (1, 2, 787, 16)]),  # linear attention's K^T V
        ("bhnd,bhde->bhne", [(1, 2, 787, 16), (1, 2, 16, 16)]),
        ("bqd,bkd->bqk", [(2, 5, 3), (2, 1, 3)]),  # a broadcast key
        ("ab,bc->c", [(3, 4), (4, 5)]),  # a summed alone first: additions, free
        ("ab,bc,cd->ad", [(3, 4), (4, 5), (5, 6)]),  # left to right, as torch contracts
        ("...ij,...jk->...ik", [(2, 3, 4), (1, 4, 5)]),
        ("bn,bn->b", [(3, 4), (3, 4)]),
        ("ab,ab->ab", [(3, 4), (3, 4)]),  # element-wise: free like mul
        ("ij", [(3, 4)]),
    ],
)
def test_einsum_is_exact(equation, shapes):
    report = _count(lambda *xs: torch.einsum(equation, *xs), *(torch.randn(*s) for s in shapes))
    assert report.total == report.torch_total  # the batched products torch runs, halved
    assert report.total == attnbench.flops.einsum_macs(equation, [list(s) for s in shapes])
    assert not report.uncounted


def test_einsum_count_fixes_fvcores_rounding():
    from fvcore.nn import FlopCountAnalysis

    k = torch.randn(1, 2, 787, 16)
    exact = 2 * 787 * 16 * 16
    model = Fn(lambda k, v: torch.einsum("bhnd,bhne->bhde", k, v))
    assert attnbench.count_flops(model, k, k).total == exact
    fvcore = FlopCountAnalysis(model, (k, k))
    fvcore.unsupported_ops_warnings(False)
    assert fvcore.total() != exact  # numpy's cost printed to four digits: 402,950


def test_einsum_follows_an_explicit_contraction_path():
    # path: pairs of positions, the result appended last (opt_einsum's order, as torch takes it)
    shapes = [[3, 40], [40, 5], [5, 60]]
    assert attnbench.flops.einsum_macs("ij,jk,kl->il", shapes) == 3 * 40 * 5 + 3 * 5 * 60
    assert attnbench.flops.einsum_macs("ij,jk,kl->il", shapes, path=[1, 2, 0, 1]) == 40 * 5 * 60 + 3 * 40 * 60
