"""Neighborhood Attention (NAT, Hassani et al., "Neighborhood Attention Transformer", CVPR 2023).

Every query attends to the ``kernel_size x kernel_size`` keys around it. At the borders the window
is shifted inward instead of being cut off (NATTEN's corner handling), so every query sees exactly
``kernel_size²`` keys. With ``dilation = d`` (DiNAT, see ``mechanisms/dilated.py``) the map splits
into d x d interleaved sub-grids (tokens with equal ``(row % d, col % d)``) and the window lies on
the query's own sub-grid, with the same inward shift at that sub-grid's borders.

The variant: ``qkv = Linear(C -> 3C)``, scale ``head_dim ** -0.5``, output ``Linear(C -> C)``, as in
NATTEN's ``NeighborhoodAttention2D``. **No relative position bias**: the NAT paper adds one, but
``natten.na2d`` (NATTEN 0.21) takes no bias, NATTEN's fused kernels never trained with one, and its
author recommends biasing the inputs (e.g. RoPE) instead (NATTEN issues #139, #173). So this is
NAT without RPB.

Backends (``backend=``), all computing the same function:

- ``natten``: ``natten.na2d`` (fused kernels on GPU; on CPU FlexAttention, forward only).
- ``tiled``: plain PyTorch, fast: queries in tiles of T x T (T = max(8, k + 1)), each tile attends
  to the (T + k - 1)² halo that holds all of its windows through one batched
  ``scaled_dot_product_attention`` with a per-tile mask selecting each query's own window (a tile's
  windows shift together, so the halo is exact, NATTEN's border shift included). About 3-4x the
  MACs of the k² keys, in large fused products: 15x faster than ``torch`` on CPU at 112², k = 7.
  Dilation runs it on each of the d x d sub-grids. Trains on CPU.
- ``torch``: plain PyTorch, the oracle: gather each query's window of keys and values
  (``index_select``), then softmax attention over exactly the ``kernel_size²`` keys.
- ``auto``: ``natten`` on CUDA when it can run with its fused kernels (a natten built without
  its compiled library, ``natten.HAS_LIBNATTEN`` False, runs unfused FlexAttention even there),
  else ``tiled``. On CPU ``auto`` never takes ``natten``: NATTEN's CPU path is unfused
  FlexAttention, which materializes all N x N scores (about 12x slower than ``torch`` on
  (2, 56, 56, 64), k=7, forward) and has no backward. ``natten`` is also skipped where NATTEN has
  no kernel for the input (e.g. FlexAttention wants a power-of-two head_dim in [8, 512]). The
  choice and the reason are logged at debug level.

FLOPs: ``torch.jit`` (fvcore's tracer) cannot trace NATTEN (its argument checks fail on traced
sizes, before any operator is recorded), and FlexAttention cannot run under ``FlopCounterMode``.
So while a forward is being counted, every backend runs the ``torch`` path (the same function):
its two attention products are ``matmul``s that both counters count MAC for MAC, and
``analytic_flops`` equals the fvcore count exactly (tolerance 0). The count is the algorithm's
(k² keys per query), not ``tiled``'s halo work, which shows in its latency.

Peers (docs/peers.md): ``natten.na2d`` between the same projections; on CPU ours (``tiled``) /
natten 0.01-0.53 forward, natten having no CPU backward
(CPU, 1 thread, fp32, batch 4, quiet machine, results/peers); on GPU ``auto`` runs natten itself.
"""

from __future__ import annotations

import functools
import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from attnbench import AttentionMap, AttentionMechanism, Region, check_param, phase, register_mechanism

try:
    import natten
    from natten.backends import choose_backend as _natten_choose_backend
except ImportError:  # natten is a declared dependency; without it only the torch backend runs
    natten = None
    _natten_choose_backend = None

__all__ = [
    "NeighborhoodAttention",
    "NeighborhoodAttentionBase",
    "neighborhood_attention",
    "neighborhood_index",
    "tiled_neighborhood_attention",
    "window_1d",
]

log = logging.getLogger(__name__)

BACKENDS = ("natten", "tiled", "torch")


