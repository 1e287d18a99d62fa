"""BRA token attention as block-sparse FlexAttention: no gather at all.

Tokens are region-major, so with block size M = HW/S² (one block per region) BRA is exactly
block-sparse attention in which query block i attends to the key blocks ``idx[i]``, each one fully.
The ``BlockMask`` is built straight from the top-k indices (``BlockMask.from_kv_blocks``, all blocks
"full", so no ``mask_mod`` is evaluated); K and V are never copied. On CUDA the kernel is compiled
once (``torch.compile(flex_attention)``) and reused. On CPU FlexAttention runs forward only (no
backward), so ``auto`` never picks it there; ``backend="flex"`` still runs its forward on CPU, which
is how the CPU tests check it against ``reference``.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from mechanisms.bra.layout import from_regions, split_regions, token_heads, value_map

# The GPU kernels tile queries and keys in blocks of 16 or more: regions smaller than that, or not
# a multiple of it, would need a mask_mod on partial blocks; auto leaves those shapes to sdpa.
MIN_BLOCK = 16


def can_run(qkv: Tensor, idx: Tensor, n_win: int) -> tuple[bool, str]:
    M = (qkv.shape[1] // n_win) * (qkv.shape[2] // n_win)
    if not qkv.is_cuda:
        return False, "FlexAttention has no backward on CPU"
    if M % MIN_BLOCK:
        return False, f"{M} tokens per region is not a multiple of {MIN_BLOCK}"
    return True, ""


@functools.cache
def _compiled():
    return torch.compile(flex_attention, dynamic=False)


def block_mask(idx: Tensor, M: int) -> BlockMask:
    """idx (B, R, k) -> BlockMask over R·M tokens where query block i sees key blocks idx[i]."""
    B, R, k = idx.shape
    full_num = torch.full((B, 1, R), k, dtype=torch.int32, device=idx.device)
    full_idx = torch.zeros(B, 1, R, R, dtype=torch.int32, device=idx.device)
    full_idx[..., :k] = idx.to(torch.int32).unsqueeze(1)  # (B, 1, R, R); columns >= k unused
    none_num = torch.zeros_like(full_num)
    none_idx = torch.zeros_like(full_idx)
    # The fused kernels skip mask_mod inside full blocks; the unfused path (CPU, no compile) applies
    # mask_mod to every pair and ignores the block structure, so it must encode the routing too.
    routed = torch.zeros(B, R, R, dtype=torch.bool, device=idx.device).scatter_(2, idx, True)

    def mask_mod(b, h, q_idx, kv_idx):
        return routed[b, q_idx // M, kv_idx // M]

    return BlockMask.from_kv_blocks(
        none_num,
        none_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=M,
        mask_mod=mask_mod,
        seq_lengths=(R * M, R * M),
    )


def attend(
    qkv: Tensor, idx: Tensor, n_win: int, num_heads: int, qk_dim: int, scale: float
) -> tuple[Tensor, Tensor]:
    """qkv (B, H, W, 2·qk + C), idx (B, S², k) -> attention output and v, both (B, H, W, C)."""
    B, H, W, _ = qkv.shape
    q, kv = split_regions(qkv, n_win, qk_dim)  # (B, S², M, qk), (B, S², M, qk + C)
    _, R, M, Ckv = kv.shape
    q, k_all, v_all = token_heads(q, kv, num_heads, qk_dim)  # (B, m, N, ·), region-major tokens
    fn = _compiled() if q.is_cuda else flex_attention
    out = fn(q, k_all, v_all, block_mask=block_mask(idx, M), scale=scale)  # (B, m, N, C/m)
    out = out.transpose(1, 2).reshape(B, R, M, Ckv - qk_dim)
    return from_regions(out, n_win, H, W), value_map(qkv, qk_dim)
