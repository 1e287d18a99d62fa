"""Focused linear attention, FLatten Transformer (Han et al., ICCV 2023): ``FocusedLinearAttention``.

The module of the released ``models/flatten_swin.py`` (LeapLabTHU/FLatten-Transformer), which
``flatten_pvt.py`` repeats with its q and kv split into two projections:

1. ``q | k | v = qkv(x)`` (one Linear C -> 3C, with bias); ``k = k + positional_encoding``, a learned
   absolute encoding of every token (zeros at initialisation).
2. The focusing function on q and k, over all C channels at once (not per head):
   ``t = (relu(t) + 1e-6) / softplus(scale)`` with a learned per-channel ``scale`` (zeros at
   initialisation: every channel divided by ln 2), then ``t^p · ‖t‖ / ‖t^p‖``: the same norm,
   direction sharpened by the power ``p = focusing_factor``.
3. Linear attention per head, normalised by the mean key:
   ``out = q (kᵀ/√N)(v/√N) / (q · mean(k) + 1e-6)``, so a query's weights are
   ``q·k_j / (Σ_j q·k_j + N·1e-6)``.
4. Rank restoration: a ``kernel_size`` depthwise conv on the v map of each head, one conv of
   head_dim channels shared by all heads, added before ``proj``.

The variant: Swin-style layout (one ``qkv`` projection) on the whole map. The released models never
split a linear-attention stage into windows: FLatten-Swin-T/S/B use window 56 at 224², no smaller
than any stage map (Swin's block then sets the window to the map and the shift to 0; the mask is
not used), and FLatten-PVT's linear blocks use ``la_sr_ratios = '1111'`` (no spatial reduction).
Defaults are the paper's: ``focusing_factor=3``, ``kernel_size=5``.

The positional encoding and the map size: the release sizes ``positional_encoding`` to the map the
model was built for, ``(1, pe_size², C)``, and runs only there. Here it is kept at that shape and,
on any other H x W, read as a ``pe_size x pe_size`` map and interpolated bilinearly
(``align_corners=False``), as the released PVT interpolates its own position embedding to other
sizes. At ``H = W = pe_size`` it is added as is, the released computation. ``pe_size`` defaults to
14, the 14 x 14 map of stage 3 at 224² (FLatten-PVT-T runs focused linear attention there), as
``deformable`` takes DAT-T's stage 3; FLatten-Swin-T's two linear stages are 56 and 28. Any map
size works.

State-dict keys and shapes equal the released ``FocusedLinearAttention``'s (``qkv``, ``proj``,
``dwc``, ``scale``, ``positional_encoding``), so a released state dict loads as is for
``pe_size`` = its window.

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0). The three products run as
``matmul``: q·mean(k) is N·C MACs, kᵀv and q(kᵀv) N·C·head_dim each; the depthwise conv is
N·C·kernel_size². The focusing function (relu, powers, norms, divisions), the mean and the softplus
are element-wise or reductions, free; the positional-encoding interpolation, where it runs, is 4 MACs
per output element. ``softplus`` is element-wise and free, like the other activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, check_param, phase, register_mechanism

__all__ = ["FocusedLinearAttention", "focus"]

EPS = 1e-6  # the release's constant in the kernel (relu + eps) and in the normaliser


def focus(t: Tensor, power: float) -> Tensor:
    """FLatten's focusing map of positive features: ``t^p`` rescaled to the norm of ``t`` (last dim)."""
    powered = t**power
    return powered / powered.norm(dim=-1, keepdim=True) * t.norm(dim=-1, keepdim=True)