def window_1d(length: int, kernel_size: int, dilation: int = 1) -> np.ndarray:
    """Key positions of each query's window along one axis, NATTEN's rule: ``(length, kernel_size)``.

    Query ``i`` lies in dilation group ``g = i % dilation`` at position ``i // dilation`` of that
    group's sub-grid (``ceil((length - g) / dilation)`` tokens). Its window is ``kernel_size``
    consecutive sub-grid positions centred on it, shifted inward at the sub-grid's ends.
    """
    if length < kernel_size * dilation:
        raise ValueError(
            f"kernel_size * dilation = {kernel_size} * {dilation} exceeds the axis length {length}; "
            f"NATTEN needs kernel_size * dilation <= {length}"
        )
    i = np.arange(length)
    group = i % dilation
    group_len = (length - group + dilation - 1) // dilation  # tokens in i's sub-grid
    start = np.minimum(np.maximum(i // dilation - kernel_size // 2, 0), group_len - kernel_size)
    return (start[:, None] + np.arange(kernel_size)) * dilation + group[:, None]


@functools.lru_cache(maxsize=64)
def _index(H: int, W: int, kernel_size: int, dilation: int, device: torch.device) -> Tensor:
    rows = window_1d(H, kernel_size, dilation)  # (H, k)
    cols = window_1d(W, kernel_size, dilation)  # (W, k)
    idx = rows[:, None, :, None] * W + cols[None, :, None, :]  # (H, W, k, k)
    return torch.from_numpy(idx.reshape(H * W, kernel_size * kernel_size)).to(device)


def neighborhood_index(
    H: int, W: int, kernel_size: int, dilation: int = 1, device: torch.device | str = "cpu"
) -> Tensor:
    """Flat key index (row-major over ``H x W``) of every query's window: ``(H·W, kernel_size²)``.

    Built with numpy and cached per shape and device, so that ``torch.jit`` tracing sees a constant
    and no index arithmetic, and a GPU forward copies nothing from the host.
    """
    return _index(int(H), int(W), kernel_size, dilation, torch.device(device))


def neighborhood_attention(
    q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int, scale: float
) -> Tensor:
    """Neighborhood attention in plain PyTorch, NATTEN's layout and semantics.

    Args:
        q, k, v: ``(B, H, W, heads, head_dim)``.
        kernel_size: window side (odd).
        dilation: window step; ``kernel_size * dilation`` must not exceed H or W.
        scale: logit scale.

    Returns:
        ``(B, H, W, heads, head_dim)``.
    """
    B, H, W, m, d = q.shape
    idx = neighborhood_index(H, W, kernel_size, dilation, q.device)  # (N, k²)
    N, K2 = idx.shape
    q = q.reshape(B, N, m, d).transpose(1, 2)  # (B, m, N, d)
    k = k.reshape(B, N, m, d).transpose(1, 2)
    v = v.reshape(B, N, m, d).transpose(1, 2)
    k_win = k.index_select(2, idx.view(-1)).view(B, m, N, K2, d)  # (B, m, N, k², d)
    v_win = v.index_select(2, idx.view(-1)).view(B, m, N, K2, d)  # (B, m, N, k², d)
    logits = (q * scale).unsqueeze(-2) @ k_win.transpose(-2, -1)  # (B, m, N, 1, k²)
    out = logits.softmax(dim=-1) @ v_win  # (B, m, N, 1, d)
    return out.squeeze(-2).transpose(1, 2).reshape(B, H, W, m, d)


def _axis_tiles(length: int, kernel_size: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query tiles along one (undilated) axis: query positions (n, T), halo positions (n, L) and
    which halo position is in each query's window (n, T, L). The last tile is moved back to end at
    the axis end (it overlaps its neighbour); the halo of a tile starts at its first query's window
    and spans L = T + k - 1 positions, moved back likewise, so it holds every window of the tile."""
    tile = min(tile, length)
    starts = np.minimum(np.arange(-(-length // tile)) * tile, length - tile)
    queries = starts[:, None] + np.arange(tile)  # (n, T)
    window_start = window_1d(length, kernel_size)[:, 0]  # (length,)
    span = min(tile + kernel_size - 1, length)
    halo = np.clip(window_start[starts], 0, length - span)[:, None] + np.arange(span)  # (n, L)
    first = window_start[queries][:, :, None]  # (n, T, 1)
    return queries, halo, (halo[:, None, :] >= first) & (halo[:, None, :] < first + kernel_size)


@functools.lru_cache(maxsize=16)
def _tile_plan(
    H: int, W: int, kernel_size: int, dilation: int, device: torch.device, dtype: torch.dtype
) -> tuple[tuple[tuple[Tensor, Tensor, Tensor], ...], Tensor]:
    """Batches of equally sized tiles over the d x d sub-grids, and where each token's output lands.

    Each batch is (query tokens (n·T²,), halo tokens (n·L²,), additive mask (n, 1, T², L²): 0 in
    each query's window, -inf elsewhere; faster in SDPA on CPU than a bool mask), tokens as flat
    row-major indices of the H x W map. The second value maps every token to its row in the
    concatenated outputs of all batches (the first tile holding it)."""
    tile = max(8, kernel_size + 1)
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for a in range(dilation):
        rows_q, rows_h, rows_ok = _axis_tiles(len(range(a, H, dilation)), kernel_size, tile)
        rows_q, rows_h = a + dilation * rows_q, a + dilation * rows_h  # sub-grid -> map rows
        for b in range(dilation):
            cols_q, cols_h, cols_ok = _axis_tiles(len(range(b, W, dilation)), kernel_size, tile)
            cols_q, cols_h = b + dilation * cols_q, b + dilation * cols_h
            q = rows_q[:, None, :, None] * W + cols_q[None, :, None, :]  # (nr, nc, Tr, Tc)
            h = rows_h[:, None, :, None] * W + cols_h[None, :, None, :]  # (nr, nc, Lr, Lc)
            ok = rows_ok[:, None, :, None, :, None] & cols_ok[None, :, None, :, None, :]
            n, TT, LL = q.shape[0] * q.shape[1], q.shape[2] * q.shape[3], h.shape[2] * h.shape[3]
            parts = groups.setdefault((TT, LL), [[], [], []])
            parts[0].append(q.reshape(n, TT))
            parts[1].append(h.reshape(n, LL))
            parts[2].append(ok.reshape(n, TT, LL))
    batches, owner, offset = [], np.full(H * W, -1), 0
    for q, h, ok in groups.values():
        q, h, ok = np.concatenate(q), np.concatenate(h), np.concatenate(ok)
        slots = offset + np.arange(q.size)
        first = np.unique(q.reshape(-1), return_index=True)[1]  # first tile slot of every token
        owner[q.reshape(-1)[first]] = slots[first]
        offset += q.size
        batches.append(
            tuple(torch.from_numpy(t).to(device) for t in (q.reshape(-1), h.reshape(-1), ok[:, None]))
        )
    return tuple(batches), torch.from_numpy(owner).to(device)


def _tiles(t: Tensor, tokens: Tensor, n: int, size: int) -> Tensor:
    """(B, H, W, m, d) -> (n, B·m, size, d): the tiles are SDPA's batch, (image, head) its heads."""
    B, H, W, m, d = t.shape
    t = t.reshape(B, H * W, m, d).index_select(1, tokens).view(B, n, size, m, d)
    return t.permute(1, 0, 3, 2, 4).reshape(n, B * m, size, d)


def tiled_neighborhood_attention(
    q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int, scale: float
) -> Tensor:
    """Neighborhood attention by tiles and halos (the ``tiled`` backend); same arguments and result as
    :func:`neighborhood_attention`."""
    B, H, W, m, d = q.shape
    batches, owner = _tile_plan(int(H), int(W), kernel_size, dilation, q.device, q.dtype)
    outs = []
    for q_tok, halo_tok, mask in batches:
        n, TT, LL = mask.shape[0], mask.shape[2], mask.shape[3]
        q_t, k_t, v_t = _tiles(q, q_tok, n, TT), _tiles(k, halo_tok, n, LL), _tiles(v, halo_tok, n, LL)
        out = F.scaled_dot_product_attention(q_t, k_t, v_t, attn_mask=mask, scale=scale)  # (n, B·m, T², d)
        outs.append(out.view(n, B, m, TT, d).permute(1, 0, 3, 2, 4).reshape(B, n * TT, m, d))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return out.index_select(1, owner).view(B, H, W, m, d)


def counting_context() -> str | None:
    """Why this forward is being measured rather than run (tracing, a dispatch mode), or None.

    natten cannot serve such a forward: ``torch.jit`` cannot trace NATTEN's argument checks, and
    FlexAttention (NATTEN's CPU path) has no rule for Python dispatch modes such as
    ``FlopCounterMode``. The ``torch`` backend computes the same function in operators both see.
    """
    if torch.jit.is_tracing():
        return "torch.jit is tracing (NATTEN cannot be traced)"
    if _get_current_dispatch_mode() is not None:
        return "a TorchDispatchMode (e.g. FlopCounterMode) is active (FlexAttention cannot run under one)"
    return None


def natten_unavailable(q: Tensor, k: Tensor, v: Tensor) -> str | None:
    """Why ``natten.na2d`` cannot run on these ``(B, H, W, heads, head_dim)`` tensors, or None."""
    if natten is None:
        return "natten is not installed"
    if q.device.type == "cpu" and (q.requires_grad or k.requires_grad or v.requires_grad):
        return "q/k/v need a gradient and natten's CPU path (FlexAttention) has no backward"
    try:
        _natten_choose_backend(q, k, v, torch_compile=False)
    except NotImplementedError:
        return (
            f"natten has no kernel for head_dim={q.shape[-1]}, dtype={q.dtype} on {q.device.type} "
            "(run with NATTEN_LOG_LEVEL=DEBUG for its reasons)"
        )
    return None


def _max_odd(n: int) -> int:
    """The largest odd int <= n (at least 1)."""
    return max(n - (n + 1) % 2, 1)


class NeighborhoodAttentionBase(AttentionMechanism):
    """Shared body of NAT and DiNAT; the registered classes choose which parameters they expose.

    Args:
        dim: channels C.
        num_heads: attention heads.
        kernel_size: window side k, odd and >= 3.
        dilation: window step d >= 1.
        qkv_bias: bias in the q/k/v projection.
        backend: "auto", "natten", "tiled" or "torch" (see the module docstring).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kernel_size: int,
        dilation: int,
        qkv_bias: bool,
        backend: Literal["auto", "natten", "tiled", "torch"],
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(
            isinstance(kernel_size, int) and kernel_size >= 3 and kernel_size % 2 == 1,
            "kernel_size",
            kernel_size,
            "an odd int >= 3 (NAT's rule), e.g. 3, 5, 7",
        )
        check_param(isinstance(dilation, int) and dilation >= 1, "dilation", dilation, "an int >= 1")
        check_param(backend in ("auto", *BACKENDS), "backend", backend, f"one of {['auto', *BACKENDS]}")
        self.kernel_size, self.dilation = kernel_size, dilation
        self.qkv_bias, self.backend = qkv_bias, backend
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def check_input(self, H: int, W: int) -> None:
        span, small = self.kernel_size * self.dilation, min(H, W)
        if span <= small:
            return
        fixes = []
        if _max_odd(small // self.dilation) >= 3:
            fixes.append(f"kernel_size <= {_max_odd(small // self.dilation)}")
        if small >= self.kernel_size:
            fixes.append(f"dilation <= {small // self.kernel_size}")
        fixes.append(f"a map of at least {span}x{span}")
        raise ValueError(
            f"{type(self).__name__}: kernel_size * dilation = {self.kernel_size} * {self.dilation} "
            f"= {span} exceeds the {H}x{W} map; NATTEN needs kernel_size * dilation <= min(H, W) "
            f"= {small}: choose {' or '.join(fixes)}"
        )

    reference_backend = "torch"

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, H, W, _ = x.shape
        with torch.no_grad():
            qkv = self.qkv(x).view(B, H, W, 3, self.num_heads, self.head_dim)
        return qkv.unbind(3)

    def backend_unavailable(self, x: Tensor, backend: str, backward: bool = False) -> str | None:
        """``natten`` where NATTEN cannot run the input (or, with ``backward``, its gradient: none on
        CPU); ``tiled`` and ``torch`` run everywhere."""
        if backend != "natten":
            return None
        q, k, v = self._qkv(x)
        if backward:
            q = q.detach().requires_grad_(True)
        return natten_unavailable(q, k, v)

    def chosen_backend(self, x: Tensor) -> str | None:
        return self.choose_backend(*self._qkv(x))

    def choose_backend(self, q: Tensor, k: Tensor, v: Tensor) -> str:
        """The backend this call runs on; ``backend="natten"`` raises where natten cannot run.

        While FLOPs are being counted (tracing, ``FlopCounterMode``) every backend runs ``torch``.
        """
        if self.backend == "torch":
            return "torch"
        why = counting_context()
        if why is not None:
            log.debug("%s: backend 'torch' (%s skipped: %s)", self.name, self.backend, why)
            return "torch"
        if self.backend == "tiled":
            return "tiled"
        why = natten_unavailable(q, k, v)
        if why is None and self.backend == "auto" and q.device.type == "cpu":
            why = "on CPU natten runs unfused FlexAttention (all N x N scores); tiled is faster"
        if why is None and self.backend == "auto" and not natten.HAS_LIBNATTEN:
            why = "natten has no compiled library here (no fused kernels): it would run unfused FlexAttention"
        if why is None:
            log.debug("%s: backend 'natten' (requested %r, natten can run)", self.name, self.backend)
            return "natten"
        if self.backend == "natten":
            raise RuntimeError(f"{self.name}: backend='natten' cannot run: {why}; use 'tiled' or 'auto'")
        log.debug("%s: backend 'tiled' (natten skipped: %s)", self.name, why)
        return "tiled"

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        with phase("projections"):
            qkv = self.qkv(x).view(B, H, W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(3)  # each (B, H, W, heads, head_dim)
        backend = self.choose_backend(q, k, v)
        with phase("attention"):
            if backend == "natten":
                k_, d_ = self.kernel_size, self.dilation
                out = natten.na2d(q, k, v, kernel_size=k_, dilation=d_, scale=self.scale)
            elif backend == "tiled":
                out = tiled_neighborhood_attention(q, k, v, self.kernel_size, self.dilation, self.scale)
            else:
                out = neighborhood_attention(q, k, v, self.kernel_size, self.dilation, self.scale)
        with phase("projections"):
            return self.proj(out.reshape(B, H, W, C))  # out: (B, H, W, heads, head_dim)

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's softmax weights over its ``kernel_size²`` keys, per head, zero elsewhere (no
        relative position bias: this variant has none), computed in plain torch as the ``torch``
        backend does, whatever backend ``forward`` takes.

        Region "window" (NAT) or "dilated window" (DiNAT): the extent of the key set, shifted inward at
        the borders; with dilation d only every d-th row and column of it are keys, which the weights
        show.
        """
        self._check_query(x, query)
        _, H, W, _ = x.shape
        r, c = query
        keys = neighborhood_index(H, W, self.kernel_size, self.dilation, x.device)[r * W + c]  # (k²,)
        qkv = self.qkv(x).view(H * W, 3, self.num_heads, self.head_dim)
        q, k = qkv[r * W + c, 0], qkv[keys, 1]  # (m, d), (k², m, d)
        probs = torch.einsum("md,nmd->mn", q * self.scale, k).softmax(dim=-1)  # (m, k²)
        weights = x.new_zeros(self.num_heads, H * W).index_copy_(1, keys, probs).view(self.num_heads, H, W)
        rows, cols = keys // W, keys % W
        top, left = int(rows.min()), int(cols.min())
        extent = (int(rows.max()) - top + 1, int(cols.max()) - left + 1)
        k, d = self.kernel_size, self.dilation
        label = "dilated window" if d > 1 else "window"
        note = f"softmax over the {k}x{k} neighbourhood" + (f", keys {d} tokens apart" if d > 1 else "")
        return AttentionMap(query, weights, regions=(Region(label, top, left, *extent),), note=note)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: projections 4·N·C², attention 2·N·k²·C (QKᵀ and AV over k² keys)."""
        N, C, K2 = H * W, self.dim, self.kernel_size**2
        return {"qkv_proj": 3 * N * C * C, "attention": 2 * N * K2 * C, "out_proj": N * C * C}


@register_mechanism("neighborhood")
class NeighborhoodAttention(NeighborhoodAttentionBase):
    """Neighborhood Attention (NAT, CVPR 2023) without relative position bias, through NATTEN.

    Args:
        dim: channels C.
        num_heads: attention heads (NAT uses head_dim 32).
        kernel_size: window side k, odd and >= 3 (NAT: 7 in every stage); k must not exceed H or W.
        qkv_bias: bias in the q/k/v projection (NAT uses one).
        backend: "auto" (natten on CUDA where it can run, else tiled), "natten", "tiled" or "torch".
    """

    display_name = "NAT"
    color = "#009E73"
    marker = "P"
    bibtex = (
        "@inproceedings{hassani2023nat,\n  title = {Neighborhood Attention Transformer},\n  author = "
        "{Hassani, Ali and Walton, Steven and Li, Jiachen and Li, Shen and Shi, Humphrey},\n  booktitle = "
        "{CVPR},\n  year = {2023}\n}"
    )
    param_symbols = {"kernel_size": "k"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kernel_size: int = 7,
        qkv_bias: bool = True,
        backend: Literal["auto", "natten", "tiled", "torch"] = "auto",
    ) -> None:
        super().__init__(
            dim, num_heads, kernel_size=kernel_size, dilation=1, qkv_bias=qkv_bias, backend=backend
        )
