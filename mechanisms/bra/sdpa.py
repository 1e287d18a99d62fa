"""BRA token attention through ``F.scaled_dot_product_attention``.

Whole routed regions are picked by advanced indexing (one index_select per batch element, no
expanded view), then one SDPA call per (batch, region) group: PyTorch picks its fused kernel
(flash / memory-efficient on GPU, a blocked kernel on CPU), so the caller keeps no score tensor.
K and V of the routed regions are still copied k times; the block-sparse ``flex`` backend avoids
even that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def can_run(q: Tensor, kv: Tensor, idx: Tensor) -> tuple[bool, str]:
    return True, ""


def attend(q: Tensor, kv: Tensor, idx: Tensor, num_heads: int, qk_dim: int, scale: float) -> Tensor:
    """q (B, S², M, qk), kv (B, S², M, qk + C), idx (B, S², k) -> (B, S², M, C)."""
    B, R, M, Ckv = kv.shape
    k = idx.shape[-1]
    C = Ckv - qk_dim
    m = num_heads
    batch = torch.arange(B, device=kv.device).view(B, 1, 1)
    kv_sel = kv[batch, idx]  # (B, R, k, M, Ckv)
    k_sel, v_sel = kv_sel.split([qk_dim, C], dim=-1)
    k_sel = k_sel.reshape(B, R, k * M, m, qk_dim // m).transpose(2, 3)  # (B, R, m, k·M, qk/m)
    v_sel = v_sel.reshape(B, R, k * M, m, C // m).transpose(2, 3)  # (B, R, m, k·M, C/m)
    q = q.reshape(B, R, M, m, qk_dim // m).transpose(2, 3)  # (B, R, m, M, qk/m)
    out = F.scaled_dot_product_attention(q, k_sel, v_sel, scale=scale)  # (B, R, m, M, C/m)
    return out.transpose(2, 3).reshape(B, R, M, C)
