"""BRA token attention as region-batched matmuls with a hand-written backward: the CPU training path.

On CPU the cost of BRA around its small matmuls is memory traffic, not arithmetic, so this backend
is built to touch every tensor as few times as it can:

- q, k and v are copied once each from the spatial projection into head-major region blocks
  (B·S²·m, M, d); the routed regions' k and v are picked with one ``index_select`` of whole blocks
  (no expanded view, so no scatter into a k·S²-fold zero tensor in backward);
- the (M x k·M) scores of every block come from one ``baddbmm`` with the scale folded in, softmax in
  place, one ``bmm`` with the values;
- the backward is written out (dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - rowsum(dO ∘ O)), dQ = dS K,
  dK = dSᵀ Q) and writes dq, dk and dv straight into one (B, H, W, 2·qk + C) gradient of ``qkv``,
  summing the LCE's gradient of v into it, where autograd would concatenate and add full-size
  tensors several times;
- the LCE's input (a contiguous copy of v) is the second output, so its gradient joins that buffer.

Timed against the alternatives on BiFormer-T's stage shapes (see ``studies/bra_backends.yaml``):
on CPU it beats ``sdpa``, whose fused CPU kernel is slow on blocks this small. It keeps the routed
k and v blocks (k-fold, as the released code does) and the (B·S²·m, M, k·M) probabilities for the
backward, so it only pays while k·M is small and a backward follows: ``auto`` uses it on CPU for
training with at most :data:`MAX_KEYS` keys per query, and ``sdpa`` (no score tensor kept) for
inference, beyond that and on CUDA.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from attnbench import phase
from mechanisms.bra.layout import map_as_region_heads, region_heads, region_heads_as_map

# auto uses bmm only while each query sees at most this many keys (k·M): there the (M x k·M) score
# blocks are small and batched matmuls beat SDPA's CPU kernel (2 threads, batch 8, fwd+bwd: 44 vs
# 56 ms at M = 16, k = 4; 64 vs 73 ms at M = 64, k = 1); from k·M = 128 on SDPA is as fast or
# faster and keeps no score tensor (at 112², M = 256, k = 4: 118 vs 61 ms forward).
MAX_KEYS = 64


def can_run(qkv: Tensor, idx: Tensor, n_win: int) -> tuple[bool, str]:
    if qkv.is_cuda:
        return False, "on CUDA sdpa's fused kernels keep no score tensor"
    if not (torch.is_grad_enabled() and qkv.requires_grad):
        # forward alone: sdpa is as fast (15 vs 14-27 ms at stage 2: bmm's fresh buffers fault in
        # or not depending on the allocator's state) and keeps nothing
        return False, "no gradient needed: sdpa's fused forward is as fast and keeps nothing"
    keys = idx.shape[-1] * (qkv.shape[1] // n_win) * (qkv.shape[2] // n_win)
    if keys > MAX_KEYS:
        return False, f"{keys} keys per query > {MAX_KEYS}: sdpa is faster and keeps no score tensor"
    return True, ""


def routed_rows(idx: Tensor, num_heads: int) -> Tensor:
    """idx (B, S², k) -> (B·S²·m·k,) rows of the (B·S²·m, ·) head blocks: for query region r, head h,
    its j-th routed region idx[b, r, j] in head h, ordered (b, r, h, j)."""
    B, R, k = idx.shape
    m = num_heads
    batch = torch.arange(B, device=idx.device).view(B, 1, 1, 1) * R
    head = torch.arange(m, device=idx.device).view(1, 1, m, 1)
    return ((batch + idx.view(B, R, 1, k)) * m + head).reshape(-1)


class _RoutedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: Tensor, idx: Tensor, n_win: int, num_heads: int, qk_dim: int, scale: float):
        B, H, W, Ct = qkv.shape
        C, S, m, k = Ct - 2 * qk_dim, n_win, num_heads, idx.shape[-1]
        q, kk, v = qkv.split([qk_dim, qk_dim, C], dim=-1)
        with phase("layout"):
            qh = region_heads(q, S, m)  # (B·S²·m, M, qk/m)
            kh = region_heads(kk, S, m)  # (B·S²·m, M, qk/m)
            vh = region_heads(v, S, m)  # (B·S²·m, M, C/m)
        G, M = qh.shape[:2]
        with phase("gather"):
            rows = routed_rows(idx, m)  # (G·k,)
            k_sel = kh.index_select(0, rows).view(G, k * M, -1)  # (G, k·M, qk/m)
            v_sel = vh.index_select(0, rows).view(G, k * M, -1)  # (G, k·M, C/m)
        k_shape, v_shape = kh.shape, vh.shape
        del kh, vh  # not needed again: the peak is lower without them
        logits = torch.baddbmm(qh.new_empty(1, 1, 1), qh, k_sel.transpose(1, 2), beta=0, alpha=scale)
        if qh.dtype in (torch.float16, torch.bfloat16):
            p = logits.softmax(-1, dtype=torch.float32).to(qh.dtype)
        else:
            p = torch.softmax(logits, -1, out=logits)  # (G, M, k·M), in place
        o = torch.bmm(p, v_sel)  # (G, M, C/m)
        with phase("layout"):
            out = qkv.new_empty(B, H, W, C)
            map_as_region_heads(out, S, m).copy_(region_heads_as_map(o, B, S, H, W))
        ctx.save_for_backward(qh, k_sel, v_sel, p, o, rows)
        ctx.geometry = (B, H, W, C, n_win, num_heads, qk_dim, scale, k_shape, v_shape)
        return out, v.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor | None, d_v: Tensor | None):
        qh, k_sel, v_sel, p, o, rows = ctx.saved_tensors
        B, H, W, C, S, m, qk, scale, k_shape, v_shape = ctx.geometry
        d_qkv = p.new_empty(B, H, W, 2 * qk + C)
        dq_map = map_as_region_heads(d_qkv[..., :qk], S, m)
        dk_map = map_as_region_heads(d_qkv[..., qk : 2 * qk], S, m)
        dv_map = map_as_region_heads(d_qkv[..., 2 * qk :], S, m)
        if d_out is None:  # only the LCE path carries a gradient
            dq_map.zero_()
            dk_map.zero_()
            dv_map.copy_(map_as_region_heads(d_v, S, m))
            return d_qkv, None, None, None, None, None
        G, M = qh.shape[:2]
        # Fresh CPU allocations of this size cost page faults on first touch; dead buffers are
        # reused (out=) where the shapes allow, which they do whenever qk_dim = C.
        do = region_heads(d_out, S, m)  # (G, M, C/m)
        delta = torch.bmm(do.view(G * M, 1, -1), o.view(G * M, -1, 1)).view(G, M, 1)  # rowsum(dP ∘ P)
        dv_sel = torch.bmm(p.transpose(1, 2), do)  # (G, k·M, C/m)
        ds = torch.bmm(do, v_sel.transpose(1, 2))  # dP (G, M, k·M)
        ds.sub_(delta).mul_(p).mul_(scale)  # dS, times the scale of the logits
        dq = torch.bmm(ds, k_sel, out=do if do.shape == qh.shape else None)  # (G, M, qk/m)
        dq_map.copy_(region_heads_as_map(dq, B, S, H, W))
        acc = qh.new_zeros(v_shape).index_add_(0, rows, dv_sel.view(-1, M, v_shape[-1]))  # dv
        if d_v is None:
            dv_map.copy_(region_heads_as_map(acc, B, S, H, W))
        else:
            torch.add(region_heads_as_map(acc, B, S, H, W), map_as_region_heads(d_v, S, m), out=dv_map)
        same = k_shape == v_shape
        dk_sel = torch.bmm(ds.transpose(1, 2), qh, out=dv_sel if same else None)  # (G, k·M, qk/m)
        acc = acc.zero_() if same else qh.new_zeros(k_shape)
        acc.index_add_(0, rows, dk_sel.view(-1, M, k_shape[-1]))  # dk
        dk_map.copy_(region_heads_as_map(acc, B, S, H, W))
        return d_qkv, None, None, None, None, None


def attend(
    qkv: Tensor, idx: Tensor, n_win: int, num_heads: int, qk_dim: int, scale: float
) -> tuple[Tensor, Tensor]:
    """qkv (B, H, W, 2·qk + C), idx (B, S², k) -> attention output and v, both (B, H, W, C)."""
    return _RoutedAttention.apply(qkv, idx, n_win, num_heads, qk_dim, scale)
