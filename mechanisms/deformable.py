"""Deformable multi-head attention, DAT (Xia et al., CVPR 2022): ``DAttentionBaseline``.

The variant of the CVPR 2022 release (LeapLabTHU/DAT ``models/dat_blocks.py`` before DAT++) on
its ``use_pe=True, dwc_pe=False, fixed_pe=False`` path, the path of DAT-T's deformable blocks:

1. ``q = proj_q(x)`` (1x1 conv).
2. Offsets per group of channels (``n_groups``; all heads of a group share the sampled points):
   depthwise ``offset_kernel`` conv with stride ``offset_stride`` and padding ``k // 2`` on the
   group's q, LayerNorm over channels, GELU, 1x1 conv to 2 channels (y, x) without bias, then
   ``tanh * offset_range_factor / (Hk, Wk)``: at most ``offset_range_factor`` cells of the
   ``Hk x Wk`` reference grid.
3. Reference points at the centres of the ``Hk x Wk`` grid, ``(2i + 1) / Hk - 1`` in
   grid_sample's [-1, 1] coordinates; keys are sampled from the block input ``x`` (not q) at
   reference + offset, bilinear with ``align_corners=True``, then projected: ``k = proj_k``,
   ``v = proj_v``.
4. Every one of the H·W queries attends to the Hk·Wk sampled keys, scale head_dim^-0.5, plus a
   relative position bias: a table ``rpe_table`` (heads, 2q-1, 2q-1) read with grid_sample
   (bilinear, ``align_corners=True``) at ``(query - sampled position) / 2``, queries at the
   centres of the H x W grid as in the CVPR 2022 code (DAT++ moved them to the corners).
5. ``proj_out`` (1x1 conv).

Defaults are DAT-T's stage 3 (14 x 14 at 224^2): ``offset_kernel=5``, ``offset_stride=1`` (every
position is sampled once, deformed), ``offset_range_factor=2``, bias on, ``q_size=14``. DAT-T uses
one offset group per four heads (3 groups at 12 heads); the default ``n_groups=1`` is chosen so the
mechanism builds for any head count; pass ``n_groups=num_heads // 4`` for DAT-T's setting.

The bias table and the map size: the released module sizes its table for the map it was built for
(``q_size``) and its reshape only runs at that size. Here the table is built for ``q_size`` and
read in normalised coordinates, so any H x W samples it bilinearly (what DAT++ and DeBiFormer do at
detection resolutions); at ``H = W = q_size`` this is the released computation.

``no_off=True`` is DAT's no-offset ablation: keys are sampled at the reference points themselves;
the offset network is still built (same state dict) but frozen and not run.

State-dict keys equal the released module's (``conv_offset.{0,1.norm,3}``, ``proj_{q,k,v,out}``,
``rpe_table``), with the same shapes, so a released ``DAttentionBaseline`` state dict loads as is.

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0). fvcore counts the two
grid_sample calls (keys, bias) as 4 MACs per output element and LayerNorm as 5 per element; the
attention products go through ``scaled_dot_product_attention`` (the bias as its float mask), which
attnbench counts as QKᵀ plus AV.

Peers (docs/peers.md): a plain re-implementation of the released CVPR 2022 forward (einsum, explicit
softmax); ours / released 0.78-1.12 forward (1.12 at 28², C 128, 1.04 in the run before: see
docs/peers.md), 0.81-0.96 forward+backward (CPU, 1 thread, fp32, batch 4, quiet machine, results/peers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, check_param, phase, register_mechanism

__all__ = [
    "ChannelLayerNorm",
    "DeformableAttention",
    "centre_grid",
    "corner_grid",
    "grid_points",
    "relative_position_bias",
    "splat_bilinear",
]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (DAT's ``LayerNormProxy``; weights in ``.norm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def centre_grid(h: int, w: int, like: Tensor) -> Tensor:
    """Centres of an h x w grid in grid_sample's [-1, 1] coordinates, (h, w, 2) as (y, x)."""
    ys = (torch.arange(h, device=like.device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=like.device, dtype=torch.float32) * 2 + 1) / w - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).to(like.dtype)


