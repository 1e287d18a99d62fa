"""Models studies (``kind: models``): whole timm models measured and set beside their published numbers.

Each model is one row (inference: eval mode, ``torch.no_grad()``, pass ``forward``): params and
FLOPs from :func:`attnbench.models.measure_model` (fvcore MACs of one image in fp32 on CPU, the
seed models on BRA's ``reference`` backend), then the model is built again, cast to the study's
device and dtype, called once untimed (a failure, or logits that are not finite, is an error row
without timing), timed with :func:`attnbench.timing.time_function` under the noise guard, and its
peak memory taken with :func:`attnbench.memory.peak_memory`. The row also carries the study's
reference numbers and the differences in % of ours against them. Reference numbers are not part
of the ``point_id``: a resumed run refreshes them in the rows it keeps.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from attnbench.kind import Kind, RunContext, Task, config_id
from attnbench.kinds._common import (
    NOISE_DOCS,
    TIMING_DOCS,
    check_output,
    finish,
    free,
    measure_speed,
    message,
    number,
    table_text,
    timed_protocol,
)
from attnbench.kinds.models.schema import ModelSpec
from attnbench.memory import module_bytes, tensor_bytes
from attnbench.models.measure import build_model, measure_model
from attnbench.study import DTYPES
from attnbench.worker import emit

__all__ = ["KIND", "MODEL_COLUMN_DOCS", "model_point_id", "reference_columns"]

PASS = "forward"  # inference numbers
REFERENCE_RESOLUTION = 224
_REFERENCE_FIELDS = {
    "published": ("params_m", "gflops", "top1", "source"),
    "counted": ("params_m", "gflops", "source"),
}

MODEL_COLUMN_DOCS = {
    "point_id": "hash of the model, its kwargs, resolution, batch, dtype, device, protocol and the "
    "environment key; the resume key",
    "env_id": "key into manifest.json 'environments'",
    "study": "study name",
    "model": "timm model name",
    "family": "the model's family and paper, as the study names it",
    "kwargs": "JSON of the extra timm.create_model keyword arguments ({} for none)",
    "resolution": "square input side (pixels)",
    "batch": "batch size of the timing and memory passes",
    "dtype": "dtype the model and input were cast to (no autocast)",
    "device": "cpu or cuda",
    "pass": "forward (eval, no_grad): inference",
    "status": "ok | error (message in error)",
    "error": "why the row failed; empty when ok",
    "params": "number of parameters (elements)",
    "params_m": "params / 1e6",
    "flops": "MACs of one forward at batch 1, fp32, CPU, fvcore convention (1 MAC = 1 FLOP); seed "
    "models counted on BRA's reference backend",
    "gflops": "flops / 1e9 (GMACs, the papers' 'GFLOPs')",
    "flops_torch": "torch FlopCounterMode total of the same forward, halved to MACs",
    "flops_uncounted": "JSON {operator: calls} that no FLOP handle counted (non-empty: flops may be low)",
    **TIMING_DOCS,
    "peak_mem_mb": "peak memory of one forward in MiB (2^20 bytes), by mem_method",
    "mem_method": "how peak_mem_mb was measured (see manifest.json 'memory_methods')",
    "published_params_m": "published parameters, millions (study's 'published')",
    "published_gflops": "published GFLOPs = GMACs at published_resolution",
    "published_top1": "published ImageNet-1K top-1 %, not measured here",
    "published_source": "where the published numbers come from",
    "published_resolution": "input side the published numbers are for",
    "counted_params_m": "parameters counted on the released code, millions (study's 'counted')",
    "counted_gflops": "GMACs counted on the released code at counted_resolution",
    "counted_source": "who counted, with what, on which code",
    "counted_resolution": "input side the counted numbers are for",
    "params_diff_counted_pct": "100 * (params_m - counted_params_m) / counted_params_m",
    "gflops_diff_counted_pct": "100 * (gflops - counted_gflops) / counted_gflops; empty when the "
    "resolutions differ",
    "params_diff_published_pct": "100 * (params_m - published_params_m) / published_params_m",
    "gflops_diff_published_pct": "100 * (gflops - published_gflops) / published_gflops; empty when the "
    "resolutions differ",
    **NOISE_DOCS,
    "timestamp": "UTC time the row was written",
}


def model_point_id(
    study: Any, spec: ModelSpec, device: str, proto: dict[str, Any], env_key: dict[str, Any]
) -> str:
    """Hash of what makes a model's row a different measurement (reference numbers excluded)."""
    config = {
        "kind": "models",
        "model": spec.name,
        "kwargs": spec.model_kwargs(),
        "resolution": study.resolution,
        "batch": study.batch,
        "dtype": study.dtype,
        "pass": PASS,
        "device": device,
        "protocol": proto,
        "environment": env_key,
    }
    return config_id(config)


