"""BRA token attention through ``F.scaled_dot_product_attention`` over gathered regions.

The routed regions' K/V are picked whole with one ``index_select`` on the flattened (batch x region)
axis: its backward is an ``index_add_`` over whole region rows, far cheaper than the scatter-add that
the released ``gather`` over an expanded view needs. One SDPA call then covers every (batch, region)
group, so PyTorch's fused kernel (flash / memory-efficient on GPU, the flash kernel on CPU) keeps no
score tensor. K and V of the routed regions are still copied k times; the block-sparse ``flex``
backend avoids even that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench import phase
from mechanisms.bra.layout import region_major


def can_run(qkv: Tensor, idx: Tensor, n_win: int) -> tuple[bool, str]:
    return True, ""


def gather_regions(kv: Tensor, idx: Tensor) -> Tensor:
    """kv (B, R, M, C), idx (B, R, k) -> (B, R, k, M, C): the routed regions of every region."""
    B, R, M, C = kv.shape
    k = idx.shape[-1]
    offset = torch.arange(B, device=idx.device).view(B, 1, 1) * R
    flat = (idx + offset).reshape(-1)  # (B·R·k,) rows of the flattened (B·R) axis
    return kv.reshape(B * R, M, C).index_select(0, flat).view(B, R, k, M, C)


@region_major
def attend(q: Tensor, kv: Tensor, idx: Tensor, num_heads: int, qk_dim: int, scale: float) -> Tensor:
    """q (B, S², M, qk), kv (B, S², M, qk + C), idx (B, S², k) -> (B, S², M, C)."""
    B, R, M, Ckv = kv.shape
    k = idx.shape[-1]
    C = Ckv - qk_dim
    m = num_heads
    with phase("gather"):
        k_sel, v_sel = gather_regions(kv, idx).split([qk_dim, C], dim=-1)  # (B, R, k, M, ·)
    # 4-D for SDPA (5-D inputs fall back to the unfused math kernel): batch and region fold together
    k_sel = k_sel.reshape(B * R, k * M, m, qk_dim // m).transpose(1, 2)  # (B·R, m, k·M, qk/m)
    v_sel = v_sel.reshape(B * R, k * M, m, C // m).transpose(1, 2)  # (B·R, m, k·M, C/m)
    q = q.reshape(B * R, M, m, qk_dim // m).transpose(1, 2)  # (B·R, m, M, qk/m)
    out = F.scaled_dot_product_attention(q, k_sel, v_sel, scale=scale)  # (B·R, m, M, C/m)
    return out.transpose(1, 2).reshape(B, R, M, C)
