"""BRA's released token attention: gather the routed regions' K/V, explicit softmax attention.

This is the algorithm of BiFormer's ``ops/bra_legacy.py`` (``KVGather`` + matmul/softmax/matmul):
``torch.gather`` over an expanded view makes k copies of every routed region's K and V and
materializes the full (B·S², heads, M, k·M) score tensor; the gather's backward scatters into a
zero tensor S² times the size of K and V. It is the oracle for every faster backend.
"""

from __future__ import annotations

from torch import Tensor

from attnbench import phase
from mechanisms.bra.layout import region_major


def can_run(qkv: Tensor, idx: Tensor, n_win: int) -> tuple[bool, str]:
    return True, ""


@region_major
def attend(q: Tensor, kv: Tensor, idx: Tensor, num_heads: int, qk_dim: int, scale: float) -> Tensor:
    """q (B, S², M, qk), kv (B, S², M, qk + C), idx (B, S², k) -> (B, S², M, C)."""
    B, R, M, Ckv = kv.shape
    k = idx.shape[-1]
    C = Ckv - qk_dim
    m = num_heads
    # k-fold copy, exactly as released: (B, R, R, M, Ckv) view gathered to (B, R, k, M, Ckv)
    with phase("gather"):
        kv_sel = (
            kv.view(B, 1, R, M, Ckv)
            .expand(-1, R, -1, -1, -1)
            .gather(2, idx.view(B, R, k, 1, 1).expand(-1, -1, -1, M, Ckv))
        )
    k_sel, v_sel = kv_sel.split([qk_dim, C], dim=-1)
    k_sel = k_sel.reshape(B * R, k * M, m, qk_dim // m).permute(0, 2, 3, 1)  # (B·R, m, qk/m, k·M)
    v_sel = v_sel.reshape(B * R, k * M, m, C // m).transpose(1, 2)  # (B·R, m, k·M, C/m)
    q = q.reshape(B * R, M, m, qk_dim // m).transpose(1, 2)  # (B·R, m, M, qk/m)
    attn = ((q * scale) @ k_sel).softmax(dim=-1)  # (B·R, m, M, k·M)
    return (attn @ v_sel).transpose(1, 2).reshape(B, R, M, C)  # (B, S², M, C)
