"""FLOP counting in the papers' convention: one multiply-accumulate (MAC) = one FLOP.

:func:`count_flops` traces the module with fvcore (the counter BiFormer, DAT, Swin and NAT report)
and adds handles for the operators fvcore does not know but vision attention uses
(``scaled_dot_product_attention``, the interpolation modes fvcore lacks) and an exact ``einsum``.
Kernels a trace cannot see into (flex attention, NATTEN) are counted through the plain path their
mechanism switches to under :func:`is_counting`. Every operator in the trace ends in exactly one of
three places:

- counted: a handle gave its MACs (``by_operator``, ``by_module``);
- free by convention: element-wise, reduction and data-movement ops the papers do not count
  (softmax, add, gather, topk, mean, pooling, pad, roll, cumsum ...), listed with their call counts
  in ``convention_zero``;
- ``uncounted``: anything else, so that an op nobody handled is never silently a zero.

The price of every operator, and why, is in ``docs/flops.md``. ``torch_total`` is the cross-check
from ``torch.utils.flop_counter.FlopCounterMode`` (which counts two FLOPs per MAC), already halved to
MACs.
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

__all__ = [
    "CONVENTION_ZERO",
    "FlopReport",
    "count_flops",
    "einsum_macs",
    "is_counting",
    "register_flop_handle",
    "torch_flop_count",
]

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
# normalising exponentials, reductions (sums, means, maxima, running sums, and the pooling windows
# built from them), indexing, padding and layout. fvcore prices one pooling op itself,
# adaptive_avg_pool2d (one MAC per input element); that price is kept, so totals equal fvcore's.
CONVENTION_ZERO = frozenset(
    "aten::" + op
    for op in """
    add add_ sub sub_ mul mul_ div div_ neg exp log sqrt rsqrt pow abs sign softmax log_softmax
    _softmax gelu silu sigmoid tanh hardtanh leaky_relu elu mean sum amax amin topk sort argsort
    argmax argmin cumsum clamp_min clamp_max where masked_fill_ fill_ zero_ repeat expand_as tile
    index_select index_add scatter scatter_add gather lerp ne lt le logical_not logical_and
    logical_or bitwise_and any all norm linalg_vector_norm reciprocal rsub floor ceil round
    meshgrid linspace view_as reshape_as movedim flip unfold im2col col2im tanh_ sigmoid_ gelu_
    unflatten alias lift_fresh clone detach_ contiguous __or__ __xor__ sqrt_ exp_ baddbmm_zero
    div_floor randn rand rand_like randn_like empty_like ones_like new_ones native_dropout dropout_
    feature_dropout
    cumprod logcumsumexp cummax cummin
    avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
    max_pool2d_with_indices max_pool3d_with_indices adaptive_avg_pool1d adaptive_avg_pool3d
    adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d fractional_max_pool2d
    pad constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d
    replication_pad2d replication_pad3d _pad_circular _pad_enum roll
    pixel_shuffle pixel_unshuffle channel_shuffle
    softplus softplus_ scatter_ scatter_add_ index_add_
    eye zeros ones full arange empty empty_strided scalar_tensor zeros_like full_like new_zeros
    new_full new_empty tril triu tril_ triu_
    """.split()
)

# fvcore drops these from every report (its built-in ignore list). A zero handle that counts the
# calls lists them in convention_zero with the other free ops, so a shifted window shows its rolls.
_SHOWN_FREE = ("aten::roll", "aten::constant_pad_nd")


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


# F.interpolate: one MAC per tap per output element, the price fvcore gives the two modes it knows
# (upsample_nearest2d 1, upsample_bilinear2d 4) carried to the others. Antialiased downsampling
# reads more taps than its plain mode; it is priced as the plain mode.
_INTERPOLATION_TAPS = {
    "aten::upsample_nearest1d": 1,
    "aten::upsample_nearest3d": 1,
    "aten::_upsample_nearest_exact1d": 1,
    "aten::_upsample_nearest_exact2d": 1,
    "aten::_upsample_nearest_exact3d": 1,
    "aten::upsample_linear1d": 2,
    "aten::_upsample_bilinear2d_aa": 4,
    "aten::upsample_trilinear3d": 8,
    "aten::upsample_bicubic2d": 16,
    "aten::_upsample_bicubic2d_aa": 16,
}


def _per_output_element(taps: int) -> Handle:
    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        out = _shape(outputs[0])
        if out is None:
            raise RuntimeError("interpolation traced without an output shape")
        return taps * math.prod(out)

    return handle


for _op, _taps in _INTERPOLATION_TAPS.items():
    register_flop_handle(_op)(_per_output_element(_taps))


def einsum_macs(equation: str, shapes: list[list[int]], path: list[int] | None = None) -> int:
    """MACs of ``torch.einsum(equation, *operands)``: the batched matrix products torch runs.

    torch contracts two operands at a time, left to right (or along ``path``, pairs of positions
    whose result goes to the end, when opt_einsum chose one). In each step, a label summed there and
    held by one operand only is summed first (additions: free), then the product costs one MAC per
    term: the product of the sizes of the labels left in the two operands. A step that sums no label
    is an element-wise or broadcast product, free like ``mul``. A single operand costs nothing.
    This equals ``FlopCounterMode``'s count, halved. fvcore's own einsum handle is replaced: it reads
    numpy's printed cost, rounded to four significant digits, and halves products that sum nothing.
    """
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r} has {len(terms)} operands but {len(shapes)} shapes")
    letters = {c for c in equation if c.isalpha()}
    spare = (chr(c) for c in range(0x3B1, 0x3B1 + 64) if chr(c) not in letters)  # labels for "..."
    n_ell = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t), default=0)
    ell = "".join(next(spare) for _ in range(n_ell))
    labels: list[str] = []
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        if "..." in term:
            term = term.replace("...", ell[n_ell - (len(shape) - len(term) + 3) :])
        if len(term) != len(shape):
            raise ValueError(f"einsum {equation!r}: operand {term!r} does not match shape {shape}")
        for c, n in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), n)
        labels.append(term)
    if arrow:
        out = set(rhs.replace("...", ell))
    else:  # implicit output: the broadcast dims and every label used once
        counts = Counter("".join(labels))
        out = set(ell) | {c for c, n in counts.items() if n == 1}
    operands = [set(t) for t in labels]
    steps: list[tuple[int, int]] = []
    if len(operands) > 1:
        if path:
            steps = list(zip(path[::2], path[1::2]))
        else:  # left to right: each result is contracted with the next operand
            steps = [(0, 1)] * (len(operands) - 1)
    macs = 0
    for i, j in steps:
        if path:
            a, b = operands[i], operands[j]
            rest = [o for k, o in enumerate(operands) if k not in (i, j)]
        else:
            a, b = operands[0], operands[1]
            rest = operands[2:]
        later = set().union(out, *rest)
        summed = (a | b) - later
        both = summed & a & b
        if both:  # a batched matrix product over the labels left after the one-sided sums
            macs += math.prod(sizes[c] for c in (a | b) - (summed - both))
        result = (a | b) - summed
        operands = rest + [result] if path else [result, *rest]
    return macs


@register_flop_handle("aten::einsum")
def _einsum_handle(inputs: list[Any], outputs: list[Any]) -> int:
    equation = inputs[0].toIValue()
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    if any(s is None for s in shapes):
        raise RuntimeError(f"einsum {equation!r} traced without shapes")
    path = inputs[2].toIValue() if len(inputs) > 2 else None
    return einsum_macs(equation, shapes, list(path) if path else None)


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


def _call_counter(calls: Counter[str], op: str) -> Handle:
    """A zero-MAC handle that records each call of ``op`` (fvcore runs a handle once per node)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        calls[op] += 1
        return 0

    return handle


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
            shown: Counter[str] = Counter()
            analysis.set_op_handle(**{op: _call_counter(shown, op) for op in _SHOWN_FREE})
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
            zero = {op: n for op, n in (skipped + shown).items() if op in CONVENTION_ZERO}
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
