"""Peak memory of one call, by a method that is named in every result row (``mem_method``).

- ``cuda_max_memory_allocated``: ``torch.cuda.reset_peak_memory_stats`` then one call then
  ``torch.cuda.max_memory_allocated``: the most bytes held by live tensors at any moment of the
  call, counting everything already allocated (weights, input, anything else alive), not the
  allocator's cached-but-free blocks.
- ``cpu_profiler_live_tensors``: the CPU allocator has no peak counter, so the call runs under
  ``torch.profiler.profile(profile_memory=True)``, which records every allocation and free of the
  c10 CPU allocator (autograd's backward included) with its time; the peak of their running sum
  is the most extra bytes live at once during the call. Added to it: the bytes of the tensors the
  caller says were held before the call (parameters, buffers, input), which makes the figure
  comparable to the CUDA one. It excludes memory that is not a torch tensor (Python objects,
  library workspaces allocated outside c10) and the C allocator's retained free pages, so it is
  a lower bound of the process's resident growth. The profiler's event tree is a private torch
  API: where it is missing the figure is left empty rather than guessed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["METHODS", "MemoryResult", "peak_memory", "tensor_bytes"]

CUDA_METHOD = "cuda_max_memory_allocated"
CPU_METHOD = "cpu_profiler_live_tensors"
METHODS = {
    CUDA_METHOD: "torch.cuda.max_memory_allocated after reset_peak_memory_stats, around one call; "
    "includes weights, input and every live tensor",
    CPU_METHOD: "peak running sum of c10 CPU allocator events recorded by torch.profiler "
    "(profile_memory=True) during one call, plus the bytes of parameters, buffers and input "
    "held before it; tensors only (no Python objects, no allocator-retained free pages)",
}


@dataclasses.dataclass(frozen=True)
class MemoryResult:
    """Peak memory of one call.

    Attributes:
        peak_bytes: the peak, or None when the method could not measure it.
        method: a key of :data:`METHODS`.
        note: why ``peak_bytes`` is None, else empty.
    """

    peak_bytes: int | None
    method: str
    note: str = ""

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / 2**20


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a shared storage counts once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return tensor_bytes(itertools.chain(module.parameters(), module.buffers()))


def peak_memory(fn: Callable[[], object], *, device: str | torch.device, held_bytes: int = 0) -> MemoryResult:
    """Peak memory of one call of ``fn`` on ``device``.

    Args:
        fn: the call (it should run its full work: a forward, or a forward and backward).
        device: where ``fn`` runs.
        held_bytes: bytes of tensors alive before the call that it needs (weights, input); added
            on CPU, where the profiler sees only what the call allocates. On CUDA the allocator
            already counts them.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        gc.collect()  # garbage still allocated would count in max_memory_allocated
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        return MemoryResult(torch.cuda.max_memory_allocated(dev), CUDA_METHOD)
    if dev.type != "cpu":
        return MemoryResult(None, "none", f"no peak-memory method for device {dev.type!r}")
    return _cpu_peak(fn, held_bytes)


@contextlib.contextmanager
def _fd2_silenced() -> Iterator[None]:
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak(fn: Callable[[], object], held_bytes: int) -> MemoryResult:
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:
        return MemoryResult(None, CPU_METHOD, "torch._C._profiler._EventType is missing in this torch")
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _fd2_silenced():  # kineto prints a line to stderr at each start and stop
        prof.start()
    try:
        fn()
    finally:
        with _fd2_silenced():
            prof.stop()
    try:
        tree = prof.profiler.kineto_results.experimental_event_tree()
    except AttributeError as exc:
        return MemoryResult(None, CPU_METHOD, f"profiler event tree unavailable: {exc}")
    events = []
    stack = list(tree)
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    events.sort(key=lambda e: e[0])
    peak = max(itertools.accumulate((size for _, size in events), initial=0))
    return MemoryResult(held_bytes + peak, CPU_METHOD)
