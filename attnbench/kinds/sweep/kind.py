"""Sweep studies: every mechanism over a grid of shapes and parameters, one row per point and pass.

Per point (mechanism, parameters, H, W, C, heads, batch, dtype), seeded with the study's seed:

1. build the mechanism on CPU in fp32 and ask ``check_input(H, W)``; a ``ValueError`` from either
   makes the point's rows ``skipped`` with the reason;
2. ``params``: the number of parameter elements;
3. ``flops``: :func:`attnbench.count_flops` of one forward at batch 1 in fp32 on the run device
   (fvcore MACs, the FlopCounterMode cross-check halved to MACs, uncounted operators), and the sum
   of ``analytic_flops(H, W)``; counted once per shape in a worker and shared by both pass rows;
4. the module and a ``randn`` input are cast to the device and dtype (no autocast), then per pass:
   ``forward`` is eval mode under ``torch.no_grad()``; ``forward_backward`` is train mode, the input
   requiring grad, ``out.float().sum().backward()`` with gradients set to None first. One untimed
   probe call first: its output must have the input's shape and be finite, else the row is an
   ``error``; then latency (:func:`attnbench.timing.time_function`) with the noise guard, and peak
   memory (:func:`attnbench.memory.peak_memory`).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import torch
from torch import nn

from attnbench.flops import count_flops
from attnbench.kind import Kind, RunContext, Task, config_id
from attnbench.kinds._common import (
    NOISE_DOCS,
    TIMING_DOCS,
    check_output,
    finish,
    free,
    measure_speed,
    mechanism_param_docs,
    message,
    param_column,
    table_text,
    timed_protocol,
)
from attnbench.kinds._frontier import max_batch
from attnbench.kinds.sweep.schema import Point
from attnbench.memory import module_bytes, tensor_bytes
from attnbench.peak import peak_gmacs_s
from attnbench.phases import collect, phase
from attnbench.registry import available_mechanisms, build_mechanism, get_mechanism
from attnbench.study import DTYPES
from attnbench.worker import emit

__all__ = ["COLUMN_DOCS", "KIND", "count_point", "flops_detail", "point_id"]

_HEAD = {
    "point_id": "hash of the point's full config (all mechanism params, shape, batch, dtype, pass, device, "
    "protocol) and the environment key; the resume key",
    "env_id": "key into manifest.json 'environments'",
    "study": "study name",
    "mechanism": "registered mechanism name",
    "H": "input height (tokens)",
    "W": "input width (tokens)",
    "C": "channels (dim)",
    "num_heads": "attention heads",
    "batch": "batch size of the timing and memory passes",
    "dtype": "dtype the module and input were cast to (no autocast)",
    "device": "cpu or cuda",
    "pass": "forward (eval, no_grad) or forward_backward (train, loss = out.float().sum(), backward)",
    "compile": "none (eager) or the torch.compile mode the module ran under",
}
_TAIL = {
    "status": "ok | skipped (impossible point, reason in error) | error (message in error)",
    "error": "why the row is skipped or failed; empty when ok",
    "flops": "MACs of one forward pass at batch 1, fp32, fvcore convention (1 MAC = 1 FLOP), "
    "attnbench.count_flops; same value in both pass rows",
    "flops_torch": "torch FlopCounterMode total of the same forward, halved to MACs",
    "flops_analytic": "sum of the mechanism's analytic_flops(H, W), MACs, batch 1",
    "flops_uncounted": "JSON {operator: calls} that no FLOP handle counted (non-empty: flops may be low)",
    "flops_detail": "JSON of the same count by term, for checks that the report makes without counting "
    "again: by_module {top-level submodule: MACs}, free_ops {operator: calls counted as 0}, analytic "
    "{term: MACs} (the mechanism's analytic_flops), resolved {hyper-parameter: value the module holds}, "
    "padded [H, W] (the size it computes on, where it pads)",
    "params": "number of parameters (elements)",
    **TIMING_DOCS,
    "peak_mem_mb": "peak memory of one pass in MiB (2^20 bytes), by mem_method",
    "mem_method": "how peak_mem_mb was measured (see manifest.json 'memory_methods')",
    "compile_s": "seconds of the first (compiling) call of a torch.compile'd module, outside the latency "
    "samples; empty for eager",
    "graph_breaks": "torch._dynamo.explain graph breaks of the module at this shape (counted once per "
    "mechanism, params and shape; compiled points only)",
    "pass_macs": "MACs of the timed call: flops x batch for forward, 3 x flops x batch for forward_backward "
    "(a backward costs about twice its forward)",
    "achieved_gmacs_s": "pass_macs / median latency, in GMAC/s",
    "peak_gmacs_s": "the machine's dense-matmul peak for this device, dtype and threads, GMAC/s "
    "(attnbench.peak; method in manifest.json)",
    "efficiency": "achieved_gmacs_s / peak_gmacs_s",
    "phases_ms": "JSON {phase: ms} of one profiled call (attnbench.phase marks; other = unmarked time; "
    "backward for the backward of forward_backward); apart from the timed samples; eager points only",
    "max_batch": "the largest batch whose call fits memory_budget_mib (doubling then bisection up to "
    "max_batch_cap; each probe in a worker process of its own; 0: not even batch 1); eager points only",
    "max_batch_peak_mb": "peak memory at max_batch, MiB, by mem_method",
    "max_batch_budget_mb": "the budget max_batch was searched under, MiB",
    **NOISE_DOCS,
    "timestamp": "UTC time the row was written",
}
COLUMN_DOCS = {
    **_HEAD,
    "n_win": "BRA: regions per side (S)",
    "topk": "BRA: routed regions per query (k)",
    **_TAIL,
}
_FIXED = [*_HEAD, *_TAIL]

_flops_cache: dict[tuple, dict[str, Any]] = {}  # per worker process: FLOPs do not depend on batch or dtype
_breaks_cache: dict[tuple, int] = {}  # per worker process: graph breaks of a mechanism at a shape


def point_id(point: Point, pass_: str, device: str, proto: dict[str, Any], env_key: dict[str, Any]) -> str:
    """Hash of the point's full configuration (defaults included), the pass, protocol and environment."""
    config = {
        "mechanism": point.mechanism,
        "params": point.full_params(),
        "H": point.H,
        "W": point.W,
        "C": point.dim,
        "num_heads": point.num_heads,
        "batch": point.batch,
        "dtype": point.dtype,
        "pass": pass_,
        "device": device,
        "protocol": proto,
        "environment": env_key,
    }
    if point.compile != "none":  # eager points keep the ids they had before the compile axis
        config["compile"] = point.compile
    return config_id(config)


