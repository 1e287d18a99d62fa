"""The peer table: other implementations of each mechanism, which ``kind: peers`` times ours against.

A peer computes the same function as one of our mechanisms by other code: a module of a dependency
(timm, NATTEN), a plain PyTorch yardstick, another backend of ours that is the released algorithm, or
a plain re-implementation of a released forward whose code is not a dependency (each says what it
re-implements). An entry builds the peer for one of our modules and a map size, and copies our
weights into it; the peers kind then checks that the two give the same outputs before it times them,
so that a ratio is never between two different functions.

Every peer takes and returns channels-last ``(B, H, W, C)``, as our mechanisms do. ``build`` raises
``ValueError`` where the peer cannot compute our function (a parameter it does not have, a map it
does not accept); ``unavailable`` says why a peer cannot run a pass on a device (NATTEN has no CPU
backward). Dependencies are imported when a peer is built, so reading the table is cheap.

Peers (``docs/peers.md`` has the table of measured ratios):

- swin: ``timm.WindowAttention`` (timm's Swin block attention on its fused SDPA path);
- vanilla: ``timm.Attention`` (timm's ViT attention) and ``sdpa`` (Linear, SDPA, Linear);
- neighborhood, dilated: ``natten.na2d``;
- maxvit: ``timm.PartitionAttentionCl`` (timm's MaxViT block and grid attention);
- axial: ``sdpa.rows_cols`` (SDPA over rows, then over columns);
- bra: ``bra.reference`` (our ``reference`` backend: the released token attention).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PEERS", "Peer", "get_peer", "mechanisms_with_peers", "peer_names", "register_peer"]


@dataclasses.dataclass(frozen=True)
class Peer:
    """One other implementation of a mechanism.

    Attributes:
        mechanism: the registered mechanism it implements.
        name: its name in a study's ``peers:`` (unique per mechanism).
        about: what it is, one line (docs, manifest).
        build: ``(ours, H, W) -> module`` on CPU in fp32, taking ``(B, H, W, C)``; raises
            ``ValueError`` where it cannot compute ours' function.
        copy_weights: ``(ours, peer)``: our weights into the peer, so that both compute one function.
        unavailable: ``(ours, device, dtype, pass) -> reason or None``.
    """

    mechanism: str
    name: str
    about: str
    build: Callable[[nn.Module, int, int], nn.Module]
    copy_weights: Callable[[nn.Module, nn.Module], None]
    unavailable: Callable[[nn.Module, str, torch.dtype, str], str | None] = lambda *_: None


PEERS: dict[str, dict[str, Peer]] = {}


def register_peer(peer: Peer) -> Peer:
    """Add ``peer`` to the table; a second peer of one name for one mechanism is refused."""
    table = PEERS.setdefault(peer.mechanism, {})
    if peer.name in table:
        raise ValueError(f"mechanism {peer.mechanism!r} already has a peer named {peer.name!r}")
    table[peer.name] = peer
    return peer


def mechanisms_with_peers() -> list[str]:
    return sorted(PEERS)


def peer_names(mechanism: str) -> list[str]:
    """The peers of ``mechanism``, in table order (empty when it has none)."""
    return list(PEERS.get(mechanism, {}))


def get_peer(mechanism: str, name: str) -> Peer:
    names = peer_names(mechanism)
    if name not in names:
        known = ", ".join(names) or "none"
        raise ValueError(f"mechanism {mechanism!r} has no peer {name!r}; its peers: {known}")
    return PEERS[mechanism][name]


def _load_same_names(ours: nn.Module, peer: nn.Module) -> None:
    """Copy ours' state dict into a peer whose parameters have the same names and shapes."""
    peer.load_state_dict(ours.state_dict(), strict=True)


def _tokens(x: Tensor) -> Tensor:
    B, H, W, C = x.shape
    return x.reshape(B, H * W, C)


# ---------------------------------------------------------------------------------------------
# swin