def corner_grid(h: int, w: int, like: Tensor) -> Tensor:
    """Pixels of an h x w map in grid_sample's ``align_corners=True`` coordinates, (h, w, 2) as (y, x)."""
    ys = torch.arange(h, device=like.device, dtype=torch.float32) * (2 / max(h - 1, 1)) - 1
    xs = torch.arange(w, device=like.device, dtype=torch.float32) * (2 / max(w - 1, 1)) - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).to(like.dtype)


def relative_position_bias(table: Tensor, queries: Tensor, pos: Tensor, n_groups: int) -> Tensor:
    """DAT's continuous relative position bias, one value per (head, query, sampled key).

    Args:
        table: (heads, Th, Tw) learned bias over displacements in [-1, 1]² (after halving).
        queries: (H, W, 2) query positions, (y, x) in [-1, 1].
        pos: (B·g, Hk, Wk, 2) sampled key positions of each batch element and offset group.
        n_groups: offset groups g; head h uses the positions of group h // (heads / g).

    Returns:
        (B, heads, H·W, Hk·Wk) bias.
    """
    heads, th, tw = table.shape
    Bg = pos.shape[0]
    disp = (queries.reshape(1, -1, 1, 2) - pos.reshape(Bg, 1, -1, 2)) * 0.5  # (B·g, HW, Ns, 2)
    tab = table.reshape(1, n_groups, heads // n_groups, th, tw).expand(Bg // n_groups, -1, -1, -1, -1)
    tab = tab.reshape(Bg, heads // n_groups, th, tw)  # (B·g, heads/g, Th, Tw)
    bias = F.grid_sample(tab, disp.flip(-1), mode="bilinear", align_corners=True)  # (B·g, heads/g, HW, Ns)
    return bias.reshape(Bg // n_groups, heads, *bias.shape[-2:])


def grid_points(pos: Tensor, H: int, W: int) -> Tensor:
    """grid_sample positions (..., 2) as (y, x) in [-1, 1], ``align_corners=True``, to fractional
    (row, col) on an H x W map: -1 is row/column 0, +1 is row H - 1 / column W - 1."""
    scale = pos.new_tensor([(H - 1) / 2, (W - 1) / 2])
    return (pos + 1) * scale


def splat_bilinear(points: Tensor, weights: Tensor, H: int, W: int) -> Tensor:
    """Point weights spread over an H x W grid as bilinear sampling reads it (zeros outside the map).

    Args:
        points: (heads, P, 2) fractional (row, col) positions.
        weights: (heads, P) weight of each point.

    Returns:
        (heads, H, W): each point's weight split over its four neighbours in proportion to the
        bilinear coefficients; the share of a neighbour outside the map is dropped, as
        ``grid_sample(padding_mode="zeros")`` reads zero there.
    """
    m = points.shape[0]
    base = points.floor()
    frac = points - base  # (m, P, 2)
    out = weights.new_zeros(m, H * W)
    for dr in (0, 1):
        for dc in (0, 1):
            row, col = base[..., 0].long() + dr, base[..., 1].long() + dc  # (m, P)
            coef = (frac[..., 0] if dr else 1 - frac[..., 0]) * (frac[..., 1] if dc else 1 - frac[..., 1])
            inside = (row >= 0) & (row < H) & (col >= 0) & (col < W)
            flat = row.clamp(0, H - 1) * W + col.clamp(0, W - 1)  # (m, P)
            out.scatter_add_(1, flat, weights * coef * inside)
    return out.view(m, H, W)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@register_mechanism("deformable")
class DeformableAttention(AttentionMechanism):
    """Deformable multi-head attention (DAT, CVPR 2022), ``DAttentionBaseline`` with the table bias.

    Args:
        dim: channels C.
        num_heads: attention heads (DAT uses head_dim 32).
        n_groups: offset groups; must divide num_heads (DAT-T: num_heads / 4; default 1).
        offset_kernel: odd kernel of the depthwise offset conv (DAT-T: 9/7/5/3 by stage; 5 = stage 3).
        offset_stride: stride of the offset conv: keys come from a ceil(H/s) x ceil(W/s) grid
            (DAT's ``stride``; DAT-T stage 3: 1).
        offset_range_factor: offsets are at most this many reference-grid cells (tanh bound; DAT-T: 2).
        use_pe: add the relative position bias (DAT-T's deformable stages: on).
        q_size: side of the map the bias table is built for, table (heads, 2q-1, 2q-1)
            (DAT-T stage 3: 14); other map sizes read it in normalised coordinates.
        no_off: sample at the reference points (DAT's no-offset ablation; offset net frozen, unused).
    """

    display_name = "DAT"
    color = "#882255"
    marker = "*"
    bibtex = (
        "@inproceedings{xia2022dat,\n  title = {Vision Transformer with Deformable Attention},\n  author = "
        "{Xia, Zhuofan and Pan, Xuran and Song, Shiji and Li, Li Erran and Huang, Gao},\n  booktitle = "
        "{CVPR},\n  year = {2022}\n}"
    )
    param_symbols = {"n_groups": "G", "offset_stride": "r", "offset_range_factor": "s", "offset_kernel": "k"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        n_groups: int = 1,
        offset_kernel: int = 5,
        offset_stride: int = 1,
        offset_range_factor: float = 2.0,
        use_pe: bool = True,
        q_size: int = 14,
        no_off: bool = False,
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(
            n_groups >= 1 and num_heads % n_groups == 0,
            "n_groups",
            n_groups,
            f"a divisor of num_heads = {num_heads}: {_divisors(num_heads)}",
        )
        check_param(
            offset_kernel >= 1 and offset_kernel % 2 == 1, "offset_kernel", offset_kernel, "an odd int >= 1"
        )
        check_param(offset_stride >= 1, "offset_stride", offset_stride, "an int >= 1")
        check_param(offset_range_factor > 0, "offset_range_factor", offset_range_factor, "a float > 0")
        check_param(q_size >= 1, "q_size", q_size, "an int >= 1")
        self.n_groups, self.offset_kernel, self.offset_stride = n_groups, offset_kernel, offset_stride
        self.offset_range_factor, self.use_pe = offset_range_factor, use_pe
        self.q_size, self.no_off = q_size, no_off
        self.scale = self.head_dim**-0.5
        cg = dim // n_groups

        self.conv_offset = nn.Sequential(
            nn.Conv2d(cg, cg, offset_kernel, offset_stride, offset_kernel // 2, groups=cg),
            ChannelLayerNorm(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, 1, bias=False),
        )
        if no_off:
            self.conv_offset.requires_grad_(False)
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.rpe_table = None
        if use_pe:
            self.rpe_table = nn.Parameter(torch.zeros(num_heads, 2 * q_size - 1, 2 * q_size - 1))
            nn.init.trunc_normal_(self.rpe_table, std=0.01)

    def key_grid_size(self, H: int, W: int) -> tuple[int, int]:
        """(Hk, Wk): the offset conv's output size, one sampled key per cell."""
        s = self.offset_stride
        return (H - 1) // s + 1, (W - 1) // s + 1

    def sample_positions(self, q: Tensor) -> Tensor:
        """Sampled key positions (B·g, Hk, Wk, 2), (y, x) in [-1, 1], from q (B, C, H, W)."""
        B, C, H, W = q.shape
        g = self.n_groups
        Hk, Wk = self.key_grid_size(H, W)
        ref = centre_grid(Hk, Wk, q).expand(B * g, -1, -1, -1)  # (B·g, Hk, Wk, 2)
        if self.no_off:
            return ref
        offset = self.conv_offset(q.reshape(B * g, C // g, H, W))  # (B·g, 2, Hk, Wk)
        limit = offset.new_tensor([self.offset_range_factor / Hk, self.offset_range_factor / Wk])
        return ref + offset.tanh().permute(0, 2, 3, 1) * limit

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        g, m, d = self.n_groups, self.num_heads, self.head_dim
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        with phase("projections"):
            q = self.proj_q(x)  # (B, C, H, W)
        with phase("offsets"):
            pos = self.sample_positions(q)  # (B·g, Hk, Wk, 2)
        Hk, Wk = pos.shape[1:3]
        with phase("sampling"):
            x_s = F.grid_sample(
                x.reshape(B * g, C // g, H, W), pos.flip(-1), mode="bilinear", align_corners=True
            )  # (B·g, C/g, Hk, Wk)
            x_s = x_s.reshape(B, C, Hk, Wk)
        with phase("projections"):
            k = self.proj_k(x_s).reshape(B, m, d, Hk * Wk).transpose(-2, -1)  # (B, m, Ns, d)
            v = self.proj_v(x_s).reshape(B, m, d, Hk * Wk).transpose(-2, -1)  # (B, m, Ns, d)
        q = q.reshape(B, m, d, H * W).transpose(-2, -1)  # (B, m, HW, d)
        with phase("attention"):
            bias = None
            if self.rpe_table is not None:
                bias = relative_position_bias(self.rpe_table, centre_grid(H, W, x), pos, g)  # (B, m, HW, Ns)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # (B, m, HW, d)
        with phase("projections"):
            out = self.proj_out(out.transpose(-2, -1).reshape(B, C, H, W))
        return out.permute(0, 2, 3, 1)

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's softmax weights over the Hk·Wk sampled keys (with the relative position bias
        where ``use_pe``), per head, as points and splatted onto the grid.

        ``points`` are the sampling positions (heads, Hk·Wk, 2) in fractional (row, col) of the input
        grid (grid_sample's ``align_corners=True`` convention: -1 is row 0, +1 is row H - 1), a head
        taking its offset group's points; offsets can carry a point up to ``offset_range_factor``
        key-grid cells past the outer reference points, off the map. ``weights`` split each point's
        weight over its four neighbours with the bilinear coefficients the sampling used, so that
        ``proj_v`` of the map under them is the attended value: they sum to 1 per head unless a
        point lies off the map, whose neighbours there read zeros (then ``normalized`` is False).
        With ``n_groups > 1`` a key's value mixes the channels of every group's point; each head is
        drawn at its own group's points.
        """
        self._check_query(x, query)
        _, H, W, C = x.shape
        r, c = query
        g, m, d = self.n_groups, self.num_heads, self.head_dim
        x = x.permute(0, 3, 1, 2)  # (1, C, H, W)
        q_map = self.proj_q(x)  # (1, C, H, W)
        pos = self.sample_positions(q_map)  # (g, Hk, Wk, 2)
        x_s = F.grid_sample(x.reshape(g, C // g, H, W), pos.flip(-1), mode="bilinear", align_corners=True)
        k = self.proj_k(x_s.reshape(1, C, *pos.shape[1:3])).reshape(m, d, -1)  # (m, d, Ns)
        scores = torch.einsum("md,mdn->mn", q_map[0, :, r, c].view(m, d) * self.scale, k)  # (m, Ns)
        if self.rpe_table is not None:
            here = centre_grid(H, W, x)[r, c].view(1, 1, 2)
            scores = scores + relative_position_bias(self.rpe_table, here, pos, g)[0, :, 0]
        probs = scores.softmax(dim=-1)  # (m, Ns)
        points = grid_points(pos, H, W).reshape(g, 1, -1, 2).expand(-1, m // g, -1, -1).reshape(m, -1, 2)
        weights = splat_bilinear(points, probs, H, W)
        inside = bool(((points >= 0) & (points <= points.new_tensor([H - 1, W - 1]))).all())
        note = f"softmax over {probs.shape[1]} deformed sampling points"
        note += ", relative position bias" if self.rpe_table is not None else ""
        note += "; weights: bilinear splat of the points"
        note += "" if inside else " (points off the map lose their outside share)"
        return AttentionMap(query, weights, normalized=inside, points=points, point_weights=probs, note=note)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1 with N = HW queries and Ns = Hk·Wk sampled keys.

        grid_sample is 4 MACs per output element and LayerNorm 5 per element (fvcore's rules).
        """
        C, N = self.dim, H * W
        Hk, Wk = self.key_grid_size(H, W)
        Ns = Hk * Wk
        offsets = not self.no_off
        return {
            "q_proj": N * C * C,
            "offset_dwconv": Ns * C * self.offset_kernel**2 if offsets else 0,
            "offset_norm": 5 * Ns * C if offsets else 0,
            "offset_proj": Ns * C * 2 if offsets else 0,
            "key_sampling": 4 * Ns * C,
            "kv_proj": 2 * Ns * C * C,
            "attention": 2 * N * Ns * C,
            "position_bias": 4 * self.num_heads * N * Ns if self.use_pe else 0,
            "out_proj": N * C * C,
        }
