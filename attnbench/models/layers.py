"""Layers of the seed models: BiFormer's global attention with LePE, the MLP, DeBiFormer's conv-MLP."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMechanism, check_param

__all__ = ["AttentionLePE", "ConvMlp", "Mlp"]


class AttentionLePE(AttentionMechanism):
    """Global multi-head attention plus a depthwise-conv positional term (BiFormer's stage 4).

    As the released ``AttentionLePE`` of BiFormer (``models/_common.py``, ``topk=-2``): q|k|v from
    one Linear without bias, scale head_dim^-0.5, and ``LePE = DWConv(k x k)`` applied to the
    attention's *input* (not to v, unlike BRA's LCE), added before the output Linear ``proj``.
    Not registered as a mechanism: it is part of the models, not of the comparison.

    Args:
        dim: channels C.
        num_heads: heads (the released models keep the default 8 at every width).
        side_dwconv: kernel of the LePE conv (5 in all models; 0 disables it).
        qkv_bias: bias in the q|k|v Linear (False in the released models).
    """

    def __init__(self, dim: int, num_heads: int, *, side_dwconv: int = 5, qkv_bias: bool = False) -> None:
        super().__init__(dim, num_heads)
        check_param(side_dwconv == 0 or side_dwconv % 2 == 1, "side_dwconv", side_dwconv, "0 or odd")
        self.side_dwconv, self.qkv_bias = side_dwconv, qkv_bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.lepe = (
            nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv else None
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, HW, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, head_dim)
        out = out.transpose(1, 2).reshape(B, H, W, C)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
        return self.proj(out)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: projections 4·N·C², attention 2·N²·C, LePE N·C·k²."""
        N, C = H * W, self.dim
        return {
            "qkv_proj": 3 * N * C * C,
            "attention": 2 * N * N * C,
            "lepe": N * C * self.side_dwconv**2,
            "out_proj": N * C * C,
        }


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` on channels-last tensors.

    Args:
        dim: input and output channels.
        hidden_dim: channels of the hidden layer (``mlp_ratio * dim``).
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvMlp(nn.Module):
    """DeBiFormer's conv-MLP on (B, C, H, W) maps: 1x1 conv, ``h + DWConv3x3(h)``, GELU, 1x1 conv.

    Module names are the released ``TransformerMLPWithConv``'s (``linear1.0``, ``dwc``, ``linear2.0``).

    Args:
        dim: input and output channels.
        ratio: hidden channels over ``dim``.
    """

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        hidden = dim * ratio
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x)  # (B, ratio·C, H, W)
        return self.linear2(self.act(h + self.dwc(h)))