class _TimmSwin(nn.Module):
    """timm's ``SwinTransformerBlock._attn`` (shift, pad, partition, ``WindowAttention``, reverse) on
    its fused SDPA path; the block's MLP and norms are built but never run."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        from timm.models.swin_transformer import SwinTransformerBlock

        wh, ww, sh, sw = ours.window_and_shift(H, W)
        if (H % wh or W % ww) and (sh or sw):
            raise ValueError(
                f"timm shifts, then pads; ours pads, then shifts (the detection code's order): on a {H}x{W} "
                f"map, which {wh}x{ww} windows do not divide, the two shifted attentions differ"
            )
        self.block = SwinTransformerBlock(
            ours.dim,
            (H, W),
            num_heads=ours.num_heads,
            window_size=ours.window_size,
            shift_size=ours.shift_size,
            qkv_bias=ours.qkv_bias,
        )
        if (tuple(self.block.window_size), tuple(self.block.shift_size)) != ((wh, ww), (sh, sw)):
            raise ValueError(
                f"timm uses window {tuple(self.block.window_size)} and shift {tuple(self.block.shift_size)} "
                f"on {H}x{W}, ours ({wh}, {ww}) and ({sh}, {sw})"
            )
        self.block.attn.fused_attn = True  # timm's experimental fused path (TIMM_FUSED_ATTN=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.block._attn(x)


def _swin_weights(ours: nn.Module, peer: _TimmSwin) -> None:
    state = dict(ours.state_dict())
    table = state["relative_position_bias_table"]  # ((2w-1)², m); timm's is sized for its own window
    (wh, ww), w = peer.block.window_size, ours.window_size
    if (wh, ww) != (w, w):  # ours reads the centre of its table for a smaller window
        full = table.view(2 * w - 1, 2 * w - 1, -1)
        state["relative_position_bias_table"] = full[w - wh : w + wh - 1, w - ww : w + ww - 1].reshape(
            -1, table.shape[-1]
        )
    peer.block.attn.load_state_dict(state, strict=True)


register_peer(
    Peer(
        "swin",
        "timm.WindowAttention",
        "timm's Swin block attention (timm.models.swin_transformer: roll, pad, window_partition, "
        "WindowAttention with fused_attn=True, window_reverse, roll back)",
        _TimmSwin,
        _swin_weights,
    )
)


# ---------------------------------------------------------------------------------------------
# vanilla


class _TimmAttention(nn.Module):
    """timm's ViT ``Attention`` (fused SDPA) on the H·W tokens."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Attention

        self.attn = Attention(ours.dim, ours.num_heads, qkv_bias=ours.qkv_bias)
        self.attn.fused_attn = True

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(_tokens(x)).view(x.shape)


class SdpaAttention(nn.Module):
    """The yardstick of global attention: ``Linear(C -> 3C)``, ``F.scaled_dot_product_attention``,
    ``Linear(C -> C)``, nothing else."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        self.num_heads = ours.num_heads
        self.qkv = nn.Linear(ours.dim, 3 * ours.dim, bias=ours.qkv_bias)
        self.proj = nn.Linear(ours.dim, ours.dim)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, m, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))


register_peer(
    Peer(
        "vanilla",
        "timm.Attention",
        "timm's ViT attention (timm.models.vision_transformer.Attention, fused_attn=True) on the tokens",
        _TimmAttention,
        lambda ours, peer: peer.attn.load_state_dict(ours.state_dict(), strict=True),
    )
)
register_peer(
    Peer(
        "vanilla",
        "sdpa",
        "Linear(C -> 3C), F.scaled_dot_product_attention, Linear(C -> C): the yardstick",
        SdpaAttention,
        _load_same_names,
    )
)


# ---------------------------------------------------------------------------------------------
# neighborhood, dilated


class _NattenNa2d(nn.Module):
    """``natten.na2d`` between the same projections as ours (NATTEN's ``NeighborhoodAttention2D``
    without its bias): fused kernels on GPU, FlexAttention on CPU (forward only)."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        ours.check_input(H, W)
        self.num_heads, self.kernel_size, self.dilation = ours.num_heads, ours.kernel_size, ours.dilation
        self.scale = ours.scale
        self.qkv = nn.Linear(ours.dim, 3 * ours.dim, bias=ours.qkv_bias)
        self.proj = nn.Linear(ours.dim, ours.dim)

    def forward(self, x: Tensor) -> Tensor:
        import natten

        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H, W, 3, self.num_heads, -1).unbind(3)  # each (B, H, W, m, d)
        out = natten.na2d(q, k, v, kernel_size=self.kernel_size, dilation=self.dilation, scale=self.scale)
        return self.proj(out.reshape(B, H, W, C))


def _natten_unavailable(ours: nn.Module, device: str, dtype: torch.dtype, pass_: str) -> str | None:
    from mechanisms.neighborhood import natten_unavailable

    if device == "cpu" and pass_ == "forward_backward":
        return "natten's CPU path (FlexAttention) has no backward"
    q = torch.empty(1, 8 * ours.kernel_size, 8 * ours.kernel_size, ours.num_heads, ours.head_dim)
    q = q.to(device=device, dtype=dtype)
    return natten_unavailable(q, q, q)


for _mechanism in ("neighborhood", "dilated"):
    register_peer(
        Peer(
            _mechanism,
            "natten.na2d",
            "natten.na2d (NATTEN 0.21) between Linear(C -> 3C) and Linear(C -> C): fused kernels on GPU, "
            "unfused FlexAttention on CPU (forward only)",
            _NattenNa2d,
            _load_same_names,
            _natten_unavailable,
        )
    )


# ---------------------------------------------------------------------------------------------
# maxvit


