"""The conformance suite every registered mechanism must pass.

Used by ``tests/test_conformance.py`` (parametrized over the registry, so a new mechanism is tested
without writing a test) and by ``attnbench check``. Each check raises :class:`CheckFailure` with what
went wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable

import torch
from torch import Tensor

from attnbench.flops import count_flops
from attnbench.mechanism import AttentionMechanism
from attnbench.registry import get_mechanism

__all__ = ["CHECKS", "CONSTRAINT_SHAPES", "CheckFailure", "CheckResult", "run_checks"]

# A small map every zoo mechanism handles with its defaults (divisible by 7 for BRA/Swin,
# larger than NATTEN's kernel x dilation).
DIM, HEADS, SIZE = 32, 2, 28


class CheckFailure(AssertionError):
    """A conformance check failed; ``fix`` says what to change."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem, self.fix = problem, fix


@dataclasses.dataclass
class CheckResult:
    check: str
    passed: bool
    message: str = ""


def _build(cls: type[AttentionMechanism], seed: int = 0, **kw) -> AttentionMechanism:
    torch.manual_seed(seed)
    return cls(kw.pop("dim", DIM), kw.pop("num_heads", HEADS), **kw)


def _input(batch: int = 2, size: int = SIZE, dim: int = DIM, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, size, size, dim, generator=g)


def check_builds_with_defaults(cls: type[AttentionMechanism]) -> None:
    """Builds from (dim, num_heads) alone; parameters declared with defaults."""
    try:
        m = _build(cls)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailure(
            f"{cls.__name__}({DIM}, {HEADS}) raised {type(exc).__name__}: {exc}",
            "give every keyword parameter of __init__ a working default (the paper's)",
        ) from exc
    if not isinstance(m, AttentionMechanism):
        raise CheckFailure(f"{cls.__name__} is not an AttentionMechanism", "subclass AttentionMechanism")


def check_output_shape(cls: type[AttentionMechanism]) -> None:
    """Output has the input's channels-last shape and dtype, and is finite."""
    m = _build(cls).eval()
    x = _input()
    with torch.no_grad():
        y = m(x)
    if not isinstance(y, Tensor) or y.shape != x.shape:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise CheckFailure(
            f"forward on {tuple(x.shape)} returned {shape}",
            "return a (B, H, W, C) tensor with the input's shape (channels-last in and out)",
        )
    if y.dtype != x.dtype:
        raise CheckFailure(f"output dtype {y.dtype} != input dtype {x.dtype}", "keep the input's dtype")
    if not torch.isfinite(y).all():
        raise CheckFailure("fp32 output has NaN/inf", "check the softmax scale and masks")


