"""Window attention with shifted windows (W-MSA / SW-MSA), Swin Transformer (Liu et al., ICCV 2021).

The attention of one Swin block, as the released Swin (and timm's ``WindowAttention`` inside
``SwinTransformerBlock``) computes it:

- zero-pad the input at bottom/right to a multiple of the window (the released detection and
  segmentation block's padding: padded tokens carry the qkv bias and are not masked), crop after;
  padding comes before the shift as in that code (timm shifts first, then pads; the two agree
  when H and W are multiples of the window);
- cyclic shift by ``-shift_size`` (SW-MSA; ``shift_size=0`` is plain W-MSA), partition into
  ``window_size x window_size`` windows;
- per window, multi-head attention with scale head_dim^-0.5 plus a learned relative position bias
  (table ``(2w-1)^2 x heads``, trunc-normal std .02, indexed as Swin indexes it) and, for shifted
  windows, Swin's mask (-100 between tokens that the cyclic shift brought together from different
  sides of the map);
- merge windows, shift back, output projection.

Along an axis where the map is no larger than the window, the window covers the whole axis and
that axis is not shifted (timm's per-axis rule; the original Swin, when the smaller side fits,
shrinks a square window to that side and drops the shift). The bias of such a smaller window is
read from the centre of the same table, so the table always has the size of ``window_size`` (timm
instead builds a smaller table and interpolates a loaded one into it).

How it runs. The roll and the window partition are one copy of the input (:func:`partition_windows`),
and so are the window merge and the roll back (:func:`merge_windows`); q, k and v stay strided views
of the projection. Without a gradient for the bias table, attention goes through SDPA's fused
kernels: the bias as one ``(1, heads, n, n)`` mask for every window, or, shifted, the bias plus the
shift mask as ``(windows, heads, n, n)``, one call per image on CPU (that mask broadcast over the
images; SDPA's CPU kernel reads a mask of that shape only whole) and one call with the mask repeated
per image on GPU (timm's layout). When the table learns on CPU, where SDPA has no fused kernel
that returns a mask gradient, the same math is written out (scores, mask broadcast over images,
softmax, values). While FLOPs are counted the fused call runs, so that the count sees SDPA.

Peers (docs/peers.md): timm's ``WindowAttention`` on its fused path
(``SwinTransformerBlock._attn``); ours / timm 0.99-1.08 forward, 0.83-1.01 forward+backward
(CPU, 1 thread, fp32, batch 4, quiet machine, results/peers); before the changes above the
forward was 1.3-2.0x timm's.

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0): qkv and output projections
on every padded token and, per window of ``n = wh*ww`` tokens, the two attention products n²·C.
The bias lookup, mask addition and cyclic shifts are indexing and element-wise ops, free in that
convention.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, Region, check_param, phase, register_mechanism
from attnbench.flops import is_counting

__all__ = [
    "SwinWindowAttention",
    "merge_windows",
    "partition_windows",
    "relative_position_index",
    "shifted_window_mask",
]

MASK_VALUE = -100.0  # Swin's value between tokens of different regions in a shifted window


def _constant(fn):
    """Cache a function building an index/mask tensor from ints, a device and a dtype.

    The tensor is built outside inference mode so that a copy cached during an inference-mode call
    can still be used (saved for backward) by a later training call.
    """

    @functools.lru_cache(maxsize=64)
    @functools.wraps(fn)
    def wrapper(*args):
        with torch.inference_mode(False):
            return fn(*args)

    return wrapper


@_constant
def relative_position_index(wh: int, ww: int, window_size: int, device: torch.device) -> Tensor:
    """Index into the ``(2·window_size-1)²`` bias table for every (query, key) pair of a wh x ww window.

    Swin's convention: offset = coords(query) - coords(key), row offset major. Returns (wh·ww, wh·ww).
    """
    token = torch.arange(wh * ww, device=device)  # (n,) row-major in the window
    rows, cols = token // ww, token % ww
    d_row = rows[:, None] - rows[None, :] + window_size - 1  # (n, n) in [0, 2w-2]
    d_col = cols[:, None] - cols[None, :] + window_size - 1
    return d_row * (2 * window_size - 1) + d_col


@_constant
def shifted_window_mask(
    H: int, W: int, wh: int, ww: int, sh: int, sw: int, device: torch.device, dtype: torch.dtype
) -> Tensor | None:
    """Swin's additive SW-MSA mask for a padded ``H x W`` map, in window order: (nW, wh·ww, wh·ww).

    -100 between tokens that come from different regions of the cyclically shifted map, 0 elsewhere;
    None when nothing is shifted.
    """
    if sh == 0 and sw == 0:
        return None
    # region label of each row / column in the shifted frame: 0 away from the bottom/right edge,
    # 1 in the last window before the wrapped strip, 2 in the wrapped strip
    r = torch.arange(H, device=device)
    c = torch.arange(W, device=device)
    label_r = (r >= H - wh).long() + (r >= H - sh).long()  # (H,)
    label_c = (c >= W - ww).long() + (c >= W - sw).long()  # (W,)
    label = label_r[:, None] * 3 + label_c[None, :]  # (H, W)
    label = label.view(H // wh, wh, W // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)  # (nW, n)
    apart = label[:, :, None] != label[:, None, :]  # (nW, n, n)
    return torch.zeros(apart.shape, dtype=dtype, device=device).masked_fill(apart, MASK_VALUE)


def _axis_pieces(size: int, win: int, shift: int) -> list[tuple[slice, slice, slice]]:
    """How one axis of ``size`` tokens, rolled by ``-shift`` and cut into windows of ``win``, reads
    the unrolled axis: (windows, offsets in the window, source tokens) slices, one per piece.

    Window ``i``, offset ``a`` holds source token ``(i·win + a + shift) mod size``: the windows before
    the last read one contiguous span; the last window reads the axis end, then wraps to its start.
    """
    n = size // win
    if shift == 0:
        return [(slice(0, n), slice(0, win), slice(0, size))]
    return [
        (slice(0, n - 1), slice(0, win), slice(shift, shift + (n - 1) * win)),  # empty when n = 1
        (slice(n - 1, n), slice(0, win - shift), slice(size - win + shift, size)),
        (slice(n - 1, n), slice(win - shift, win), slice(0, shift)),  # the wrapped strip
    ]


def _partition(x: Tensor, wh: int, ww: int, sh: int, sw: int) -> Tensor:
    B, H, W, C = x.shape
    out = x.new_empty(B, H // wh, W // ww, wh, ww, C)
    grid = out.permute(0, 1, 3, 2, 4, 5)  # (B, nh, wh, nw, ww, C): a view of the map's rows and columns
    for i, a, rows in _axis_pieces(H, wh, sh):
        for j, c, cols in _axis_pieces(W, ww, sw):
            dst = grid[:, i, a, j, c]
            if dst.numel():
                dst.copy_(x[:, rows, cols].view(dst.shape))
    return out


def _merge(w: Tensor, sh: int, sw: int) -> Tensor:
    B, nh, nw, wh, ww, C = w.shape
    out = w.new_empty(B, nh * wh, nw * ww, C)
    grid = w.permute(0, 1, 3, 2, 4, 5)
    for i, a, rows in _axis_pieces(nh * wh, wh, sh):
        for j, c, cols in _axis_pieces(nw * ww, ww, sw):
            src = grid[:, i, a, j, c]
            if src.numel():
                out[:, rows, cols].view(src.shape).copy_(src)
    return out


class _Partition(torch.autograd.Function):
    """Roll and cut into windows in one copy; its gradient is the inverse permutation, :class:`_Merge`."""

    @staticmethod
    def forward(ctx, x: Tensor, wh: int, ww: int, sh: int, sw: int) -> Tensor:
        ctx.shifts = (sh, sw)
        return _partition(x, wh, ww, sh, sw)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _merge(grad, *ctx.shifts), None, None, None, None


class _Merge(torch.autograd.Function):
    """Windows back to the map, rolled back, in one copy; the inverse of :class:`_Partition`."""

    @staticmethod
    def forward(ctx, w: Tensor, sh: int, sw: int) -> Tensor:
        ctx.layout = (w.shape[3], w.shape[4], sh, sw)
        return _merge(w, sh, sw)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _partition(grad, *ctx.layout), None, None


def partition_windows(x: Tensor, wh: int, ww: int, sh: int = 0, sw: int = 0) -> Tensor:
    """``x`` (B, H, W, C) rolled by ``(-sh, -sw)`` and cut into wh x ww windows, in one copy (the roll
    and the partition fused): (B, H/wh, W/ww, wh, ww, C). H and W must be multiples of the window."""
    if _tracked(x):
        return _Partition.apply(x, wh, ww, sh, sw)
    return _partition(x, wh, ww, sh, sw)


def merge_windows(w: Tensor, sh: int = 0, sw: int = 0) -> Tensor:
    """The inverse of :func:`partition_windows`: windows (B, nh, nw, wh, ww, C) to the map
    (B, nh·wh, nw·ww, C), rolled by ``(sh, sw)``, in one copy."""
    if _tracked(w):
        return _Merge.apply(w, sh, sw)
    return _merge(w, sh, sw)


def _tracked(t: Tensor) -> bool:
    """Autograd records ``t``'s ops, outside a ``torch.jit`` trace (FLOP counting), which would see
    the autograd functions as opaque Python ops; their plain copies trace as data movement."""
    return t.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing()


def _spans(start: int, length: int, size: int, keep: int) -> list[tuple[int, int]]:
    """Positions ``start .. start + length - 1`` mod ``size`` as (first, count) runs, cut to ``[0, keep)``."""
    start %= size
    runs = [(start, min(length, size - start))]
    if start + length > size:
        runs.append((0, start + length - size))
    return [(a, min(a + n, keep) - a) for a, n in runs if a < keep]


@register_mechanism("swin")
class SwinWindowAttention(AttentionMechanism):
    """Swin's (shifted) window multi-head self-attention with relative position bias.

    Args:
        dim: channels C.
        num_heads: attention heads (Swin-T: 3, 6, 12, 24; head_dim 32).
        window_size: window side w (7 in every Swin model at 224²).
        shift_size: cyclic shift, 0 <= shift < window_size; None means window_size // 2 (the SW-MSA
            of every second Swin block); 0 is W-MSA.
        qkv_bias: bias in the q/k/v projection (True in Swin).
    """

    display_name = "Swin"
    color = "#0072B2"
    marker = "^"
    bibtex = (
        "@inproceedings{liu2021swin,\n  title = {Swin Transformer: Hierarchical Vision Transformer using "
        "Shifted Windows},\n  author = {Liu, Ze and Lin, Yutong and Cao, Yue and Hu, Han and Wei, Yixuan "
        "and Zhang, Zheng and Lin, Stephen and Guo, Baining},\n  booktitle = {ICCV},\n  year = {2021}\n}"
    )
    param_symbols = {"window_size": "M"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int = 7,
        shift_size: int | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(window_size >= 1, "window_size", window_size, "an int >= 1")
        shift = window_size // 2 if shift_size is None else shift_size
        check_param(
            0 <= shift < window_size,
            "shift_size",
            shift_size,
            f"None or an int in [0, window_size) = [0, {window_size})",
        )
        self.window_size = window_size
        self.shift_size = shift
        self.qkv_bias = qkv_bias
        self.scale = self.head_dim**-0.5

        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)

    def window_and_shift(self, H: int, W: int) -> tuple[int, int, int, int]:
        """Window (wh, ww) and shift (sh, sw) used on an H x W map: one unshifted window along an
        axis no longer than ``window_size``."""
        w, s = self.window_size, self.shift_size
        wh, sh = (H, 0) if H <= w else (w, s)
        ww, sw = (W, 0) if W <= w else (w, s)
        return wh, ww, sh, sw

    def padded_size(self, H: int, W: int) -> tuple[int, int]:
        wh, ww, _, _ = self.window_and_shift(H, W)
        return H + (-H) % wh, W + (-W) % ww

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H_in, W_in, C = x.shape
        wh, ww, sh, sw = self.window_and_shift(H_in, W_in)
        H, W = self.padded_size(H_in, W_in)
        m, d, n = self.num_heads, self.head_dim, wh * ww
        nh, nw = H // wh, W // ww
        if (H, W) != (H_in, W_in):
            x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))  # zeros at bottom/right, before qkv
        with phase("windows"):
            xw = partition_windows(x, wh, ww, sh, sw)  # (B, nh, nw, wh, ww, C)
        # q, k, v stay strided views of the projection (SDPA's CPU kernel takes any strides)
        with phase("projections"):
            qkv = self.qkv(xw).view(B * nh * nw, n, 3, m, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B·nW, m, n, d)

        with phase("bias and mask"):
            index = relative_position_index(wh, ww, self.window_size, x.device)  # (n, n)
            bias = self.relative_position_bias_table[index.view(-1)].view(n, n, m).permute(2, 0, 1)
            bias = bias.to(q.dtype).contiguous()  # (m, n, n); contiguous, or SDPA copies the mask per call
            mask = shifted_window_mask(H, W, wh, ww, sh, sw, x.device, q.dtype)  # (nW, n, n) or None
        with phase("attention"):
            out = self._attend(q, k, v, bias, mask, B)  # (B·nW, n, m, d)
        with phase("projections"):
            out = self.proj(out.reshape(B, nh, nw, wh, ww, C))  # on padded tokens too, as Swin does
        with phase("windows"):
            out = merge_windows(out, sh, sw)  # (B, H, W, C)
        return out[:, :H_in, :W_in].contiguous()

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None, B: int) -> Tensor:
        """Window attention with the bias (m, n, n) and the shift mask (nW, n, n) or None; q, k, v
        (B·nW, m, n, d) -> (B·nW, n, m, d)."""
        nW, (_, m, n, _) = q.shape[0] // B, q.shape
        if bias.requires_grad and q.device.type == "cpu" and not is_counting():
            # SDPA has no CPU kernel that returns a mask gradient: it would take its unfused math path.
            # The same math written out skips that path's extra passes (its NaN-safe softmax) and
            # adds the mask per window, broadcast over the images.
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B·nW, m, n, n)
            full = bias if mask is None else bias + mask.unsqueeze(1)  # (m, n, n) or (nW, m, n, n)
            attn = (attn.view(B, nW, m, n, n) + full).view(B * nW, m, n, n)
            return (attn.softmax(dim=-1) @ v).transpose(1, 2)
        if mask is None:  # one bias for every window: (1, m, n, n) broadcasts in the fused kernels
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None], scale=self.scale)
            return out.transpose(1, 2)
        full = bias + mask.unsqueeze(1)  # (nW, m, n, n)
        if q.device.type == "cpu":
            # a mask per window and head is (nW, m, n, n); the fused kernels take a mask broadcast over
            # the batch dim only whole, so one call per image instead of a (B·nW, m, n, n) copy
            outs = [
                F.scaled_dot_product_attention(qi, ki, vi, attn_mask=full, scale=self.scale).transpose(1, 2)
                for qi, ki, vi in zip(q.split(nW), k.split(nW), v.split(nW))
            ]
            return torch.cat(outs)  # SDPA's CPU output is laid out (nW, n, m, d): the transposes are free
        # GPU kernels pad and copy a mask whose rows are not aligned anyway: one call, timm's layout
        full = full.repeat(B, 1, 1, 1)  # (B·nW, m, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=full, scale=self.scale).transpose(1, 2)

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's softmax weights over the keys of its (shifted) window, per head, with the
        relative position bias and the shift mask, moved back to the keys' original positions.

        The window is one Region (label "window", or "shifted window"), several rectangles when the
        cyclic shift wraps it around the map. On a padded map the window may hold padded keys, which
        take part of the weight but are not on the map: then ``normalized`` is False.
        """
        self._check_query(x, query)
        _, H_in, W_in, C = x.shape
        r, c = query
        wh, ww, sh, sw = self.window_and_shift(H_in, W_in)
        H, W = self.padded_size(H_in, W_in)
        m = self.num_heads
        x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))
        # in the rolled frame the query sits at ((r - sh) mod H, (c - sw) mod W); its window's token
        # at offset (a, b) comes from ((i·wh + a + sh) mod H, (j·ww + b + sw) mod W) of the map
        rr, cc = (r - sh) % H, (c - sw) % W
        i, j = rr // wh, cc // ww
        rows = (i * wh + torch.arange(wh, device=x.device) + sh) % H  # (wh,)
        cols = (j * ww + torch.arange(ww, device=x.device) + sw) % W  # (ww,)
        keys = (rows[:, None] * W + cols[None, :]).view(-1)  # (n,) flat positions, window order
        qkv = self.qkv(x).view(H * W, 3, m, self.head_dim)
        q, k = qkv[r * W + c, 0], qkv[keys, 1]  # (m, d), (wh·ww, m, d)
        token = (rr % wh) * ww + cc % ww  # the query's place in its window
        index = relative_position_index(wh, ww, self.window_size, x.device)[token]  # (n,)
        scores = torch.einsum("md,nmd->mn", q * self.scale, k) + self.relative_position_bias_table[index].T
        mask = shifted_window_mask(H, W, wh, ww, sh, sw, x.device, q.dtype)  # (nW, n, n) or None
        if mask is not None:
            scores = scores + mask[i * (W // ww) + j, token]
        weights = x.new_zeros(m, H * W).index_copy_(1, keys, scores.softmax(dim=-1))
        weights = weights.view(m, H, W)[:, :H_in, :W_in]
        label = "shifted window" if sh or sw else "window"
        regions = tuple(
            Region(label, top, left, height, width)
            for top, height in _spans(i * wh + sh, wh, H, H_in)
            for left, width in _spans(j * ww + sw, ww, W, W_in)
        )
        padded = bool((rows >= H_in).any() or (cols >= W_in).any())
        note = f"softmax over the {wh}x{ww} {label}, relative position bias"
        note += " and shift mask" if mask is not None else ""
        note += "; padded keys off the map take the rest of the weight" if padded else ""
        return AttentionMap(query, weights.contiguous(), normalized=not padded, regions=regions, note=note)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1 on the padded map: projections 4·N·C², attention 2·N·n·C (n = wh·ww)."""
        wh, ww, _, _ = self.window_and_shift(H, W)
        Hp, Wp = self.padded_size(H, W)
        N, C, n = Hp * Wp, self.dim, wh * ww
        return {"qkv_proj": 3 * N * C * C, "attention": 2 * N * n * C, "out_proj": N * C * C}
