"""Run a validated study: every point and pass measured, each row saved as soon as it exists.

Per point (mechanism, parameters, H, W, C, heads, batch, dtype), seeded with the study's seed:

1. build the mechanism on CPU in fp32 and ask ``check_input(H, W)``; a ``ValueError`` from either
   makes the point's rows ``skipped`` with the reason;
2. ``params``: the number of parameter elements;
3. ``flops``: :func:`attnbench.count_flops` of one forward at batch 1 in fp32 on the run device
   (fvcore MACs, FlopCounterMode cross-check halved to MACs, uncounted operators), and the sum of
   ``analytic_flops(H, W)``; counted once per shape and shared by both pass rows;
4. the module and a ``randn`` input are cast to the study's device and dtype (no autocast), then
   per pass: ``forward`` is eval mode under ``torch.no_grad()``; ``forward_backward`` is train
   mode, input requiring grad, ``out.float().sum().backward()`` with gradients set to None first.
   One untimed probe call first (so a missing backward becomes an error row without timing),
   then latency (:func:`attnbench.timing.time_function`) and peak memory
   (:func:`attnbench.memory.peak_memory`).

An exception in a point (including out-of-memory) becomes a row with ``status = error`` and the
message; memory is freed (``gc.collect``, ``torch.cuda.empty_cache``) and the run goes on.
Ctrl-C saves what was measured, says how to resume and returns 130.

Resuming: rows whose ``point_id`` is already ``ok`` or ``skipped`` are not measured again;
``error`` rows are retried (errors are often transient, or fixed since) and replaced in place.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import importlib
import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from torch import nn
from tqdm import tqdm

from attnbench import __version__
from attnbench.environment import environment_id, environment_key
from attnbench.flops import count_flops
from attnbench.memory import METHODS as MEMORY_METHODS
from attnbench.memory import module_bytes, peak_memory, tensor_bytes
from attnbench.registry import build_mechanism, get_mechanism
from attnbench.results import BASE_COLUMNS, COLUMN_DOCS, MEASURE_COLUMNS, ResultsStore, move_aside
from attnbench.study import DTYPES, Point, Study
from attnbench.timing import fixed_threads, time_function

if TYPE_CHECKING:
    from attnbench.executors import Executor

__all__ = ["EXIT_INTERRUPTED", "default_run_dir", "param_column", "point_id", "run_study"]

EXIT_INTERRUPTED = 130
_ERROR_CHARS = 500


def default_run_dir(study: Study) -> Path:
    """``results/<study name>`` under the current directory."""
    return Path("results") / study.name


def param_column(name: str) -> str:
    """The CSV column of a mechanism parameter (prefixed where it would clash with a fixed column)."""
    return f"param_{name}" if name in BASE_COLUMNS or name in MEASURE_COLUMNS else name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine shows in CPU timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _free(device: torch.device, collect: bool = True) -> None:
    """Release memory after a point: a full garbage collection (after errors, whose tracebacks
    may hold tensors in cycles) and the CUDA cache."""
    if collect:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def protocol(study: Study, threads: int) -> dict[str, Any]:
    """How every number of the study is measured; part of each ``point_id``."""
    return {
        "measure": sorted(study.measure),
        "repeats": study.repeats,
        "warmup": study.warmup,
        "max_time_s": study.max_time_s,
        "threads": threads,
        "seed": study.seed,
    }


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
    blob = json.dumps(config, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class _Context:
    """What every point of one run shares."""

    def __init__(self, study: Study, device: torch.device, threads: int, env: dict[str, Any]) -> None:
        self.study = study
        self.device = device
        self.threads = threads
        self.env_key = environment_key(env)
        self.env_id = environment_id(env)
        self.protocol = protocol(study, threads)
        self.flops_cache: dict[tuple, dict[str, Any]] = {}
        self.param_columns: list[str] = []
        for spec in study.mechanisms:
            for name in get_mechanism(spec.name).hyperparameters():
                col = param_column(name)
                if col not in self.param_columns:
                    self.param_columns.append(col)

    def point_id(self, point: Point, pass_: str) -> str:
        return point_id(point, pass_, self.device.type, self.protocol, self.env_key)

    def base_row(self, point: Point, pass_: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "point_id": self.point_id(point, pass_),
            "env_id": self.env_id,
            "study": self.study.name,
            "mechanism": point.mechanism,
            "H": point.H,
            "W": point.W,
            "C": point.dim,
            "num_heads": point.num_heads,
            "batch": point.batch,
            "dtype": point.dtype,
            "device": self.device.type,
            "pass": pass_,
        }
        for name, value in point.full_params().items():
            row[param_column(name)] = "None" if value is None else value
        return row


def _make_step(module: nn.Module, x: torch.Tensor, pass_: str):
    if pass_ == "forward":
        module.eval()

        def step() -> None:
            with torch.no_grad():
                module(x)

        return step, x
    module.train()
    x_grad = x.detach().requires_grad_(True)

    def step_backward() -> None:
        module.zero_grad(set_to_none=True)
        x_grad.grad = None
        module(x_grad).float().sum().backward()

    return step_backward, x_grad


def _count_flops(ctx: _Context, point: Point, module: nn.Module) -> dict[str, Any]:
    """FLOP columns of one forward at batch 1 in fp32 on the run device, cached per shape."""
    params = tuple(sorted(point.full_params().items()))
    key = (point.mechanism, params, point.H, point.W, point.dim, point.num_heads)
    if key in ctx.flops_cache:
        return ctx.flops_cache[key]
    out: dict[str, Any] = {}
    errors = []
    counted = None
    try:
        counted = module if ctx.device.type == "cpu" else copy.deepcopy(module).to(ctx.device)
        x1 = torch.randn(1, point.H, point.W, point.dim, device=ctx.device)
        report = count_flops(counted, x1)
        out.update(
            flops=report.total,
            flops_torch=report.torch_total,
            flops_uncounted=json.dumps(report.uncounted, sort_keys=True),
        )
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"flops: {_message(exc)}")
    try:
        out["flops_analytic"] = sum(module.analytic_flops(point.H, point.W).values())
    except NotImplementedError:
        out["flops_analytic"] = None
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"flops_analytic: {_message(exc)}")
    del counted
    out["_errors"] = errors
    ctx.flops_cache[key] = out
    return out


def measure_speed(
    step: Callable[[], None],
    study: Any,
    device: torch.device,
    batch: int,
    held_bytes: Callable[[], int],
    row: dict[str, Any],
    errors: list[str],
) -> None:
    """Latency (``study.measure`` has latency) and peak memory (has memory) of ``step`` into ``row``.

    ``study`` supplies ``measure``, ``warmup``, ``repeats`` and ``max_time_s``; ``held_bytes`` is
    called right before the memory call and gives the bytes held before it (weights, input).
    Failures are appended to ``errors``; nothing raises.
    """
    if "latency" in study.measure:
        try:
            t = time_function(
                step, device=device, warmup=study.warmup, repeats=study.repeats, max_time_s=study.max_time_s
            )
            row.update(
                latency_ms=round(t.median_ms, 6),
                latency_iqr_ms=round(t.iqr_ms, 6),
                latency_n=len(t.samples_ms),
                latency_samples_ms=json.dumps([round(s, 6) for s in t.samples_ms]),
                throughput=round(t.throughput(batch), 4),
            )
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"latency: {_message(exc)}")
    if "memory" in study.measure:
        try:
            mem = peak_memory(step, device=device, held_bytes=held_bytes())
            row["mem_method"] = mem.method
            if mem.peak_mib is None:
                errors.append(f"memory: {mem.note}")
            else:
                row["peak_mem_mb"] = round(mem.peak_mib, 4)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"memory: {_message(exc)}")


def _measure_point(ctx: _Context, point: Point, passes: list[str]) -> Iterator[dict[str, Any]]:
    """Rows of one point, one per pass in ``passes``, yielded as soon as each is measured."""
    study, device = ctx.study, ctx.device
    rows = {p: ctx.base_row(point, p) for p in passes}

    def finish(row: dict[str, Any], status: str, errors: list[str]) -> dict[str, Any]:
        row.update(status=status, error="; ".join(errors) or None, timestamp=_now())
        return row

    torch.manual_seed(study.seed)
    try:
        module = build_mechanism(point.mechanism, point.dim, point.num_heads, **dict(point.params))
        module.check_input(point.H, point.W)
    except ValueError as exc:  # the point is impossible for this mechanism
        reason = _message(exc)
        for p in passes:
            yield finish(rows[p], "skipped", [reason])
        return
    except Exception as exc:  # noqa: BLE001 - a failing build is an error row, the run goes on
        reason = f"build: {_message(exc)}"
        _free(device)
        for p in passes:
            yield finish(rows[p], "error", [reason])
        return

    shared: dict[str, Any] = {}
    shared_errors: list[str] = []
    if "params" in study.measure:
        shared["params"] = sum(p.numel() for p in module.parameters())
    if "flops" in study.measure:
        flops = _count_flops(ctx, point, module)
        shared.update({k: v for k, v in flops.items() if k != "_errors"})
        shared_errors.extend(flops["_errors"])
    for row in rows.values():
        row.update(shared)

    run_passes = "latency" in study.measure or "memory" in study.measure
    if not run_passes:
        for p in passes:
            yield finish(rows[p], "error" if shared_errors else "ok", list(shared_errors))
        return

    failed = None
    try:
        module.to(device=device, dtype=DTYPES[point.dtype])
        gen = torch.Generator().manual_seed(study.seed)
        x = torch.randn(point.batch, point.H, point.W, point.dim, generator=gen)
        x = x.to(device=device, dtype=DTYPES[point.dtype])
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory: recorded, the run goes on
        failed = _message(exc)
    if failed is not None:
        module = x = None
        _free(device)
        for p in passes:
            yield finish(rows[p], "error", [*shared_errors, failed])
        return

    try:
        for p in passes:
            row, errors = rows[p], list(shared_errors)
            step, x_used = _make_step(module, x, p)
            try:
                step()  # probe: a missing backward or an OOM fails here, untimed
            except Exception as exc:  # noqa: BLE001 - recorded in the row
                errors.append(f"{p}: {_message(exc)}")
            else:

                def held_bytes(m: nn.Module = module, x_in: torch.Tensor = x_used) -> int:
                    # gradients dropped: the memory call starts from weights + input only
                    m.zero_grad(set_to_none=True)
                    x_in.grad = None
                    return module_bytes(m) + tensor_bytes([x_in])

                measure_speed(step, study, device, point.batch, held_bytes, row, errors)
            del step, x_used
            module.zero_grad(set_to_none=True)
            if len(errors) > len(shared_errors):
                _free(device)
            yield finish(row, "error" if errors else "ok", errors)
    finally:
        del module, x
        _free(device, collect=False)


def _summary(rows: list[dict[str, str]], settings: dict[str, str]) -> str:
    """A table of ``rows``; ``settings`` maps point_id to the parameters the study set."""
    import pandas as pd

    if not rows:
        return "(no rows)"
    df = pd.DataFrame(rows)

    def num(col: str) -> pd.Series:
        return pd.to_numeric(df.get(col, pd.Series(dtype=float)), errors="coerce")

    table = pd.DataFrame(
        {
            "mechanism": df["mechanism"],
            "settings": df["point_id"].map(settings).fillna(""),
            "HxW": df["H"] + "x" + df["W"],
            "C/h": df["C"] + "/" + df["num_heads"],
            "batch": df["batch"],
            "dtype": df["dtype"],
            "pass": df["pass"],
            "status": df["status"],
            "GMACs(fvcore)": (num("flops") / 1e9).round(4),
            "params": num("params").astype("Int64"),
            "ms(median)": num("latency_ms").round(3),
            "IQR ms": num("latency_iqr_ms").round(3),
            "img/s": num("throughput").round(1),
            "peak MiB": num("peak_mem_mb").round(2),
            "note": df["error"].str.slice(0, 60),
        }
    )
    return table.to_string(index=False, na_rep="-")


def _write_report(run_dir: Path, err: TextIO) -> None:
    """Call ``attnbench.report.write_report(run_dir)`` if that module exists; never raise."""
    try:
        if importlib.util.find_spec("attnbench.report") is None:
            return
        report = importlib.import_module("attnbench.report")
        write_report = getattr(report, "write_report", None)
        if write_report is not None:
            write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - a report failure must never lose results
        print(f"attnbench: writing the report failed ({_message(exc)}); the results are safe", file=err)


def run_study(
    study: Study,
    *,
    out_dir: str | Path | None = None,
    fresh: bool = False,
    quiet: bool = False,
    report: bool = True,
    command: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    executor: Executor | None = None,
) -> int:
    """Measure every point of ``study`` into ``out_dir`` (default ``results/<name>``); returns the exit code.

    Args:
        study: a study from :func:`attnbench.study.load_study`.
        out_dir: the run folder.
        fresh: move an existing run folder aside to ``<folder>.old-<time>`` and start over.
        quiet: no progress bar and no summary table.
        report: afterwards call ``attnbench.report.write_report(run_dir)`` where that exists
            (a failure there is printed, never raised).
        command: the command line to record in the manifest and print for resuming.
        stdout, stderr: where to print (default: the process's).
        executor: where points are measured (:mod:`attnbench.executors`); default: this process.
            Rows, ``point_id`` keys and resuming are the same for every executor.

    Returns:
        0 when every point was visited (error rows included), 130 after Ctrl-C.

    Raises:
        attnbench.executors.ExecutorError: the executor cannot run the study (e.g. no Ray node fits).
    """
    if getattr(study, "kind", "sweep") == "models":  # a models table: attnbench.model_study
        from attnbench.model_study import run_models_study

        return run_models_study(
            study,
            out_dir=out_dir,
            fresh=fresh,
            quiet=quiet,
            report=report,
            command=command,
            stdout=stdout,
            stderr=stderr,
            executor=executor,
        )
    if getattr(study, "kind", "sweep") == "ablation":  # training runs: attnbench.ablation_study
        from attnbench.ablation_study import run_ablation_study

        return run_ablation_study(
            study,
            out_dir=out_dir,
            fresh=fresh,
            quiet=quiet,
            report=report,
            command=command,
            stdout=stdout,
            stderr=stderr,
            executor=executor,
        )
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(study)
    if fresh:
        moved = move_aside(run_dir)
        if moved is not None:
            print(f"attnbench: --fresh: moved the previous run folder to {moved}", file=out)
    device = torch.device(study.device)
    if executor is None:
        from attnbench.executors import LocalExecutor

        executor = LocalExecutor()
    resume_cmd = shlex.join(
        ["attnbench", "run", str(study.path), "--out", str(run_dir), "--device", study.requested_device]
        + executor.resume_args()
    )

    with executor.start(study, device) as setup, fixed_threads(setup.threads):
        threads, env = setup.threads, setup.env
        ctx = _Context(study, device, threads, env)
        store = ResultsStore(run_dir)
        store.add_param_columns(ctx.param_columns)
        store.flush()  # the CSV exists (header at least) from the start
        manifest = _start_manifest(store, study, ctx, env, command)
        run_record = manifest["runs"][-1]

        points = study.points()
        units = [(pt, p) for pt in points for p in study.passes]
        ids = {ctx.point_id(pt, p) for pt, p in units}
        done = sum(store.is_done(i) for i in ids)
        stale = sum(1 for r in store.rows if r["point_id"] not in ids)
        if not quiet:
            print(
                f"attnbench: study {study.name!r}: {len(points)} points x {len(study.passes)} passes = "
                f"{len(ids)} rows on {device.type} ({env['device_name']}, {threads} threads){setup.where} "
                f"-> {run_dir}",
                file=out,
            )
        if done and not quiet:
            print(f"attnbench: resuming: {done} rows already measured are kept", file=out)
        if stale:
            print(
                f"attnbench: note: {stale} rows in {store.csv_path} belong to another configuration "
                "(edited study or other machine); they are kept (--fresh starts over)",
                file=out,
            )

        jobs: list[tuple[Point, list[str]]] = []
        scheduled: set[str] = set()  # a point listed twice is measured once
        for point in points:
            todo = [
                p
                for p in study.passes
                if (pid := ctx.point_id(point, p)) not in scheduled and not store.is_done(pid)
            ]
            scheduled.update(ctx.point_id(point, p) for p in todo)
            if todo:
                jobs.append((point, todo))
        bar = tqdm(total=len(ids) - done, unit="row", disable=quiet, file=err, dynamic_ncols=True)
        rows = executor.run(ctx, jobs, describe=bar.set_description_str, manifest=manifest)
        try:
            for row in rows:
                store.add(row)
                run_record["rows_written"] += 1
                bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            run_record.update(status="interrupted", finished=_now(), load_average_end=_load_average())
            store.write_manifest(manifest)
            print(
                f"\nattnbench: interrupted; {len(store.rows)} rows are saved in {store.csv_path}\n"
                f"attnbench: resume with: {resume_cmd}",
                file=err,
            )
            return EXIT_INTERRUPTED
        finally:
            rows.close()  # stops what the executor still runs (Ray: cancels outstanding tasks)
        bar.close()
        run_record.update(status="completed", finished=_now(), load_average_end=_load_average())
        store.write_manifest(manifest)

    mine = [{c: r.get(c, "") for c in store.columns} for r in store.rows if r["point_id"] in ids]
    counts = {s: sum(r["status"] == s for r in mine) for s in ("ok", "skipped", "error")}
    if not quiet:
        settings = {ctx.point_id(pt, p): " ".join(f"{k}={v}" for k, v in pt.params) for pt, p in units}
        print(_summary(mine, settings), file=out)
    print(
        f"attnbench: {counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} errors; "
        f"results in {store.csv_path}",
        file=out,
    )
    if report:
        _write_report(run_dir, err)
    return 0


def _start_manifest(
    store: ResultsStore, study: Study, ctx: _Context, env: dict[str, Any], command: list[str] | None
) -> dict[str, Any]:
    manifest = store.read_manifest() or {"created": _now(), "environments": {}, "runs": []}
    manifest.update(
        attnbench_version=__version__,
        updated=_now(),
        study={
            "name": study.name,
            "description": study.description,
            "path": str(study.path),
            "sha256": study.sha256,
            "text": study.text,
        },
        device=ctx.device.type,
        requested_device=study.requested_device,
        threads=ctx.threads,
        protocol={
            **ctx.protocol,
            "passes": list(study.passes),
            "flops": "fvcore MACs (1 MAC = 1 FLOP) of one forward at batch 1 in fp32 on the run device; "
            "flops_torch = FlopCounterMode / 2",
            "latency": "untimed probe call, `warmup` untimed calls (fewer once max_time_s is spent, at least "
            "1), then `repeats` samples (fewer if "
            "max_time_s is spent, at least 3); CUDA events with synchronization on cuda, "
            "time.perf_counter on cpu with torch.set_num_threads(threads); median and IQR in ms",
            "memory": "one call after timing; see memory_methods",
        },
        memory_methods=MEMORY_METHODS,
        columns=COLUMN_DOCS,
    )
    manifest.setdefault("environments", {})[ctx.env_id] = env
    manifest.setdefault("runs", []).append(
        {
            "started": _now(),
            "finished": None,
            "status": "running",
            "env_id": ctx.env_id,
            "study_sha256": study.sha256,
            "command": command,
            "rows_written": 0,
            "load_average_start": _load_average(),
        }
    )
    store.write_manifest(manifest)
    return manifest