class SweepKind(Kind):
    name = "sweep"

    def columns(self, study: Any) -> dict[str, str]:
        return {**_HEAD, **mechanism_param_docs(study, _FIXED), **_TAIL}

    def protocol(self, study: Any, threads: int) -> dict[str, Any]:
        return {
            **timed_protocol(study, threads),
            **(
                {"memory_budget_mib": study.memory_budget_mib, "max_batch_cap": study.max_batch_cap}
                if "max_batch" in study.measure
                else {}
            ),
        }

    def tasks(self, ctx: RunContext) -> list[Task]:
        proto, key = ctx.protocol, ctx.env_key
        out, seen = [], set()
        for point in ctx.study.points():
            rows = tuple((point_id(point, p, ctx.device, proto, key), p) for p in ctx.study.passes)
            if rows in seen:
                continue
            seen.add(rows)
            out.append(Task(point.label, rows, point))
        return out

    def describe(self, ctx: RunContext, n_tasks: int) -> str:
        s = ctx.study
        return (
            f"study {s.name!r}: {n_tasks} points x {len(s.passes)} passes = {n_tasks * len(s.passes)} rows "
            f"on {ctx.device} ({ctx.env['device_name']}, {ctx.threads} threads)"
        )

    def base_row(self, ctx: RunContext, point: Point, pass_: str, pid: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "point_id": pid,
            "env_id": ctx.env_id,
            "study": ctx.study.name,
            "mechanism": point.mechanism,
            "H": point.H,
            "W": point.W,
            "C": point.dim,
            "num_heads": point.num_heads,
            "batch": point.batch,
            "dtype": point.dtype,
            "device": ctx.device,
            "pass": pass_,
            "compile": point.compile,
            "protocol_id": ctx.protocol_id,
            "threads": ctx.threads,
        }
        for pname, value in point.full_params().items():
            row[param_column(pname, _FIXED)] = "None" if value is None else value
        return row

    def error_rows(
        self, ctx: RunContext, task: Task, missing: list[str], message: str
    ) -> list[dict[str, Any]]:
        ids = dict((p, pid) for pid, p in task.rows)
        return [finish(self.base_row(ctx, task.payload, p, ids[p]), "error", [message]) for p in missing]

    def measure(self, ctx: RunContext, task: Task) -> None:
        for row in _measure_point(self, ctx, task):
            emit(("row", row))

    def manifest(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "protocol_text": {
                "passes": list(ctx.study.passes),
                "flops": "fvcore MACs (1 MAC = 1 FLOP) of one forward at batch 1 in fp32 on the run device; "
                "flops_torch = FlopCounterMode / 2",
                "latency": "untimed probe call (its output checked: the input's shape, finite), `warmup` "
                "untimed calls (fewer once max_time_s is spent, at least 1), then `repeats` samples (fewer "
                "if max_time_s is spent, at least 3); CUDA events with synchronization on cuda, "
                "time.perf_counter on cpu with torch.set_num_threads(threads); median and IQR in ms",
                "memory": "one call after timing; see memory_methods",
            }
        }

    def summary_table(self, rows: list[dict[str, Any]]) -> str:
        def col(name: str) -> list[Any]:
            return [r.get(name) for r in rows]

        def num(name: str, scale: float = 1.0, digits: int = 3) -> list[Any]:
            return [None if v is None else round(float(v) / scale, digits) for v in col(name)]

        return table_text(
            {
                "mechanism": _labels(rows),
                "HxW": [f"{r.get('H')}x{r.get('W')}" for r in rows],
                "C/h": [f"{r.get('C')}/{r.get('num_heads')}" for r in rows],
                "batch": col("batch"),
                "dtype": col("dtype"),
                "pass": col("pass"),
                "status": col("status"),
                "GMACs(fvcore)": num("flops", 1e9, 4),
                "ms(median)": num("latency_ms"),
                "IQR ms": num("latency_iqr_ms"),
                "peak MiB": num("peak_mem_mb", 1, 2),
                "note": [(r.get("error") or r.get("unstable_why") or "")[:60] for r in rows],
            }
        )


