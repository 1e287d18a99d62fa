"""Latency of one call, measured like ``torch.utils.benchmark``: warm up, synchronize, keep every sample.

- CUDA: one pair of CUDA events around each call, the end event synchronized before the next
  call, so a sample is the device time of one call (launch gaps included, host work after the
  last kernel excluded).
- CPU: ``time.perf_counter`` around each call, with the intra-op thread count the caller fixed
  (:func:`fixed_threads`; the runner records it in the manifest).

Python's garbage collector is paused while sampling (as ``timeit`` does) so that a collection does
not land inside one sample. The summary is the median and the inter-quartile range (IQR, the 75th
minus the 25th percentile, linear interpolation) of the samples, in milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

__all__ = ["Timing", "fixed_threads", "gc_paused", "time_function"]


@dataclasses.dataclass(frozen=True)
class Timing:
    """Samples of one measured call.

    Attributes:
        samples_ms: every sample, in order, in milliseconds.
        warmup: calls made before sampling.
        device: ``"cpu"`` or ``"cuda"``.
        clock: ``"cuda_event"`` or ``"perf_counter"``.
    """

    samples_ms: tuple[float, ...]
    warmup: int
    device: str
    clock: str

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def iqr_ms(self) -> float:
        q25, q75 = np.percentile(self.samples_ms, [25, 75])
        return float(q75 - q25)

    def throughput(self, batch: int) -> float:
        """Images per second: ``batch / median``."""
        return batch / (self.median_ms / 1e3)


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[int]:
    """Fix torch's intra-op thread count inside the block (None: leave it); yields the count in use."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_function(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 20,
    max_time_s: float | None = None,
    min_repeats: int = 3,
) -> Timing:
    """Time ``fn()``: ``warmup`` calls, then ``repeats`` samples.

    Args:
        fn: the call to time; it must launch all of its work (no arguments).
        device: where ``fn`` runs; CUDA work is timed with events.
        warmup: untimed calls first (allocator warm-up, kernel selection, caches); with
            ``max_time_s``, warm-up stops early once that budget is spent (after one call).
        repeats: samples to take.
        max_time_s: optional budget for the samples: stop once it is spent, but never before
            ``min_repeats`` samples. None always takes ``repeats``.
        min_repeats: the fewest samples when ``max_time_s`` cuts sampling short.
    """
    if repeats < 1:
        raise ValueError(f"repeats = {repeats} must be >= 1")
    if warmup < 0:
        raise ValueError(f"warmup = {warmup} must be >= 0")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    start_warmup = time.perf_counter()
    for i in range(warmup):
        fn()
        if max_time_s is not None and time.perf_counter() - start_warmup >= max_time_s:
            warmup = i + 1  # a call this slow needs no more warming: its budget is spent
            break
    if cuda:
        torch.cuda.synchronize(dev)

    samples: list[float] = []
    start_all = time.perf_counter()
    with gc_paused():
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
            spent = time.perf_counter() - start_all
            if max_time_s is not None and len(samples) >= min_repeats and spent >= max_time_s:
                break
    return Timing(tuple(samples), warmup, dev.type, "cuda_event" if cuda else "perf_counter")
