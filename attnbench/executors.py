"""Where a study's points are measured: in this process (local) or as tasks on a Ray cluster.

The driver (:func:`attnbench.runner.run_study`) decides which points still need rows (resume),
hands them to an executor, and writes every row the executor yields to the results store; so the
store, the columns, the ``point_id`` keys and the resume rules are the same for every executor.

- :class:`LocalExecutor` (the default) measures the points one after the other in this process.
- :class:`RayExecutor` makes each point (all its passes, as one local step does) a Ray task.
  CUDA studies: one GPU per task, so one measuring task per GPU at a time; GPU workers serve a
  single task (``max_calls=1``), so a task never inherits another GPU's CUDA context. CPU
  studies: ``threads`` Ray CPUs per task and torch pinned to ``threads`` in the worker; tasks on
  one node still share its caches and memory bandwidth (start the node with ``--num-cpus`` equal
  to ``threads`` for one task at a time). Rows stream back as tasks finish. A task that raises
  or whose worker dies is retried once by Ray, then its passes become ``error`` rows; the study
  goes on. Before submitting, one probe task per eligible node collects its environment: the
  nodes must agree on the environment key (device name, torch and CUDA versions), which enters
  every ``point_id`` as on a local run, and each task checks its own node against it.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from attnbench.environment import collect_environment, environment_id, environment_key, physical_cpu_cores
from attnbench.registry import load_plugin
from attnbench.runner import _Context, _measure_point, _message, _now
from attnbench.study import Point, Study
from attnbench.timing import fixed_threads

__all__ = ["EXECUTORS", "Executor", "ExecutorError", "LocalExecutor", "RayExecutor", "Setup", "make_executor"]

EXECUTORS = ("local", "ray")
RAY_RETRIES = 1  # a failing task runs at most 1 + RAY_RETRIES times
PROBE_TIMEOUT_S = 300.0

Job = tuple[Point, list[str]]  # a point and the passes it still needs


class ExecutorError(RuntimeError):
    """The executor cannot run the study as asked (no cluster, no eligible node, mixed machines)."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """What an executor found before measuring.

    Attributes:
        threads: CPU intra-op threads every point is measured with (part of each ``point_id``).
        env: the environment record of the machines that measure (``collect_environment``).
        where: appended to the driver's first line, e.g. ``", via Ray on 2 nodes: a, b"``.
    """

    threads: int
    env: dict[str, Any]
    where: str = ""


class Executor(abc.ABC):
    """Measures jobs (point, passes) and yields their rows; the driver stores them."""

    name: str

    @abc.abstractmethod
    def start(self, study: Study, device: torch.device) -> contextlib.AbstractContextManager[Setup]:
        """A context holding whatever measuring needs (a cluster connection); yields the :class:`Setup`."""

    @abc.abstractmethod
    def run(
        self,
        ctx: _Context,
        jobs: list[Job],
        *,
        describe: Callable[[str], Any],
        manifest: dict[str, Any],
    ) -> Iterator[dict[str, Any]]:
        """Rows of ``jobs``, yielded as they are measured; closing the iterator stops outstanding work.

        Args:
            ctx: the run's shared context (study, device, threads, environment, protocol).
            jobs: the points to measure, each with the passes still missing.
            describe: takes a short progress text (the progress bar's description).
            manifest: the run's manifest; the executor may note where rows were measured (the
                driver writes it).
        """

    def resume_args(self) -> list[str]:
        """Command-line options that select this executor again (for the resume hint)."""
        return []


class LocalExecutor(Executor):
    """Every point in this process, one after the other, with ``threads`` intra-op threads."""

    name = "local"

    @contextlib.contextmanager
    def start(self, study: Study, device: torch.device) -> Iterator[Setup]:
        threads = study.threads if study.threads is not None else physical_cpu_cores()
        with fixed_threads(threads):
            env = collect_environment(device)
        yield Setup(threads=threads, env=env)

    def run(
        self,
        ctx: _Context,
        jobs: list[Job],
        *,
        describe: Callable[[str], Any],
        manifest: dict[str, Any],
    ) -> Iterator[dict[str, Any]]:
        for point, passes in jobs:
            describe(f"{point.label} {'+'.join(passes)}")
            yield from _measure_point(ctx, point, passes)


# ---------------------------------------------------------------------------------------------
# What runs on a Ray worker


_worker_envs: dict[tuple[str, int | None], dict[str, Any]] = {}


def _worker_environment(device: str, threads: int | None) -> dict[str, Any]:
    """This worker's environment under ``threads`` threads, collected once per process."""
    key = (device, threads)
    if key not in _worker_envs:
        with fixed_threads(threads):
            _worker_envs[key] = collect_environment(torch.device(device))
    return _worker_envs[key]


