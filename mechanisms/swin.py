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

from attnbench import AttentionMechanism, check_param, register_mechanism

__all__ = ["SwinWindowAttention", "relative_position_index", "shifted_window_mask"]

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
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))

        # windows and heads share one batch-like dim so that SDPA sees 4-D inputs (its fused kernels)
        qkv = self.qkv(x).view(B, nh, wh, nw, ww, 3, m, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, nh * nw * m, n, d)
        q, k, v = qkv.unbind(0)  # each (B, nW·m, n, d)

        index = relative_position_index(wh, ww, self.window_size, x.device)  # (n, n)
        bias = self.relative_position_bias_table[index.view(-1)].view(n, n, m).permute(2, 0, 1)  # (m, n, n)
        bias = bias.to(q.dtype).unsqueeze(0)  # (1, m, n, n)
        mask = shifted_window_mask(H, W, wh, ww, sh, sw, x.device, q.dtype)  # (nW, n, n) or None
        if mask is not None:
            attn_mask = bias + mask.unsqueeze(1)  # (nW, m, n, n)
        else:
            attn_mask = bias.expand(nh * nw, m, n, n)
        attn_mask = attn_mask.reshape(nh * nw * m, n, n)  # broadcast over B
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        # out: (B, nW·m, n, d)
        out = out.view(B, nh, nw, m, wh, ww, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, C)
        if sh or sw:
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
        out = self.proj(out)  # on padded tokens too, as Swin projects whole windows
        return out[:, :H_in, :W_in].contiguous()

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1 on the padded map: projections 4·N·C², attention 2·N·n·C (n = wh·ww)."""
        wh, ww, _, _ = self.window_and_shift(H, W)
        Hp, Wp = self.padded_size(H, W)
        N, C, n = Hp * Wp, self.dim, wh * ww
        return {"qkv_proj": 3 * N * C * C, "attention": 2 * N * n * C, "out_proj": N * C * C}
