"""Deformable Bi-level Routing Attention (DBRA), DeBiFormer (Long et al.): ``DeBiLevelRoutingAttention``.

The module of the released ``classification/debiformer.py``, quirks kept (qk_dim = C and
``kv_downsample_mode='identity'`` as in every released model):

1. ``q | k | v = qkv_conv(x)`` (one 1x1 conv C -> 3C) on the full-resolution (padded) map.
2. Agents: per offset group, a ``offset_kernel`` depthwise conv with stride ``offset_stride``
   (no bias) on q, LayerNorm, GELU, a 1x1 conv to ONE channel, added to both y and x of the
   reference points (a quirk: DAT predicts two), no tanh bound, positions clamped to [-1, 1];
   reference points at the centres of the ``Hk x Wk`` grid, ``Hk = ceil(H / offset_stride)``
   (7 x 7 in every stage at 224^2). The block INPUT is sampled there (bilinear,
   ``align_corners=True``): ``Hk·Wk`` agent tokens.
3. Routing: agent queries ``proj_q(agents)`` are split into the same ``n_win x n_win`` regions as
   the full-resolution keys; region means (detached) give the routing logits, scale C^-0.5, and
   the top-k key regions of each agent region (``TopkRouting`` of BRA).
4. Each region's agents attend to the tokens of their k routed regions (scale C^-0.5: the whole
   qk dim, as BRA), plus an LCE: ``side_dwconv`` depthwise conv on v with stride
   ``offset_stride`` (so it lands on the agent grid); then ``unifyheads1`` (1x1 conv), a residual
   to the sampled agents, and ``agents + mlp(norm2(agents))`` with DeBiFormer's conv-MLP
   (1x1 conv to ``mlp_ratio·C``, ``h + dwconv3x3(h)``, GELU, 1x1 conv back).
5. ``norm`` (LayerNorm) of the agents, ``k, v = proj_k, proj_v`` of them; every full-resolution
   query (the q of step 1) attends to all agents, scale C^-0.5, plus DAT's relative position bias:
   table ``rpe_table`` (heads, 2q-1, 2q-1) read with grid_sample at ``(query - agent position) / 2``,
   queries at the pixels (``align_corners`` grid, ``arange(H) / (H - 1)``). Then ``proj_out``.

``auto_pad`` (the released models' working setting): the input is zero-padded at bottom/right to a
multiple of ``n_win`` before step 1, the agent grid (agents, LCE and positions, with zeros) to a
multiple of ``n_win`` before step 3; padded agents stay keys of step 5 (not masked) and the output
is cropped. Without it (the released file fails there: ``Hg`` is undefined), H, W and the agent
grid must be multiples of ``n_win``.

Defaults are the stage that runs on a 56 x 56 map at 224^2 (stage 1: C = 64, 2 heads, one offset
group, 9 x 9 offset kernel, stride 8, top-k 4, MLP ratio 3, table for q_size 56); with them the
agent grid is 7 x 7 at 56 x 56. Other stages: (C, groups, kernel, stride, top-k, q_size) =
(128, 2, 7, 4, 8, 28), (256, 4, 5, 2, 16, 14), (512, 8, 3, 1, 49, 7).

The bias table and the map size: as in the release, the table is sized at construction for the
224^2 map of its stage (``q_size``) and read in normalised coordinates, so any map size samples it.

State dict: parameter names and shapes equal the released module's, so a released ``attn2.*``
state dict (prefix stripped) loads as is:
``qkv_conv.qkv``, ``conv_offset_q.{0,1.norm,3}``, ``lepe1``, ``proj_q``, ``unifyheads1``,
``norm2``, ``mlp.{linear1.0,dwc,linear2.0}``, ``norm``, ``proj_k``, ``proj_v``, ``proj_out``,
``rpe_table`` (``router`` has no parameters: ``param_routing=False``).

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0); grid_sample counts
4 MACs per output element and LayerNorm 5 per element (fvcore's rules), region means, top-k,
gathers and softmax are free.

Peers (docs/peers.md): a plain re-implementation of the released forward (k-fold ``KVGather``,
einsum, explicit softmax); ours / released 0.62-0.78 forward, 0.35-0.89 forward+backward
(CPU, 1 thread, fp32, batch 4, quiet machine, results/peers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, Region, check_param, phase, register_mechanism
from mechanisms.bra import TopkRouting, from_regions, to_regions
from mechanisms.deformable import (
    ChannelLayerNorm,
    centre_grid,
    corner_grid,
    grid_points,
    relative_position_bias,
    splat_bilinear,
)

__all__ = ["ConvMlp", "DeformableBiLevelRoutingAttention", "routed_attention"]


class QKVConv(nn.Module):
    """One 1x1 conv C -> 3C giving q | k | v (the released ``QKVConv``; weights in ``.qkv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.qkv(x)


class ConvMlp(nn.Module):
    """DeBiFormer's ``TransformerMLPWithConv`` on NCHW maps: fc, h + dwconv3x3(h), GELU, fc."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        hidden = dim * ratio
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x)
        return self.linear2(self.act(h + self.dwc(h)))


def routed_attention(q: Tensor, kv: Tensor, idx: Tensor, num_heads: int, scale: float) -> Tensor:
    """Each region's queries over the tokens of its routed regions.

    Args:
        q: (B, S², a, C) queries, a per region.
        kv: (B, S², M, 2C) keys | values, M per region.
        idx: (B, S², k) routed regions of each query region.

    Returns:
        (B, S², a, C).
    """
    B, R, a, C = q.shape
    M, k, m = kv.shape[2], idx.shape[-1], num_heads
    batch = torch.arange(B, device=kv.device).view(B, 1, 1)
    kv = kv[batch, idx].reshape(B, R, k * M, 2, m, C // m)  # (B, S², k·M, 2, m, C/m)
    keys, values = kv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, S², m, k·M, C/m)
    q = q.reshape(B, R, a, m, C // m).transpose(2, 3)  # (B, S², m, a, C/m)
    out = F.scaled_dot_product_attention(q, keys, values, scale=scale)  # (B, S², m, a, C/m)
    return out.transpose(2, 3).reshape(B, R, a, C)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@register_mechanism("dbra")
class DeformableBiLevelRoutingAttention(AttentionMechanism):
    """Deformable Bi-level Routing Attention (DeBiFormer), released variant.

    Args:
        dim: channels C (= qk dim).
        num_heads: attention heads (DeBiFormer uses head_dim 32).
        n_win: regions per side S, for the full-resolution keys and for the agent grid.
        topk: routed key regions per agent region, 1 <= k <= S² (DeBiFormer: 4, 8, 16, 49 by stage).
        n_groups: offset groups; must divide num_heads (DeBiFormer-T/S: 1, 2, 4, 8 by stage).
        offset_kernel: odd kernel of the depthwise offset conv (9, 7, 5, 3 by stage).
        offset_stride: stride of the offset conv and of the LCE (8, 4, 2, 1 by stage).
        side_dwconv: odd kernel of the strided LCE on v (5 in all models; 0 disables it).
        mlp_ratio: hidden ratio of the inner conv-MLP (3; DeBiFormer-S stage 4: 1).
        q_size: side of the map the bias table is built for, table (heads, 2q-1, 2q-1)
            (56, 28, 14, 7 by stage at 224^2).
        auto_pad: zero-pad the map and the agent grid at bottom/right to multiples of S; else both
            must be multiples of S.
    """

    display_name = "DBRA"
    color = "#CC79A7"
    marker = "D"
    bibtex = (
        "@inproceedings{long2024debiformer,\n  title = {{DeBiFormer}: Vision Transformer with Deformable "
        "Agent Bi-level Routing Attention},\n  author = {Long, Nguyen Huu Bao and Zhang, Chenyu and Shi, "
        "Yuzhi and Hirakawa, Tsubasa and Yamashita, Takayoshi and Matsui, Tohgoroh and Fujiyoshi, "
        "Hironobu},\n  booktitle = {ACCV},\n  year = {2024}\n}"
    )
    param_symbols = {"n_win": "S", "topk": "k"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        n_win: int = 7,
        topk: int = 4,
        n_groups: int = 1,
        offset_kernel: int = 9,
        offset_stride: int = 8,
        side_dwconv: int = 5,
        mlp_ratio: int = 3,
        q_size: int = 56,
        auto_pad: bool = True,
    ) -> None:
        super().__init__(dim, num_heads)
        check_param(n_win >= 1, "n_win", n_win, "an int >= 1")
        check_param(1 <= topk <= n_win * n_win, "topk", topk, f"1 <= topk <= n_win^2 = {n_win * n_win}")
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
        check_param(side_dwconv == 0 or side_dwconv % 2 == 1, "side_dwconv", side_dwconv, "0 or an odd int")
        check_param(mlp_ratio >= 1, "mlp_ratio", mlp_ratio, "an int >= 1")
        check_param(q_size >= 1, "q_size", q_size, "an int >= 1")
        self.n_win, self.topk, self.n_groups = n_win, topk, n_groups
        self.offset_kernel, self.offset_stride, self.side_dwconv = offset_kernel, offset_stride, side_dwconv
        self.mlp_ratio, self.q_size, self.auto_pad = mlp_ratio, q_size, auto_pad
        self.scale = dim**-0.5  # quirk: the whole qk dim (= C), in routing and both attentions
        cg = dim // n_groups

        self.qkv_conv = QKVConv(dim)
        self.conv_offset_q = nn.Sequential(
            nn.Conv2d(cg, cg, offset_kernel, offset_stride, offset_kernel // 2, groups=cg, bias=False),
            ChannelLayerNorm(cg),
            nn.GELU(),
            nn.Conv2d(cg, 1, 1, bias=False),
        )
        self.lepe1 = None
        if side_dwconv > 0:
            self.lepe1 = nn.Conv2d(dim, dim, side_dwconv, offset_stride, side_dwconv // 2, groups=dim)
        self.router = TopkRouting(topk, self.scale)
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.unifyheads1 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvMlp(dim, mlp_ratio)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.rpe_table = nn.Parameter(torch.zeros(num_heads, 2 * q_size - 1, 2 * q_size - 1))
        nn.init.trunc_normal_(self.rpe_table, std=0.01)

    def _pad(self, n: int) -> int:
        return n + (-n) % self.n_win if self.auto_pad else n

    def padded_size(self, H: int, W: int) -> tuple[int, int]:
        """Full-resolution size after auto_pad."""
        return self._pad(H), self._pad(W)

    def agent_grid_size(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(Hk, Wk, Hg, Wg): the agent grid for an H x W input, before and after auto_pad."""
        H, W = self.padded_size(H, W)
        s = self.offset_stride
        Hk, Wk = (H - 1) // s + 1, (W - 1) // s + 1
        return Hk, Wk, self._pad(Hk), self._pad(Wk)

    def check_input(self, H: int, W: int) -> None:
        S = self.n_win
        if not self.auto_pad and (H % S or W % S):
            raise ValueError(
                f"dbra: H x W = {H}x{W} is not divisible by n_win = {S}; "
                "pass auto_pad=True or choose n_win dividing both"
            )
        Hk, Wk, _, _ = self.agent_grid_size(H, W)
        if not self.auto_pad and (Hk % S or Wk % S):
            raise ValueError(
                f"dbra: the agent grid ceil(H/offset_stride) x ceil(W/offset_stride) = {Hk}x{Wk} for "
                f"H x W = {H}x{W} and offset_stride = {self.offset_stride} is not divisible by "
                f"n_win = {S}; pass auto_pad=True or an offset_stride giving a multiple of {S}"
            )
        Hp, Wp = self.padded_size(H, W)
        if Hp < 2 or Wp < 2:
            raise ValueError(f"dbra: a {H}x{W} map is too small; the query grid needs H, W >= 2")

    def refined_agents(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Steps 1-4 on a map ``x`` (B, H, W, C) already padded to ``padded_size``.

        Returns:
            q (B, C, H, W) of the full-resolution queries; the refined agents (B, C, Hg, Wg); their
            positions (B·g, Hg, Wg, 2), (y, x) in [-1, 1] with ``align_corners=True``, zeros where
            padded; and the routed key regions of each agent region, (B, S², k).
        """
        B, H, W, C = x.shape
        S, g, m = self.n_win, self.n_groups, self.num_heads
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        with phase("projections"):
            q, kv = self.qkv_conv(x).split([C, 2 * C], dim=1)  # (B, C, H, W), (B, 2C, H, W)

        # agents: the block input sampled at deformed centres of the coarse grid
        with phase("offsets"):
            offset = self.conv_offset_q(q.reshape(B * g, C // g, H, W))  # (B·g, 1, Hk, Wk)
            Hk, Wk = offset.shape[-2:]
            ref = centre_grid(Hk, Wk, x)  # (Hk, Wk, 2)
            pos = (ref + offset.permute(0, 2, 3, 1)).clamp(-1.0, 1.0)  # (B·g, Hk, Wk, 2): one offset, y and x
        with phase("sampling"):
            agents = F.grid_sample(
                x.reshape(B * g, C // g, H, W), pos.flip(-1), mode="bilinear", align_corners=True
            ).reshape(B, C, Hk, Wk)
        lce = self.lepe1(kv[:, C:]) if self.lepe1 is not None else None  # (B, C, Hk, Wk)
        Hg, Wg = self._pad(Hk), self._pad(Wk)
        if (Hg, Wg) != (Hk, Wk):
            agents = F.pad(agents, (0, Wg - Wk, 0, Hg - Hk))
            lce = F.pad(lce, (0, Wg - Wk, 0, Hg - Hk)) if lce is not None else None
            pos = F.pad(pos, (0, 0, 0, Wg - Wk, 0, Hg - Hk))

        # agents routed to regions of the full-resolution keys
        with phase("agent routing"):
            q_agents = to_regions(self.proj_q(agents).permute(0, 2, 3, 1).contiguous(), S)  # (B, S², a, C)
            kv_r = to_regions(kv.permute(0, 2, 3, 1).contiguous(), S)  # (B, S², M, 2C)
            idx = self.router(q_agents.mean(dim=2), kv_r[..., :C].mean(dim=2))  # (B, S², k)
        with phase("agent attention"):
            out = routed_attention(q_agents, kv_r, idx, m, self.scale)  # (B, S², a, C)
            out = from_regions(out, S, Hg, Wg).permute(0, 3, 1, 2)  # (B, C, Hg, Wg)
            if lce is not None:
                out = out + lce
            agents = agents + self.unifyheads1(out)
            agents = agents + self.mlp(self.norm2(agents.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
            agents = self.norm(agents.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, Hg, Wg)
        return q, agents, pos, idx

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H_in, W_in, C = x.shape
        g, m = self.n_groups, self.num_heads
        H, W = self.padded_size(H_in, W_in)
        if (H, W) != (H_in, W_in):
            x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))  # zeros at bottom/right, before qkv
        q, agents, pos, _ = self.refined_agents(x)  # (B, C, H, W), (B, C, Hg, Wg), (B·g, Hg, Wg, 2)
        Hg, Wg = agents.shape[-2:]

        # every full-resolution query over the refined agents
        with phase("attention"):
            Ns, d = Hg * Wg, self.head_dim
            k = self.proj_k(agents).reshape(B, m, d, Ns).transpose(-2, -1)  # (B, m, Ns, d)
            v = self.proj_v(agents).reshape(B, m, d, Ns).transpose(-2, -1)  # (B, m, Ns, d)
            q = q.reshape(B, m, d, H * W).transpose(-2, -1)  # (B, m, HW, d)
            bias = relative_position_bias(self.rpe_table, corner_grid(H, W, x), pos, g)  # (B, m, HW, Ns)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # (B, m, HW, d)
        with phase("projections"):
            out = self.proj_out(out.transpose(-2, -1).reshape(B, C, H, W)).permute(0, 2, 3, 1)
        return out[:, :H_in, :W_in]

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's softmax weights over the agents (step 5, with the relative position bias), per
        head, as points and splatted onto the grid.

        ``points`` are the agents' positions (heads, Hg·Wg, 2) in fractional (row, col) of the
        (padded) input grid, ``align_corners=True`` as the sampling reads them; a head takes its
        offset group's positions; agents added by ``auto_pad`` sit at the map's centre (position
        0, 0), as forward's bias sees them. ``weights`` split each agent's weight bilinearly over its
        four neighbours: where the query's output comes from. An agent's value is a refined token
        (the input sampled there, then routed attention, LCE, MLP and norm), not the input at that
        point, so the splat shows where, not what. Regions: the k key regions routed to the region
        of the agent the query weighs most (mean over heads), which that agent attended in step 4.
        On a padded map part of the weight may fall on padded rows or columns: then ``normalized``
        is False.
        """
        self._check_query(x, query)
        _, H_in, W_in, _ = x.shape
        r, c = query
        S, g, m, d = self.n_win, self.n_groups, self.num_heads, self.head_dim
        H, W = self.padded_size(H_in, W_in)
        x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))
        q, agents, pos, idx = self.refined_agents(x)
        Hg, Wg = agents.shape[-2:]
        k = self.proj_k(agents).reshape(m, d, Hg * Wg)  # (m, d, Ns)
        scores = torch.einsum("md,mdn->mn", q[0, :, r, c].view(m, d) * self.scale, k)  # (m, Ns)
        here = corner_grid(H, W, x)[r, c].view(1, 1, 2)
        probs = (scores + relative_position_bias(self.rpe_table, here, pos, g)[0, :, 0]).softmax(dim=-1)
        points = grid_points(pos, H, W).reshape(g, 1, -1, 2).expand(-1, m // g, -1, -1).reshape(m, -1, 2)
        weights = splat_bilinear(points, probs, H, W)[:, :H_in, :W_in]

        top = int(probs.mean(0).argmax())  # the agent the query weighs most
        agent_region = (top // Wg) // (Hg // S) * S + (top % Wg) // (Wg // S)
        h, w = H // S, W // S
        regions = []
        for i, key_region in enumerate(idx[0, agent_region].tolist()):
            t, lft = (key_region // S) * h, (key_region % S) * w
            if t < H_in and lft < W_in:
                regions.append(Region(f"routed {i + 1}", t, lft, min(h, H_in - t), min(w, W_in - lft)))
        note = (
            f"softmax over {Hg * Wg} agents (points) with relative position bias, splatted bilinearly; "
            f"regions: the {self.topk} key regions routed to the top agent's region"
        )
        return AttentionMap(
            query,
            weights.contiguous(),
            normalized=(H, W) == (H_in, W_in),
            regions=tuple(regions),
            points=points,
            point_weights=probs,
            note=note,
        )

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: N = HW (padded) queries, Nk = Hk·Wk agents, Ns = Hg·Wg padded agents.

        grid_sample is 4 MACs per output element and LayerNorm 5 per element (fvcore's rules).
        """
        Hk, Wk, Hg, Wg = self.agent_grid_size(H, W)
        H, W = self.padded_size(H, W)
        C, S2, e = self.dim, self.n_win**2, self.mlp_ratio
        N, Nk, Ns = H * W, Hk * Wk, Hg * Wg
        return {
            "qkv_proj": N * C * 3 * C,
            "offset_dwconv": Nk * C * self.offset_kernel**2,
            "offset_norm": 5 * Nk * C,
            "offset_proj": Nk * C,
            "agent_sampling": 4 * Nk * C,
            "lce": Nk * C * self.side_dwconv**2,
            "agent_q_proj": Ns * C * C,
            "routing": S2 * S2 * C,
            "agent_attention": Ns * self.topk * (N // S2) * 2 * C,
            "unify_heads": Ns * C * C,
            "agent_norms": 2 * 5 * Ns * C,
            "agent_mlp": 2 * Ns * C * e * C + Ns * e * C * 9,
            "agent_kv_proj": 2 * Ns * C * C,
            "attention": 2 * N * Ns * C,
            "position_bias": 4 * self.num_heads * N * Ns,
            "out_proj": N * C * C,
        }