def _labels(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's mechanism with the parameters that vary among that mechanism's rows
    (``bra n_win=7 topk=4``), so that a swept mechanism's rows can be told apart."""
    by_mech: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_mech.setdefault(str(r.get("mechanism")), []).append(r)
    shown: dict[str, list[str]] = {}
    for mech, mine in by_mech.items():
        try:
            names = list(get_mechanism(mech).hyperparameters())
        except ValueError:  # a plugin that is not registered here
            names = []
        shown[mech] = [n for n in names if len({str(r.get(n)) for r in mine}) > 1]
    out = []
    for r in rows:
        mech = str(r.get("mechanism"))
        parts = [f"{n}={r.get(n)}" for n in shown[mech] if r.get(n) is not None]
        out.append(" ".join([mech, *parts]))
    return out


def _make_step(module: nn.Module, x: torch.Tensor, pass_: str, keep: list[Any], compile_mode: str = "none"):
    """The call to time for a pass; the first call's output is put in ``keep`` (the probe checks it).

    With a ``compile_mode`` the module runs under ``torch.compile`` (its first call compiles).
    """
    module.train(pass_ != "forward")
    run = module if compile_mode == "none" else torch.compile(module, mode=compile_mode)
    if pass_ == "forward":

        def step() -> None:
            with torch.no_grad():
                out = run(x)
            if not keep:
                keep.append(out)

        return step, x
    x_grad = x.detach().requires_grad_(True)

    def step_backward() -> None:
        module.zero_grad(set_to_none=True)
        x_grad.grad = None
        out = run(x_grad)
        if not keep:
            keep.append(out.detach())
        with phase("backward"):
            out.float().sum().backward()

    return step_backward, x_grad


def flops_detail(module: nn.Module, report: Any, H: int, W: int) -> dict[str, Any]:
    """What a check of the count by term needs (the BRA formula check), stored with the row so that
    the report counts nothing again: the MACs of each top-level submodule, the operators counted as
    free, the mechanism's analytic terms, the hyper-parameters as the module resolved them, and the
    size it computes on where it pads."""
    detail: dict[str, Any] = {
        "by_module": {name: int(macs) for name, macs in report.by_module.items() if name and "." not in name},
        "free_ops": dict(report.convention_zero),
    }
    try:
        detail["analytic"] = {k: int(v) for k, v in module.analytic_flops(H, W).items()}
    except Exception:  # noqa: BLE001 - not every mechanism has analytic terms
        pass
    detail["resolved"] = {
        name: getattr(module, name)
        for name in type(module).hyperparameters()
        if isinstance(getattr(module, name, ...), (int, float, str, bool, type(None)))
    }
    if hasattr(module, "padded_size"):
        detail["padded"] = list(module.padded_size(H, W))
    return detail


def count_point(H: int, W: int, C: int, num_heads: int, params: dict[str, Any]) -> dict[str, Any]:
    """Count one BRA point as a sweep row stores it, and read it back as the formula check does
    (:func:`attnbench.kinds.sweep.formula.stored_point`): geometry, terms, total, free operators."""
    from attnbench.kinds.sweep.formula import stored_point

    module = build_mechanism("bra", C, num_heads, **params)
    module.check_input(H, W)
    report = count_flops(module, torch.zeros(1, H, W, C), cross_check=False)
    row = {
        "H": H,
        "W": W,
        "C": C,
        "num_heads": num_heads,
        "flops": report.total,
        "flops_uncounted": json.dumps(report.uncounted),
        "flops_detail": json.dumps(flops_detail(module, report, H, W)),
    }
    point = stored_point(row)
    assert point is not None
    return point


def _count_flops(ctx: RunContext, point: Point, module: nn.Module) -> dict[str, Any]:
    """FLOP columns of one forward at batch 1 in fp32 on the run device, cached per shape; ``_errors``
    and, when the forward ran, ``_forward`` (why its output is no result, or None)."""
    params = tuple(sorted(point.full_params().items()))
    key = (point.mechanism, params, point.H, point.W, point.dim, point.num_heads, ctx.device)
    if key in _flops_cache:
        return _flops_cache[key]
    out: dict[str, Any] = {}
    errors = []
    counted = None
    try:
        counted = module if ctx.device == "cpu" else copy.deepcopy(module).to(ctx.device)
        x1 = torch.randn(1, point.H, point.W, point.dim, device=ctx.device)
        seen: list[Any] = []
        hook = counted.register_forward_hook(
            lambda m, args, output: seen.append(output) if not seen else None
        )
        try:
            report = count_flops(counted, x1)
        finally:
            hook.remove()
        # the counting forward is the one forward a study without timings runs: its output is checked
        if seen:
            out["_forward"] = check_output(seen[0], tuple(x1.shape), x1.dtype)
        out.update(
            flops=report.total,
            flops_torch=report.torch_total,
            flops_uncounted=json.dumps(report.uncounted, sort_keys=True),
            flops_detail=json.dumps(flops_detail(module, report, point.H, point.W)),
        )
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"flops: {message(exc)}")
    try:
        out["flops_analytic"] = sum(module.analytic_flops(point.H, point.W).values())
    except NotImplementedError:
        out["flops_analytic"] = None
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"flops_analytic: {message(exc)}")
    del counted
    out["_errors"] = errors
    _flops_cache[key] = out
    return out


