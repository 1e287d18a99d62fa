"""Two yardsticks for BRA's backends, loaded by ``studies/bra_backends*.yaml`` (``plugins:``).

They are measurement probes, not attention mechanisms to compare, so they live beside the studies
that need them and stay out of the built-in registry:

- ``bra_floor``: what no BRA backend can avoid: the QKV projection, the LCE (depthwise conv on a
  contiguous v, the fastest layout for it on CPU) and the output projection, with BRA's own
  sub-modules and padding; no routing, no token attention. A backend's time minus this row's is
  what it spends on region layout, routing, gathering and attention.
- ``dense_sdpa``: ``F.scaled_dot_product_attention`` over all H·W tokens, with the input itself as
  q, k and v split into ``num_heads`` heads (no projections). (k/S²) x its time is the ideal of a
  block-sparse BRA attention, the yardstick of issue 9 ("fraction of the ideal").

The BRA-backends table of ``attnbench report`` pairs every BRA row with the probe rows of the
same shape, dtype, device, batch and pass.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMechanism, check_param, register_mechanism


@register_mechanism("bra_floor")
class BRAFloor(AttentionMechanism):
    """BRA's projections and LCE alone: ``wo(LCE(v))`` with ``q | k | v = qkv(x)``.

    Args:
        dim: channels C.
        num_heads: heads (unused: nothing here is per head; kept so the row matches BRA's).
        n_win: regions per side S, only for ``auto_pad``'s padding.
        side_dwconv: kernel of the depthwise LCE conv on v (0: none).
        qk_dim: query/key channels of the projection (None: = dim).
        auto_pad: zero-pad bottom/right to a multiple of ``n_win`` before the projection, as BRA does.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        n_win: int = 7,
        side_dwconv: int = 5,
        qk_dim: int | None = None,
        auto_pad: bool = False,
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(n_win >= 1, "n_win", n_win, "an int >= 1")
        check_param(side_dwconv == 0 or side_dwconv % 2 == 1, "side_dwconv", side_dwconv, "0 or odd")
        self.n_win, self.side_dwconv, self.auto_pad = n_win, side_dwconv, auto_pad
        self.qk_dim = dim if qk_dim is None else qk_dim
        self.qkv = nn.Linear(dim, 2 * self.qk_dim + dim)
        self.lepe = (
            nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv else None
        )
        self.wo = nn.Linear(dim, dim)

    def check_input(self, H: int, W: int) -> None:
        if not self.auto_pad and (H % self.n_win or W % self.n_win):
            raise ValueError(
                f"bra_floor: H x W = {H}x{W} is not divisible by n_win = {self.n_win}; "
                "pass auto_pad=True or choose n_win dividing both"
            )

    def padded_size(self, H: int, W: int) -> tuple[int, int]:
        S = self.n_win
        return (H + (-H) % S, W + (-W) % S) if self.auto_pad else (H, W)

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        _, H_in, W_in, C = x.shape
        H, W = self.padded_size(H_in, W_in)
        if (H, W) != (H_in, W_in):
            x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))
        v = self.qkv(x)[..., 2 * self.qk_dim :].contiguous()  # (B, H, W, C)
        if self.lepe is not None:
            v = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.wo(v)[:, :H_in, :W_in].contiguous()

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        H, W = self.padded_size(H, W)
        N, C = H * W, self.dim
        return {
            "qkv_proj": N * C * (2 * self.qk_dim + C),
            "lce": N * C * self.side_dwconv**2,
            "out_proj": N * C * C,
        }


@register_mechanism("dense_sdpa")
class DenseSDPA(AttentionMechanism):
    """``F.scaled_dot_product_attention`` over all H·W tokens; the input is q, k and v.

    Args:
        dim: channels C.
        num_heads: heads; C / num_heads channels each.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        t = x.reshape(B, H * W, self.num_heads, self.head_dim).transpose(1, 2)  # (B, m, N, C/m)
        out = F.scaled_dot_product_attention(t, t, t)  # (B, m, N, C/m)
        return out.transpose(1, 2).reshape(B, H, W, C)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        N = H * W
        return {"attention": 2 * N * N * self.dim}