def _pct(ours: float | None, reference: float | None) -> float | None:
    if ours is None or reference is None:
        return None
    return round(100.0 * (ours - reference) / reference, 3)


def reference_columns(
    spec: ModelSpec, resolution: int, params: float | None, flops: float | None
) -> dict[str, Any]:
    """The study's reference numbers of ``spec`` and our differences to them, as row columns."""
    params_m = None if params is None else params / 1e6
    gflops = None if flops is None else flops / 1e9
    out: dict[str, Any] = {}
    for section, numbers in (("published", dict(spec.published)), ("counted", dict(spec.counted))):
        ref_res = numbers.get("resolution", REFERENCE_RESOLUTION)
        for field in _REFERENCE_FIELDS[section]:
            out[f"{section}_{field}"] = numbers.get(field)
        out[f"{section}_resolution"] = ref_res if numbers else None
        out[f"params_diff_{section}_pct"] = _pct(params_m, numbers.get("params_m"))
        same = ref_res == resolution
        out[f"gflops_diff_{section}_pct"] = _pct(gflops, numbers.get("gflops")) if same else None
    return out


class ModelsKind(Kind):
    name = "models"
    unit = "model"

    def columns(self, study: Any) -> dict[str, str]:
        return dict(MODEL_COLUMN_DOCS)

    def protocol(self, study: Any, threads: int) -> dict[str, Any]:
        return timed_protocol(study, threads)

    def tasks(self, ctx: RunContext) -> list[Task]:
        proto, key = ctx.protocol, ctx.env_key
        return [
            Task(spec.label, ((model_point_id(ctx.study, spec, ctx.device, proto, key), PASS),), spec)
            for spec in ctx.study.models
        ]

    def describe(self, ctx: RunContext, n_tasks: int) -> str:
        s = ctx.study
        return (
            f"models study {s.name!r}: {n_tasks} models at {s.resolution}x{s.resolution}, batch {s.batch}, "
            f"{s.dtype}, forward, on {ctx.device} ({ctx.env['device_name']}, {ctx.threads} threads)"
        )

    def base_row(self, ctx: RunContext, spec: ModelSpec, pid: str) -> dict[str, Any]:
        s = ctx.study
        return {
            "point_id": pid,
            "env_id": ctx.env_id,
            "study": s.name,
            "model": spec.name,
            "family": spec.family,
            "kwargs": json.dumps(spec.model_kwargs(), sort_keys=True),
            "resolution": s.resolution,
            "batch": s.batch,
            "dtype": s.dtype,
            "device": ctx.device,
            "pass": PASS,
            "protocol_id": ctx.protocol_id,
            "threads": ctx.threads,
        }

    def error_rows(
        self, ctx: RunContext, task: Task, missing: list[str], message: str
    ) -> list[dict[str, Any]]:
        ((pid, _),) = task.rows
        row = self.base_row(ctx, task.payload, pid)
        row.update(reference_columns(task.payload, ctx.study.resolution, None, None))
        return [finish(row, "error", [message])]

    def measure(self, ctx: RunContext, task: Task) -> None:
        emit(("row", _measure_entry(self, ctx, task)))

    def refresh(self, ctx: RunContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Kept rows whose reference numbers differ from the study's now (edited since)."""
        by_id = {r["point_id"]: r for r in rows if r.get("status") == "ok"}
        changed = []
        for task in self.tasks(ctx):
            row = by_id.get(task.rows[0][0])
            if row is None:
                continue
            spec = task.payload
            fresh = reference_columns(
                spec, ctx.study.resolution, number(row.get("params")), number(row.get("flops"))
            )
            fresh["family"] = spec.family
            if any(_differs(row.get(k), v) for k, v in fresh.items()):
                changed.append({**row, **fresh})
        return changed

    def manifest(self, ctx: RunContext) -> dict[str, Any]:
        s = ctx.study
        return {
            "conditions": {
                "resolution": s.resolution,
                "batch": s.batch,
                "dtype": s.dtype,
                "device": ctx.device,
                "pass": PASS,
            },
            "protocol_text": {
                "passes": [PASS],
                "flops": "attnbench.models.measure_model: fvcore MACs (1 MAC = 1 FLOP) of one forward at "
                "batch 1 in fp32 on CPU, seed models on BRA's reference backend; "
                "flops_torch = FlopCounterMode / 2",
                "latency": "eval mode under torch.no_grad(); untimed probe call (its logits must be finite), "
                "`warmup` untimed calls, then `repeats` samples (fewer if max_time_s is spent, at least 3); "
                "CUDA events with synchronization on cuda, time.perf_counter on cpu with "
                "torch.set_num_threads(threads); median and IQR in ms",
                "memory": "one call after timing; see memory_methods",
            },
        }

    def summary_table(self, rows: list[dict[str, Any]]) -> str:
        def num(name: str, digits: int) -> list[Any]:
            return [None if number(r.get(name)) is None else round(number(r.get(name)), digits) for r in rows]

        return table_text(
            {
                "model": [r.get("model") for r in rows],
                "status": [r.get("status") for r in rows],
                "params(M)": num("params_m", 2),
                "GMACs(fvcore)": num("gflops", 3),
                "counted": num("counted_gflops", 3),
                "diff%": num("gflops_diff_counted_pct", 2),
                "ms(median)": num("latency_ms", 1),
                "img/s": num("throughput", 2),
                "peak MiB": num("peak_mem_mb", 1),
                "note": [(r.get("error") or r.get("unstable_why") or "")[:60] for r in rows],
            }
        )


def _differs(stored: Any, fresh: Any) -> bool:
    if fresh is None or stored is None:
        return (fresh is None) != (stored is None or stored == "")
    if isinstance(fresh, (int, float)):
        return number(stored) is None or abs(number(stored) - fresh) > 1e-9 * max(1.0, abs(fresh))
    return str(stored) != str(fresh)


def _measure_entry(kind: ModelsKind, ctx: RunContext, task: Task) -> dict[str, Any]:
    """The row of one model; failures become ``status = error`` with the stage and message."""
    study, device, spec = ctx.study, torch.device(ctx.device), task.payload
    row = kind.base_row(ctx, spec, task.rows[0][0])
    errors: list[str] = []
    kwargs = spec.model_kwargs()
    torch.manual_seed(study.seed)
    if "flops" in study.measure:
        try:
            counted = measure_model(
                spec.name, study.resolution, study.batch, device.type, repeats=0, model_kwargs=kwargs
            )
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"flops: {message(exc)}")
        else:
            row.update({k: counted[k] for k in ("params", "flops", "flops_torch", "flops_uncounted")})
    timed = "latency" in study.measure or "memory" in study.measure
    if timed or ("params" in study.measure and "params" not in row):
        _time_and_memory(ctx, spec, row, errors)
    if "params" not in study.measure:
        row.pop("params", None)
    params, flops = row.get("params"), row.get("flops")
    row["params_m"] = None if params is None else round(params / 1e6, 4)
    row["gflops"] = None if flops is None else round(flops / 1e9, 4)
    row.update(reference_columns(spec, study.resolution, params, flops))
    return finish(row, "error" if errors else "ok", errors)


