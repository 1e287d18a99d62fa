"""The memory frontier: the largest batch of one point and pass that fits a memory budget.

Batch 1, 2, 4, ... are tried until one does not fit or the cap is passed, then the gap is bisected.
Each try (a probe) runs in a worker process of its own (:class:`attnbench.worker.Worker`, reused
across probes and replaced when it dies), so a probe that the kernel's OOM killer ends, one that
raises an out-of-memory error, or one past the point's time limit counts as "does not fit", never as
a crash of the run. A probe fits when its measured peak (:func:`attnbench.memory.peak_memory`, the
row's ``mem_method``) is within the budget: ``memory_budget_mib``, or on CUDA by default the
device's free memory when the search starts.
"""

from __future__ import annotations

from typing import Any

import torch

from attnbench.kinds._common import free
from attnbench.kinds.sweep.schema import Point
from attnbench.memory import module_bytes, peak_memory, tensor_bytes
from attnbench.registry import build_mechanism
from attnbench.study import DTYPES
from attnbench.worker import Worker

__all__ = ["max_batch"]

_probe_worker: list[Worker] = []  # one per measuring process, started on the first search


def _probe(
    point: Point, pass_: str, batch: int, device: str, threads: int, seed: int, plugins: tuple
) -> float | None:
    """Peak MiB of one call of the point at ``batch`` (None: out of memory). Runs in the probe worker."""
    from attnbench.kind import _load_plugins

    _load_plugins(plugins)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    module = build_mechanism(point.mechanism, point.dim, point.num_heads, **dict(point.params))
    module.to(device=dev, dtype=DTYPES[point.dtype]).train(pass_ != "forward")
    try:
        x = torch.randn(batch, point.H, point.W, point.dim, device=dev, dtype=DTYPES[point.dtype])
        if pass_ == "forward_backward":
            x.requires_grad_(True)

        def step() -> None:
            if pass_ == "forward":
                with torch.no_grad():
                    module(x)
            else:
                module(x).float().sum().backward()

        result = peak_memory(step, device=dev, held_bytes=module_bytes(module) + tensor_bytes([x]))
    except (torch.OutOfMemoryError, MemoryError):
        return None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower() or "can't allocate" in str(exc).lower():
            return None
        raise
    finally:
        module = x = None
        free(dev)
    return result.peak_mib


def max_batch(ctx: Any, point: Point, pass_: str) -> dict[str, Any]:
    """``max_batch``, ``max_batch_peak_mb`` and ``max_batch_budget_mb`` of one point and pass."""
    study = ctx.study
    budget = study.memory_budget_mib
    if budget is None:  # CUDA: the free memory now (validation requires a budget on CPU)
        budget = torch.cuda.mem_get_info(torch.device(ctx.device))[0] / 2**20
    if not _probe_worker:
        _probe_worker.append(Worker(timeout_setting="point_timeout_s"))
    worker = _probe_worker[0]
    peaks: dict[int, float | None] = {}

    def fits(batch: int) -> bool:
        outcome, value = worker.call(
            _probe,
            (point, pass_, batch, ctx.device, ctx.threads, study.seed, ctx.plugins),
            timeout_s=study.point_timeout_s,
        )
        peak = value if outcome == "result" else None  # killed, out of memory or hung: does not fit
        peaks[batch] = peak
        return peak is not None and peak <= budget

    cap = study.max_batch_cap
    good, bad = 0, cap + 1
    batch = 1
    while batch <= cap:  # doubling
        if not fits(batch):
            bad = batch
            break
        good, batch = batch, batch * 2
    else:
        if good < cap and fits(cap):
            good = cap
        elif good < cap:
            bad = cap
    while bad - good > 1 and good > 0:  # bisection
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return {
        "max_batch": good,
        "max_batch_peak_mb": None if good == 0 else round(peaks[good], 4),
        "max_batch_budget_mb": round(budget, 2),
    }
