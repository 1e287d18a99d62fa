"""count_flops: the fvcore (MAC) convention, our extra handles, and no silent undercount."""

import torch
import torch.nn.functional as F
from torch import nn

import attnbench


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


def test_mode_restored_after_counting():
    m = nn.Linear(2, 2).train()
    attnbench.count_flops(m, torch.randn(1, 2))
    assert m.training