def _measure_point(kind: SweepKind, ctx: RunContext, task: Task):
    """Rows of one point, one per pass, yielded as soon as each is measured."""
    study, device, point = ctx.study, torch.device(ctx.device), task.payload
    rows = {p: kind.base_row(ctx, point, p, pid) for pid, p in task.rows}
    passes = list(rows)

    torch.manual_seed(study.seed)
    try:
        module = build_mechanism(point.mechanism, point.dim, point.num_heads, **dict(point.params))
        module.check_input(point.H, point.W)
    except ValueError as exc:  # the point is impossible for this mechanism
        for p in passes:
            yield finish(rows[p], "skipped", [message(exc)])
        return
    except Exception as exc:  # noqa: BLE001 - a failing build is an error row, the run goes on
        free(device)
        for p in passes:
            yield finish(rows[p], "error", [f"build: {message(exc)}"])
        return

    shared: dict[str, Any] = {}
    shared_errors: list[str] = []
    flops: dict[str, Any] = {}
    if "params" in study.measure:
        shared["params"] = sum(p.numel() for p in module.parameters())
    if "flops" in study.measure:
        flops = _count_flops(ctx, point, module)
        shared.update({k: v for k, v in flops.items() if not k.startswith("_")})
        shared_errors.extend(flops["_errors"])
    for row in rows.values():
        row.update(shared)

    if not set(study.measure) & {"latency", "memory", "phases", "max_batch"}:  # nothing times the module
        # a row is ok only when the module gives a real output: the FLOP count's forward says so, or,
        # with no FLOPs counted, one forward at batch 1
        bad = flops["_forward"] if "_forward" in flops else _check_one_forward(study, point, module)
        for p in passes:
            errors = [*shared_errors, *([f"forward: {bad}"] if bad else [])]
            yield finish(rows[p], "error" if errors else "ok", errors)
        return

    try:
        module.to(device=device, dtype=DTYPES[point.dtype])
        gen = torch.Generator().manual_seed(study.seed)
        x = torch.randn(point.batch, point.H, point.W, point.dim, generator=gen)
        x = x.to(device=device, dtype=DTYPES[point.dtype])
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory: recorded, the run goes on
        failed = message(exc)
        module = x = None
        free(device)
        for p in passes:
            yield finish(rows[p], "error", [*shared_errors, failed])
        return

    try:
        for p in passes:
            row, errors = rows[p], list(shared_errors)
            _measure_pass(ctx, point, p, module, x, row, errors)
            module.zero_grad(set_to_none=True)
            if len(errors) > len(shared_errors):
                free(device)
            yield finish(row, "error" if errors else "ok", errors)
    finally:
        del module, x
        free(device, collect=False)


