"""BRA token attention as one dense attention over all tokens with a region-routing mask.

Tokens are already region-major, so the mask is block-structured: query region i may see key region
j iff j is among i's top-k. Nothing is gathered or copied; the cost is dense (N² instead of
N·k·HW/S² score entries), which wins on small maps where the gather and per-region bookkeeping
dominate (BiFormer's stage 3 at 224²: 196 tokens, each seeing 64). Backward through SDPA's fused
CPU kernel, so this path also trains on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mechanisms.bra.layout import region_major, token_heads

# Dense is chosen by "auto" only while N² <= MAX_DENSE_RATIO · N·k·M (at most this many times the
# sparse work) and the (B, 1, N, N) boolean mask stays small.
MAX_DENSE_RATIO = 4
MAX_TOKENS = 1024


def can_run(qkv: Tensor, idx: Tensor, n_win: int) -> tuple[bool, str]:
    B, H, W, _ = qkv.shape
    N, k, M = H * W, idx.shape[-1], H * W // (n_win * n_win)
    if N > MAX_TOKENS:
        return False, f"{N} tokens > {MAX_TOKENS}: dense mask too large"
    if N * N > MAX_DENSE_RATIO * N * k * M:
        return False, f"dense work N²={N * N} > {MAX_DENSE_RATIO}x the routed work {N * k * M}"
    return True, ""


def routing_mask(idx: Tensor, M: int) -> Tensor:
    """idx (B, R, k) -> bool (B, 1, R·M, R·M), True where a query token may attend a key token."""
    B, R, _ = idx.shape
    routed = torch.zeros(B, R, R, dtype=torch.bool, device=idx.device).scatter_(2, idx, True)
    return routed.repeat_interleave(M, dim=1).repeat_interleave(M, dim=2).unsqueeze(1)


@region_major
def attend(q: Tensor, kv: Tensor, idx: Tensor, num_heads: int, qk_dim: int, scale: float) -> Tensor:
    """q (B, S², M, qk), kv (B, S², M, qk + C), idx (B, S², k) -> (B, S², M, C)."""
    B, R, M, Ckv = kv.shape
    q, k_all, v_all = token_heads(q, kv, num_heads, qk_dim)  # (B, m, N, ·), region-major tokens
    mask = routing_mask(idx, M)  # (B, 1, N, N)
    out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, scale=scale)  # (B, m, N, C/m)
    return out.transpose(1, 2).reshape(B, R, M, Ckv - qk_dim)
