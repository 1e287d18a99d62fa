"""FLOP counting in the papers' convention: one multiply-accumulate (MAC) = one FLOP.

:func:`count_flops` traces the module with fvcore (the counter BiFormer, DAT, Swin and NAT report)
and adds handles for the operators fvcore does not know but attention needs
(``scaled_dot_product_attention``, flex attention, NATTEN's ops). Every operator in the trace ends
in exactly one of three places:

- counted: a handle gave its MACs (``by_operator``, ``by_module``);
- free by convention: element-wise and data-movement ops the papers do not count (softmax, add,
  gather, topk, mean ...), listed with their call counts in ``convention_zero``;
- ``uncounted``: anything else, so that an op nobody handled is never silently a zero.

``torch_total`` is the cross-check from ``torch.utils.flop_counter.FlopCounterMode`` (which counts
two FLOPs per MAC), already halved to MACs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

__all__ = ["FlopReport", "count_flops", "is_counting", "register_flop_handle", "torch_flop_count"]

log = logging.getLogger(__name__)

Handle = Callable[[list[Any], list[Any]], int]
_EXTRA_HANDLES: dict[str, Handle] = {}
_counting = 0


def is_counting() -> bool:
    """True while :func:`count_flops` runs the module.

    A mechanism whose fast path cannot be traced, or does more work than its algorithm needs (a
    dense masked kernel), may switch to a plain path of the same algorithm here, so that FLOPs are
    the algorithm's cost whatever backend runs; the switch must be stated in its docstring.
    """
    return _counting > 0


@contextlib.contextmanager
def _counting_scope():
    global _counting
    _counting += 1
    try:
        yield
    finally:
        _counting -= 1


# Operators the papers' fvcore convention counts as zero: element-wise arithmetic, activations,
# normalising exponentials, reductions used for pooling and routing, indexing and layout.
CONVENTION_ZERO = frozenset(
    "aten::" + op
    for op in """
    add add_ sub sub_ mul mul_ div div_ neg exp log sqrt rsqrt pow abs sign softmax log_softmax
    _softmax gelu silu sigmoid tanh hardtanh leaky_relu elu mean sum amax amin topk sort argsort
    argmax argmin cumsum clamp_min clamp_max where masked_fill_ fill_ zero_ repeat expand_as tile
    index_select index_add scatter scatter_add gather lerp ne lt le logical_not logical_and
    logical_or bitwise_and any all norm linalg_vector_norm reciprocal rsub floor ceil round
    meshgrid linspace view_as reshape_as movedim flip unfold im2col col2im pad reflection_pad2d
    replicate_pad2d tanh_ sigmoid_ gelu_ unflatten alias lift_fresh clone detach_ contiguous
    __or__ __xor__ sqrt_ exp_ baddbmm_zero div_floor randn rand rand_like randn_like empty_like
    ones_like new_ones native_dropout dropout_ feature_dropout
    """.split()
)


def register_flop_handle(op_name: str) -> Callable[[Handle], Handle]:
    """Register a MAC-counting handle for a traced operator (e.g. ``"natten::na2d"``)."""

    def deco(fn: Handle) -> Handle:
        _EXTRA_HANDLES[op_name] = fn
        return fn

    return deco


def _shape(v: Any) -> list[int] | None:
    t = v.type()
    if hasattr(t, "sizes") and t.sizes() is not None:
        return list(t.sizes())
    return None


@register_flop_handle("aten::scaled_dot_product_attention")
def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    # q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev): QK^T then AV
    q, k, v = (_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise RuntimeError("scaled_dot_product_attention traced without shapes")
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


# FlopCounterMode knows the CUDA SDPA kernels but not the CPU flash kernel: teach it, so the
# cross-check counts attention on CPU too (formulas from torch, 2 FLOPs per MAC).
_aten = torch.ops.aten
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu, get_raw=True)
    def _sdpa_cpu_flop(query, key, value, *args, out_val=None, **kwargs) -> int:
        return sdpa_flop_count(query.shape, key.shape, value.shape)

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu_backward, get_raw=True)
    def _sdpa_cpu_backward_flop(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


@dataclasses.dataclass
class FlopReport:
    """FLOP count of one forward pass, in MACs (fvcore convention).

    Attributes:
        total: all counted MACs.
        by_operator: MACs per operator kind (fvcore's names: ``linear``, ``matmul``, ``conv`` ...).
        by_module: MACs per submodule path (``""`` is the whole module).
        uncounted: operator -> number of calls that no handle counted and that are not free by
            convention; non-empty means ``total`` may be an undercount.
        convention_zero: operator -> calls counted as zero by the papers' convention.
        torch_total: ``FlopCounterMode`` total divided by two (MACs), or None if it failed.
    """

    total: int
    by_operator: dict[str, int]
    by_module: dict[str, int]
    uncounted: dict[str, int]
    convention_zero: dict[str, int]
    torch_total: int | None = None

    @property
    def gmacs(self) -> float:
        return self.total / 1e9


def torch_flop_count(module: nn.Module, *inputs: Any) -> int:
    """``FlopCounterMode`` total of one forward pass, halved to MACs."""
    with _counting_scope(), torch.no_grad(), FlopCounterMode(display=False) as mode:
        module(*inputs)
    return mode.get_total_flops() // 2


def count_flops(module: nn.Module, *inputs: Any, cross_check: bool = True) -> FlopReport:
    """Count the MACs of ``module(*inputs)`` (one forward pass, the batch given).

    Args:
        module: any ``nn.Module``; it is put in eval mode for the count and restored after.
        inputs: the forward's positional inputs.
        cross_check: also run torch's ``FlopCounterMode`` (``report.torch_total``).
    """
    from fvcore.nn import FlopCountAnalysis

    was_training = module.training
    module.eval()
    try:
        with _counting_scope():
            analysis = FlopCountAnalysis(module, inputs)
            analysis.set_op_handle(**_EXTRA_HANDLES)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                total = int(analysis.total())
            by_operator = {k: int(v) for k, v in analysis.by_operator().items() if v}
            by_module = {k: int(v) for k, v in analysis.by_module().items()}
            skipped = Counter(analysis.unsupported_ops())
            uncounted = {op: n for op, n in skipped.items() if op not in CONVENTION_ZERO}
            zero = {op: n for op, n in skipped.items() if op in CONVENTION_ZERO}
            torch_total = None
            if cross_check:
                try:
                    torch_total = torch_flop_count(module, *inputs)
                except Exception as exc:  # noqa: BLE001 - a cross-check failure must not lose the count
                    log.warning("FlopCounterMode cross-check failed: %s", exc)
    finally:
        module.train(was_training)
    if uncounted:
        log.warning("count_flops: no FLOP handle for %s; the total may be low", sorted(uncounted))
    return FlopReport(total, by_operator, by_module, uncounted, zero, torch_total)
