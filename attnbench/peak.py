"""The machine's own yardstick: the dense-matmul rate one call can reach, per device, dtype and threads.

Efficiency is a mechanism's achieved multiply-accumulate rate over this peak. The calibration
times square matmuls (``torch.mm`` of n x n by n x n, n^3 MACs) at a few sizes after warm-up and
keeps the best rate of any sample (a peak, not a typical value): 512, 1024 and 2048 on CPU, 4096
and 8192 on CUDA (CUDA events, synchronized). It takes a few seconds, once per environment: the
result is cached in ``$ATTNBENCH_CACHE_DIR`` (default ``~/.cache/attnbench``) ``/peak.json``,
keyed by the environment id, device, dtype and threads, and recorded in every row that uses it.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from attnbench.timing import fixed_threads

__all__ = ["METHOD", "peak_gmacs_s"]

METHOD = (
    "best GMAC/s of any timed square torch.mm (n^3 MACs) at n = 512, 1024, 2048 (CPU) or 4096, 8192 "
    "(CUDA), 2 warm-up calls and 5 samples each, with the study's threads, device and dtype"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cache_file() -> Path:
    root = os.environ.get("ATTNBENCH_CACHE_DIR") or Path.home() / ".cache" / "attnbench"
    return Path(root) / "peak.json"


def _measure(device: str, dtype: str, threads: int) -> float:
    dev = torch.device(device)
    sizes = (4096, 8192) if dev.type == "cuda" else (512, 1024, 2048)
    best = 0.0
    with fixed_threads(threads), torch.no_grad():
        for n in sizes:
            a = torch.randn(n, n, device=dev).to(_DTYPES[dtype])
            b = torch.randn(n, n, device=dev).to(_DTYPES[dtype])
            for _ in range(2):
                torch.mm(a, b)
            for _ in range(5):
                if dev.type == "cuda":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    torch.mm(a, b)
                    end.record()
                    end.synchronize()
                    seconds = start.elapsed_time(end) / 1e3
                else:
                    t0 = time.perf_counter()
                    torch.mm(a, b)
                    seconds = time.perf_counter() - t0
                best = max(best, n**3 / seconds / 1e9)
            del a, b
    return best


@functools.cache
def peak_gmacs_s(device: str, dtype: str, threads: int, env_id: str) -> dict[str, Any]:
    """``{"peak_gmacs_s": rate, "method": text, "measured": time}`` for this environment, measured
    once and cached on disk."""
    key = f"{env_id}|{device}|{dtype}|{threads}"
    path = _cache_file()
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):  # not what this module writes: measured again and rewritten
        cache = {}
    known = cache.get(key)
    if (
        isinstance(known, dict)
        and known.get("method") == METHOD
        and isinstance(known.get("peak_gmacs_s"), (int, float))
        and not isinstance(known.get("peak_gmacs_s"), bool)
    ):
        return known
    entry = {
        "peak_gmacs_s": round(_measure(device, dtype, threads), 3),
        "method": METHOD,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cache[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs a re-measurement
    return entry
