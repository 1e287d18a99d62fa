"""Axial attention (Axial-DeepLab, Wang et al., ECCV 2020; CCNet family) and its parallel stripe form
(CSWin Transformer, Dong et al., CVPR 2022).

``mode="sequential"`` (default): multi-head attention along each row, then along each column of
the row step's output. Each step has its own q/k/v projection, ``qkv_row`` and ``qkv_col`` (as the
height- and width-axis layers of Axial-DeepLab each have their own); one output projection
``proj`` follows the column step. Axial-DeepLab's position-sensitive terms (learned relative
encodings on q, k and v) are not included: this is the plain axial attention of the family.

``mode="parallel"``: one q/k/v projection ``qkv``; the first num_heads/2 heads attend within
horizontal stripes (``stripe`` whole rows), the other half within vertical stripes (``stripe``
whole columns); the two halves are concatenated and projected by ``proj``. ``stripe=1`` is pure
axial attention; ``stripe > 1`` is CSWin's cross-shaped window attention without its LePE
positional term.

``stripe`` applies to both modes (in sequential mode the row step attends within horizontal
stripes and the column step within vertical ones). H and W must be multiples of ``stripe``:
``check_input`` raises ``ValueError`` otherwise (no padding, as in CSWin's classification models).
Scale head_dim^-0.5 everywhere.

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0): the projections and, per
query, ``stripe·W`` (rows) or ``stripe·H`` (columns) keys times the channels of the heads involved,
for QKᵀ and AV.

Peers (docs/peers.md): SDPA over rows then columns with the same projections; ours / yardstick
0.98-1.04 forward, 0.98-1.07 forward+backward over BiFormer-T's stage shapes, 28² and 112²
(CPU, 1 thread, fp32, batch 4, quiet machine, results/peers).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, Region, check_param, phase, register_mechanism

__all__ = ["AxialAttention", "stripe_attention"]


def stripe_attention(qkv: Tensor, axis: Literal["row", "col"], stripe: int) -> Tensor:
    """Multi-head attention within stripes of ``stripe`` whole rows or whole columns.

    SDPA reads q, k and v as strided views of the projections (batch·stripes as its batch, heads as
    its heads); the only copies are those a view cannot express (a column step's transpose, and the
    output back into channels-last).

    Args:
        qkv: (B, H, W, 3, heads, d) projections, any strides; scale d^-0.5.
        axis: "row": a stripe is ``stripe`` consecutive rows (horizontal); "col": ``stripe``
            consecutive columns (vertical).
        stripe: stripe width; must divide H (rows) or W (columns).

    Returns:
        (B, H, W, heads·d).
    """
    if axis == "col":  # columns as rows: a transposed view
        return stripe_attention(qkv.transpose(1, 2), "row", stripe).transpose(1, 2)
    B, H, W, _, m, d = qkv.shape
    q, k, v = qkv.reshape(B * H // stripe, stripe * W, 3, m, d).permute(2, 0, 3, 1, 4)  # (B·H/s, m, s·W, d)
    out = F.scaled_dot_product_attention(q, k, v)  # (B·H/s, m, s·W, d)
    return out.transpose(1, 2).reshape(B, H, W, m * d)


@register_mechanism("axial")
class AxialAttention(AttentionMechanism):
    """Axial (row then column) or parallel row/column stripe multi-head self-attention.

    Args:
        dim: channels C.
        num_heads: attention heads; even in parallel mode (half per direction).
        mode: "sequential" (rows, then columns; Axial-DeepLab) or "parallel" (half the heads on rows,
            half on columns; CSWin).
        stripe: stripe width in rows/columns (1 = pure axial; CSWin-T: 1, 2, 7, 7 by stage).
        qkv_bias: bias in the q/k/v projections.
    """

    display_name = "Axial"
    color = "#56B4E9"
    marker = "v"
    bibtex = (
        "@article{ho2019axial,\n  title = {Axial Attention in Multidimensional Transformers},\n  author = "
        "{Ho, Jonathan and Kalchbrenner, Nal and Weissenborn, Dirk and Salimans, Tim},\n  journal = {arXiv "
        "preprint arXiv:1912.12180},\n  year = {2019}\n}"
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mode: Literal["sequential", "parallel"] = "sequential",
        stripe: int = 1,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(mode in ("sequential", "parallel"), "mode", mode, "'sequential' or 'parallel'")
        check_param(stripe >= 1, "stripe", stripe, "an int >= 1")
        if mode == "parallel":
            check_param(
                num_heads % 2 == 0,
                "num_heads",
                num_heads,
                "an even number in mode='parallel' (half the heads per direction)",
            )
        self.mode, self.stripe, self.qkv_bias = mode, stripe, qkv_bias
        if mode == "sequential":
            self.qkv_row = nn.Linear(dim, 3 * dim, bias=qkv_bias)
            self.qkv_col = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def check_input(self, H: int, W: int) -> None:
        s = self.stripe
        if H % s or W % s:
            raise ValueError(
                f"axial: H x W = {H}x{W} is not divisible by stripe = {s}; "
                "choose a stripe dividing both (stripe=1 always works)"
            )

    def _heads(self, qkv: Tensor, heads: int) -> Tensor:
        # (B, H, W, 3·heads·d) -> (B, H, W, 3, heads, d), a view
        return qkv.unflatten(-1, (3, heads, self.head_dim))

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        m, s = self.num_heads, self.stripe
        if self.mode == "sequential":
            with phase("rows"):
                x = stripe_attention(self._heads(self.qkv_row(x), m), "row", s)  # (B, H, W, C)
            with phase("columns"):
                # the transpose before the projection copies C channels, not the 3·C of its output
                xt = x.transpose(1, 2)  # (B, W, H, C)
                x = stripe_attention(self._heads(self.qkv_col(xt), m), "row", s).transpose(1, 2)
            with phase("projections"):
                return self.proj(x)
        B, H, W, C = x.shape
        with phase("projections"):
            qkv = self.qkv(x).view(B, H, W, 3, 2, m // 2, self.head_dim)  # channel halves: rows | columns
        with phase("rows"):
            rows = stripe_attention(qkv[..., 0, :, :], "row", s)  # (B, H, W, C/2)
        with phase("columns"):
            cols = stripe_attention(qkv[..., 1, :, :], "col", s)  # (B, H, W, C/2)
        with phase("projections"):
            return self.proj(torch.cat([rows, cols], dim=-1))

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """Where the query's output comes from, per head, as forward combines the two directions.

        ``mode="parallel"``: heads 1 .. m/2 are the row heads, their softmax over the query's row
        stripe; heads m/2 + 1 .. m the column heads, over its column stripe (forward concatenates the
        two halves in this order). ``mode="sequential"``: for column head h, the flow through both
        steps, Σ_i a_col[h, i] · a_row[g, i, j] over the keys i of the query's column stripe and the
        row-stripe keys j of each i, averaged over the row heads g (the column step's v mixes every
        row head's output, so a row head is not tied to a column head); it reaches every row and
        sums to 1. Regions: the query's "row stripe" and "column stripe".
        """
        self._check_query(x, query)
        _, H, W, _ = x.shape
        r, c = query
        m, s, d = self.num_heads, self.stripe, self.head_dim
        top, left = r - r % s, c - c % s  # the query's row stripe and column stripe
        regions = (Region("row stripe", top, 0, s, W), Region("column stripe", 0, left, H, s))
        scale = d**-0.5
        if self.mode == "parallel":
            qkv = self.qkv(x)[0].view(H, W, 3, 2, m // 2, d)  # channel halves: rows | columns
            q_row, q_col = qkv[r, c, 0]  # each (m/2, d)
            k_row = qkv[top : top + s, :, 1, 0].reshape(s * W, m // 2, d)
            k_col = qkv[:, left : left + s, 1, 1].reshape(H * s, m // 2, d)
            a_row = torch.einsum("md,nmd->mn", q_row * scale, k_row).softmax(-1)  # (m/2, s·W)
            a_col = torch.einsum("md,nmd->mn", q_col * scale, k_col).softmax(-1)  # (m/2, H·s)
            weights = x.new_zeros(m, H, W)
            weights[: m // 2, top : top + s] = a_row.view(-1, s, W)
            weights[m // 2 :, :, left : left + s] = a_col.view(-1, H, s)
            note = f"heads 1-{m // 2}: softmax over the row stripe; {m // 2 + 1}-{m}: over the column stripe"
            return AttentionMap(query, weights, regions=regions, note=note)
        T = H // s  # row stripes
        qkv_row = self._heads(self.qkv_row(x), m)  # (1, H, W, 3, m, d)
        rows = stripe_attention(qkv_row, "row", s)  # (1, H, W, C): the row step's output
        qkv_row, qkv_col = qkv_row[0], self._heads(self.qkv_col(rows), m)[0]  # each (H, W, 3, m, d)
        # the column step's keys i: the column stripe, ordered (row stripe t, row in t, column)
        k_col = qkv_col[:, left : left + s, 1].reshape(T, s * s, m, d)
        a_col = torch.einsum("md,tqmd->mtq", qkv_col[r, c, 0] * scale, k_col)
        a_col = a_col.flatten(1).softmax(-1).view(m, T, s * s)  # (m, T, s²)
        # the row step at each of those keys i, over its row stripe j
        q_i = qkv_row[:, left : left + s, 0].reshape(T, s * s, m, d)
        k_j = qkv_row[:, :, 1].reshape(T, s * W, m, d)
        a_row = torch.einsum("tqmd,tjmd->tmqj", q_i * scale, k_j).softmax(-1)  # (T, m, s², s·W)
        flow = torch.einsum("htq,tgqj->htj", a_col, a_row) / m  # (m, T, s·W), mean over row heads g
        note = "rows then columns: each column head's flow through the row step, mean over row heads"
        return AttentionMap(query, flow.reshape(m, H, W), regions=regions, note=note)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: projections, then QKᵀ and AV over s·W keys (rows) and s·H keys (columns)."""
        N, C, s = H * W, self.dim, self.stripe
        if self.mode == "sequential":
            return {
                "qkv_row_proj": 3 * N * C * C,
                "row_attention": 2 * N * s * W * C,
                "qkv_col_proj": 3 * N * C * C,
                "col_attention": 2 * N * s * H * C,
                "out_proj": N * C * C,
            }
        return {
            "qkv_proj": 3 * N * C * C,
            "row_attention": 2 * N * s * W * (C // 2),
            "col_attention": 2 * N * s * H * (C // 2),
            "out_proj": N * C * C,
        }
