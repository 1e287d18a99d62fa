"""Where a mechanism's time goes: ``attnbench.phase("routing")`` marks a phase inside a forward.

Outside profiling a phase costs one global lookup and does nothing else, so mechanisms mark their
phases unconditionally. Under :func:`collect` (``measure: [phases]`` runs one such call per point
and pass, apart from the timed samples) each phase's wall time is added up: exclusive time, so a
phase nested in another is charged to the inner one only. On CUDA the device is synchronized at
every phase boundary, so a phase holds the kernels it launched (the profiled call is therefore
slower than a timed one; only the shares are meant to be read). Time outside every phase is
``other``; a forward+backward call marks its backward as ``backward``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

__all__ = ["collect", "phase"]

_active: _Collector | None = None


class _Collector:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.totals: dict[str, float] = {}
        self.stack: list[tuple[str, float]] = []  # (name, time the phase last (re)started)

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def enter(self, name: str) -> None:
        t = self.now()
        if self.stack:  # pause the enclosing phase
            outer, since = self.stack[-1]
            self.totals[outer] = self.totals.get(outer, 0.0) + t - since
        self.stack.append((name, t))

    def leave(self) -> None:
        t = self.now()
        name, since = self.stack.pop()
        self.totals[name] = self.totals.get(name, 0.0) + t - since
        if self.stack:  # resume the enclosing phase
            self.stack[-1] = (self.stack[-1][0], t)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark the enclosed code as phase ``name`` (free unless :func:`collect` is active)."""
    collector = _active
    if collector is None or torch.compiler.is_compiling():
        yield
        return
    collector.enter(name)
    try:
        yield
    finally:
        collector.leave()


@contextlib.contextmanager
def collect(device: str | torch.device = "cpu") -> Iterator[dict[str, float]]:
    """Time the phases of the enclosed call; the yielded dict fills with phase -> milliseconds,
    ``other`` included, when the block ends."""
    global _active
    if _active is not None:
        raise RuntimeError("attnbench.phases.collect() is already active")
    collector = _Collector(torch.device(device))
    result: dict[str, float] = {}
    _active = collector
    start = collector.now()
    try:
        yield result
    finally:
        total = collector.now() - start
        _active = None
    named = {k: 1e3 * v for k, v in collector.totals.items()}
    result.update(named)
    result["other"] = max(0.0, 1e3 * total - sum(named.values()))
