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
- bra: ``bra.reference`` (our ``reference`` backend: the released token attention) and
  ``released.BiLevelRoutingAttention`` (BiFormer's ``ops/bra_legacy.py`` module, re-implemented);
- deformable: ``released.DAttentionBaseline`` (DAT's CVPR 2022 module, re-implemented);
- dbra: ``released.DeBiLevelRoutingAttention`` (DeBiFormer's module, re-implemented).

agent, flatten and kvt have none yet: their released code is not a dependency, and their tests
already compare them with the released forward re-written there.
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


# ---------------------------------------------------------------------------------------------
# Re-implementations of released forwards that are not dependencies: plain PyTorch written from the
# released code (its einops rearranges as views and copies, its gathers, its explicit softmax), with
# our parameter names so that our state dict loads as is.


def _regions(t: Tensor, S: int) -> Tensor:
    """(B, H, W, c) -> (B, S², H/S, W/S, c): the released ``n (j h) (i w) c -> n (j i) h w c``."""
    B, H, W, c = t.shape
    return t.view(B, S, H // S, S, W // S, c).permute(0, 1, 3, 2, 4, 5).reshape(B, S * S, H // S, W // S, c)


def _unregions(t: Tensor, S: int) -> Tensor:
    """(B, S², h, w, c) -> (B, S·h, S·w, c), the inverse of :func:`_regions`."""
    B, _, h, w, c = t.shape
    return t.view(B, S, S, h, w, c).permute(0, 1, 3, 2, 4, 5).reshape(B, S * h, S * w, c)


def _kv_gather(kv: Tensor, idx: Tensor) -> Tensor:
    """The released ``KVGather`` (mul_weight 'none'): kv (B, S², M, c), idx (B, S², k) ->
    (B, S², k, M, c), a ``torch.gather`` over an expanded view (k copies of every routed region)."""
    B, R, M, c = kv.shape
    k = idx.shape[-1]
    return torch.gather(
        kv.view(B, 1, R, M, c).expand(-1, R, -1, -1, -1), 2, idx.view(B, R, k, 1, 1).expand(-1, -1, -1, M, c)
    )


def _routed_heads(q: Tensor, kv_sel: Tensor, qk: int, m: int, scale: float) -> Tensor:
    """The released attention of each region's queries over its gathered keys and values:
    q (B, S², M, qk), kv_sel (B, S², k, M', qk + C) -> (B·S², m, M, C/m), explicit softmax."""
    B, R, k, Mk, ckv = kv_sel.shape
    C = ckv - qk
    keys, values = kv_sel.split([qk, C], dim=-1)
    keys = keys.reshape(B * R, k * Mk, m, qk // m).permute(0, 2, 3, 1)  # (B·S², m, qk/m, k·M')
    values = values.reshape(B * R, k * Mk, m, C // m).transpose(1, 2)  # (B·S², m, k·M', C/m)
    q = q.reshape(B * R, -1, m, qk // m).transpose(1, 2)  # (B·S², m, M, qk/m)
    attn = ((q * scale) @ keys).softmax(dim=-1)
    return attn @ values


def _routing(q_region: Tensor, k_region: Tensor, topk: int, scale: float) -> Tensor:
    """The released ``TopkRouting`` (no parameters, not differentiable): top-k region indices."""
    logits = (q_region.detach() * scale) @ k_region.detach().transpose(-2, -1)
    return torch.topk(logits, k=topk, dim=-1).indices


class ReleasedBRA(nn.Module):
    """A plain re-implementation of BiFormer's released ``ops/bra_legacy.py``
    ``BiLevelRoutingAttention.forward`` (identity kv downsampling, ``param_attention='qkvo'``, no
    routing parameters, as every released model): the input cut into regions first, one
    ``Linear(C -> 2·qk + C)`` on them, region means for the routing, the LCE on v put back on the
    map, ``KVGather``'s k-fold gather, matmul, softmax, matmul, ``wo``."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        ours.check_input(H, W)
        C, qk = ours.dim, ours.qk_dim
        self.n_win, self.topk, self.qk_dim, self.num_heads = ours.n_win, ours.topk, qk, ours.num_heads
        self.scale, self.auto_pad = ours.scale, ours.auto_pad
        self.qkv = nn.Linear(C, 2 * qk + C)  # the release's qkv.qkv (QKVLinear)
        k = ours.side_dwconv
        self.lepe = nn.Conv2d(C, C, k, padding=k // 2, groups=C) if k > 0 else None
        self.wo = nn.Linear(C, C)

    def forward(self, x: Tensor) -> Tensor:
        B, H_in, W_in, C = x.shape
        S, qk = self.n_win, self.qk_dim
        if self.auto_pad:
            x = F.pad(x, (0, 0, 0, (-W_in) % S, 0, (-H_in) % S))
        H, W = x.shape[1:3]
        q, kv = self.qkv(_regions(x, S)).split([qk, qk + C], dim=-1)  # (B, S², h, w, ·)
        q_pix = q.reshape(B, S * S, -1, qk)
        kv_pix = kv.reshape(B, S * S, -1, qk + C)
        q_win, k_win = q.mean([2, 3]), kv[..., :qk].mean([2, 3])  # (B, S², qk)
        lepe = 0
        if self.lepe is not None:
            v_map = _unregions(kv[..., qk:], S).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
            lepe = self.lepe(v_map).permute(0, 2, 3, 1)
        idx = _routing(q_win, k_win, self.topk, self.scale)
        out = _routed_heads(
            q_pix, _kv_gather(kv_pix, idx), qk, self.num_heads, self.scale
        )  # (B·S², m, M, C/m)
        h, w = H // S, W // S
        out = out.view(B, S, S, self.num_heads, h, w, -1).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, C)
        out = self.wo(out + lepe)
        return out[:, :H_in, :W_in].contiguous()


register_peer(
    Peer(
        "bra",
        "released.BiLevelRoutingAttention",
        "BiFormer's released ops/bra_legacy.py BiLevelRoutingAttention forward, re-implemented in plain "
        "PyTorch (region-major qkv, KVGather's k-fold gather, explicit softmax)",
        ReleasedBRA,
        _load_same_names,
    )
)


class _LayerNormProxy(nn.Module):
    """The releases' ``LayerNormProxy``: LayerNorm over the channels of an NCHW map (in ``.norm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _centres(h: int, w: int, like: Tensor) -> Tensor:
    """The releases' ``_get_ref_points``: cell centres, (h, w, 2) as (y, x) in [-1, 1]."""
    ys = torch.linspace(0.5, h - 0.5, h, dtype=like.dtype, device=like.device).div(h).mul(2).sub(1)
    xs = torch.linspace(0.5, w - 0.5, w, dtype=like.dtype, device=like.device).div(w).mul(2).sub(1)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def _table_bias(table: Tensor, queries: Tensor, pos: Tensor, B: int, groups: int) -> Tensor:
    """The releases' relative position bias: the (heads, Th, Tw) table read with grid_sample at
    ``(query - key position) / 2``; queries (Bg, HW, 2), pos (Bg, Ns, 2) -> (B·heads, HW, Ns)."""
    heads, th, tw = table.shape
    disp = (queries.unsqueeze(2) - pos.unsqueeze(1)).mul(0.5)  # (B·g, HW, Ns, 2)
    tab = table[None].expand(B, -1, -1, -1).reshape(B * groups, heads // groups, th, tw)
    bias = F.grid_sample(tab, disp[..., (1, 0)], mode="bilinear", align_corners=True)  # (B·g, m/g, HW, Ns)
    return bias.reshape(B * heads, queries.shape[1], pos.shape[1])


class ReleasedDAT(nn.Module):
    """A plain re-implementation of DAT's CVPR 2022 ``DAttentionBaseline.forward`` (LeapLabTHU/DAT
    ``models/dat_blocks.py`` before DAT++; ``use_pe=True, dwc_pe=False, fixed_pe=False``): offsets
    from q by the grouped conv net, ``tanh`` bound, keys sampled with grid_sample, ``einsum`` scores,
    the table bias by grid_sample, explicit softmax, ``einsum`` output. The release reshapes its
    table to the map it was built for (``q_size``); here, as in ours, the table is read at its own
    size, which is the release's computation at ``H = W = q_size``."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        if ours.no_off:
            raise ValueError(
                "the no-offset ablation is not the released forward that this peer re-implements"
            )
        C, g, k, s = ours.dim, ours.n_groups, ours.offset_kernel, ours.offset_stride
        self.num_heads, self.n_groups, self.scale = ours.num_heads, g, ours.scale
        self.offset_range_factor = ours.offset_range_factor
        self.conv_offset = nn.Sequential(
            nn.Conv2d(C // g, C // g, k, s, k // 2, groups=C // g),
            _LayerNormProxy(C // g),
            nn.GELU(),
            nn.Conv2d(C // g, 2, 1, bias=False),
        )
        self.proj_q, self.proj_k = nn.Conv2d(C, C, 1), nn.Conv2d(C, C, 1)
        self.proj_v, self.proj_out = nn.Conv2d(C, C, 1), nn.Conv2d(C, C, 1)
        self.rpe_table = (
            nn.Parameter(torch.zeros_like(ours.rpe_table)) if ours.rpe_table is not None else None
        )

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        g, m = self.n_groups, self.num_heads
        x = x.permute(0, 3, 1, 2)  # the release takes NCHW
        q = self.proj_q(x)
        offset = self.conv_offset(q.reshape(B * g, C // g, H, W))  # (B·g, 2, Hk, Wk)
        Hk, Wk = offset.shape[2:]
        n_sample = Hk * Wk
        offset_range = torch.tensor([1.0 / Hk, 1.0 / Wk], device=x.device).reshape(1, 2, 1, 1)
        offset = offset.tanh().mul(offset_range).mul(self.offset_range_factor).permute(0, 2, 3, 1)
        pos = offset + _centres(Hk, Wk, x)  # (B·g, Hk, Wk, 2)
        x_sampled = F.grid_sample(
            x.reshape(B * g, C // g, H, W), pos[..., (1, 0)], mode="bilinear", align_corners=True
        ).reshape(B, C, 1, n_sample)
        q = q.reshape(B * m, C // m, H * W)
        k = self.proj_k(x_sampled).reshape(B * m, C // m, n_sample)
        v = self.proj_v(x_sampled).reshape(B * m, C // m, n_sample)
        attn = torch.einsum("b c m, b c n -> b m n", q, k).mul(self.scale)  # (B·m, HW, Ns)
        if self.rpe_table is not None:
            queries = _centres(H, W, x).reshape(1, H * W, 2).expand(B * g, -1, -1)
            attn = attn + _table_bias(self.rpe_table, queries, pos.reshape(B * g, n_sample, 2), B, g)
        attn = F.softmax(attn, dim=2)
        out = torch.einsum("b m n, b c n -> b c m", attn, v).reshape(B, C, H, W)
        return self.proj_out(out).permute(0, 2, 3, 1)


register_peer(
    Peer(
        "deformable",
        "released.DAttentionBaseline",
        "DAT's CVPR 2022 DAttentionBaseline forward (models/dat_blocks.py), re-implemented in plain "
        "PyTorch: einsum scores, grid_sample bias, explicit softmax",
        ReleasedDAT,
        _load_same_names,
    )
)


class _ConvMlp(nn.Module):
    """DeBiFormer's ``TransformerMLPWithConv``: 1x1 conv, ``h + dwconv3x3(h)``, GELU, 1x1 conv."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Conv2d(dim, dim * ratio, 1))
        self.dwc = nn.Conv2d(dim * ratio, dim * ratio, 3, 1, 1, groups=dim * ratio)
        self.linear2 = nn.Sequential(nn.Conv2d(dim * ratio, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear1(x)
        return self.linear2(F.gelu(x + self.dwc(x)))


class _QKVConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)


class ReleasedDBRA(nn.Module):
    """A plain re-implementation of DeBiFormer's released ``classification/debiformer.py``
    ``DeBiLevelRoutingAttention.forward`` (identity kv downsampling, as every released model):
    the 1x1 qkv conv, agents sampled at offset centres (one offset channel, clamped), region-major
    agent queries routed to region-major keys (``KVGather``'s k-fold gather, explicit softmax), the
    strided LCE, ``unifyheads1``, the residual and conv-MLP, the norm, then every query over the
    agents with ``einsum`` scores, the table bias by grid_sample and explicit softmax."""

    def __init__(self, ours: nn.Module, H: int, W: int) -> None:
        super().__init__()
        ours.check_input(H, W)
        C, g, k, s = ours.dim, ours.n_groups, ours.offset_kernel, ours.offset_stride
        self.n_win, self.topk, self.n_groups, self.num_heads = ours.n_win, ours.topk, g, ours.num_heads
        self.scale, self.auto_pad = ours.scale, ours.auto_pad
        self.qkv_conv = _QKVConv(C)
        self.conv_offset_q = nn.Sequential(
            nn.Conv2d(C // g, C // g, k, s, k // 2, groups=C // g, bias=False),
            _LayerNormProxy(C // g),
            nn.GELU(),
            nn.Conv2d(C // g, 1, 1, bias=False),
        )
        side = ours.side_dwconv
        self.lepe1 = nn.Conv2d(C, C, side, s, side // 2, groups=C) if side > 0 else None
        self.proj_q, self.unifyheads1 = nn.Conv2d(C, C, 1), nn.Conv2d(C, C, 1)
        self.norm2 = nn.LayerNorm(C, eps=1e-6)
        self.mlp = _ConvMlp(C, ours.mlp_ratio)
        self.norm = nn.LayerNorm(C, eps=1e-6)
        self.proj_k, self.proj_v, self.proj_out = nn.Conv2d(C, C, 1), nn.Conv2d(C, C, 1), nn.Conv2d(C, C, 1)
        self.rpe_table = nn.Parameter(torch.zeros_like(ours.rpe_table))

    def _pad_map(self, t: Tensor) -> Tensor:
        """(B, h, w, c) zero-padded at bottom/right to multiples of n_win (the release's auto_pad)."""
        S = self.n_win
        return F.pad(t, (0, 0, 0, (-t.shape[2]) % S, 0, (-t.shape[1]) % S)) if self.auto_pad else t

    def forward(self, x: Tensor) -> Tensor:
        B, H_in, W_in, C = x.shape
        S, g, m = self.n_win, self.n_groups, self.num_heads
        x = self._pad_map(x)
        H, W = x.shape[1:3]
        x_res = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        q, kv = self.qkv_conv.qkv(x_res).split([C, 2 * C], dim=1)
        kv = _regions(kv.permute(0, 2, 3, 1), S)  # (B, S², h, w, 2C)
        kv_pix = kv.reshape(B, S * S, -1, 2 * C)
        lepe1 = None
        if self.lepe1 is not None:
            lepe1 = self.lepe1(_unregions(kv[..., C:], S).permute(0, 3, 1, 2).contiguous())
        offset = self.conv_offset_q(q.reshape(B * g, C // g, H, W))  # (B·g, 1, Hk, Wk)
        Hk, Wk = offset.shape[2:]
        pos = (offset.permute(0, 2, 3, 1) + _centres(Hk, Wk, x)).clamp(-1.0, 1.0)  # (B·g, Hk, Wk, 2)
        sampled = F.grid_sample(
            x_res.reshape(B * g, C // g, H, W), pos[..., (1, 0)], mode="bilinear", align_corners=True
        ).reshape(B, C, Hk, Wk)
        if self.auto_pad:
            sampled = self._pad_map(sampled.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            lepe1 = (
                self._pad_map(lepe1.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if lepe1 is not None else None
            )
            pos = self._pad_map(pos)
        Hg, Wg = sampled.shape[2:]
        queries = _regions(self.proj_q(sampled).permute(0, 2, 3, 1), S)  # (B, S², hg, wg, C)
        idx = _routing(queries.mean([2, 3]), kv[..., :C].mean([2, 3]), self.topk, self.scale)
        q_def = queries.reshape(B, S * S, -1, C)
        out = _routed_heads(q_def, _kv_gather(kv_pix, idx), C, m, self.scale)  # (B·S², m, a, C/m)
        hg, wg = Hg // S, Wg // S
        out = out.view(B, S, S, m, hg, wg, -1).permute(0, 3, 6, 1, 4, 2, 5).reshape(B, C, Hg, Wg)
        if lepe1 is not None:
            out = out + lepe1
        agents = sampled + self.unifyheads1(out)
        agents = agents + self.mlp(self.norm2(agents.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        agents = self.norm(agents.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, Hg, Wg)

        Ns = Hg * Wg
        k = self.proj_k(agents).reshape(B * m, C // m, Ns)
        v = self.proj_v(agents).reshape(B * m, C // m, Ns)
        attn = torch.einsum("b c m, b c n -> b m n", q.reshape(B * m, C // m, H * W), k).mul(self.scale)
        ys = torch.arange(H, dtype=x.dtype, device=x.device).div(H - 1.0).mul(2.0).sub(1.0)
        xs = torch.arange(W, dtype=x.dtype, device=x.device).div(W - 1.0).mul(2.0).sub(1.0)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)  # the release's _get_q_grid
        grid = grid.reshape(1, H * W, 2).expand(B * g, -1, -1)
        attn = attn + _table_bias(self.rpe_table, grid, pos.reshape(B * g, Ns, 2), B, g)
        attn = F.softmax(attn, dim=2)
        out = torch.einsum("b m n, b c n -> b c m", attn, v).reshape(B, C, H, W)
        out = self.proj_out(out).permute(0, 2, 3, 1)
        return out[:, :H_in, :W_in].contiguous()


register_peer(
    Peer(
        "dbra",
        "released.DeBiLevelRoutingAttention",
        "DeBiFormer's released DeBiLevelRoutingAttention forward (classification/debiformer.py), "
        "re-implemented in plain PyTorch: KVGather's k-fold gather, einsum scores, explicit softmax",
        ReleasedDBRA,
        _load_same_names,
    )
)