def _check_one_forward(study: Any, point: Point, module: nn.Module) -> str | None:
    """Why one forward of ``module`` at batch 1, in float32 on the CPU and without gradients, gives no
    result (an exception, not a tensor, the wrong shape or dtype, values not finite), or None. For
    studies that count FLOPs or parameters and time nothing."""
    gen = torch.Generator().manual_seed(study.seed)
    x = torch.randn(1, point.H, point.W, point.dim, generator=gen)
    try:
        with torch.no_grad():
            out = module.float().cpu()(x)
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        return message(exc)
    return check_output(out, tuple(x.shape), x.dtype)


def _measure_pass(
    ctx: RunContext,
    point: Point,
    pass_: str,
    module: nn.Module,
    x: torch.Tensor,
    row: dict,
    errors: list[str],
) -> None:
    """One pass of one point into ``row``: probe (compiling, if asked), output check, latency with
    efficiency, memory, phases and max batch, as the study measures them."""
    study, device = ctx.study, torch.device(ctx.device)
    keep: list[Any] = []
    mode = point.compile
    if mode != "none":
        torch._dynamo.reset()  # a clean compile for every point: no reuse, no recompile limit
    step, x_used = _make_step(module, x, pass_, keep, mode)
    t0 = time.perf_counter()
    try:
        step()  # probe: a missing backward, an OOM or a failing compile fails here, untimed
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        stage = f"{pass_} (compile {mode})" if mode != "none" else pass_
        errors.append(f"{stage}: {message(exc)}")
        return
    if mode != "none":
        row["compile_s"] = round(time.perf_counter() - t0, 3)
        row["graph_breaks"] = _graph_breaks(point, module, x)
    bad = check_output(keep[0] if keep else None, tuple(x.shape), x.dtype)
    keep[:] = [None]  # the output is checked; drop it, and take no more
    if bad is not None:
        errors.append(f"{pass_}: {bad}")
        return

    def held_bytes(m: nn.Module = module, x_in: torch.Tensor = x_used) -> int:
        # gradients dropped: the memory call starts from weights + input only
        m.zero_grad(set_to_none=True)
        x_in.grad = None
        return module_bytes(m) + tensor_bytes([x_in])

    measure_speed(step, study, device, point.batch, held_bytes, row, errors)
    _efficiency(ctx, point, pass_, row)
    if "phases" in study.measure and mode == "none":  # compiled code runs no phase marks
        try:
            with collect(device) as phases:
                step()
            row["phases_ms"] = json.dumps({k: round(v, 4) for k, v in phases.items()})
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"phases: {message(exc)}")
    if "max_batch" in study.measure and mode == "none":  # probes run eager: once per point
        try:
            row.update(max_batch(ctx, point, pass_))
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"max_batch: {message(exc)}")