class _TimmMaxViT(nn.Module):
    """timm's block and grid ``PartitionAttentionCl`` (the maxvit_*_tf configuration), their
    attention sub-layers only: ``y = block(x)``, ``y + grid(LN(x + y))``."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl

        for what, size in (("window_size", ours.window_size), ("grid_size", ours.grid_size)):
            if H % size or W % size:
                raise ValueError(f"timm needs the {H}x{W} map to be a multiple of {what} = {size}")
        cfg = MaxxVitTransformerCfg(
            dim_head=ours.head_dim,
            head_first=False,
            rel_pos_type="bias_tf",
            norm_eps=1e-5,
            window_size=ours.window_size,
            grid_size=ours.grid_size,
            attn_bias=ours.qkv_bias,
        )
        self.block = PartitionAttentionCl(ours.dim, "block", cfg)
        self.grid = PartitionAttentionCl(ours.dim, "grid", cfg)
        self.block.attn.fused_attn = self.grid.attn.fused_attn = True

    def forward(self, x: Tensor) -> Tensor:
        y = self.block._partition_attn(x)
        return y + self.grid._partition_attn(self.grid.norm1(x + y))


def _maxvit_weights(ours: nn.Module, peer: _TimmMaxViT) -> None:
    pairs = {"grid_norm.weight": peer.grid.norm1.weight, "grid_norm.bias": peer.grid.norm1.bias}
    for prefix, theirs in (("block_attn", peer.block.attn), ("grid_attn", peer.grid.attn)):
        pairs[f"{prefix}.relative_position_bias_table"] = theirs.rel_pos.relative_position_bias_table
        for layer in ("qkv", "proj"):
            for kind in ("weight", "bias"):
                target = getattr(getattr(theirs, layer), kind)
                if target is not None:
                    pairs[f"{prefix}.{layer}.{kind}"] = target
    state = ours.state_dict()
    if set(pairs) != set(state):
        raise ValueError(f"timm's MaxViT has no place for {sorted(set(state) - set(pairs))}")
    with torch.no_grad():
        for name, target in pairs.items():
            target.copy_(state[name])


register_peer(
    Peer(
        "maxvit",
        "timm.PartitionAttentionCl",
        "timm's MaxViT block and grid attention (timm.models.maxxvit.PartitionAttentionCl, the maxvit_*_tf "
        "configuration, fused_attn=True), their attention sub-layers",
        _TimmMaxViT,
        _maxvit_weights,
    )
)


# ---------------------------------------------------------------------------------------------
# axial


class SdpaRowsCols(nn.Module):
    """The yardstick of sequential axial attention: SDPA within stripes of rows (batch·stripes as
    SDPA's batch), a second projection, SDPA within stripes of columns, the output projection."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        if ours.mode != "sequential":
            raise ValueError(f"the rows-then-columns yardstick is mode 'sequential', not {ours.mode!r}")
        ours.check_input(H, W)
        self.num_heads, self.stripe = ours.num_heads, ours.stripe
        self.qkv_row = nn.Linear(ours.dim, 3 * ours.dim, bias=ours.qkv_bias)
        self.qkv_col = nn.Linear(ours.dim, 3 * ours.dim, bias=ours.qkv_bias)
        self.proj = nn.Linear(ours.dim, ours.dim)

    def _rows(self, x: Tensor, qkv: nn.Linear) -> Tensor:
        B, H, W, C = x.shape  # stripes of s rows: (B·H/s, s·W) tokens
        s, m = self.stripe, self.num_heads
        q, k, v = qkv(x).reshape(B * H // s, s * W, 3, m, C // m).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B·H/s, m, s·W, d)
        return out.transpose(1, 2).reshape(B, H, W, C)

    def forward(self, x: Tensor) -> Tensor:
        x = self._rows(x, self.qkv_row)
        x = self._rows(x.transpose(1, 2), self.qkv_col).transpose(1, 2)  # columns as rows
        return self.proj(x)


register_peer(
    Peer(
        "axial",
        "sdpa.rows_cols",
        "F.scaled_dot_product_attention over rows (batch x rows as SDPA's batch), then over columns, "
        "with the same projections: the yardstick",
        SdpaRowsCols,
        _load_same_names,
    )
)


# ---------------------------------------------------------------------------------------------
# bra


def _bra_reference(ours: nn.Module, H: int, W: int) -> nn.Module:
    from attnbench.registry import build_mechanism

    params: dict[str, Any] = {k: getattr(ours, k) for k in type(ours).hyperparameters() if hasattr(ours, k)}
    params["backend"] = "reference"
    peer = build_mechanism("bra", ours.dim, ours.num_heads, **params)
    peer.check_input(H, W)
    return peer


register_peer(
    Peer(
        "bra",
        "bra.reference",
        "BRA with backend='reference': the released token attention (bra_legacy's KVGather, then "
        "matmul, softmax, matmul), the rest of the module ours",
        _bra_reference,
        _load_same_names,
    )
)