def _time_and_memory(ctx: RunContext, spec: ModelSpec, row: dict[str, Any], errors: list[str]) -> None:
    """Build the model on the run's device and dtype, then params, latency and memory as asked."""
    study, device = ctx.study, torch.device(ctx.device)
    model = x = None
    try:
        torch.manual_seed(study.seed)
        model = build_model(spec.name, **spec.model_kwargs()).eval()
        if "params" in study.measure and "params" not in row:
            row["params"] = sum(p.numel() for p in model.parameters())
        if "latency" not in study.measure and "memory" not in study.measure:
            return
        model.to(device=device, dtype=DTYPES[study.dtype])
        gen = torch.Generator().manual_seed(study.seed)
        x = torch.randn(study.batch, 3, study.resolution, study.resolution, generator=gen)
        x = x.to(device=device, dtype=DTYPES[study.dtype])
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"build: {message(exc)}")
        model = x = None
        free(device)
        return

    def step() -> None:
        with torch.no_grad():
            model(x)

    try:
        try:
            with torch.no_grad():
                out = model(x)  # probe: a shape the model cannot take, or out of memory, fails here untimed
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            text = message(exc)
            counted = f"flops: {text}" in errors  # the FLOP count already failed the same way
            errors.append(f"{PASS}: " + ("the same error" if counted else text))
            return
        bad = check_output(out, None)
        del out
        if bad is not None:
            errors.append(f"{PASS}: {bad}")
            return
        measure_speed(
            step, study, device, study.batch, lambda: module_bytes(model) + tensor_bytes([x]), row, errors
        )
    finally:
        model = x = None  # drop the model before the next one is built
        free(device, collect=bool(errors))


KIND = ModelsKind()
