"""Agent attention, Agent Transformer (Han et al., ECCV 2024): ``AgentAttention`` of Agent-Swin/PVT.

The module of the released ``agent_transformer/models/agent_swin.py`` (LeapLabTHU/Agent-Attention),
which ``agent_pvt.py`` repeats with its q and kv split into two projections:

1. ``q | k | v = qkv(x)`` (one Linear C -> 3C, with bias).
2. Agent tokens: q average-pooled (``AdaptiveAvgPool2d``) to a ``p x p`` grid, ``p = sqrt(agent_num)``,
   row-major, split into heads like q.
3. Agent aggregation: the agents attend to all H·W keys, softmax(agents·Kᵀ·s + B_a) V, with
   s = head_dim^-0.5 and the bias B_a = bilinear(an_bias, H x W) + ah_bias (per agent and row) +
   aw_bias (per agent and column); ``an_bias`` is a ``7 x 7`` table per (head, agent) whatever the
   map.
4. Agent broadcast: every query attends to the agents, softmax(Q·agentsᵀ·s + B_q) V_a, with
   B_q = bilinear(na_bias, H x W)ᵀ + ha_bias (per row and agent) + wa_bias (per column and agent).
5. ``out = proj(attention + dwc(v))``: a 3x3 depthwise conv on the v map, added before the
   projection.

The variant: this is the attention of Agent-Swin and Agent-PVT, the two released models whose
agent attention runs on a plain feature map. Agent-DeiT's also handles a class token (two more
biases, a dwc that skips it) that a ``(B, H, W, C)`` map does not have; Agent-CSWin's runs inside
CSWin's stripes; AgentSD merges tokens in Stable Diffusion. Within Agent-Swin's released models
the agent blocks never partition windows: Agent-Swin-T/S/B use window 56 at 224², no smaller
than any stage map, and Swin's block then sets the window to the map and the shift to 0 (the
Swin-style mask it passes is ignored by ``AgentAttention``). Agent-PVT's agent blocks use
``agent_sr_ratios = '1111'`` (no spatial reduction) in every released config, which makes them the
same function. So the attention here covers the whole map, without windows, shift or reduction.

The bias tables and the map size: ``ah_bias``/``ha_bias`` hold one value per row and
``aw_bias``/``wa_bias`` one per column of the map the model was built for (``bias_size``; Agent-Swin
sizes them to its window, which is that map). On any other map the released detection and
segmentation backbones interpolate them bilinearly to H x W. Here each is interpolated linearly
along its own axis (``align_corners=False``), which gives the same numbers (a bilinear
interpolation of a sum of a row term and a column term is the sum of their 1-D interpolations),
at H + W instead of H·W outputs. Along an axis of length ``bias_size`` nothing is interpolated,
so at ``H = W = bias_size`` this is the released classification module exactly; 7 x 7 tables are
always interpolated, as in the release.

Defaults are the released 49-agent setting: Agent-Swin-T and Agent-PVT-T use 9, 16, 49, 49 agents
per stage, and 49 agents run on the 14 x 14 map of stage 3 at 224² (Agent-DeiT: 49 agents, 14 x 14),
so ``agent_num=49, bias_size=14``, as ``deformable`` takes DAT-T's stage 3. Stage 1 of Agent-Swin-T
is ``agent_num=9, bias_size=56``. ``agent_num`` must be a square (the release reshapes the pooled
grid to ``agent_num`` tokens). Any map size works: the pool and the interpolations take any H x W,
including maps with fewer tokens than agents.

State-dict keys and shapes equal the released ``AgentAttention``'s (``qkv``, ``proj``, ``dwc``,
``an_bias``, ``na_bias``, ``ah_bias``, ``aw_bias``, ``ha_bias``, ``wa_bias``; the pool has no
weights), with ``bias_size`` as the window, so a released state dict loads as is.

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0). Both attentions go through
``scaled_dot_product_attention`` with the bias as its float mask (QKᵀ and AV: 2·A·N·C each for
A agents and N = H·W tokens). ``adaptive_avg_pool2d`` costs one MAC per input element (fvcore's
price), the two ``7 x 7 -> H x W`` bilinear interpolations 4 per output element, the 1-D linear ones
2 per output element; the softmax and the bias sums are free.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, check_param, phase, register_mechanism

__all__ = ["AgentAttention", "resize_axis"]

TABLE = 7  # side of the an_bias / na_bias tables, whatever the agent count or the map


def resize_axis(t: Tensor, dim: int, size: int) -> Tensor:
    """Linear interpolation (``align_corners=False``) of ``t`` along ``dim`` to ``size`` points."""
    if t.shape[dim] == size:
        return t
    moved = t.movedim(dim, -1)  # (..., L)
    lead = moved.shape[:-1]
    out = F.interpolate(moved.reshape(1, -1, moved.shape[-1]), size=size, mode="linear")  # (1, ·, size)
    return out.reshape(*lead, size).movedim(-1, dim)


@register_mechanism("agent")
class AgentAttention(AttentionMechanism):
    """Agent attention of Agent-Swin / Agent-PVT over the whole map: agents pooled from q.

    Args:
        dim: channels C.
        num_heads: attention heads (Agent-Swin-T: 3, 6, 12; Agent-PVT-T: 1, 2, 5, 8).
        agent_num: agent tokens A, a square (the q map is pooled to sqrt(A) x sqrt(A));
            Agent-Swin-T and Agent-PVT-T: 9, 16, 49, 49 by stage.
        bias_size: side of the map the per-row and per-column bias tables are built for (the
            released model's stage map: 56, 28, 14, 7 at 224²); other maps interpolate them.
        qkv_bias: bias in the q/k/v projection (True in Agent-Swin and Agent-PVT).
    """

    display_name = "Agent"
    color = "#44AA99"
    marker = "h"
    bibtex = (
        "@inproceedings{han2024agent,\n  title = {Agent Attention: On the Integration of Softmax and Linear "
        "Attention},\n  author = {Han, Dongchen and Ye, Tianzhu and Han, Yizeng and Xia, Zhuofan and Pan, "
        "Siyuan and Wan, Pengfei and Song, Shiji and Huang, Gao},\n  booktitle = {ECCV},\n  year = {2024}\n}"
    )
    param_symbols = {"agent_num": "n"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        agent_num: int = 49,
        bias_size: int = 14,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads)
        side = math.isqrt(agent_num) if isinstance(agent_num, int) and agent_num > 0 else 0
        check_param(
            side > 0 and side * side == agent_num,
            "agent_num",
            agent_num,
            "a square int >= 1 (1, 4, 9, 16, 25, 36, 49, ...): agents are pooled to a square grid",
        )
        check_param(bias_size >= 1, "bias_size", bias_size, "an int >= 1")
        self.agent_num, self.bias_size, self.qkv_bias = agent_num, bias_size, qkv_bias
        self.pool_size = side
        self.scale = self.head_dim**-0.5
        m, a, s = num_heads, agent_num, bias_size

        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.an_bias = nn.Parameter(torch.zeros(m, a, TABLE, TABLE))
        self.na_bias = nn.Parameter(torch.zeros(m, a, TABLE, TABLE))
        self.ah_bias = nn.Parameter(torch.zeros(1, m, a, s, 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, m, a, 1, s))
        self.ha_bias = nn.Parameter(torch.zeros(1, m, s, 1, a))
        self.wa_bias = nn.Parameter(torch.zeros(1, m, 1, s, a))
        for p in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            nn.init.trunc_normal_(p, std=0.02)

    def position_biases(self, H: int, W: int) -> tuple[Tensor, Tensor]:
        """The two additive biases: agents -> tokens (1, m, A, H·W) and tokens -> agents (1, m, H·W, A)."""
        m, a, N = self.num_heads, self.agent_num, H * W
        an = F.interpolate(self.an_bias, size=(H, W), mode="bilinear")  # (m, A, H, W)
        ah = resize_axis(self.ah_bias, 3, H)  # (1, m, A, H, 1)
        aw = resize_axis(self.aw_bias, 4, W)  # (1, m, A, 1, W)
        agent_bias = (an.unsqueeze(0) + ah + aw).reshape(1, m, a, N)
        na = F.interpolate(self.na_bias, size=(H, W), mode="bilinear")  # (m, A, H, W)
        ha = resize_axis(self.ha_bias, 2, H)  # (1, m, H, 1, A)
        wa = resize_axis(self.wa_bias, 3, W)  # (1, m, 1, W, A)
        query_bias = na.reshape(1, m, a, N).transpose(-2, -1) + (ha + wa).reshape(1, m, N, a)
        return agent_bias, query_bias

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H, W, C = x.shape
        m, d, a, N = self.num_heads, self.head_dim, self.agent_num, H * W
        with phase("projections"):
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, H, W, C)
        with phase("agents"):
            agents = F.adaptive_avg_pool2d(q.permute(0, 3, 1, 2), self.pool_size)  # (B, C, p, p)
        agents = agents.reshape(B, m, d, a).transpose(-2, -1)  # (B, m, A, d)
        v_map = v.permute(0, 3, 1, 2)  # (B, C, H, W) for the dwc branch
        q, k, v = (t.reshape(B, N, m, d).transpose(1, 2) for t in (q, k, v))  # each (B, m, N, d)

        with phase("position biases"):
            agent_bias, query_bias = self.position_biases(H, W)
            agent_bias, query_bias = agent_bias.to(q.dtype), query_bias.to(q.dtype)
        with phase("agent attention"):
            agent_v = F.scaled_dot_product_attention(agents, k, v, attn_mask=agent_bias, scale=self.scale)
        # agent_v: (B, m, A, d)
        with phase("query attention"):
            out = F.scaled_dot_product_attention(q, agents, agent_v, attn_mask=query_bias, scale=self.scale)
        # out: (B, m, N, d)
        with phase("dwc"):
            out = out.transpose(1, 2).reshape(B, H, W, C) + self.dwc(v_map).permute(0, 2, 3, 1)
        with phase("projections"):
            return self.proj(out)

    def agent_centres(self, H: int, W: int) -> Tensor:
        """(A, 2) fractional (row, col) centres of the pooled cells, agents row-major:
        ``adaptive_avg_pool2d``'s cell i spans rows floor(i·H/p) .. ceil((i+1)·H/p) - 1."""
        p = self.pool_size

        def centres(n: int) -> Tensor:
            i = torch.arange(p)
            return ((i * n) // p + (-((-(i + 1) * n) // p)) - 1) / 2  # (first + last) / 2

        rows, cols = torch.meshgrid(centres(H), centres(W), indexing="ij")
        return torch.stack([rows, cols], dim=-1).reshape(p * p, 2).float()

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's effective weights on the H·W values through the agents: its softmax over the A
        agents (broadcast, with its bias) times each agent's softmax over the keys (aggregation, with
        its bias), per head; they sum to 1.

        ``points`` are the agents at the centres of their pooled cells of q, ``point_weights`` the
        query's weights over them. The 3x3 depthwise conv on v, added to the attention output before
        ``proj``, is not attention and is not drawn.
        """
        self._check_query(x, query)
        _, H, W, C = x.shape
        r, c = query
        m, d, a = self.num_heads, self.head_dim, self.agent_num
        q, k, _ = self.qkv(x).chunk(3, dim=-1)  # each (1, H, W, C)
        agents = F.adaptive_avg_pool2d(q.permute(0, 3, 1, 2), self.pool_size).reshape(m, d, a)  # (m, d, A)
        agent_bias, query_bias = self.position_biases(H, W)  # (1, m, A, HW), (1, m, HW, A)
        k = k.reshape(H * W, m, d)
        to_keys = (torch.einsum("mda,nmd->man", agents, k) * self.scale + agent_bias[0]).softmax(-1)
        to_agents = torch.einsum("md,mda->ma", q[0, r, c].view(m, d), agents) * self.scale
        to_agents = (to_agents + query_bias[0, :, r * W + c]).softmax(-1)  # (m, A)
        weights = torch.einsum("ma,man->mn", to_agents, to_keys).view(m, H, W)
        points = self.agent_centres(H, W).to(x.device, x.dtype).expand(m, -1, -1)
        note = f"query -> {a} agents -> keys, softmax times softmax; 3x3 dwc on v not drawn"
        return AttentionMap(query, weights, points=points, point_weights=to_agents, note=note)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1 with N = H·W tokens and A agents (see the module docstring for prices)."""
        N, C, m, a, s = H * W, self.dim, self.num_heads, self.agent_num, self.bias_size
        resized = (H if H != s else 0) + (W if W != s else 0)  # outputs of the 1-D bias resizes
        return {
            "qkv_proj": 3 * N * C * C,
            "agent_pool": N * C,
            "bias_tables": 2 * 4 * m * a * N,  # an_bias, na_bias: 7x7 -> HxW, bilinear
            "bias_rows_cols": 2 * 2 * m * a * resized,  # ah/aw and ha/wa: linear, where resized
            "agent_attention": 2 * a * N * C,  # agents attend to the N keys: QKᵀ, AV
            "query_attention": 2 * N * a * C,  # queries attend to the A agents
            "dwc": 9 * N * C,
            "out_proj": N * C * C,
        }
