"""Doctor runs: the environment probed, every mechanism's backends checked against its reference.

What is checked and how is :mod:`attnbench.doctor`'s docstring; this module measures it. One task
probes the environment (a row per probe); one task per mechanism writes its reference row (the
numerical gradient check in float64 on the CPU) and a row per (backend, dtype) on the run's device.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.kind import Kind, RunContext, Task, config_id
from attnbench.kinds._common import finish, free, message, no_tf32, number
from attnbench.registry import available_mechanisms, get_mechanism
from attnbench.study import DTYPES as STUDY_DTYPES
from attnbench.timing import time_function
from attnbench.worker import emit

__all__ = [
    "BATCH",
    "COLUMN_DOCS",
    "DIM",
    "DTYPES",
    "HEADS",
    "KIND",
    "PROBES",
    "SIZE",
    "TOLERANCE",
    "environment_table",
    "mechanism_table",
    "relative_error",
]

# One small problem every mechanism handles with its defaults (28 is divisible by BRA's and Swin's
# 7 and larger than NATTEN's kernel x dilation): conformance's shape, batch 2.
DIM, HEADS, SIZE, BATCH = 32, 2, 28, 2
DTYPES = tuple(STUDY_DTYPES)  # float32, bfloat16, float16

# Largest relative error (max |a - ref| / max |ref|) that passes, forward and backward, per dtype.
# float32 is the correctness check: against float64, every mechanism and backend is within ~1e-6
# forward and ~4e-6 backward (TF32 is off while the doctor checks). bfloat16 and float16 are a
# sanity check: their rounding can flip a top-k choice (BRA's routing: 0.075 forward in both) and
# is amplified through sampling offsets (DAT's and DBRA's offset networks: 0.17 backward in
# bfloat16), while a wrong kernel is off by the order of the output itself (a zeroed output or
# gradient scores 1, a sign error 2). The bounds are about twice the worst seen on the CPU
# (docs/doctor.md#tolerances).
TOLERANCE = {
    "float32": {"forward": 1e-4, "backward": 1e-3},
    "bfloat16": {"forward": 0.15, "backward": 0.35},
    "float16": {"forward": 0.15, "backward": 0.15},
}

PROBES = ("python", "torch", "device", "threads", "timm", "natten", "flex_attention", "torch.compile")
ENVIRONMENT = "environment"
REFERENCE = "reference"
# The reference's gradient check: one random unit direction per tensor (the input, each parameter),
# the analytic directional derivative against central differences, float64, batch 1
GRADCHECK = {"eps": 1e-6, "atol": 1e-6, "rtol": 1e-4, "batch": 1}

COLUMN_DOCS = {
    "point_id": "hash of the row's configuration (part, item, backend, dtype, device, protocol) and the "
    "environment key",
    "env_id": "key into manifest.json 'environments'",
    "study": "doctor",
    "part": "environment (a probe of what is installed and works) or mechanism",
    "item": "the probe's name, or the registered mechanism",
    "backend": "the mechanism's backend (backend=...), empty for a mechanism with one implementation",
    "check": "what the row checks: the probe; 'gradcheck' (the reference's gradients against central "
    "differences, float64, CPU); 'vs reference' (this backend, dtype and device against the reference)",
    "dtype": "dtype the module and input were cast to (float64 for the reference row)",
    "device": "where the row ran (the reference row: cpu)",
    "pass": "check (every doctor row)",
    "verdict": "PASS, FAIL or SKIP",
    "status": "ok (PASS) | skipped (SKIP: cannot run here, reason in error) | error (FAIL: reason in error)",
    "error": "why the row is SKIP or FAIL; empty when it passes",
    "detail": "what the probe found (versions, names, sizes), or the mechanism row's notes",
    "default": "where backend='auto' takes this backend here: inference (eval, no gradient), training, "
    "or both; empty otherwise",
    "forward_error": "max |out - ref| / max |ref| of the forward (eval, no gradient) against the reference",
    "backward_error": "the largest max |grad - ref| / max |ref| over the gradients of the input and of every "
    "parameter (train mode, loss sum(out * g), g fixed and random)",
    "backward_worst": "the tensor whose gradient error is backward_error ('input' or a parameter name)",
    "forward_tolerance": "the largest forward_error that passes at this dtype",
    "backward_tolerance": "the largest backward_error that passes at this dtype",
    "median_ms": "median latency of the row's forward (eval, no gradient), milliseconds, at batch 2, "
    "28x28, C 32, 2 heads; a smoke number, not a benchmark",
    "iqr_ms": "inter-quartile range of those samples, milliseconds",
    "n_samples": "timed calls",
    "protocol_id": "hash of the protocol and environment key",
    "threads": "CPU threads (torch.set_num_threads) of the row",
    "timestamp": "UTC time the row was written",
}


def _verdict(status: str) -> str:
    return {"ok": "PASS", "skipped": "SKIP", "error": "FAIL"}[status]


def _close(row: dict[str, Any], status: str, errors: list[str]) -> dict[str, Any]:
    finish(row, status, errors)
    row["verdict"] = _verdict(status)
    return row


def relative_error(a: Tensor, ref: Tensor, floor: float = 0.0) -> float:
    """``max |a - ref| / max(max |ref|, floor)`` in float64 on the CPU (inf where ``a`` is not finite;
    the absolute error where the denominator is 0)."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    diff = float((a - ref).abs().max()) if a.numel() else 0.0
    scale = max(float(ref.abs().max()) if ref.numel() else 0.0, floor)
    return diff / scale if scale > 0 else diff


