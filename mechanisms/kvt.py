"""k-NN attention, KVT (Wang et al., "KVT: k-NN Attention for Boosting Vision Transformers", ECCV 2022).

The attention of the released code (``kNNAttention`` in ``KNN_VisionTransformer.py`` of
damo-cv/KVT): global multi-head self-attention over all N = H·W tokens in which each query keeps
only its ``topk`` highest scores:

- one ``Linear(C -> 3C)`` for q, k and v, heads interleaved as in ViT/DeiT;
- dense scores ``(q @ kᵀ) · head_dim^-0.5`` for every (query, key) pair, per head;
- per query row, the ``topk`` largest scores are kept and every other score is set to -inf
  (exactly ``topk`` survive, ties broken by ``torch.topk`` as in the released code), then softmax
  over the row and the product with v;
- output projection.

The masked softmax is computed as the softmax of the ``topk`` kept scores scattered into a zeroed
N x N score buffer: the same numbers (a -inf score contributes an exact zero) from two N x N
tensors where the released code builds five (scores, mask, -inf fill, masked scores, softmax);
about 1e-7 apart from it in float32, from the order of the softmax sum.

The selection is non-differentiable as in the released code: gradients reach the kept scores only.
``topk`` defaults to 100, the released ``kNNAttention`` default, used there with DeiT's 197 tokens
(about half the keys). A map of N <= ``topk`` tokens keeps all of them, which is dense attention;
the released code instead fails in ``torch.topk`` when ``topk`` > N. ``qkv_bias`` defaults to True,
as in every DeiT model the KVT repository builds (``kNNAttention`` alone defaults to False). DeiT's
class token is not part of the map here: every token is a patch.

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0). The convention: the masked
dense work is counted in full (both N²·C attention products, as the released code computes every
score and multiplies every masked zero), and the selection itself (``topk``, the softmax over
the kept scores and their scatter into the N x N weights) is free, like BRA's routing top-k and any
other selection, indexing or normalising exponential (docs/flops.md). So KVT costs exactly what
global attention costs at every ``topk``; its savings, if any, are in accuracy, not arithmetic. In
time it costs more: ``torch.topk`` over every N-long score row dominates on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, check_param, phase, register_mechanism

__all__ = ["KNNAttention", "knn_attention", "knn_weights"]


def knn_weights(scores: Tensor, topk: int) -> Tensor:
    """The attention weights of k-NN attention from scaled scores (..., N): the softmax of each row's
    ``topk`` largest scores, exact zeros elsewhere. Overwrites ``scores`` (its buffer is reused)."""
    kept, index = scores.topk(topk, dim=-1)  # each (..., k)
    # softmax over a row whose other scores are -inf is the softmax of the kept scores with exact
    # zeros elsewhere; topk's backward needs only the indices, so the score buffer is zeroed and
    # reused as the scatter's base (out of place: the FLOP counter has no entry for scatter_)
    return scores.zero_().scatter(-1, index, kept.softmax(dim=-1))


def knn_attention(q: Tensor, k: Tensor, v: Tensor, topk: int, scale: float) -> Tensor:
    """Softmax attention in which each query row keeps its ``topk`` largest scores.

    Args:
        q, k, v: (B, heads, N, d).
        topk: scores kept per query, 1 <= topk <= N.
        scale: multiplies q·kᵀ before the selection.

    Returns:
        (B, heads, N, d).
    """
    with phase("scores"):
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)  # (B, h, N, N)
    with phase("selection"):
        weights = knn_weights(scores, topk)  # (B, h, N, N)
    with phase("attention"):
        return weights @ v  # (B, h, N, d)


@register_mechanism("kvt")
class KNNAttention(AttentionMechanism):
    """Global multi-head self-attention keeping the top-k scores of each query.

    Args:
        dim: channels C.
        num_heads: attention heads (DeiT-T: 3, DeiT-S: 6).
        topk: keys kept per query (the released default, 100); min(topk, H·W) are kept on an
            H x W map.
        qkv_bias: bias in the q/k/v projection (True in the DeiT models KVT trains).
    """

    display_name = "KVT"
    color = "#AA4499"
    marker = ">"
    bibtex = (
        "@inproceedings{wang2022kvt,\n  title = {{KVT}: k-NN Attention for Boosting Vision Transformers},\n"
        "  author = {Wang, Pichao and Wang, Xue and Wang, Fan and Lin, Ming and Chang, Shuning and Li, Hao "
        "and Jin, Rong},\n  booktitle = {ECCV},\n  year = {2022}\n}"
    )
    param_symbols = {"topk": "k"}

    def __init__(self, dim: int, num_heads: int, *, topk: int = 100, qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads)
        check_param(topk >= 1, "topk", topk, "an int >= 1 (maps of at most topk tokens attend densely)")
        self.topk = topk
        self.qkv_bias = qkv_bias
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def kept(self, H: int, W: int) -> int:
        """Keys each query keeps on an H x W map."""
        return min(self.topk, H * W)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        with phase("projections"):
            qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, d)
        out = knn_attention(q, k, v, self.kept(H, W), self.scale)  # (B, h, N, d)
        with phase("projections"):
            return self.proj(out.transpose(1, 2).reshape(B, H, W, C))

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's weights over all H·W keys, per head: the softmax of its ``kept(H, W)`` highest
        scores, exact zeros on the keys it drops. No regions: the kept keys are wherever they are."""
        self._check_query(x, query)
        _, H, W, _ = x.shape
        r, c = query
        qkv = self.qkv(x).view(H * W, 3, self.num_heads, self.head_dim)
        q, k = qkv[r * W + c, 0], qkv[:, 1]  # (h, d), (N, h, d)
        scores = torch.einsum("md,nmd->mn", q, k).mul_(self.scale)  # (h, N)
        weights = knn_weights(scores, self.kept(H, W)).view(self.num_heads, H, W)
        return AttentionMap(query, weights, note=f"softmax over the {self.kept(H, W)} highest-scoring keys")

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: projections 4·N·C², dense attention 2·N²·C; the top-k selection is free."""
        N, C = H * W, self.dim
        return {"qkv_proj": 3 * N * C * C, "attention": 2 * N * N * C, "out_proj": N * C * C}
