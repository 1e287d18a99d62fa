"""Multi-axis attention, MaxViT (Tu et al., "MaxViT: Multi-Axis Vision Transformer", ECCV 2022).

What the mechanism includes. A MaxViT block is MBConv, then a block-attention sub-layer
``x + BlockAttn(LN(x))`` and its FFN, then a grid-attention sub-layer ``x + GridAttn(LN(x))`` and
its FFN. This module is the attention part: the two attention sub-layers in that order, each with
its own q/k/v projection, output projection and relative position bias, and the pre-norm and
residual that connect them. On a (host-normalized) map ``x`` it returns their update to the
residual stream::

    y = BlockAttn(x)
    return y + GridAttn(LN(x + y))

so the host block's ``x + attn(LN(x))`` runs block attention, then grid attention on the block
step's residual output, as MaxViT does. Left out: the MBConv and the FFN after each attention
(the host block has one FFN after the mechanism, as for every mechanism). One difference follows
from the interface: the mechanism sees the host-normalized map, so the grid step normalizes
``LN(x) + y`` where MaxViT normalizes ``x + y``. The residual and LayerNorm between the two
attentions are kept because without them grid attention would see only the block step's projected
output, a different network from MaxViT's.

Each attention is timm's ``AttentionCl`` on a ``window_partition`` (block) or ``grid_partition``
(grid) with ``RelPosBiasTf``, in the configuration of timm's ``maxvit_*_tf`` models, which load
the paper's released (TensorFlow) weights:

- block attention: non-overlapping ``P x P`` windows; grid attention: a ``G x G`` grid of tokens
  ``H/G`` rows and ``W/G`` columns apart (dilated, global mixing), one group per offset;
- per group of n tokens, multi-head attention with scale head_dim^-0.5 plus a learned relative
  position bias: a table ``(heads, 2P-1, 2P-1)`` (``2G-1`` for the grid step) indexed by
  key - query offset in the group's own coordinates, initialised normal(std .02);
- q/k/v from one ``Linear(C -> 3C)`` with interleaved heads (``head_first=False``), output
  ``Linear(C -> C)``; the LayerNorm before grid attention has eps 1e-5 (the TF models').

``window_size`` and ``grid_size`` default to 7 (P = G = 7 in every MaxViT at 224², where stage
maps are multiples of 7). timm requires the map to be a multiple of the partition (it asserts);
here any map works, in the way this repository's Swin does it, so that default parameters run on
every map: along an axis no longer than the partition size, one group covers the whole axis; a
longer axis that the size does not divide is zero-padded at bottom/right before the step's q/k/v
projection (padded tokens carry the q/k/v bias and are not masked) and cropped after its output
projection. Each step pads for its own size. On maps that are multiples of P and G the output is
timm's (tests/test_maxvit.py checks it to 1e-5).

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0): per step, the projections
4·Np·C² on its padded map of Np tokens and the two attention products 2·Np·n·C (n tokens per
group), plus the LayerNorm at 5 MACs per element. The bias lookup is indexing, free; timm builds
the same bias with two one-hot einsums, which the counter would price at 39,494 MACs per head and
step for 7x7 groups, whatever the map.

Peers (docs/peers.md): timm's ``PartitionAttentionCl`` pair; ours / timm 0.95-1.09 forward, 0.96-1.04
forward+backward (CPU, 1 thread, fp32, batch 4, quiet machine, results/peers).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, Region, check_param, phase, register_mechanism

__all__ = ["MaxViTAttention", "PartitionAttention", "relative_offset_index"]

Partition = Literal["block", "grid"]


@functools.lru_cache(maxsize=64)
def relative_offset_index(gh: int, gw: int, size: int, device: torch.device) -> Tensor:
    """Index into a flattened ``(2·size-1)²`` bias table for every (query, key) pair of a gh x gw group.

    MaxViT's convention (timm's ``RelPosBiasTf``): offset = coords(key) - coords(query), row offset
    major; groups smaller than ``size`` read the centre of the table. Returns (gh·gw, gh·gw). Built
    outside inference mode so that a copy cached during an inference call still serves training.
    """
    with torch.inference_mode(False):
        token = torch.arange(gh * gw, device=device)  # (n,) row-major in the group
        rows, cols = token // gw, token % gw
        d_row = rows[None, :] - rows[:, None] + size - 1  # (n, n) in [0, 2·size-2]
        d_col = cols[None, :] - cols[:, None] + size - 1
        return d_row * (2 * size - 1) + d_col


class PartitionAttention(nn.Module):
    """Multi-head attention within the block (window) or grid groups of a map, with relative bias.

    Args:
        dim: channels C.
        num_heads: attention heads.
        partition: "block" (P x P windows) or "grid" (a G x G grid spread over the map).
        size: P or G.
        qkv_bias: bias in the q/k/v projection.
    """

    def __init__(self, dim: int, num_heads: int, partition: Partition, size: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.partition, self.size = partition, size
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.empty(num_heads, 2 * size - 1, 2 * size - 1))
        nn.init.normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)

    def layout(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(Hp, Wp, gh, gw): the padded map and the tokens per group along each axis.

        Along an axis of length L: one group of L when L <= size, else groups of ``size`` on L
        padded to a multiple of ``size``.
        """
        s = self.size
        gh = H if H <= s else s
        gw = W if W <= s else s
        return H + (-H) % gh, W + (-W) % gw, gh, gw

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        B, H_in, W_in, C = x.shape
        H, W, gh, gw = self.layout(H_in, W_in)
        m, d, n = self.num_heads, self.head_dim, gh * gw
        if (H, W) != (H_in, W_in):
            x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))  # zeros at bottom/right, before qkv
        # Split each axis into (groups, tokens in a group): a block window holds consecutive rows
        # (H = groups x gh), a grid group holds rows H/gh apart (H = gh x groups).
        nh, nw = H // gh, W // gw
        if self.partition == "block":
            split, order = (B, nh, gh, nw, gw, 3, m, d), (0, 1, 3, 6, 2, 4, 5, 7)
        else:
            split, order = (B, gh, nh, gw, nw, 3, m, d), (0, 2, 4, 6, 1, 3, 5, 7)
        qkv = self.qkv(x).view(split).permute(order)  # (B, nh, nw, m, gh, gw, 3, d)
        q, k, v = qkv.reshape(B * nh * nw, m, n, 3, d).unbind(3)  # each (B·groups, m, n, d)

        index = relative_offset_index(gh, gw, self.size, x.device)  # (n, n)
        bias = self.relative_position_bias_table.flatten(1)[:, index]  # (m, n, n), shared by groups
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        out = out.view(B, nh, nw, m, gh, gw, d)  # heads back next to their channels
        if self.partition == "block":
            out = out.permute(0, 1, 4, 2, 5, 3, 6)  # (B, nh, gh, nw, gw, m, d)
        else:
            out = out.permute(0, 4, 1, 5, 2, 3, 6)  # (B, gh, nh, gw, nw, m, d)
        out = self.proj(out.reshape(B, H, W, C))  # on padded tokens too, as whole groups are projected
        return out[:, :H_in, :W_in]

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        Hp, Wp, gh, gw = self.layout(H, W)
        N, C = Hp * Wp, self.num_heads * self.head_dim
        return {"qkv_proj": 3 * N * C * C, "attention": 2 * N * gh * gw * C, "out_proj": N * C * C}