# ---------------------------------------------------------------- the environment


def _probe_rows(ctx: RunContext) -> dict[str, tuple[str, str, str | None]]:
    """probe -> (status, detail, reason)."""
    out: dict[str, tuple[str, str, str | None]] = {}
    device = torch.device(ctx.device)
    env = ctx.env
    out["python"] = ("ok", f"{env.get('python')} on {env.get('platform')}", None)
    out["torch"] = ("ok", f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}", None)
    if device.type == "cuda":
        detail = (
            f"{env.get('device_name')}, {env.get('gpu_total_memory_mib')} MiB, compute capability "
            f"{env.get('gpu_capability')}, driver {env.get('nvidia_driver')}, "
            f"cuDNN {env.get('cudnn_version')}, "
            f"{env.get('gpu_count')} GPU(s)"
        )
    else:
        detail = (
            f"CPU {env.get('cpu_model')}, {env.get('cpu_physical_cores')} physical cores, "
            f"{env.get('cpu_logical_cpus')} logical; CUDA available: {torch.cuda.is_available()}"
        )
    out["device"] = ("ok", detail, None)
    out["threads"] = (
        "ok",
        f"{torch.get_num_threads()} intra-op threads for every check (of {env.get('cpu_physical_cores')} "
        "physical cores)",
        None,
    )
    out["timm"] = _probe_package("timm")
    out["natten"] = _probe_natten(device)
    out["flex_attention"] = _guarded(lambda: _probe_flex(device))
    if ctx.study.quick:
        out["torch.compile"] = ("skipped", "", "not tried with --quick (compiling takes 10-60 s)")
    else:
        out["torch.compile"] = _guarded(lambda: _probe_compile(device))
    return out


def _guarded(probe: Callable[[], tuple[str, str, str | None]]) -> tuple[str, str, str | None]:
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001 - a probe that breaks is the finding
        return "error", "", message(exc)