def check_gradients(cls: type[AttentionMechanism]) -> None:
    """Gradients reach the input and every trainable parameter."""
    m = _build(cls).train()
    x = _input().requires_grad_(True)
    m(x).square().mean().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or x.grad.abs().sum() == 0:
        raise CheckFailure("no (finite, non-zero) gradient reaches the input", "do not detach the input path")
    exempt = getattr(cls, "no_grad_params", frozenset())
    dead = [
        n
        for n, p in m.named_parameters()
        if p.requires_grad and n not in exempt and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    if dead:
        raise CheckFailure(
            f"parameters receive no gradient: {dead}",
            "use them in forward, or list them in the class attribute no_grad_params with the reason",
        )


def check_bfloat16(cls: type[AttentionMechanism]) -> None:
    """Runs in bfloat16 with a finite output close to fp32."""
    m = _build(cls).eval()
    x = _input()
    with torch.no_grad():
        ref = m(x)
        y = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    if y.dtype != torch.bfloat16 or not torch.isfinite(y.float()).all():
        raise CheckFailure(
            f"bf16 output is {y.dtype} or not finite", "avoid hard-coded fp32 buffers and dtypes"
        )
    err = (y.float() - ref).abs().max().item()
    tol = 0.1 * max(ref.abs().max().item(), 1.0)
    if err > tol:
        raise CheckFailure(
            f"bf16 differs from fp32 by {err:.3g} (> {tol:.3g})", "keep the softmax stable in bf16"
        )


def check_batch_independence(cls: type[AttentionMechanism]) -> None:
    """Row i of a batch equals running row i alone."""
    m = _build(cls).eval()
    x = _input(batch=3)
    with torch.no_grad():
        full = m(x)
        rows = torch.cat([m(x[i : i + 1]) for i in range(3)])
    err = (full - rows).abs().max().item()
    if err > 1e-5:
        raise CheckFailure(
            f"batch rows differ from single-image runs by {err:.3g}",
            "no statistics across the batch dimension (e.g. BatchNorm in train mode, batch-wide top-k)",
        )


def check_determinism(cls: type[AttentionMechanism]) -> None:
    """Same seed, same parameters and the same output."""
    x = _input()
    outs = []
    for _ in range(2):
        m = _build(cls, seed=123).eval()
        with torch.no_grad():
            outs.append(m(x))
    if not torch.equal(outs[0], outs[1]):
        raise CheckFailure(
            "two builds under the same torch.manual_seed give different outputs",
            "draw all random initialisation from torch's global generator",
        )


def check_flops(cls: type[AttentionMechanism]) -> None:
    """``analytic_flops`` within the class's ``flops_rtol`` of the counted MACs, nothing uncounted."""
    m = _build(cls)
    try:
        analytic = m.analytic_flops(SIZE, SIZE)
    except NotImplementedError as exc:
        raise CheckFailure("analytic_flops is not implemented", "return {term: MACs} for batch 1") from exc
    if not analytic or not all(isinstance(v, int) and v >= 0 for v in analytic.values()):
        raise CheckFailure(f"analytic_flops returned {analytic!r}", "return a dict of non-negative int MACs")
    report = count_flops(m, _input(batch=1), cross_check=False)
    if report.uncounted:
        raise CheckFailure(
            f"the FLOP counter has no handle for {sorted(report.uncounted)}",
            "register one with attnbench.register_flop_handle(op_name), in the convention of docs/flops.md",
        )
    total = sum(analytic.values())
    rtol = getattr(cls, "flops_rtol", 0.0)
    rel = abs(total - report.total) / max(report.total, 1)
    if rel > rtol + 1e-12:
        diff = report.total - total
        raise CheckFailure(
            f"analytic {total:,} MACs vs counted {report.total:,} at {SIZE}x{SIZE}, C = {DIM}, "
            f"{HEADS} heads: the count is {abs(diff):,} MACs {'higher' if diff > 0 else 'lower'} "
            f"(off by {_percent(rel)}, tolerance {_percent(rtol)}); "
            f"counted by operator: {_listing(report.by_operator)}; "
            f"analytic by term: {_listing(analytic)}",
            "check analytic_flops term by term against count_flops(module, x).by_operator and "
            ".by_module (docs/flops.md gives each operator's price), or set flops_rtol with the "
            "reason in the docstring",
        )


def _percent(fraction: float) -> str:
    """``fraction`` as a percentage with three significant digits: never rounds a difference to 0."""
    return f"{fraction * 100:.3g}%"


def _listing(macs: dict[str, int]) -> str:
    """``{name: MACs}`` as ``name 1,234, other 56`` (largest first)."""
    items = sorted(macs.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:,}" for k, v in items) or "nothing"


def check_bad_parameter(cls: type[AttentionMechanism]) -> None:
    """An unknown parameter and a non-dividing head count raise ValueError naming them."""
    from attnbench.registry import build_mechanism

    for kwargs, needle in (({"no_such_param": 1}, "no_such_param"), ({"num_heads": 3}, "num_heads")):
        heads = kwargs.pop("num_heads", HEADS)
        try:
            build_mechanism(cls.name, DIM, heads, **kwargs)
        except ValueError as exc:
            if needle not in str(exc):
                raise CheckFailure(
                    f"ValueError does not name {needle!r}: {exc}", "name the parameter in the message"
                ) from exc
        else:
            raise CheckFailure(f"bad {needle!r} did not raise ValueError", "validate parameters in __init__")


# Shapes probed by the constraints check: tiny, odd, prime and non-square maps, which break many
# window and region schemes. Each must either run or be refused by check_input with a ValueError.
CONSTRAINT_SHAPES = ((1, 1), (5, 9), (13, 13), (SIZE, SIZE // 2 + 1))


def check_constraints(cls: type[AttentionMechanism]) -> None:
    """``check_input`` tells the truth: shapes it accepts run, shapes it refuses raise ``ValueError``.

    The runner and the study validator skip a point when ``check_input`` raises, so a shape that
    passes it must run, and a refused one must be refused by the call too instead of failing deep
    inside. A wrong channel count must raise ``ValueError``. The base class does both before
    ``forward`` (its forward pre-hook); these failures mean a subclass went around it.
    """
    m = _build(cls).eval()
    keep_check = (
        "keep the base class's input check: call super().__init__(dim, num_heads) and do not "
        "override _check_shape or remove the module's forward pre-hooks"
    )
    bad_c = torch.zeros(1, SIZE, SIZE, DIM + 1)
    try:
        with torch.no_grad():
            m(bad_c)
    except ValueError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise CheckFailure(
            f"a {tuple(bad_c.shape)} input (C = {DIM + 1}, built for {DIM}) raised {type(exc).__name__}, "
            "not ValueError",
            keep_check,
        ) from exc
    else:
        raise CheckFailure(
            f"a {tuple(bad_c.shape)} input (C = {DIM + 1}, built for {DIM}) was accepted",
            keep_check,
        )
    for H, W in CONSTRAINT_SHAPES:
        try:
            m.check_input(H, W)
            refusal = None
        except ValueError as exc:
            refusal = str(exc)
            if not refusal.strip():
                raise CheckFailure(
                    f"check_input({H}, {W}) raised a ValueError with no message",
                    "say which parameter or size is the problem and what would work",
                ) from exc
        g = torch.Generator().manual_seed(H * 100 + W)
        x = torch.randn(1, H, W, DIM, generator=g)
        try:
            with torch.no_grad():
                y = m(x)
        except ValueError as exc:
            if refusal is None:
                raise CheckFailure(
                    f"forward on a {H}x{W} map raised ValueError ({exc}) but check_input({H}, {W}) "
                    "accepts it",
                    "raise the same ValueError in check_input (the runner asks it to skip a point)",
                ) from exc
            continue
        except Exception as exc:  # noqa: BLE001
            what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if refusal is None:
                raise CheckFailure(
                    f"forward on a {H}x{W} map crashed ({what}) although check_input({H}, {W}) accepts it",
                    "support that shape, or refuse it in check_input with a ValueError saying what works",
                ) from exc
            raise CheckFailure(
                f"check_input({H}, {W}) refuses the map but forward crashed with {what} instead",
                keep_check,
            ) from exc
        if refusal is not None:
            raise CheckFailure(
                f"check_input({H}, {W}) refuses the map ({refusal}) but forward ran",
                f"accept the shape in check_input, or {keep_check}",
            )
        if not isinstance(y, Tensor) or y.shape != x.shape:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise CheckFailure(
                f"forward on a {H}x{W} map returned {shape}, expected {tuple(x.shape)}",
                "return the input's shape for every map check_input accepts",
            )


CHECKS: dict[str, Callable[[type[AttentionMechanism]], None]] = {
    "builds": check_builds_with_defaults,
    "shape": check_output_shape,
    "gradients": check_gradients,
    "bfloat16": check_bfloat16,
    "batch_independence": check_batch_independence,
    "determinism": check_determinism,
    "flops": check_flops,
    "constraints": check_constraints,
    "errors": check_bad_parameter,
}


def run_checks(name: str, checks: list[str] | None = None) -> list[CheckResult]:
    """Run the named checks (all by default) on the mechanism ``name``; never raises."""
    cls = get_mechanism(name)
    results = []
    for check in checks or list(CHECKS):
        try:
            CHECKS[check](cls)
            results.append(CheckResult(check, True))
        except CheckFailure as exc:
            results.append(CheckResult(check, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a crash is a failure with its traceback's last line
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            results.append(CheckResult(check, False, f"crashed: {last}"))
    return results