def _identity() -> dict[str, str]:
    import ray

    return {
        "host": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
    }


def _load_plugin_sources(sources: list[tuple[str, str]]) -> None:
    """Load the study's plugins from the source text the driver sent (the driver's paths may not
    exist on this node); each lands in a folder named by its hash, so reloading is a no-op."""
    root = Path(tempfile.gettempdir()) / "attnbench-plugins"
    for name, text in sources:
        path = root / hashlib.sha256(text.encode()).hexdigest()[:16] / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)  # workers of one node may race to write the same file
        load_plugin(path)


def _probe_task(device: str, threads: int | None) -> dict[str, Any]:
    """Ray task: the environment of the node it runs on."""
    return {**_identity(), "env": _worker_environment(device, threads)}


def _measure_task(
    study: Study,
    point: Point,
    passes: list[str],
    device: str,
    threads: int,
    env_key: dict[str, Any],
    plugins: list[tuple[str, str]],
) -> dict[str, Any]:
    """Ray task: the rows of one point, measured as the local executor would."""
    _load_plugin_sources(plugins)
    with fixed_threads(threads):
        env = _worker_environment(device, threads)
        if environment_key(env) != env_key:
            raise ExecutorError(
                f"node {socket.gethostname()} has environment {environment_key(env)}, but the study "
                f"measures on {env_key}; it joined after the probe or differs from the other nodes"
            )
        ctx = _Context(study, torch.device(device), threads, env)
        rows = list(_measure_point(ctx, point, passes))
    return {**_identity(), "env": env, "rows": rows}


# ---------------------------------------------------------------------------------------------
# The driver side of Ray


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            'the Ray executor needs ray: pip install "attnbench[ray]" (or "ray>=2.9") on the driver '
            "and on every node"
        ) from exc
    return ray


