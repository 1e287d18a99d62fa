"""Measure one whole model (params, FLOPs, optionally forward latency and memory) for the models table.

FLOPs are counted in the papers' convention (fvcore, one MAC = one FLOP) on a batch-1, fp32, CPU
copy at ``resolution``². For the seed models the copy uses BRA's ``reference`` backend, the
released gather algorithm that the published counts were made on: other backends compute the
same function but some do more (``masked`` does dense N² work) or cannot be traced by fvcore.
"""

from __future__ import annotations

import json
from typing import Any

import timm
import torch

from attnbench.flops import count_flops

__all__ = ["SEED_MODELS", "build_model", "measure_model"]

SEED_MODELS = (
    "biformer_tiny",
    "biformer_small",
    "biformer_base",
    "biformer_stl",
    "debiformer_tiny",
    "debiformer_small",
    "debiformer_base",
)
COUNT_KWARGS = {"bra_backend": "reference"}  # for the seed models' FLOP count, see module docstring


def build_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` with an error that lists close names."""
    if name not in timm.list_models():
        close = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        raise ValueError(f"unknown model {name!r}; models with a similar name: {close}")
    return timm.create_model(name, pretrained=False, **kwargs)


def measure_model(
    name: str,
    resolution: int = 224,
    batch: int = 1,
    device: str = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    repeats: int = 0,
    warmup: int = 3,
    memory: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Params and FLOPs of a model, and optionally its forward latency and peak memory.

    Args:
        name: a timm model name (the seed models are registered when attnbench is imported).
        resolution: square input size.
        batch: batch of the timed forward (FLOPs are always for batch 1).
        device: where the timed forward runs ("cpu", "cuda", "cuda:1" ...).
        dtype: parameter and input dtype of the timed forward.
        repeats: timed forward passes after ``warmup`` (eval mode, no_grad); 0 skips timing.
        warmup: untimed forward passes before sampling.
        memory: also measure the forward's peak memory (attnbench.memory's method, named in
            ``mem_method``).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``bra_backend``).

    Returns:
        ``model, resolution, batch, device, dtype, params, flops`` (fvcore MACs, batch 1),
        ``flops_torch`` (FlopCounterMode, halved to MACs), ``flops_uncounted`` (JSON of operators
        no handle counted; ``"{}"`` means complete), ``latency_ms, latency_iqr_ms, throughput``
        (images/s) and ``peak_mem_mb, mem_method``; None where not measured.
    """
    if resolution < 1 or batch < 1:
        raise ValueError(f"resolution = {resolution} and batch = {batch} must be positive ints")
    model_kwargs = dict(model_kwargs or {})
    count_kwargs = {**COUNT_KWARGS, **model_kwargs} if name in SEED_MODELS else model_kwargs
    counted = build_model(name, **count_kwargs).eval()
    params = sum(p.numel() for p in counted.parameters())
    report = count_flops(counted, torch.randn(1, 3, resolution, resolution))
    del counted
    row: dict[str, Any] = {
        "model": name,
        "resolution": resolution,
        "batch": batch,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "params": params,
        "flops": report.total,
        "flops_torch": report.torch_total,
        "flops_uncounted": json.dumps(report.uncounted, sort_keys=True),
        "latency_ms": None,
        "latency_iqr_ms": None,
        "throughput": None,
        "peak_mem_mb": None,
        "mem_method": None,
    }
    if repeats <= 0 and not memory:
        return row

    model = build_model(name, **model_kwargs).eval().to(device=device, dtype=dtype)
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=dtype)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    if repeats > 0:
        from attnbench.timing import time_function

        timing = time_function(forward, device=device, warmup=warmup, repeats=repeats)
        row.update(
            latency_ms=timing.median_ms, latency_iqr_ms=timing.iqr_ms, throughput=timing.throughput(batch)
        )
    if memory:
        from attnbench.memory import peak_memory, tensor_bytes

        held = tensor_bytes([*model.parameters(), *model.buffers(), x])
        result = peak_memory(forward, device=device, held_bytes=held)
        row.update(peak_mem_mb=result.peak_mib, mem_method=result.method)
    return row