def _probe_package(name: str) -> tuple[str, str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __import__(name)
        return "ok", f"{name} {version(name)}", None
    except PackageNotFoundError:
        return "ok", f"{name} (version unknown)", None
    except ImportError as exc:
        return "error", "", f"{name} does not import: {message(exc)}; pip install {name}"


def _probe_natten(device: torch.device) -> tuple[str, str, str | None]:
    try:
        import natten
        from natten.backends import get_compatible_backends
    except ImportError:
        return "skipped", "", "natten is not installed: neighborhood and dilated run their tiled backend"
    fused = "loads" if natten.HAS_LIBNATTEN else "not built (no compiled library: no fused kernels)"
    q = torch.randn(1, 16, 16, HEADS, DIM // HEADS, device=device)
    try:
        usable = get_compatible_backends(q, q, q, torch_compile=False)
    except Exception as exc:  # noqa: BLE001 - a natten that cannot even be asked
        usable = [f"none ({message(exc)})"]
    detail = (
        f"natten {getattr(natten, '__version__', '?')}; compiled library (fused kernels): {fused}; "
        f"backends for a 16x16, head_dim {DIM // HEADS}, float32 problem on {device.type}: "
        f"{', '.join(usable) or 'none'}"
    )
    return "ok", detail, None


def _probe_flex(device: torch.device) -> tuple[str, str, str | None]:
    from torch.nn.attention.flex_attention import flex_attention

    q = torch.randn(1, 2, 128, 16, device=device, requires_grad=device.type == "cuda")
    out = flex_attention(q, q, q)
    ref = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    err = relative_error(out, ref)
    if err > 1e-4:
        return (
            "error",
            "",
            f"flex_attention differs from scaled_dot_product_attention by {err:.2g} (relative)",
        )
    if device.type == "cpu":
        return "ok", f"forward agrees with SDPA (relative error {err:.1g}); no backward on CPU", None
    out.sum().backward()
    return "ok", f"forward and backward run (forward relative error {err:.1g} against SDPA)", None


def _probe_compile(device: torch.device) -> tuple[str, str, str | None]:
    import time

    torch._dynamo.reset()
    layer = nn.Linear(16, 16).to(device)
    x = torch.randn(4, 16, device=device)

    def f(t: Tensor) -> Tensor:
        return torch.softmax(layer(t), dim=-1) * 2

    start = time.perf_counter()
    compiled = torch.compile(f)
    out = compiled(x)
    seconds = time.perf_counter() - start
    err = relative_error(out, f(x))
    if err > 1e-5:
        return "error", "", f"the compiled function differs from eager by {err:.2g} (relative)"
    return (
        "ok",
        f"default mode compiles and agrees with eager ({seconds:.1f} s to compile a small function)",
        None,
    )


# ---------------------------------------------------------------- the mechanisms


def _reference_kwargs(cls: type) -> dict[str, Any]:
    return {"backend": cls.reference_backend} if cls.reference_backend else {}


def _gradcheck(module: nn.Module, x: Tensor, g: Tensor) -> str | None:
    """Why the module's analytic gradients disagree with central differences, or None.

    For the input and each parameter in turn, a random direction ``u`` (float64, on the CPU): the
    analytic directional derivative ``<grad of sum(out · g), u>`` against
    ``(L(θ + εu) - L(θ - εu)) / 2ε`` with ``L = sum(out · g)``. This is what
    :func:`torch.autograd.gradcheck` does in fast mode, tensor by tensor so that the failing one is
    named, without the slow full-Jacobian pass it falls back to on a failure (minutes at this size).
    """
    eps, atol, rtol = GRADCHECK["eps"], GRADCHECK["atol"], GRADCHECK["rtol"]
    module.train()
    grads = _gradients(module, x, g)
    params = dict(module.named_parameters())
    gen = torch.Generator().manual_seed(1)

    def loss() -> float:
        with torch.no_grad():
            return float((module(x) * g).sum())

    for name, grad in grads.items():
        target = x if name == "input" else params[name].data
        if grad is None:
            continue
        u = torch.randn(target.shape, generator=gen, dtype=torch.float64)
        u /= u.norm()
        analytic = float((grad * u).sum())
        saved = target.clone()
        target.add_(eps * u)
        up = loss()
        target.copy_(saved - eps * u)
        down = loss()
        target.copy_(saved)
        numerical = (up - down) / (2 * eps)
        if abs(analytic - numerical) > atol + rtol * abs(numerical):
            where = "the input" if name == "input" else f"parameter {name}"
            return (
                f"the backward is wrong for {where}: the analytic directional derivative {analytic:.6g} "
                f"is not the numerical {numerical:.6g} (central differences, eps {eps:g}, float64)"
            )
    return None


def _gradients(module: nn.Module, x: Tensor, g: Tensor) -> dict[str, Tensor | None]:
    """Gradients of ``sum(module(x) · g)`` (computed in float64) with respect to x and every parameter."""
    module.train()
    module.zero_grad(set_to_none=True)
    xg = x.detach().clone().requires_grad_(True)
    out = module(xg)
    (out.double() * g.to(out.device, torch.float64)).sum().backward()
    grads = {"input": xg.grad}
    grads.update({n: p.grad for n, p in module.named_parameters() if p.requires_grad})
    return grads


def _backward_error(
    grads: dict[str, Tensor | None], ref: dict[str, Tensor | None]
) -> tuple[float, str, str | None]:
    """(the largest relative error, its tensor, why the gradients cannot be compared or None).

    A gradient that is zero in exact arithmetic (a key bias's, under softmax) is rounding noise in
    any dtype, so each tensor's error is taken relative to its largest entry or to a tenth of the
    largest entry of any gradient, whichever is larger."""
    scale = max(
        (float(r.detach().abs().max()) for r in ref.values() if r is not None and r.numel()), default=0.0
    )
    worst, where = 0.0, ""
    for name, r in ref.items():
        a = grads.get(name)
        if (a is None) != (r is None):
            missing = "this backend" if a is None else "the reference"
            return float("nan"), name, f"{missing} gives no gradient for {name}"
        if a is None:
            continue
        err = relative_error(a, r, floor=scale / 10)
        if err > worst or not where:
            worst, where = err, name
    return worst, where, None


def _defaults(cls: type, device: torch.device, dtype: torch.dtype, x: Tensor, state: dict) -> dict[str, str]:
    """backend -> "inference", "training" or "inference, training": what backend='auto' takes here."""
    if not cls.backends():
        return {}
    m = cls(DIM, HEADS).to(device, dtype)
    m.load_state_dict(state)
    m.eval()
    with torch.no_grad():
        inference = m.chosen_backend(x)
    m.train()
    with torch.enable_grad():
        training = m.chosen_backend(x.detach().clone().requires_grad_(True))
    out: dict[str, list[str]] = {}
    for role, name in (("inference", inference), ("training", training)):
        if name is not None:
            out.setdefault(name, []).append(role)
    return {k: ", ".join(v) for k, v in out.items()}


def _time_forward(module: nn.Module, x: Tensor, device: torch.device, quick: bool) -> dict[str, Any]:
    module.eval()

    def step() -> None:
        with torch.no_grad():
            module(x)

    t = time_function(
        step, device=device, warmup=1 if quick else 2, repeats=5 if quick else 15, max_time_s=1.0
    )
    return {"median_ms": round(t.median_ms, 4), "iqr_ms": round(t.iqr_ms, 4), "n_samples": len(t.samples_ms)}


class DoctorKind(Kind):
    name = "doctor"
    unit = "check"

    def columns(self, study: Any) -> dict[str, str]:
        return dict(COLUMN_DOCS)

    def protocol(self, study: Any, threads: int) -> dict[str, Any]:
        return {
            "problem": {"batch": BATCH, "H": SIZE, "W": SIZE, "C": DIM, "num_heads": HEADS},
            "reference": "the mechanism with its reference_backend, float64, CPU, the checked module's "
            "weights",
            "error": "max |a - ref| / max |ref| per tensor; backward: the largest over the input's and every "
            "parameter's gradient of sum(out * g)",
            "tolerance": TOLERANCE,
            "gradcheck": GRADCHECK,
            "tf32": "off while checking",
            "timing": "forward, eval, no gradient; warmup 1 and 5 samples with --quick, else 2 and 15; at "
            "most 1 s of samples",
            "quick": study.quick,
            "threads": threads,
            "seed": study.seed,
        }

    def _row_id(self, ctx: RunContext, part: str, item: str, backend: str, dtype: str) -> str:
        device = "cpu" if backend == REFERENCE_ROW else ctx.device
        config = {"kind": "doctor", "part": part, "item": item, "backend": backend, "dtype": dtype}
        config.update(device=device, protocol=ctx.protocol, environment=ctx.env_key)
        return config_id(config)

    def tasks(self, ctx: RunContext) -> list[Task]:
        study = ctx.study
        out = [
            Task(
                "environment",
                tuple((self._row_id(ctx, ENVIRONMENT, p, "", ""), "check") for p in PROBES),
                (ENVIRONMENT, None),
            )
        ]
        for name in study.mechanisms:
            rows = [(self._row_id(ctx, "mechanism", name, REFERENCE_ROW, "float64"), "check")]
            for dtype in study.dtypes:
                for backend in get_mechanism(name).backends() or ("",):
                    rows.append((self._row_id(ctx, "mechanism", name, backend, dtype), "check"))
            out.append(Task(name, tuple(rows), ("mechanism", name)))
        return out

    def describe(self, ctx: RunContext, n_tasks: int) -> str:
        s = ctx.study
        return (
            f"doctor on {ctx.device} ({ctx.env['device_name']}, {ctx.threads} threads): the environment, "
            "then "
            f"{n_tasks - 1} mechanisms in {', '.join(s.dtypes)} against their reference"
        )

    def _base(self, ctx: RunContext, pid: str, part: str, item: str) -> dict[str, Any]:
        return {
            "point_id": pid,
            "env_id": ctx.env_id,
            "study": ctx.study.name,
            "part": part,
            "item": item,
            "device": ctx.device,
            "pass": "check",
            "protocol_id": ctx.protocol_id,
            "threads": ctx.threads,
        }

    def _plan(self, ctx: RunContext, task: Task) -> list[dict[str, Any]]:
        """The base row of each of the task's rows, in order, their identity filled in."""
        part, name = task.payload
        rows = []
        if part == ENVIRONMENT:
            for (pid, _), probe in zip(task.rows, PROBES):
                rows.append({**self._base(ctx, pid, part, probe), "check": probe, "backend": "", "dtype": ""})
            return rows
        cls = get_mechanism(name)
        ref_backend = cls.reference_backend or ""
        pids = iter(pid for pid, _ in task.rows)
        rows.append(
            {
                **self._base(ctx, next(pids), part, name),
                "backend": ref_backend,
                "check": "gradcheck",
                "dtype": "float64",
                "device": "cpu",
            }
        )
        for dtype in ctx.study.dtypes:
            for backend in cls.backends() or ("",):
                rows.append(
                    {
                        **self._base(ctx, next(pids), part, name),
                        "backend": backend,
                        "check": "vs reference",
                        "dtype": dtype,
                    }
                )
        return rows

    def error_rows(
        self, ctx: RunContext, task: Task, missing: list[str], message: str
    ) -> list[dict[str, Any]]:
        # every row of a task has pass "check": the missing ones are those the worker had not written
        return [_close(r, "error", [message]) for r in self._plan(ctx, task)]

    def measure(self, ctx: RunContext, task: Task) -> None:
        rows = self._plan(ctx, task)
        part, name = task.payload
        measured = _environment(ctx, rows) if part == ENVIRONMENT else _mechanism(ctx, name, rows)
        with warnings.catch_warnings():  # FlexAttention's and NATTEN's advice is not the doctor's finding
            warnings.simplefilter("ignore")
            for row in measured:
                emit(("row", row))

    def manifest(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "protocol_text": {
                "checks": "the reference (mechanism with its reference_backend, float64, CPU) has its "
                "gradients checked against central differences (one random direction per tensor); each "
                "backend and dtype on the device is compared with it, forward (eval, no gradient) and "
                "backward (train, the gradients of the input and every parameter of sum(out * g))",
            }
        }

    def summary_table(self, rows: list[dict[str, Any]]) -> str:
        return environment_table(rows) + "\n\n" + mechanism_table(rows)


REFERENCE_ROW = "(reference)"  # the row id's backend of the reference row, whatever its backend is called


def _environment(ctx: RunContext, rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    found = _probe_rows(ctx)
    for row in rows:
        status, detail, why = found[row["item"]]
        row["detail"] = detail
        yield _close(row, status, [why] if why else [])


def _mechanism(ctx: RunContext, name: str, rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The reference row, then one row per (dtype, backend), each yielded as soon as it is checked."""
    study = ctx.study
    device = torch.device(ctx.device)
    cls = get_mechanism(name)
    ref_row, checks = rows[0], rows[1:]
    try:
        torch.manual_seed(study.seed)
        reference = cls(DIM, HEADS, **_reference_kwargs(cls))
        reference.check_input(SIZE, SIZE)
    except Exception as exc:  # noqa: BLE001 - a mechanism that does not build fails every row
        why = f"build {name}({DIM}, {HEADS}) failed: {message(exc)}"
        for row in rows:
            yield _close(row, "error", [why])
        return
    state = copy.deepcopy(reference.state_dict())
    ref64 = copy.deepcopy(reference).double()
    gen = torch.Generator().manual_seed(study.seed)
    x = torch.randn(BATCH, SIZE, SIZE, DIM, generator=gen, dtype=torch.float64)
    g = torch.randn(BATCH, SIZE, SIZE, DIM, generator=gen, dtype=torch.float64)

    try:
        ref64.eval()
        with torch.no_grad():
            ref_out = ref64(x)
        ref_grads = _gradients(ref64, x, g)
        n = GRADCHECK["batch"]
        why = _gradcheck(ref64, x[:n].clone(), g[:n])
    except Exception as exc:  # noqa: BLE001 - the reference itself fails: nothing can be checked against it
        why = f"the reference fails: {message(exc)}"
        for row in rows:
            yield _close(row, "error", [why])
        return
    ref_row["detail"] = "float64 on the CPU; gradients of the input and every parameter checked numerically"
    yield _close(ref_row, "error" if why else "ok", [why] if why else [])

    defaults: dict[str, dict[str, str]] = {}
    for row in checks:
        dtype_name, backend = row["dtype"], row["backend"]
        dtype = STUDY_DTYPES[dtype_name]
        module = xd = None
        errors: list[str] = []
        try:
            if dtype_name not in defaults:
                defaults[dtype_name] = _defaults(cls, device, dtype, x.to(device, dtype), state)
            row["default"] = defaults[dtype_name].get(backend, "")
            module = cls(DIM, HEADS, **({"backend": backend} if backend else {}))
            module.load_state_dict(state)
            module.to(device, dtype)
            xd = x.to(device, dtype)
            skip = module.backend_unavailable(xd, backend, False) if backend else None
            if skip:
                yield _close(row, "skipped", [f"{backend}: {skip}"])
                continue
            no_backward = module.backend_unavailable(xd, backend, True) if backend else None
            tol = TOLERANCE[dtype_name]
            row.update(forward_tolerance=tol["forward"], backward_tolerance=tol["backward"])
            with no_tf32():
                module.eval()
                with torch.no_grad():
                    out = module(xd)
                if tuple(out.shape) != tuple(xd.shape):
                    raise ValueError(
                        f"the output has shape {tuple(out.shape)}, not the input's {tuple(xd.shape)}"
                    )
                row["forward_error"] = fwd = relative_error(out, ref_out)
                if not fwd <= tol["forward"]:
                    errors.append(f"forward differs from the reference: error {fwd:.3g} > {tol['forward']:g}")
                if no_backward:
                    row["detail"] = f"backward not checked: {no_backward}"
                else:
                    bwd, worst, why = _backward_error(_gradients(module, xd, g), ref_grads)
                    row.update(backward_error=bwd, backward_worst=worst)
                    if why:
                        errors.append(why)
                    elif not bwd <= tol["backward"]:
                        errors.append(
                            f"backward differs from the reference: error {bwd:.3g} in the gradient of "
                            f"{worst} "
                            f"> {tol['backward']:g}"
                        )
            row.update(_time_forward(module, xd, device, study.quick))
        except Exception as exc:  # noqa: BLE001 - the backend fails on this device: a FAIL row, named
            errors.append(message(exc))
        finally:
            module = xd = None
            if device.type == "cuda":
                free(device, collect=False)
        yield _close(row, "error" if errors else "ok", errors)


def _num(value: Any, fmt: str) -> str:
    v = number(value)
    return "" if v is None else format(v, fmt)


def _text_table(columns: dict[str, list[Any]]) -> str:
    """A plain left-aligned table: {header: cells}."""
    cells = {h: ["" if c is None else str(c) for c in col] for h, col in columns.items()}
    widths = {h: max([len(h), *map(len, col)]) for h, col in cells.items()}
    lines = ["  ".join(h.ljust(widths[h]) for h in cells).rstrip()]
    for i in range(len(next(iter(cells.values()), []))):
        lines.append("  ".join(cells[h][i].ljust(widths[h]) for h in cells).rstrip())
    return "\n".join(lines)


def environment_table(rows: list[dict[str, Any]]) -> str:
    """The probes, one line each: verdict, probe, what it found or why it failed."""
    env = [r for r in rows if r.get("part") == ENVIRONMENT]
    return _text_table(
        {
            "": [r.get("verdict") or _verdict(str(r.get("status"))) for r in env],
            "probe": [r.get("item") for r in env],
            "found": [(r.get("detail") or r.get("error") or "")[:110] for r in env],
        }
    )


def mechanism_table(rows: list[dict[str, Any]]) -> str:
    """One line per (mechanism, backend, dtype): verdict, errors against tolerances, default, timing."""
    mech = [r for r in rows if r.get("part") == "mechanism"]

    def err(r: dict[str, Any], key: str) -> str:
        value = _num(r.get(f"{key}_error"), ".1e")
        tol = _num(r.get(f"{key}_tolerance"), "g")
        return f"{value} / {tol}" if value and tol else value

    return _text_table(
        {
            "": [r.get("verdict") or _verdict(str(r.get("status"))) for r in mech],
            "mechanism": [r.get("item") for r in mech],
            "backend": [r.get("backend") or "-" for r in mech],
            "dtype": [r.get("dtype") for r in mech],
            "device": [r.get("device") for r in mech],
            "check": [r.get("check") for r in mech],
            "fwd err / tol": [err(r, "forward") for r in mech],
            "bwd err / tol": [err(r, "backward") for r in mech],
            "auto takes it for": [r.get("default") or "" for r in mech],
            "ms": [_num(r.get("median_ms"), ".2f") for r in mech],
            "note": [
                (r.get("error") or r.get("detail") or "")[:70]
                if r.get("check") != "gradcheck" or r.get("error")
                else ""
                for r in mech
            ],
        }
    )


# Workers read this module before a task starts: load the registered mechanisms then.
available_mechanisms()

KIND = DoctorKind()
