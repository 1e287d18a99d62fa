"""Bi-Level Routing Attention (BRA), BiFormer (Zhu et al., CVPR 2023).

The variant of the released ``ops/bra_legacy.py`` used by every released BiFormer model, quirks
kept because the released checkpoints need them:

- one ``Linear(C -> 2*qk_dim + C)`` gives q | k | v (``qk_dim = C`` in all released models);
- routing on region means of q and k, **detached**; the top-k routing weights are not used;
- attention scale ``qk_dim ** -0.5`` (the whole qk dim, not the head dim);
- ``out = wo(attn + LCE(v))`` with LCE a ``side_dwconv x side_dwconv`` depthwise conv on v;
- ``auto_pad`` zero-pads the *input* at bottom/right before the projection (padded tokens carry the
  bias, count in region means and are not masked), and the output is cropped.

The region-to-token attention runs on one of several backends (``backend=``), all computing the
same function; ``reference`` is the released algorithm and the oracle of the others.

Backends (``backend=``; ``auto`` takes the first whose ``can_run`` accepts the inputs, in this order):

- ``flex``: block-sparse FlexAttention, no gather (CUDA; forward-only on CPU, so never auto there);
- ``masked``: one dense attention with a routing mask, for small maps where that is cheaper;
- ``bmm``: head-major region blocks, index_select of whole routed blocks, batched matmuls and a
  hand-written backward: the CPU training path (CPU only in ``auto``);
- ``sdpa``: index_select of whole routed regions + fused SDPA (no score tensor kept), trains anywhere;
- ``reference``: the released algorithm.

Every backend takes the spatial projection ``qkv`` (B, H, W, 2·qk + C) and the top-k indices and
returns the attention output and the value map for the LCE, both (B, H, W, C) (see ``layout.py``).

FLOPs: ``analytic_flops`` equals the fvcore count exactly (tolerance 0): the projections, the
S^2 x S^2 routing product, the k * HW/S^2 keys per query and the LCE are all dense products whose
MACs fvcore counts one for one; region means, softmax and top-k are free in that convention. While
FLOPs are counted (``attnbench.flops.is_counting()``) the token attention runs through ``sdpa``
whatever the backend: the count is the algorithm's cost, identical for every backend that computes
only the routed pairs (flex cannot be traced; ``masked`` does dense N^2 work by design, which shows
in its latency, not in BRA's FLOPs).

Peers (docs/peers.md): the ``reference`` backend and a plain re-implementation of the released
``bra_legacy`` module; ours (``auto``) / fastest peer 0.17-0.79 forward, 0.22-0.49 forward+backward
(CPU, 1 thread, fp32, batch 4, quiet machine, results/peers).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import AttentionMap, AttentionMechanism, Region, check_param, phase, register_mechanism
from attnbench.flops import is_counting
from mechanisms.bra import bmm, flex, masked, reference, sdpa
from mechanisms.bra.layout import from_regions, to_regions

__all__ = ["BiLevelRoutingAttention", "from_regions", "to_regions"]

log = logging.getLogger(__name__)

# Backends in order of preference for backend="auto"; each module has can_run() and attend().
BACKENDS = {"flex": flex, "masked": masked, "bmm": bmm, "sdpa": sdpa, "reference": reference}


class TopkRouting(nn.Module):
    """Region-level routing: affinity of detached region means, then the top-k regions per region."""

    def __init__(self, topk: int, scale: float) -> None:
        super().__init__()
        self.topk = topk
        self.scale = scale

    def forward(self, q_region: Tensor, k_region: Tensor) -> Tensor:
        # q_region, k_region: (B, S², qk_dim); no gradient flows through routing
        logits = (q_region.detach() * self.scale) @ k_region.detach().transpose(-2, -1)  # (B, S², S²)
        return torch.topk(logits, k=self.topk, dim=-1).indices  # (B, S², k)


class RegionTokenAttention(nn.Module):
    """Token-to-token attention of each region's queries over its routed regions' tokens.

    Parameter-free; a module of its own so that FLOP counters attribute its MACs separately.
    Returns the attention output and the value map v that the LCE convolves (a backend may hand
    out its own copy of v, so that the LCE's gradient joins its own).
    """

    def __init__(self, num_heads: int, qk_dim: int, scale: float, n_win: int, backend: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qk_dim = qk_dim
        self.scale = scale
        self.n_win = n_win
        self.backend = backend

    def forward(self, qkv: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        # qkv (B, H, W, 2·qk + C), idx (B, S², k) -> out (B, H, W, C), v (B, H, W, C)
        if is_counting():
            impl = sdpa  # FLOPs are the algorithm's, whatever backend runs (see the module docstring)
        elif self.backend == "auto":
            impl = choose_backend(qkv, idx, self.n_win)
        else:
            impl = BACKENDS[self.backend]
        return impl.attend(qkv, idx, self.n_win, self.num_heads, self.qk_dim, self.scale)


def choose_backend(qkv: Tensor, idx: Tensor, n_win: int):
    """The first backend in :data:`BACKENDS` order whose ``can_run`` accepts the inputs."""
    for name, impl in BACKENDS.items():
        ok, why = impl.can_run(qkv, idx, n_win)
        if ok:
            log.debug("bra: backend %r chosen", name)
            return impl
        log.debug("bra: backend %r skipped: %s", name, why)
    return reference


@register_mechanism("bra")
class BiLevelRoutingAttention(AttentionMechanism):
    """Bi-Level Routing Attention (BiFormer, CVPR 2023), legacy released variant.

    Args:
        dim: channels C.
        num_heads: attention heads (BiFormer uses head_dim 32).
        n_win: regions per side S; the map is split into S x S regions.
        topk: routed regions per query region, 1 <= k <= S^2 (BiFormer: 1, 4, 16 in stages 1-3).
        side_dwconv: kernel of the depthwise LCE conv on v (5 in all models; 0 disables it).
        qk_dim: query/key channels (None: = dim, as in every released model).
        auto_pad: zero-pad bottom/right to a multiple of S (detection/segmentation); else H and W
            must be multiples of S.
        backend: "auto" or one of :data:`BACKENDS` ("reference" is the released gather algorithm).
    """

    display_name = "BRA"
    color = "#D55E00"
    marker = "s"
    bibtex = (
        "@inproceedings{zhu2023biformer,\n  title = {{BiFormer}: Vision Transformer with Bi-Level Routing "
        "Attention},\n  author = {Zhu, Lei and Wang, Xinjiang and Ke, Zhanghan and Zhang, Wayne and Lau, "
        "Rynson},\n  booktitle = {CVPR},\n  year = {2023}\n}"
    )
    param_symbols = {"n_win": "S", "topk": "k"}
    reference_backend = "reference"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        n_win: int = 7,
        topk: int = 4,
        side_dwconv: int = 5,
        qk_dim: int | None = None,
        auto_pad: bool = False,
        backend: Literal["auto", "reference", "sdpa", "bmm", "masked", "flex"] = "auto",
    ) -> None:
        super().__init__(dim, num_heads)
        qk_dim = dim if qk_dim is None else qk_dim
        check_param(n_win >= 1, "n_win", n_win, "an int >= 1")
        check_param(1 <= topk <= n_win * n_win, "topk", topk, f"1 <= topk <= n_win^2 = {n_win * n_win}")
        check_param(side_dwconv == 0 or side_dwconv % 2 == 1, "side_dwconv", side_dwconv, "0 or odd")
        check_param(
            qk_dim >= num_heads and qk_dim % num_heads == 0,
            "qk_dim",
            qk_dim,
            f"a positive multiple of num_heads = {num_heads}",
        )
        check_param(backend == "auto" or backend in BACKENDS, "backend", backend, f"auto, {list(BACKENDS)}")
        self.n_win, self.topk, self.side_dwconv = n_win, topk, side_dwconv
        self.qk_dim, self.auto_pad, self.backend = qk_dim, auto_pad, backend
        self.scale = qk_dim**-0.5  # quirk: whole qk dim, kept for the released checkpoints

        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)
        self.lepe = (
            nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
            if side_dwconv > 0
            else None
        )
        self.router = TopkRouting(topk, self.scale)
        self.attn = RegionTokenAttention(num_heads, qk_dim, self.scale, n_win, backend)
        self.wo = nn.Linear(dim, dim)

    def check_input(self, H: int, W: int) -> None:
        S = self.n_win
        if H < S or W < S:
            raise ValueError(f"bra: a {H}x{W} map is smaller than n_win = {S} regions per side")
        if not self.auto_pad and (H % S or W % S):
            raise ValueError(
                f"bra: H x W = {H}x{W} is not divisible by n_win = {S}; "
                "pass auto_pad=True or choose n_win dividing both"
            )

    def padded_size(self, H: int, W: int) -> tuple[int, int]:
        S = self.n_win
        return H + (-H) % S, W + (-W) % S

    def project_and_route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The projection ``qkv`` (B, H, W, 2·qk + C), channels q | k | v, and the routed regions of
        every region ``idx`` (B, S², k), regions row-major over the S x S grid, from a map ``x``
        (B, H, W, C) already padded to multiples of S."""
        B, H, W, _ = x.shape
        S, qk = self.n_win, self.qk_dim
        with phase("projections"):
            qkv = self.qkv(x)  # (B, H, W, 2·qk + C), channels q | k | v
        with phase("routing"), torch.no_grad():  # routing is on detached region means (released behaviour)
            h, w = H // S, W // S
            # two one-axis sums (a strided mean over (h, w) at once is ~10x slower on CPU), in fp32
            # and rounded once at the end, as mean() does for bf16 inputs
            region_qk = qkv[..., : 2 * qk].view(B, S, h, S, w, 2 * qk).sum(2, dtype=torch.float32)
            region_qk = region_qk.sum(3).div_(h * w).to(qkv.dtype)
            region_qk = region_qk.reshape(B, S * S, 2 * qk)  # (B, S², 2·qk) region means
            idx = self.router(region_qk[..., :qk], region_qk[..., qk:])  # (B, S², k)
        return qkv, idx

    def _routed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``project_and_route`` of ``x`` padded as ``forward`` pads it, without gradient."""
        _, H_in, W_in, _ = x.shape
        H, W = self.padded_size(H_in, W_in)
        with torch.no_grad():
            qkv, idx = self.project_and_route(F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in)))
        if torch.is_grad_enabled() and (x.requires_grad or self.qkv.weight.requires_grad):
            qkv.requires_grad_(True)  # as in a training forward: backends choose by it
        return qkv, idx

    def backend_unavailable(self, x: Tensor, backend: str, backward: bool = False) -> str | None:
        """Only ``flex`` has a hard limit: it runs on CUDA alone (FlexAttention has no CPU backward,
        and its CPU forward is not what the backend is for). The other backends run everywhere;
        ``auto`` passes some over for speed or memory (their ``can_run``), not because they cannot."""
        if backend == "flex" and x.device.type != "cuda":
            return "FlexAttention runs here only on CUDA (no CPU backward)"
        return None

    def chosen_backend(self, x: Tensor) -> str | None:
        if self.backend != "auto":
            return self.backend
        impl = choose_backend(*self._routed(x), self.n_win)
        return next(name for name, module in BACKENDS.items() if module is impl)

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """The query's token weights: a softmax over the tokens of the k regions routed to the query's
        region (scale ``qk_dim ** -0.5``, as every backend), per head, zero elsewhere; computed from
        the reference math (gather, scores, softmax) with the module's routing.

        Regions: "query region" and "routed 1" .. "routed k" in routing order (the routing scores
        themselves are not used by BRA). The LCE (a depthwise conv on v added to the attention
        output) is not attention and is not drawn. With ``auto_pad``, regions are cut to the map and
        padded keys may take part of the weight: then ``normalized`` is False.
        """
        self._check_query(x, query)
        _, H_in, W_in, _ = x.shape
        r, c = query
        S, qk, m = self.n_win, self.qk_dim, self.num_heads
        H, W = self.padded_size(H_in, W_in)
        qkv, idx = self.project_and_route(F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in)))
        h, w = H // S, W // S
        routed = idx[0, (r // h) * S + c // w].tolist()  # k region indices
        grid = torch.arange(H * W, device=x.device).view(S, h, S, w).permute(0, 2, 1, 3).reshape(S * S, h * w)
        keys = grid[routed].reshape(-1)  # (k·M,) flat positions of the gathered keys
        qkv = qkv.view(H * W, -1)
        q = qkv[r * W + c, :qk].view(m, qk // m)  # (m, qk/m)
        k = qkv[keys, qk : 2 * qk].view(-1, m, qk // m)  # (k·M, m, qk/m)
        probs = torch.einsum("md,nmd->mn", q * self.scale, k).softmax(dim=-1)  # (m, k·M)
        weights = x.new_zeros(m, H * W).index_copy_(1, keys, probs).view(m, H, W)[:, :H_in, :W_in]

        def region(label: str, index: int) -> Region | None:
            top, left = (index // S) * h, (index % S) * w
            if top >= H_in or left >= W_in:
                return None
            return Region(label, top, left, min(h, H_in - top), min(w, W_in - left))

        shown = [region("query region", (r // h) * S + c // w)]
        shown += [region(f"routed {i + 1}", g) for i, g in enumerate(routed)]
        padded = any((g // S + 1) * h > H_in or (g % S + 1) * w > W_in for g in routed)
        note = f"token weights in the {self.topk} routed regions; LCE (depthwise conv on v) not drawn"
        note += "; padded keys off the map take the rest of the weight" if padded else ""
        return AttentionMap(
            query,
            weights.contiguous(),
            normalized=not padded,
            regions=tuple(g for g in shown if g is not None),
            note=note,
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        B, H_in, W_in, C = x.shape
        H, W = self.padded_size(H_in, W_in)
        if (H, W) != (H_in, W_in):
            x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))  # zeros at bottom/right, before qkv

        qkv, idx = self.project_and_route(x)  # (B, H, W, 2·qk + C), (B, S², k)
        with phase("attention"):  # a backend marks its gather and layout copies inside
            out, v = self.attn(qkv, idx)  # (B, H, W, C) each
        if self.lepe is not None:
            with phase("lce"):
                out = out + self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # LCE, (B, H, W, C)
        with phase("projections"):
            out = self.wo(out)
        return out[:, :H_in, :W_in].contiguous()

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for batch 1: BRA's terms, with H, W the padded size and M = HW/S² tokens per region."""
        H, W = self.padded_size(H, W)
        N, C, qk, S = H * W, self.dim, self.qk_dim, self.n_win
        M = N // (S * S)
        return {
            "qkv_proj": N * C * (2 * qk + C),
            "routing": (S * S) * (S * S) * qk,
            "attention": N * self.topk * M * (qk + C),
            "lce": N * C * self.side_dwconv**2,
            "out_proj": N * C * C,
        }
