"""Pieces every kind uses: timing and memory into a row with the noise guard, error text, columns."""

from __future__ import annotations

import contextlib
import gc
import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import torch

from attnbench.memory import peak_memory
from attnbench.noise import Snapshot, noise_columns, snapshot, unstable_reasons
from attnbench.timing import time_function

ERROR_CHARS = 500
_last_timed: list[Snapshot] = []  # the end of this process's previous timed row (the noise window)

NOISE_DOCS = {
    "protocol_id": "hash of the measurement protocol (measures, repeats, warmup, threads, seed ...), the "
    "device and the environment key: rows with one protocol_id are comparable",
    "threads": "CPU intra-op threads the row was measured with",
    "load_avg": "1-minute load average when the row's timing started (this run's threads included)",
    "load_avg_end": "1-minute load average when the row's timing ended",
    "other_cpu": "cores kept busy by other processes while the row was timed (from /proc/stat)",
    "steal_pct": "% of CPU time the hypervisor gave other guests while the row was timed",
    "unstable": "1 when the timing cannot be trusted (IQR > 10% of the median, other work >= 0.5 cores, "
    "or steal > 2%), else 0; empty when nothing was timed",
    "unstable_why": "why the row is unstable",
}


TIMING_DOCS = {
    "latency_ms": "median of the timing samples, milliseconds, at the row's batch",
    "latency_iqr_ms": "inter-quartile range (p75 - p25) of the samples, milliseconds",
    "latency_n": "number of timing samples",
    "latency_samples_ms": "JSON list of every sample, milliseconds",
    "throughput": "images per second = batch / median latency",
}


def timed_protocol(study: Any, threads: int) -> dict[str, Any]:
    """The protocol of a study that times (sweep and models): part of every ``point_id``."""
    return {
        "measure": sorted(study.measure),
        "repeats": study.repeats,
        "warmup": study.warmup,
        "max_time_s": study.max_time_s,
        "threads": threads,
        "seed": study.seed,
    }


def mechanism_param_docs(study: Any, fixed: dict[str, str] | list[str]) -> dict[str, str]:
    """Columns of the study's mechanisms' parameters (n_win and topk first, as BRA's table reads)."""
    from attnbench.registry import get_mechanism

    out = {
        "n_win": "BRA: regions per side (S)",
        "topk": "BRA, KVT: routed regions or kept keys per query (k)",
    }
    for spec in study.mechanisms:
        for pname in get_mechanism(spec.name).hyperparameters():
            out.setdefault(param_column(pname, fixed), f"{spec.name} parameter {pname}")
    return out


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def message(exc: BaseException) -> str:
    """One line naming the exception, at most ``ERROR_CHARS`` long."""
    text = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def free(device: torch.device | str, collect: bool = True) -> None:
    """Release memory after a point: a garbage collection (tracebacks hold tensors in cycles) and
    the CUDA cache."""
    if collect:
        gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def param_column(name: str, fixed: dict[str, str] | list[str]) -> str:
    """The column of a mechanism parameter (prefixed where it would clash with a fixed column)."""
    return f"param_{name}" if name in fixed else name


def check_output(out: Any, expected: tuple[int, ...] | None, dtype: torch.dtype | None = None) -> str | None:
    """Why an output cannot be a result (not a tensor, the wrong shape, another dtype than the
    input's where ``dtype`` is given, not finite), or None when it can."""
    if not isinstance(out, torch.Tensor):
        return f"the output is a {type(out).__name__}, not a tensor"
    if expected is not None and tuple(out.shape) != tuple(expected):
        return f"the output has shape {tuple(out.shape)}, not the input's {tuple(expected)}"
    if dtype is not None and out.dtype != dtype:
        return f"the output is {out.dtype}, not the input's {dtype}"
    bad = (~torch.isfinite(out.detach())).sum().item()
    if bad:
        return f"the output has {bad} non-finite values (NaN or inf) of {out.numel()}"
    return None


def measure_speed(
    step: Callable[[], None],
    study: Any,
    device: torch.device,
    batch: int,
    held_bytes: Callable[[], int],
    row: dict[str, Any],
    errors: list[str],
) -> None:
    """Latency (when ``study.measure`` has latency) and peak memory (has memory) of ``step`` into ``row``,
    with the noise guard's columns around the timing.

    ``study`` supplies ``measure``, ``warmup``, ``repeats`` and ``max_time_s``; ``held_bytes`` gives
    the bytes held before the memory call (weights, input). Failures are appended to ``errors``;
    nothing raises.
    """
    if "latency" in study.measure:
        try:
            before = snapshot()
            t = time_function(
                step, device=device, warmup=study.warmup, repeats=study.repeats, max_time_s=study.max_time_s
            )
            after = snapshot()
            window = _last_timed[0] if _last_timed and before.wall - _last_timed[0].wall < 5.0 else None
            row.update(noise_columns(before, after, window))
            _last_timed[:] = [after]
            row.update(
                latency_ms=round(t.median_ms, 6),
                latency_iqr_ms=round(t.iqr_ms, 6),
                latency_n=len(t.samples_ms),
                latency_samples_ms=json.dumps([round(s, 6) for s in t.samples_ms]),
                throughput=round(t.throughput(batch), 4),
            )
            why = unstable_reasons(row)
            row.update(unstable=int(bool(why)), unstable_why="; ".join(why) or None)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"latency: {message(exc)}")
    if "memory" in study.measure:
        try:
            mem = peak_memory(step, device=device, held_bytes=held_bytes())
            row["mem_method"] = mem.method
            if mem.peak_mib is None:
                errors.append(f"memory: {mem.note}")
            else:
                row["peak_mem_mb"] = round(mem.peak_mib, 4)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"memory: {message(exc)}")


def finish(row: dict[str, Any], status: str, errors: list[str]) -> dict[str, Any]:
    """Set a row's status, error text and timestamp; returns it."""
    row.update(status=status, error="; ".join(errors) or None, timestamp=now())
    return row


def number(value: Any) -> float | None:
    """A stored cell as a finite float, or None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def table_text(columns: dict[str, Any]) -> str:
    """A DataFrame-free plain table: {header: list of cells}."""
    import pandas as pd

    return pd.DataFrame(columns).to_string(index=False, na_rep="-")


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """fp32 matmuls and convolutions in full precision (the equivalence check)."""
    if not torch.cuda.is_available():
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
