"""Peers studies: each mechanism timed against other implementations of it, in one process, interleaved.

Per point (mechanism, parameters, H, W, C, heads, batch, dtype), seeded with the study's seed:

1. build ours on CPU in fp32 and ask ``check_input(H, W)``; a ``ValueError`` makes the point's rows
   ``skipped`` with the reason. One ``randn`` input serves every pass.
2. Each peer (:mod:`kinds.peers.implementations`) is a task of its own (ours built again, with the same seed):
   build it for ours and the map, copy our weights into it (a
   ``ValueError`` from either: ``skipped``, the reason given). **The same function first**: both in
   eval mode, no gradient, fp32 on the run device (TF32 off), outputs within ``TOLERANCE['float32']``
   (``|ours - peer| <= tol + tol·|peer|`` everywhere); then, for bfloat16 or float16, cast copies of
   both, within that dtype's tolerance. Otherwise the peer's rows are ``error`` rows naming the
   largest difference: a ratio is never between two different functions.
3. Per pass: ``forward`` is eval mode under ``torch.no_grad()``; ``forward_backward`` is train mode,
   an input requiring grad, ``out.float().sum().backward()`` with gradients set to None first. A pass
   the peer cannot run there (``Peer.unavailable``) is ``skipped``. One untimed probe call of each
   (its output must have the input's shape and be finite), ``warmup`` untimed calls of each,
   alternating, then ``repeats`` pairs, interleaved: pair i times ours then the peer for even i, the
   peer then ours for odd i, so neither always runs second. A pair's ratio is ours / peer.

The row: medians of both sample lists (``ours_ms``, ``peer_ms``), ``ratio`` = the median of the pair
ratios and ``ratio_iqr`` their inter-quartile range, both sample lists, the noise guard's columns
around the interleaved timing, and ``unstable`` (the ratio's IQR above 10 % of it, or other work or
steal during the timing).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from attnbench.kind import Kind, RunContext, Task, config_id
from attnbench.kinds._common import (
    NOISE_DOCS,
    check_output,
    finish,
    free,
    message,
    no_tf32,
    number,
    table_text,
)
from attnbench.kinds.peers.implementations import get_peer
from attnbench.kinds.peers.schema import PeerPoint
from attnbench.noise import Snapshot, noise_columns, snapshot, unstable_reasons
from attnbench.registry import available_mechanisms, build_mechanism
from attnbench.study import DTYPES
from attnbench.timing import gc_paused
from attnbench.worker import emit

__all__ = ["COLUMN_DOCS", "KIND", "TOLERANCE", "peer_point_id", "time_interleaved"]

# Outputs must agree within tol + tol·|peer|: 1e-5 in fp32 (where the function is checked), and about
# four times the dtype's rounding step at 1 in bfloat16 (2^-7) and float16 (2^-10), whose roundings
# the two implementations take at different places.
TOLERANCE = {"float32": 1e-5, "bfloat16": 4 * 2.0**-7, "float16": 4 * 2.0**-10}

COLUMN_DOCS = {
    "point_id": "hash of the point's full config (mechanism params, peer, shape, batch, dtype, pass, device, "
    "protocol) and the environment key; the resume key",
    "env_id": "key into manifest.json 'environments'",
    "study": "study name",
    "mechanism": "registered mechanism name (ours)",
    "params": "JSON of the mechanism parameters the study gives (defaults fill the rest)",
    "peer": "the peer's name in attnbench.kinds.peers.implementations (what it is: manifest.json 'peers')",
    "H": "input height (tokens)",
    "W": "input width (tokens)",
    "C": "channels (dim)",
    "num_heads": "attention heads",
    "batch": "batch size of the timed calls",
    "dtype": "dtype ours and the peer were cast to (no autocast)",
    "device": "cpu or cuda",
    "pass": "forward (eval, no_grad) or forward_backward (train, loss = out.float().sum(), backward)",
    "status": "ok | skipped (ours or the peer cannot run this point; reason in error) | error (message "
    "in error; a peer computing another function is an error)",
    "error": "why the row is skipped or failed; empty when ok",
    "max_diff_fp32": "max |ours - peer| of the outputs in fp32 on the device, before timing",
    "max_diff": "max |ours - peer| of the outputs at the row's dtype (= max_diff_fp32 in float32)",
    "tolerance": "the row's dtype's tolerance: |ours - peer| <= tolerance·(1 + |peer|) everywhere",
    "ours_ms": "median of ours' samples, milliseconds, at the row's batch",
    "peer_ms": "median of the peer's samples, milliseconds",
    "ratio": "median over the interleaved pairs of ours / peer (< 1: ours is faster)",
    "ratio_iqr": "inter-quartile range (p75 - p25) of the pair ratios",
    "ours_iqr_ms": "inter-quartile range of ours' samples, milliseconds",
    "peer_iqr_ms": "inter-quartile range of the peer's samples, milliseconds",
    "n_pairs": "number of interleaved pairs timed",
    "ours_samples_ms": "JSON list of ours' samples in pair order, milliseconds",
    "peer_samples_ms": "JSON list of the peer's samples in pair order, milliseconds",
    **{k: v for k, v in NOISE_DOCS.items() if k != "unstable"},
    "unstable": "1 when the ratio cannot be trusted (its IQR > 10% of it, other work >= 0.5 cores, or "
    "steal > 2%), else 0; empty when nothing was timed",
    "timestamp": "UTC time the row was written",
}
_last_timed: list[Snapshot] = []  # the end of this process's previous timed row (the noise window)


def peer_point_id(
    point: PeerPoint, peer: str, pass_: str, device: str, proto: dict[str, Any], env_key: dict[str, Any]
) -> str:
    """Hash of the point's full configuration (defaults included), the peer, pass, protocol, environment."""
    config = {
        "kind": "peers",
        "mechanism": point.mechanism,
        "params": point.full_params(),
        "peer": peer,
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
    return config_id(config)


def time_interleaved(
    a: Callable[[], object],
    b: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 20,
    max_time_s: float | None = None,
    min_repeats: int = 3,
) -> tuple[list[float], list[float]]:
    """Samples of ``a`` and ``b`` in milliseconds, timed in interleaved pairs.

    ``warmup`` untimed calls of each, alternating (stopped after one each once ``max_time_s`` is
    spent), then ``repeats`` pairs (fewer once ``max_time_s`` is spent, never fewer than
    ``min_repeats``): a then b for even pairs, b then a for odd ones. On CUDA each call is timed with
    its own pair of events, synchronized before the next; on CPU with ``time.perf_counter``. The
    garbage collector is paused while sampling.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    start = time.perf_counter()
    for _ in range(warmup):
        a()
        b()
        if max_time_s is not None and time.perf_counter() - start >= max_time_s:
            break
    if cuda:
        torch.cuda.synchronize(dev)

    def sample(fn: Callable[[], object]) -> float:
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    out_a: list[float] = []
    out_b: list[float] = []
    start = time.perf_counter()
    with gc_paused():
        for i in range(repeats):
            if i % 2 == 0:
                out_a.append(sample(a))
                out_b.append(sample(b))
            else:
                out_b.append(sample(b))
                out_a.append(sample(a))
            spent = time.perf_counter() - start
            if max_time_s is not None and len(out_a) >= min_repeats and spent >= max_time_s:
                break
    return out_a, out_b


def compare(ours: nn.Module, peer: nn.Module, x: torch.Tensor, tolerance: float) -> tuple[float, str | None]:
    """(max |ours - peer|, why they differ or None) of one forward of each in eval mode, no gradient."""
    ours.eval()
    peer.eval()
    with torch.no_grad(), no_tf32():
        a, b = ours(x), peer(x)
    for who, out in (("ours", a), ("the peer", b)):
        bad = check_output(out, tuple(x.shape))
        if bad is not None:
            return float("nan"), f"{who}: {bad}"
    a, b = a.float(), b.float()
    diff = (a - b).abs()
    worst = float(diff.max())
    if bool((diff <= tolerance * (1 + b.abs())).all()):
        return worst, None
    return worst, (
        f"the peer computes a different function: max |ours - peer| = {worst:.3g} at {str(x.dtype)[6:]} "
        f"(tolerance {tolerance:g}·(1 + |peer|)); nothing was timed"
    )


def _make_step(module: nn.Module, x: torch.Tensor, pass_: str, keep: list[Any]) -> Callable[[], None]:
    """The call to time for a pass; the first call's output is put in ``keep`` (the probe checks it)."""
    if pass_ == "forward":
        module.eval()

        def step() -> None:
            with torch.no_grad():
                out = module(x)
            if not keep:
                keep.append(out)

        return step
    module.train()
    x_grad = x.detach().requires_grad_(True)

    def step_backward() -> None:
        module.zero_grad(set_to_none=True)
        x_grad.grad = None
        out = module(x_grad)
        if not keep:
            keep.append(out.detach())
        out.float().sum().backward()

    return step_backward


def _quartiles(values: list[float]) -> tuple[float, float]:
    """(median, p75 - p25)."""
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float(q50), float(q75 - q25)


class PeersKind(Kind):
    name = "peers"

    def columns(self, study: Any) -> dict[str, str]:
        return dict(COLUMN_DOCS)

    def protocol(self, study: Any, threads: int) -> dict[str, Any]:
        return {
            "timing": "interleaved pairs",
            "repeats": study.repeats,
            "warmup": study.warmup,
            "max_time_s": study.max_time_s,
            "threads": threads,
            "seed": study.seed,
            "tolerance": TOLERANCE,
        }

    def tasks(self, ctx: RunContext) -> list[Task]:
        """One task per (point, peer): ours and that peer, timed in each pass."""
        proto, key = ctx.protocol, ctx.env_key
        out, seen = [], set()
        for point in ctx.study.points():
            for peer in point.peers:
                rows = tuple(
                    (peer_point_id(point, peer, p, ctx.device, proto, key), p) for p in ctx.study.passes
                )
                if rows in seen:
                    continue
                seen.add(rows)
                out.append(Task(f"{point.label} vs {peer}", rows, (point, peer)))
        return out

    def describe(self, ctx: RunContext, n_tasks: int) -> str:
        s = ctx.study
        return (
            f"peers study {s.name!r}: {n_tasks} (point, peer) pairs x {len(s.passes)} passes = "
            f"{n_tasks * len(s.passes)} rows on {ctx.device} ({ctx.env['device_name']}, "
            f"{ctx.threads} threads)"
        )

    def base_row(self, ctx: RunContext, point: PeerPoint, peer: str, pass_: str, pid: str) -> dict[str, Any]:
        return {
            "point_id": pid,
            "env_id": ctx.env_id,
            "study": ctx.study.name,
            "mechanism": point.mechanism,
            "params": json.dumps(dict(point.params), sort_keys=True, default=repr),
            "peer": peer,
            "H": point.H,
            "W": point.W,
            "C": point.dim,
            "num_heads": point.num_heads,
            "batch": point.batch,
            "dtype": point.dtype,
            "device": ctx.device,
            "pass": pass_,
            "protocol_id": ctx.protocol_id,
            "threads": ctx.threads,
        }

    def error_rows(
        self, ctx: RunContext, task: Task, missing: list[str], message: str
    ) -> list[dict[str, Any]]:
        point, peer = task.payload
        ids = dict((p, pid) for pid, p in task.rows)
        return [finish(self.base_row(ctx, point, peer, p, ids[p]), "error", [message]) for p in missing]

    def measure(self, ctx: RunContext, task: Task) -> None:
        for row in _measure_task(self, ctx, task):
            emit(("row", row))

    def manifest(self, ctx: RunContext) -> dict[str, Any]:
        names = {(p.mechanism, peer) for p in ctx.study.points() for peer in p.peers}
        return {
            "peers": {f"{m}: {n}": get_peer(m, n).about for m, n in sorted(names)},
            "protocol_text": {
                "passes": list(ctx.study.passes),
                "equivalence": "before timing, ours and the peer (our weights copied in) run one forward in "
                "eval mode without gradient, fp32 on the device, TF32 off: |ours - peer| <= tol·(1 + |peer|) "
                "everywhere with tol = tolerance['float32'], then at the row's dtype with its tolerance; "
                "otherwise the row is an error",
                "latency": "one untimed probe call each (output checked: the input's shape, finite), "
                "`warmup` untimed calls each, alternating, then `repeats` interleaved pairs (ours then peer "
                "on even pairs, peer then ours on odd ones; fewer pairs once max_time_s is spent, at least "
                "3); CUDA events per call on cuda, time.perf_counter on cpu with "
                "torch.set_num_threads(threads); ratio = median of the pair ratios ours / peer, with their "
                "IQR",
            },
        }

    def summary_table(self, rows: list[dict[str, Any]]) -> str:
        def num(r: dict[str, Any], name: str, digits: int = 3) -> float | None:
            value = number(r.get(name))
            return None if value is None else round(value, digits)

        return table_text(
            {
                "mechanism": [r.get("mechanism") for r in rows],
                "params": [r.get("params") if r.get("params") != "{}" else "" for r in rows],
                "peer": [r.get("peer") for r in rows],
                "HxW": [f"{r.get('H')}x{r.get('W')}" for r in rows],
                "C/h": [f"{r.get('C')}/{r.get('num_heads')}" for r in rows],
                "dtype": [r.get("dtype") for r in rows],
                "pass": [r.get("pass") for r in rows],
                "status": [r.get("status") for r in rows],
                "ours ms": [num(r, "ours_ms", 2) for r in rows],
                "peer ms": [num(r, "peer_ms", 2) for r in rows],
                "ratio": [num(r, "ratio") for r in rows],
                "IQR": [num(r, "ratio_iqr") for r in rows],
                "note": [(r.get("error") or r.get("unstable_why") or "")[:60] for r in rows],
            }
        )


def _timed(ctx: RunContext, row: dict[str, Any], a: Callable[[], None], b: Callable[[], None]) -> None:
    """Interleaved samples of ours (a) and the peer (b) into ``row``, with the noise guard."""
    study = ctx.study
    before = snapshot()
    ours, peer = time_interleaved(
        a, b, device=ctx.device, warmup=study.warmup, repeats=study.repeats, max_time_s=study.max_time_s
    )
    after = snapshot()
    window = _last_timed[0] if _last_timed and before.wall - _last_timed[0].wall < 5.0 else None
    row.update(noise_columns(before, after, window))
    _last_timed[:] = [after]
    ratio, ratio_iqr = _quartiles([x / y for x, y in zip(ours, peer)])
    ours_ms, ours_iqr = _quartiles(ours)
    peer_ms, peer_iqr = _quartiles(peer)
    row.update(
        ours_ms=round(ours_ms, 6),
        peer_ms=round(peer_ms, 6),
        ratio=round(ratio, 6),
        ratio_iqr=round(ratio_iqr, 6),
        ours_iqr_ms=round(ours_iqr, 6),
        peer_iqr_ms=round(peer_iqr, 6),
        n_pairs=len(ours),
        ours_samples_ms=json.dumps([round(s, 6) for s in ours]),
        peer_samples_ms=json.dumps([round(s, 6) for s in peer]),
    )
    why = unstable_reasons({**row, "latency_ms": ratio, "latency_iqr_ms": ratio_iqr})
    row.update(unstable=int(bool(why)), unstable_why="; ".join(why) or None)


def _probe(step: Callable[[], None], keep: list[Any], shape: tuple[int, ...]) -> str | None:
    """Call ``step`` once untimed; why its output cannot be timed, or None."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        return message(exc)
    bad = check_output(keep[0] if keep else None, shape)
    keep[:] = [None]  # checked; keep no output alive, and take no more
    return bad


def _measure_peer(
    ctx: RunContext,
    point: PeerPoint,
    ours: nn.Module,
    x: torch.Tensor,
    peer_name: str,
    rows: dict[str, dict[str, Any]],
):
    """Rows of ours against one peer, one per pass (``rows``: pass -> base row)."""
    device, dtype = torch.device(ctx.device), DTYPES[point.dtype]
    entry = get_peer(point.mechanism, peer_name)
    try:
        torch.manual_seed(ctx.study.seed + 1)  # the peer's own initialisation, overwritten by ours
        peer = entry.build(ours, point.H, point.W)
        entry.copy_weights(ours, peer)
    except ValueError as exc:  # the peer cannot compute ours' function here
        for row in rows.values():
            yield finish(row, "skipped", [f"{peer_name}: {message(exc)}"])
        return
    except Exception as exc:  # noqa: BLE001 - recorded in the rows
        for row in rows.values():
            yield finish(row, "error", [f"{peer_name}: build: {message(exc)}"])
        return

    failed = None
    try:
        peer.to(device)
        worst, why = compare(ours, peer, x, TOLERANCE["float32"])
        for row in rows.values():
            row.update(max_diff_fp32=worst, max_diff=worst, tolerance=TOLERANCE[point.dtype])
        ours_t, peer_t, x_t = ours, peer, x
        if why is None and dtype != torch.float32:
            ours_t = copy.deepcopy(ours).to(dtype)
            peer_t = peer.to(dtype)
            x_t = x.to(dtype)
            worst, why = compare(ours_t, peer_t, x_t, TOLERANCE[point.dtype])
            for row in rows.values():
                row["max_diff"] = worst
        failed = why
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory, or the peer fails to run
        failed = f"{peer_name}: equivalence check: {message(exc)}"
    if failed is not None:
        peer = ours_t = peer_t = None
        free(device)
        for row in rows.values():
            yield finish(row, "error", [failed])
        return

    for p, row in rows.items():
        why = entry.unavailable(ours, ctx.device, dtype, p)
        if why is not None:
            yield finish(row, "skipped", [f"{peer_name}: {why}"])
            continue
        errors = []
        keep_a: list[Any] = []
        keep_b: list[Any] = []
        a = _make_step(ours_t, x_t, p, keep_a)
        b = _make_step(peer_t, x_t, p, keep_b)
        for who, step, keep in (("ours", a, keep_a), (peer_name, b, keep_b)):
            bad = _probe(step, keep, tuple(x_t.shape))
            if bad is not None:
                errors.append(f"{p}: {who}: {bad}")
        if not errors:
            try:
                _timed(ctx, row, a, b)
            except Exception as exc:  # noqa: BLE001 - recorded in the row
                errors.append(f"{p}: timing: {message(exc)}")
        del a, b
        for module in (ours_t, peer_t):
            module.zero_grad(set_to_none=True)
        if errors:
            free(device)
        yield finish(row, "error" if errors else "ok", errors)
    del peer, peer_t, ours_t
    free(device, collect=False)


def _measure_task(kind: PeersKind, ctx: RunContext, task: Task):
    """Rows of one (point, peer), one per pass, yielded as soon as each is measured."""
    study, device = ctx.study, torch.device(ctx.device)
    point, peer = task.payload
    rows = {p: kind.base_row(ctx, point, peer, p, pid) for pid, p in task.rows}

    torch.manual_seed(study.seed)
    try:
        ours = build_mechanism(point.mechanism, point.dim, point.num_heads, **dict(point.params))
        ours.check_input(point.H, point.W)
    except ValueError as exc:  # the point is impossible for this mechanism
        for row in rows.values():
            yield finish(row, "skipped", [message(exc)])
        return
    except Exception as exc:  # noqa: BLE001 - a failing build is an error row, the run goes on
        for row in rows.values():
            yield finish(row, "error", [f"build: {message(exc)}"])
        return

    try:
        ours.to(device)
        gen = torch.Generator().manual_seed(study.seed)
        x = torch.randn(point.batch, point.H, point.W, point.dim, generator=gen).to(device)
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory: recorded, the run goes on
        failed = message(exc)
        ours = None
        free(device)
        for row in rows.values():
            yield finish(row, "error", [failed])
        return

    try:
        yield from _measure_peer(ctx, point, ours, x, peer, rows)
    finally:
        del ours, x
        free(device, collect=False)


# Workers read this module before a task starts: load the registered mechanisms then, so that their
# import is not charged to the first point's time limit.
available_mechanisms()

KIND = PeersKind()
