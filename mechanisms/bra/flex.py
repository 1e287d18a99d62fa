"""BRA token attention as block-sparse FlexAttention: no gather at all.

Tokens are region-major, so with one block per region BRA is exactly block-sparse attention in
which query block i attends to the key blocks ``idx[i]``, each one fully. The ``BlockMask`` is built
straight from the top-k indices (``BlockMask.from_kv_blocks``); K and V are never copied. On CUDA
the kernel is compiled once per shape (``torch.compile(flex_attention)``) and reused.

The compiled kernels work on token tiles, and a block must be a whole number of tiles: with
torch 2.13's default kernel configs for head dim 32, tiles of 64 tokens on Hopper (H100/H200) and
of up to 128 elsewhere (:func:`tile_size`). A region of M tokens that is not a multiple of the tile
is padded to Mp = the next multiple: the padded keys are masked by the ``mask_mod`` (those blocks
are then "partial" instead of "full"), the padded queries' outputs are dropped. ``auto`` picks flex
only where padding costs little (M >= one tile); ``backend="flex"`` runs any shape.

On CPU FlexAttention runs forward only and unfused (it evaluates ``mask_mod`` on every pair and
ignores the blocks), so ``auto`` never picks it there; ``backend="flex"`` still runs its forward on
CPU, which is how the CPU tests check it, padding included, against ``reference``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from mechanisms.bra.layout import region_major, token_heads

# Tile to pad regions to on CPU; None: no padding (the unfused CPU path has no tiles). Tests set it
# to exercise the padded layout without a GPU.
CPU_TILE: int | None = None


def tile_size(device: torch.device) -> int:
    """Tokens per kernel tile that every default forward/backward config divides."""
    if device.type == "cuda":
        return 64 if torch.cuda.get_device_capability(device) == (9, 0) else 128
    return CPU_TILE or 1


def can_run(qkv: Tensor, idx: Tensor, n_win: int) -> tuple[bool, str]:
    if not qkv.is_cuda:
        return False, "FlexAttention has no backward on CPU"
    M = (qkv.shape[1] // n_win) * (qkv.shape[2] // n_win)
    tile = tile_size(qkv.device)
    if M < tile:
        return False, f"{M} tokens per region < the kernel tile of {tile}: mostly padding"
    return True, ""


@functools.cache
def _compiled():
    return torch.compile(flex_attention, dynamic=False)


def block_mask(idx: Tensor, M: int, Mp: int) -> BlockMask:
    """idx (B, R, k) -> BlockMask over R·Mp tokens (regions of M tokens padded to Mp) in which query
    block i sees key blocks idx[i]: "full" blocks when M = Mp, else "partial" ones whose padded keys
    the mask_mod removes."""
    B, R, k = idx.shape
    num = torch.full((B, 1, R), k, dtype=torch.int32, device=idx.device)
    blocks = torch.zeros(B, 1, R, R, dtype=torch.int32, device=idx.device)  # columns >= k unused
    blocks[..., :k] = idx.to(torch.int32).unsqueeze(1)
    none_num, none_blocks = torch.zeros_like(num), torch.zeros_like(blocks)
    # The unfused path (CPU, no compile) applies mask_mod to every pair and ignores the blocks, so
    # mask_mod encodes the routing too; the fused kernels evaluate it in partial blocks only.
    routed = torch.zeros(B, R, R, dtype=torch.bool, device=idx.device).scatter_(2, idx, True)

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = routed[b, q_idx // Mp, kv_idx // Mp]
        return allowed & (kv_idx % Mp < M) if Mp != M else allowed

    full = Mp == M
    return BlockMask.from_kv_blocks(
        none_num if full else num,
        none_blocks if full else blocks,
        num if full else none_num,
        blocks if full else none_blocks,
        BLOCK_SIZE=Mp,
        mask_mod=mask_mod,
        seq_lengths=(R * Mp, R * Mp),
    )


@region_major
def attend(q: Tensor, kv: Tensor, idx: Tensor, num_heads: int, qk_dim: int, scale: float) -> Tensor:
    """q (B, S², M, qk), kv (B, S², M, qk + C), idx (B, S², k) -> (B, S², M, C)."""
    B, R, M, Ckv = kv.shape
    tile = tile_size(q.device)
    Mp = -(-M // tile) * tile  # tokens per region, padded to whole tiles
    if Mp != M:
        q, kv = F.pad(q, (0, 0, 0, Mp - M)), F.pad(kv, (0, 0, 0, Mp - M))  # (B, S², Mp, ·)
    q, k_all, v_all = token_heads(q, kv, num_heads, qk_dim)  # (B, m, S²·Mp, ·), region-major tokens
    fn = _compiled() if q.is_cuda else flex_attention
    out = fn(q, k_all, v_all, block_mask=block_mask(idx, M, Mp), scale=scale)  # (B, m, S²·Mp, C/m)
    return out.transpose(1, 2).reshape(B, R, Mp, Ckv - qk_dim)[:, :, :M]  # (B, S², M, C)
