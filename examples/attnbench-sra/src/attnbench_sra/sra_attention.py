"""Spatial-reduction attention (SRA), PVT (Wang et al., ICCV 2021), as an attnbench plugin.

A worked example of a mechanism that is not in the zoo. It is the attention of PVT v1's blocks
(``Attention`` in the released ``classification/pvt.py``): every one of the H·W queries attends to
keys and values computed from a spatially reduced copy of the map.

- ``q = Linear(C -> C)(x)`` on all N = H·W tokens;
- reduction: ``Conv2d(C, C, kernel = stride = sr_ratio)`` on the map, then ``LayerNorm(C)``
  (eps 1e-5, torch's default, as released); ``kv = Linear(C -> 2C)`` on the Nr = ⌊H/r⌋·⌊W/r⌋ reduced
  tokens (order k | v). With ``sr_ratio = 1`` there is no conv and no norm: plain global attention;
- multi-head attention with scale head_dim^-0.5, then ``Linear(C -> C)``.

Default ``sr_ratio = 8``: PVT stage 1 (56x56 tokens at 224x224 input, C = 64) reduces to 7x7 = 49
keys per query; stages 2-4 use 4, 2, 1. Like the released code, a side that is not a multiple of
``sr_ratio`` is floored by the strided conv: the last H mod r rows and W mod r columns are queries
but never keys. A map smaller than ``sr_ratio`` on either side cannot be reduced and is refused by
``check_input``. ``qkv_bias = True`` as in every released PVT
model (the class default there is False).

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0): the q, kv and output
projections, the reduction conv (Nr·C·C·r² MACs), LayerNorm at fvcore's 5 MACs per element, and the
two attention products N·Nr·C each.

Use it in a study with ``plugins: [sra_attention.py]`` (a path relative to the study file), check it
with ``attnbench check examples/sra_attention.py``; ``examples/attnbench-sra/`` ships the same file
as an installable package.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMechanism, check_param, register_mechanism


@register_mechanism("sra")
class SpatialReductionAttention(AttentionMechanism):
    """Spatial-reduction attention of PVT v1: keys and values from a strided-conv-reduced map.

    Args:
        dim: channels C.
        num_heads: attention heads (PVT-Tiny: 1, 2, 5, 8 by stage).
        sr_ratio: reduction per side r; keys/values come from a ⌊H/r⌋ x ⌊W/r⌋ map
            (PVT: 8, 4, 2, 1 by stage). 1 is global attention.
        qkv_bias: bias in the q and kv projections.
    """

    def __init__(self, dim: int, num_heads: int, *, sr_ratio: int = 8, qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads)
        check_param(sr_ratio >= 1, "sr_ratio", sr_ratio, "an int >= 1 (1 = no reduction)")
        self.sr_ratio = sr_ratio
        self.qkv_bias = qkv_bias
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def check_input(self, H: int, W: int) -> None:
        r = self.sr_ratio
        if H < r or W < r:
            raise ValueError(
                f"sra: a {H}x{W} map is smaller than sr_ratio = {r} on a side, so nothing is left to "
                f"attend to; use maps of at least {r}x{r} or sr_ratio <= {min(H, W)}"
            )

    def reduced_size(self, H: int, W: int) -> tuple[int, int]:
        """Side lengths of the key/value map: the strided conv floors."""
        return H // self.sr_ratio, W // self.sr_ratio

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q(x).view(B, H * W, h, d).transpose(1, 2)  # (B, h, N, d)
        if self.sr_ratio > 1:
            reduced = self.sr(x.permute(0, 3, 1, 2))  # (B, C, H/r, W/r)
            src = self.norm(reduced.flatten(2).transpose(1, 2))  # (B, Nr, C)
        else:
            src = x.reshape(B, H * W, C)  # (B, N, C)
        kv = self.kv(src).view(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)  # (2, B, h, Nr, d)
        k, v = kv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: N = H·W queries, Nr reduced keys, r = sr_ratio."""
        C, r, N = self.dim, self.sr_ratio, H * W
        Hr, Wr = self.reduced_size(H, W)
        Nr = Hr * Wr if r > 1 else N
        return {
            "q_proj": N * C * C,
            "sr_conv": Nr * C * C * r * r if r > 1 else 0,
            "sr_norm": 5 * Nr * C if r > 1 else 0,
            "kv_proj": 2 * Nr * C * C,
            "attention": 2 * N * Nr * C,
            "out_proj": N * C * C,
        }