def _cause(exc: BaseException) -> str:
    """The message of a failed task: the worker's exception, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    return _message(cause if isinstance(cause, BaseException) else exc)


def _error_row(ctx: _Context, point: Point, pass_: str, message: str) -> dict[str, Any]:
    row = ctx.base_row(point, pass_)
    row.update(status="error", error=message, timestamp=_now())
    return row


def _env_line(env: dict[str, Any]) -> str:
    key = environment_key(env)
    return f"{key['device_name']}, torch {key['torch_version']}, cuda {key['cuda_version']}"


class RayExecutor(Executor):
    """Each point a Ray task; rows come back to the driver as tasks finish.

    Args:
        address: a running cluster, as ``ray.init(address=...)`` takes it (``HOST:6379``, or
            ``auto`` for the cluster this machine joined); None starts a local Ray instance for the
            run. A Ray already initialized in this process is used as it is.
        probe_timeout_s: how long to wait for every eligible node to report its environment.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._ray = _import_ray()
        self.address = address
        self.probe_timeout_s = probe_timeout_s
        self.submitted = 0  # tasks submitted by the last run()
        self.cancelled = 0  # tasks cancelled when the last run() was closed early
        self._workers: list[dict[str, Any]] = []
        self._keys: dict[str, str] = {}  # node id -> manifest key, this run
        self._measured: set[str] = set()  # nodes that returned a task, this run

    def resume_args(self) -> list[str]:
        return ["--executor", "ray"] + (["--address", self.address] if self.address else [])

    @contextlib.contextmanager
    def start(self, study: Study, device: torch.device) -> Iterator[Setup]:
        ray = self._ray
        started = False
        if not ray.is_initialized():
            try:
                if self.address is None:  # "local": a new instance even if this machine runs one
                    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
                else:
                    ray.init(address=self.address, logging_level=logging.WARNING)
            except Exception as exc:  # noqa: BLE001 - reported as a usage problem
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                raise ExecutorError(
                    f"cannot start or reach {where}: {_message(exc)} (start a cluster with "
                    "`ray start --head`, then pass --address HOST:6379)"
                ) from exc
            started = True
        try:
            yield self._probe(study, device)
        finally:
            if started:
                ray.shutdown()

    def _probe(self, study: Study, device: torch.device) -> Setup:
        """Environment of every node that can run a task; they must share one environment key."""
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cuda = device.type == "cuda"
        need_cpus = 1 if cuda or study.threads is None else study.threads
        nodes = [n for n in ray.nodes() if n.get("Alive")]

        def fits(node: dict[str, Any]) -> bool:
            res = node.get("Resources", {})
            return res.get("CPU", 0) >= need_cpus and (not cuda or res.get("GPU", 0) >= 1)

        eligible = [n for n in nodes if fits(n)]
        if not eligible:
            want = "1 GPU and 1 CPU" if cuda else f"{need_cpus} CPUs (the study's threads)"
            have = "; ".join(f"{n.get('NodeManagerHostname')}: {n.get('Resources', {})}" for n in nodes)
            raise ExecutorError(f"no node of the Ray cluster offers {want}; nodes: {have or 'none'}")
        # max_calls=1 on GPU tasks: a worker that initialized CUDA never serves another GPU
        options: dict[str, Any] = {"num_cpus": 0, "num_gpus": 1, "max_calls": 1} if cuda else {"num_cpus": 0}
        probe = ray.remote(**options)(_probe_task)
        refs = [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                device.type, study.threads
            )
            for n in eligible
        ]
        ready, missing = ray.wait(refs, num_returns=len(refs), timeout=self.probe_timeout_s)
        if missing:
            late = [eligible[refs.index(r)].get("NodeManagerHostname") for r in missing]
            for ref in missing:
                ray.cancel(ref, force=True)
            raise ExecutorError(
                f"nodes {late} did not report their environment within {self.probe_timeout_s:.0f} s "
                "(busy GPUs or CPUs?); free them or stop those nodes"
            )
        reports = []
        for ref, node in zip(refs, eligible):
            try:
                reports.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - e.g. attnbench missing on that node
                raise ExecutorError(
                    f"node {node.get('NodeManagerHostname')} failed the environment probe: {_cause(exc)} "
                    "(is the same attnbench installed on every node?)"
                ) from exc
        keys = {json.dumps(environment_key(r["env"]), sort_keys=True) for r in reports}
        if len(keys) > 1:
            lines = "; ".join(f"{r['host']}: {_env_line(r['env'])}" for r in reports)
            raise ExecutorError(
                "the nodes that can run this study differ in device or software, so their numbers "
                f"would mix: {lines}. Run one kind of machine per study (start the others with "
                "`ray start --num-gpus 0` / `--num-cpus 0`, or use another cluster)"
            )
        threads = study.threads
        if threads is None:  # the fewest physical cores of any eligible node (and Ray CPUs, on CPU)
            counts = [r["env"]["cpu_physical_cores"] for r in reports]
            if not cuda:
                counts += [int(n["Resources"]["CPU"]) for n in eligible]
            threads = min(counts)
        self._workers = [{**r, "env": {**r["env"], "torch_threads": threads}} for r in reports]
        hosts = ", ".join(sorted({r["host"] for r in reports}))
        return Setup(
            threads=threads,
            env=self._workers[0]["env"],
            where=f", via Ray on {len(reports)} node{'s' if len(reports) > 1 else ''}: {hosts}",
        )

    def run(
        self,
        ctx: _Context,
        jobs: list[Job],
        *,
        describe: Callable[[str], Any],
        manifest: dict[str, Any],
    ) -> Iterator[dict[str, Any]]:
        ray = self._ray
        cuda = ctx.device.type == "cuda"
        manifest["runs"][-1]["executor"] = {
            "name": self.name,
            "address": self.address,
            "ray_version": ray.__version__,
            "task_resources": {"GPU": 1, "CPU": 1} if cuda else {"CPU": ctx.threads},
            "retries": RAY_RETRIES,
        }
        workers = manifest.setdefault("workers", {})
        measured_by = manifest.setdefault("measured_by", {})
        self.submitted = self.cancelled = 0
        self._keys, self._measured = {}, set()
        for report in self._workers:
            self._worker_key(workers, report, measured=False)
        if not jobs:
            return

        resources: dict[str, Any] = (
            {"num_gpus": 1, "num_cpus": 1, "max_calls": 1} if cuda else {"num_cpus": ctx.threads}
        )
        task = ray.remote(max_retries=RAY_RETRIES, retry_exceptions=True, **resources)(_measure_task)
        study_ref = ray.put(ctx.study)
        plugins = [(p.name, p.read_text(encoding="utf-8")) for p in ctx.study.plugins]
        pending: dict[Any, Job] = {}  # task -> its job, until its rows are yielded
        try:
            for point, passes in jobs:
                args = (point, passes, ctx.device.type, ctx.threads, ctx.env_key, plugins)
                pending[task.remote(study_ref, *args)] = (point, passes)
            self.submitted = len(pending)
            describe(f"{len(pending)} tasks submitted")
            refs = list(pending)
            while refs:
                ready, refs = ray.wait(refs, num_returns=1)
                for ref in ready:
                    point, passes = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - every attempt failed: error rows
                        failed = f"ray task failed {1 + RAY_RETRIES} times; last: {_cause(exc)}"
                        rows = [_error_row(ctx, point, p, failed) for p in passes]
                    else:
                        rows = self._accept(ctx, point, result, workers, measured_by)
                    describe(f"{len(pending)} left; done {point.label}")
                    yield from rows
        finally:
            self.cancelled = len(pending)
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _accept(
        self,
        ctx: _Context,
        point: Point,
        result: dict[str, Any],
        workers: dict[str, Any],
        measured_by: dict[str, str],
    ) -> list[dict[str, Any]]:
        """The task's rows, each checked to carry the ``point_id`` the driver expects."""
        key = self._worker_key(workers, result, measured=True)
        rows = []
        for row in result["rows"]:
            expected = ctx.point_id(point, row["pass"])
            if row.get("point_id") != expected:
                row = _error_row(
                    ctx,
                    point,
                    row["pass"],
                    f"worker {key} computed point_id {row.get('point_id')} instead of {expected}: "
                    "attnbench or the mechanism code differs between the driver and that node",
                )
            measured_by[expected] = key
            rows.append(row)
        return rows

    def _worker_key(self, workers: dict[str, Any], report: dict[str, Any], *, measured: bool) -> str:
        """The manifest key of a node (its host name). Its record comes from the probe, then from
        the first task it measured (the environment as the task saw it, threads pinned)."""
        node = report["node_id"]
        if node not in self._keys:
            key = report["host"]
            if key in self._keys.values():  # two nodes with one host name (containers)
                key = f"{key} [{node[:8]}]"
            self._keys[node] = key
        key = self._keys[node]
        if key not in workers or workers[key]["node_id"] != node or (measured and node not in self._measured):
            workers[key] = {
                "node_id": node,
                "node_ip": report["node_ip"],
                "env_id": environment_id(report["env"]),
                "environment": report["env"],
            }
        if measured:
            self._measured.add(node)
        return key


def make_executor(name: str, address: str | None = None) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``).

    Raises:
        ValueError: unknown name, or an address for the local executor.
        ImportError: ``ray`` without ray installed.
    """
    if name not in EXECUTORS:
        raise ValueError(f"executor {name!r} is not one of {list(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise ValueError(f"address {address!r} needs the ray executor (--executor ray)")
        return LocalExecutor()
    return RayExecutor(address)
