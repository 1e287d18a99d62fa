"""Vanilla global multi-head self-attention (ViT, Dosovitskiy et al., ICLR 2021) over all H·W tokens.

Through ``F.scaled_dot_product_attention`` with scale head_dim^-0.5. ``analytic_flops`` equals the
fvcore count exactly (tolerance 0): three dense products and the two attention products.

Peers (docs/peers.md): timm's ViT ``Attention`` and Linear + SDPA + Linear; ours / fastest peer
1.01-1.06 forward, 1.00-1.03 forward+backward over BiFormer-T's stage shapes and 28²
(CPU, 1 thread, fp32, batch 4, quiet machine, results/peers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, phase, register_mechanism


@register_mechanism("vanilla")
class VanillaAttention(AttentionMechanism):
    """Global multi-head self-attention.

    Args:
        dim: channels C.
        num_heads: attention heads.
        qkv_bias: bias in the q/k/v projection (ViT and Swin use one).
    """

    display_name = "Global"
    color = "#000000"
    marker = "o"
    bibtex = (
        "@inproceedings{vaswani2017attention,\n  title = {Attention Is All You Need},\n  author = {Vaswani, "
        "Ashish and Shazeer, Noam and Parmar, Niki and Uszkoreit, Jakob and Jones, Llion and Gomez, Aidan N. "
        "and Kaiser, {\\L}ukasz and Polosukhin, Illia},\n  booktitle = {NeurIPS},\n  year = {2017}\n}"
    )

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads)
        self.qkv_bias = qkv_bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        with phase("projections"):
            qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, HW, head_dim)
        with phase("attention"):
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, head_dim)
        with phase("projections"):
            return self.proj(out.transpose(1, 2).reshape(B, H, W, C))

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's softmax weights over all H·W keys, per head (scale head_dim^-0.5); no regions."""
        self._check_query(x, query)
        _, H, W, _ = x.shape
        r, c = query
        qkv = self.qkv(x).view(H * W, 3, self.num_heads, self.head_dim)
        q, k = qkv[r * W + c, 0], qkv[:, 1]  # (heads, d), (HW, heads, d)
        scores = torch.einsum("md,nmd->mn", q, k) * self.head_dim**-0.5  # (heads, HW)
        weights = scores.softmax(dim=-1).view(self.num_heads, H, W)
        return AttentionMap(query, weights, note="softmax weights over all H·W keys")

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: projections 4·N·C², attention 2·N²·C (QKᵀ and AV)."""
        N, C = H * W, self.dim
        return {"qkv_proj": 3 * N * C * C, "attention": 2 * N * N * C, "out_proj": N * C * C}
