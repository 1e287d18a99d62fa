"""Token layouts shared by BRA's backends.

The module hands every backend the spatial projection ``qkv`` (B, H, W, 2·qk + C), channels
q | k | v. Backends that work region by region move tokens to region-major order (regions row-major
over the S x S grid, tokens row-major inside a region); ``bmm`` goes one step further and puts the
heads of each region in separate row blocks so that batched matmuls need no further copies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import Tensor

from attnbench import phase


def to_regions(x: Tensor, n_win: int) -> Tensor:
    """(B, H, W, C) -> (B, S², H/S·W/S, C), regions row-major, tokens row-major in a region."""
    B, H, W, C = x.shape
    h, w = H // n_win, W // n_win
    x = x.view(B, n_win, h, n_win, w, C).permute(0, 1, 3, 2, 4, 5)  # (B, S, S, h, w, C)
    return x.reshape(B, n_win * n_win, h * w, C)


def from_regions(x: Tensor, n_win: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`to_regions`: (B, S², h·w, C) -> (B, H, W, C)."""
    B, _, _, C = x.shape
    h, w = H // n_win, W // n_win
    x = x.view(B, n_win, n_win, h, w, C).permute(0, 1, 3, 2, 4, 5)  # (B, S, h, S, w, C)
    return x.reshape(B, H, W, C)


def split_regions(qkv: Tensor, n_win: int, qk_dim: int) -> tuple[Tensor, Tensor]:
    """Spatial qkv (B, H, W, 2·qk + C) -> region-major q (B, S², M, qk) and kv (B, S², M, qk + C)."""
    q, kv = to_regions(qkv, n_win).split([qk_dim, qkv.shape[-1] - qk_dim], dim=-1)  # one copy, views
    return q, kv


def value_map(qkv: Tensor, qk_dim: int) -> Tensor:
    """The v channels of spatial qkv, (B, H, W, C): what the LCE convolves."""
    return qkv[..., 2 * qk_dim :]


def region_major(
    fn: Callable[[Tensor, Tensor, Tensor, int, int, float], Tensor],
) -> Callable[[Tensor, Tensor, int, int, int, float], tuple[Tensor, Tensor]]:
    """Make a backend's ``attend`` from a function of region-major tensors.

    ``fn(q (B, S², M, qk), kv (B, S², M, qk + C), idx (B, S², k), num_heads, qk_dim, scale)``
    returns the region-major output (B, S², M, C); the result takes the spatial ``qkv`` and returns
    the spatial output and the value map for the LCE, as every backend's ``attend`` does.
    """

    @functools.wraps(fn)
    def attend(
        qkv: Tensor, idx: Tensor, n_win: int, num_heads: int, qk_dim: int, scale: float
    ) -> tuple[Tensor, Tensor]:
        _, H, W, _ = qkv.shape
        with phase("layout"):
            q, kv = split_regions(qkv, n_win, qk_dim)  # (B, S², M, qk), (B, S², M, qk + C)
        out = fn(q, kv, idx, num_heads, qk_dim, scale)  # (B, S², M, C)
        with phase("layout"):
            out = from_regions(out, n_win, H, W)
        return out, value_map(qkv, qk_dim)

    return attend


def token_heads(q: Tensor, kv: Tensor, num_heads: int, qk_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Region-major q (B, S², M, qk), kv (B, S², M, qk + C) -> per-head (B, m, N, ·) q, k, v, N = S²·M."""
    B, R, M, Ckv = kv.shape
    C, m, N = Ckv - qk_dim, num_heads, R * M
    k_all, v_all = kv.reshape(B, N, Ckv).split([qk_dim, C], dim=-1)
    k_all = k_all.reshape(B, N, m, qk_dim // m).transpose(1, 2)  # (B, m, N, qk/m)
    v_all = v_all.reshape(B, N, m, C // m).transpose(1, 2)  # (B, m, N, C/m)
    q = q.reshape(B, N, m, qk_dim // m).transpose(1, 2)  # (B, m, N, qk/m)
    return q, k_all, v_all


def region_heads(x: Tensor, n_win: int, num_heads: int) -> Tensor:
    """Spatial (B, H, W, c), any strides -> contiguous (B·S²·m, M, c/m): one row block per region and head."""
    B, H, W, c = x.shape
    h, w, m = H // n_win, W // n_win, num_heads
    x = x.view(B, n_win, h, n_win, w, m, c // m).permute(0, 1, 3, 5, 2, 4, 6)  # (B, S, S, m, h, w, c/m)
    return x.reshape(B * n_win * n_win * m, h * w, c // m)


def region_heads_as_map(x: Tensor, B: int, n_win: int, H: int, W: int) -> Tensor:
    """(B·S²·m, M, d) -> a (B, S, h, S, w, m, d) view, the layout of a spatial (B, H, W, m·d) map
    viewed as ``map.view(B, S, h, S, w, m, d)``; copy it into such a view to get the map."""
    h, w, d = H // n_win, W // n_win, x.shape[-1]
    m = x.shape[0] // (B * n_win * n_win)
    return x.view(B, n_win, n_win, m, h, w, d).permute(0, 1, 4, 2, 5, 3, 6)


def map_as_region_heads(x: Tensor, n_win: int, num_heads: int) -> Tensor:
    """A spatial (B, H, W, m·d) tensor viewed as (B, S, h, S, w, m, d), the target of
    :func:`region_heads_as_map`."""
    B, H, W, c = x.shape
    return x.view(B, n_win, H // n_win, n_win, W // n_win, num_heads, c // num_heads)