@register_mechanism("flatten")
class FocusedLinearAttention(AttentionMechanism):
    """Focused linear attention of FLatten-Swin / FLatten-PVT over the whole map.

    Args:
        dim: channels C.
        num_heads: attention heads (FLatten-Swin-T: 3, 6 in its linear stages).
        focusing_factor: the focusing power p (3 in every released model).
        kernel_size: odd kernel of the depthwise rank-restoration conv (5 in every released model).
        pe_size: side of the map the positional encoding is built for (the released model's stage
            map); other maps interpolate it.
        qkv_bias: bias in the q/k/v projection (True in FLatten-Swin and FLatten-PVT).
    """

    display_name = "FLatten"
    color = "#999933"
    marker = "p"
    bibtex = (
        "@inproceedings{han2023flatten,\n  title = {{FLatten} Transformer: Vision Transformer using Focused "
        "Linear Attention},\n  author = {Han, Dongchen and Pan, Xuran and Han, Yizeng and Song, Shiji and "
        "Huang, Gao},\n  booktitle = {ICCV},\n  year = {2023}\n}"
    )
    param_symbols = {"focusing_factor": "p", "kernel_size": "k"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        focusing_factor: float = 3.0,
        kernel_size: int = 5,
        pe_size: int = 14,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(focusing_factor > 0, "focusing_factor", focusing_factor, "a float > 0 (1: no focusing)")
        check_param(kernel_size >= 1 and kernel_size % 2 == 1, "kernel_size", kernel_size, "an odd int >= 1")
        check_param(pe_size >= 1, "pe_size", pe_size, "an int >= 1")
        self.focusing_factor, self.kernel_size = focusing_factor, kernel_size
        self.pe_size, self.qkv_bias = pe_size, qkv_bias
        d = self.head_dim

        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(d, d, kernel_size, padding=kernel_size // 2, groups=d)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_encoding = nn.Parameter(torch.zeros(1, pe_size * pe_size, dim))

    def position_encoding(self, H: int, W: int) -> Tensor:
        """The encoding added to k on an H x W map, (1, H·W, C)."""
        s = self.pe_size
        if (H, W) == (s, s):
            return self.positional_encoding
        table = self.positional_encoding.reshape(1, s, s, self.dim).permute(0, 3, 1, 2)  # (1, C, s, s)
        table = F.interpolate(table, size=(H, W), mode="bilinear")  # (1, C, H, W)
        return table.flatten(2).transpose(1, 2)

    def channel_scale(self) -> Tensor:
        """softplus(scale), (1, 1, C)."""
        return F.softplus(self.scale)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The focused q and k and the plain v of a map x (B, H, W, C): each (B, m, N, d)."""
        B, H, W, C = x.shape
        m, d, N = self.num_heads, self.head_dim, H * W
        with phase("projections"):
            q, k, v = self.qkv(x).reshape(B, N, 3 * C).chunk(3, dim=-1)  # each (B, N, C)
        with phase("focusing"):
            k = k + self.position_encoding(H, W).to(k.dtype)
            scale = self.channel_scale()
            q = focus((F.relu(q) + EPS) / scale, self.focusing_factor)  # (B, N, C)
            k = focus((F.relu(k) + EPS) / scale, self.focusing_factor)
        return tuple(t.reshape(B, N, m, d).transpose(1, 2) for t in (q, k, v))  # each (B, m, N, d)

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's linear-attention weights, per head: ``q·k_j / (N · (q·mean(k) + 1e-6))``, the
        kernel weights divided by the module's denominator, as forward applies them (non-negative:
        the focused features are). They sum to 1 up to the release's 1e-6 in the denominator: its
        share is in ``note``, and ``normalized`` is False where it reaches 1e-5 (small q·mean(k)).
        The depthwise conv on v, added before ``proj``, is not drawn.
        """
        self._check_query(x, query)
        _, H, W, _ = x.shape
        r, c = query
        q, k, _ = self.features(x)  # each (1, m, N, d)
        q, k = q[0, :, r * W + c], k[0]  # (m, d), (m, N, d)
        z = 1 / ((q * k.mean(dim=-2)).sum(-1, keepdim=True) + EPS)  # (m, 1)
        weights = torch.einsum("md,mnd->mn", q, k) / (H * W) * z  # (m, N)
        lost = float(1 - weights.sum(-1).min())
        note = f"focused kernel weights q·k_j over the normaliser (sum 1 - {lost:.0e}); "
        note += f"{self.kernel_size}x{self.kernel_size} dwc on v not drawn"
        return AttentionMap(query, weights.view(self.num_heads, H, W), normalized=lost < 1e-5, note=note)

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        m, d, N = self.num_heads, self.head_dim, H * W
        q, k, v = self.features(x)  # each (B, m, N, d)

        with phase("linear attention"):
            z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + EPS)  # (B, m, N, 1)
            kv = (k.transpose(-2, -1) * N**-0.5) @ (v * N**-0.5)  # (B, m, d, d)
            out = (q @ kv) * z  # (B, m, N, d)

        out = out.transpose(1, 2).reshape(B, H, W, C)
        with phase("dwc"):
            rank = self.dwc(v.reshape(B * m, H, W, d).permute(0, 3, 1, 2))  # (B·m, d, H, W), shared conv
            rank = rank.reshape(B, m, d, H, W).permute(0, 3, 4, 1, 2).reshape(B, H, W, C)
        with phase("projections"):
            return self.proj(out + rank)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1 with N = H·W tokens (see the module docstring for prices)."""
        N, C, d, s = H * W, self.dim, self.head_dim, self.pe_size
        return {
            "qkv_proj": 3 * N * C * C,
            "position_encoding": 4 * N * C if (H, W) != (s, s) else 0,
            "normaliser": N * C,  # q · mean(k)
            "kv": N * C * d,  # kᵀv per head
            "attention": N * C * d,  # q (kᵀv) per head
            "dwc": N * C * self.kernel_size**2,
            "out_proj": N * C * C,
        }