def _graph_breaks(point: Point, module: nn.Module, x: torch.Tensor) -> int | None:
    """Graph breaks of ``module`` at the point's shape (torch._dynamo.explain), counted once."""
    key = (
        point.mechanism,
        tuple(sorted(point.full_params().items())),
        point.H,
        point.W,
        point.dim,
        point.num_heads,
    )
    if key not in _breaks_cache:
        try:
            with torch.no_grad():
                _breaks_cache[key] = torch._dynamo.explain(module)(x[:1]).graph_break_count
        except Exception:  # noqa: BLE001 - explain itself can fail where compile worked: left empty
            return None
        finally:
            torch._dynamo.reset()
    return _breaks_cache[key]


def _efficiency(ctx: RunContext, point: Point, pass_: str, row: dict[str, Any]) -> None:
    """``pass_macs``, ``achieved_gmacs_s``, ``peak_gmacs_s`` and ``efficiency`` of a timed row."""
    flops, latency = row.get("flops"), row.get("latency_ms")
    if flops is None or not latency:
        return
    macs = flops * point.batch * (3 if pass_ == "forward_backward" else 1)
    achieved = macs / (latency / 1e3) / 1e9
    peak = peak_gmacs_s(ctx.device, point.dtype, ctx.threads, ctx.env_id)["peak_gmacs_s"]
    row.update(
        pass_macs=macs,
        achieved_gmacs_s=round(achieved, 4),
        peak_gmacs_s=peak,
        efficiency=round(achieved / peak, 6) if peak else None,
    )


# Workers read this module before a task starts: load the registered mechanisms (NATTEN and all)
# then, so that their import is not charged to the first point's time limit.
available_mechanisms()

KIND = SweepKind()