@register_mechanism("maxvit")
class MaxViTAttention(AttentionMechanism):
    """MaxViT's block attention then grid attention, as two pre-norm residual sub-layers.

    Args:
        dim: channels C.
        num_heads: attention heads (MaxViT: head_dim 32).
        window_size: block window side P (7 in every MaxViT at 224²).
        grid_size: grid side G; None means ``window_size`` (MaxViT uses G = P).
        qkv_bias: bias in the q/k/v projections (True in MaxViT).
    """

    display_name = "MaxViT"
    color = "#332288"
    marker = "<"
    bibtex = (
        "@inproceedings{tu2022maxvit,\n  title = {{MaxViT}: Multi-Axis Vision Transformer},\n  author = {Tu, "
        "Zhengzhong and Talebi, Hossein and Zhang, Han and Yang, Feng and Milanfar, Peyman and Bovik, Alan "
        "and Li, Yinxiao},\n  booktitle = {ECCV},\n  year = {2022}\n}"
    )
    param_symbols = {"window_size": "P", "grid_size": "G"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int = 7,
        grid_size: int | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(window_size >= 1, "window_size", window_size, "an int >= 1")
        grid = window_size if grid_size is None else grid_size
        check_param(grid >= 1, "grid_size", grid_size, "None (= window_size) or an int >= 1")
        self.window_size, self.grid_size, self.qkv_bias = window_size, grid, qkv_bias
        self.block_attn = PartitionAttention(dim, num_heads, "block", window_size, qkv_bias)
        self.grid_norm = nn.LayerNorm(dim, eps=1e-5)
        self.grid_attn = PartitionAttention(dim, num_heads, "grid", grid, qkv_bias)

    def forward(self, x: Tensor) -> Tensor:
        with phase("block attention"):
            y = self.block_attn(x)  # (B, H, W, C)
        with phase("grid attention"):
            return y + self.grid_attn(self.grid_norm(x + y))

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The first step's attention: the query's softmax weights over its block window (with the
        block step's relative position bias), per head, zero elsewhere.

        Regions: the block window ("block"), and the keys of the query's group in the grid step that
        follows, one 1x1 Region each ("grid"): tokens H/G rows and W/G columns apart. The grid step's
        weights are not drawn (they act on the block step's output, not on x's values). On a padded
        map the window may hold padded keys, which take part of the weight: then ``normalized`` is
        False.
        """
        self._check_query(x, query)
        _, H_in, W_in, _ = x.shape
        r, c = query
        block = self.block_attn
        m, d = block.num_heads, block.head_dim
        H, W, gh, gw = block.layout(H_in, W_in)
        x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))
        top, left = r - r % gh, c - c % gw
        keys = ((top + torch.arange(gh))[:, None] * W + left + torch.arange(gw)).view(-1).to(x.device)
        qkv = block.qkv(x).view(H * W, 3, m, d)
        q, k = qkv[r * W + c, 0], qkv[keys, 1]  # (m, d), (gh·gw, m, d)
        index = relative_offset_index(gh, gw, block.size, x.device)[(r % gh) * gw + c % gw]  # (gh·gw,)
        scores = (
            torch.einsum("md,nmd->mn", q * block.scale, k)
            + block.relative_position_bias_table.flatten(1)[:, index]
        )
        weights = x.new_zeros(m, H * W).index_copy_(1, keys, scores.softmax(dim=-1)).view(m, H, W)
        regions = [Region("block", top, left, min(gh, H_in - top), min(gw, W_in - left))]
        Hg, Wg, grid_h, grid_w = self.grid_attn.layout(H_in, W_in)
        step_h, step_w = Hg // grid_h, Wg // grid_w  # grid keys lie this many rows / columns apart
        regions += [
            Region("grid", row, col, 1, 1)
            for row in range(r % step_h, H_in, step_h)
            for col in range(c % step_w, W_in, step_w)
        ]
        padded = top + gh > H_in or left + gw > W_in
        note = (
            f"block step: softmax over the {gh}x{gw} window with relative bias; 'grid': the grid step's keys"
        )
        note += "; padded keys off the map take the rest of the weight" if padded else ""
        return AttentionMap(
            query,
            weights[:, :H_in, :W_in].contiguous(),
            normalized=not padded,
            regions=tuple(regions),
            note=note,
        )

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: each step's projections and attention on its padded map, the LayerNorm."""
        block, grid = self.block_attn.analytic_flops(H, W), self.grid_attn.analytic_flops(H, W)
        return {
            **{f"block_{k}": v for k, v in block.items()},
            "grid_norm": 5 * H * W * self.dim,
            **{f"grid_{k}": v for k, v in grid.items()},
        }
