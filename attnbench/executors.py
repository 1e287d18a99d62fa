"""Where jobs run: in a watched worker process (the default), in this process, or as Ray tasks.

An executor runs self-contained jobs (a picklable top-level function and its arguments) and reports
what they send back; it knows nothing of study kinds, rows or the runner.

- :class:`LocalExecutor` with ``isolation="process"`` (the default) runs each job in one
  :class:`attnbench.worker.Worker` child process, reused across jobs and replaced when it dies:
  a job killed by a signal (the OOM killer), one past its timeout, or one that calls
  ``sys.exit`` becomes a failure of that job only. ``workers=N`` keeps N such children busy side
  by side (for trainings; timed rows measured beside another job are what the noise guard marks
  unstable). ``isolation="none"`` runs jobs in this process (for debugging: no timeout, and a crash
  takes the run down).
- :class:`RayExecutor` makes each job a Ray task. CUDA: one GPU per task, a GPU worker serves one
  task only (``max_calls=1``). CPU: ``threads`` Ray CPUs per task. A task that raises or whose
  worker dies is retried once by Ray, then it is a failure. Before submitting, one probe per
  eligible node collects its environment: the nodes must agree on the environment key (device
  name, torch and CUDA versions), and each task checks its own node against it.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "EXECUTORS",
    "ISOLATIONS",
    "Executor",
    "ExecutorError",
    "Job",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
]

EXECUTORS = ("local", "ray")
ISOLATIONS = ("process", "none")
RAY_RETRIES = 1  # a failing task runs at most 1 + RAY_RETRIES times
PROBE_TIMEOUT_S = 300.0


class ExecutorError(RuntimeError):
    """The executor cannot run the study as asked (no cluster, no eligible node, mixed machines)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args)``, which may send objects back with :func:`attnbench.worker.emit`."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    label: str
    timeout_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Setup:
    """What an executor found before running jobs.

    Attributes:
        threads: CPU intra-op threads every job runs with.
        env: the environment record of the machines that run jobs.
        where: appended to the runner's first line, e.g. ``", via Ray on 2 nodes: a, b"``.
    """

    threads: int
    env: dict[str, Any]
    where: str = ""


# What an executor reports, through ``on_event(job index, what, value)``: ("emit", object) for each
# object the job emits, as soon as it arrives, then exactly one of ("done", None) or
# ("failed", attnbench.worker.Failure).
OnEvent = Callable[[int, str, Any], None]


def default_threads(threads: int | None, device: str) -> int:
    """The study's threads, else 1 on CPU (timings on a shared machine) and all physical cores on CUDA."""
    if threads is not None:
        return threads
    if device == "cpu":
        return 1
    from attnbench.environment import physical_cpu_cores

    return physical_cpu_cores()


def _environment(device: str, threads: int) -> dict[str, Any]:
    import torch

    from attnbench.environment import collect_environment
    from attnbench.timing import fixed_threads

    with fixed_threads(threads):
        env = collect_environment(torch.device(device))
    return env


class Executor(abc.ABC):
    """Runs jobs and reports their events."""

    name: str

    @abc.abstractmethod
    def start(self, threads: int | None, device: str) -> contextlib.AbstractContextManager[Setup]:
        """A context holding what running needs (workers, a cluster connection); yields the :class:`Setup`."""

    @abc.abstractmethod
    def run(
        self, jobs: list[Job], *, on_event: OnEvent, describe: Callable[[str], Any], manifest: dict[str, Any]
    ) -> None:
        """Run ``jobs``, reporting each event as it happens; an exception (Ctrl-C) stops outstanding work.

        Args:
            jobs: what to run.
            on_event: called with (job index, what, value), see ``OnEvent``.
            describe: takes a short progress text.
            manifest: the run's manifest; the executor may note where jobs ran (the runner writes it).
        """

    def resume_args(self) -> list[str]:
        """Command-line options that select this executor again (for the resume hint)."""
        return []


class LocalExecutor(Executor):
    """Jobs on this machine: in watched worker processes (one after the other, or ``workers`` side
    by side), or in this process.

    Args:
        isolation: ``process`` (:class:`attnbench.worker.Worker` children) or ``none`` (this process).
        workers: worker processes running jobs side by side (``isolation="process"`` only). Each job
            still runs with the study's ``threads``; events reach the runner in this thread, in the
            order they happen.
    """

    name = "local"

    def __init__(self, isolation: str = "process", workers: int = 1) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation {isolation!r} is not one of {list(ISOLATIONS)}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers {workers!r} is not an int >= 1")
        if workers > 1 and isolation != "process":
            raise ValueError(f"workers {workers} needs isolation 'process' (side by side in child processes)")
        self.isolation, self.workers = isolation, workers
        self._pool: list[Any] = []

    def resume_args(self) -> list[str]:
        args = [] if self.isolation == "process" else ["--isolation", self.isolation]
        return args + (["--workers", str(self.workers)] if self.workers > 1 else [])

    @contextlib.contextmanager
    def start(self, threads: int | None, device: str) -> Iterator[Setup]:
        from attnbench.worker import InlineWorker, Worker

        threads = default_threads(threads, device)
        env = _environment(device, threads)
        if self.isolation == "process":
            self._pool = [Worker(timeout_setting="point_timeout_s") for _ in range(self.workers)]
        else:
            self._pool = [InlineWorker()]
        where = "" if self.isolation == "process" else ", in this process"
        if self.workers > 1:
            where += f", {self.workers} workers side by side"
        try:
            yield Setup(threads=threads, env=env, where=where)
        finally:
            for worker in self._pool:
                worker.close()
            self._pool = []

    def run(
        self, jobs: list[Job], *, on_event: OnEvent, describe: Callable[[str], Any], manifest: dict[str, Any]
    ) -> None:
        manifest["runs"][-1]["executor"] = {
            "name": self.name,
            "isolation": self.isolation,
            "workers": self.workers,
        }
        if len(self._pool) > 1 and len(jobs) > 1:
            self._run_side_by_side(jobs, on_event, describe)
            return
        for i, job in enumerate(jobs):
            describe(job.label)
            outcome, value = self._pool[0].call(
                job.fn, job.args, timeout_s=job.timeout_s, on_emit=lambda obj, i=i: on_event(i, "emit", obj)
            )
            on_event(i, *(("done", None) if outcome == "result" else ("failed", value)))

    def _run_side_by_side(self, jobs: list[Job], on_event: OnEvent, describe: Callable[[str], Any]) -> None:
        """One thread per worker takes the next job; this thread reports every event (the runner's
        store is written from here only). Ctrl-C here kills the children, which ends their threads."""
        events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        todo: queue.SimpleQueue[tuple[int, Job]] = queue.SimpleQueue()
        for item in enumerate(jobs):
            todo.put(item)
        stop = threading.Event()

        def serve(worker: Any) -> None:
            try:
                while not stop.is_set():
                    try:
                        i, job = todo.get_nowait()
                    except queue.Empty:
                        break
                    events.put((i, "started", job.label))
                    outcome, value = worker.call(
                        job.fn,
                        job.args,
                        timeout_s=job.timeout_s,
                        on_emit=lambda obj, i=i: events.put((i, "emit", obj)),
                    )
                    events.put((i, "done", None) if outcome == "result" else (i, "failed", value))
            except BaseException as exc:  # noqa: BLE001 - handed to the reporting thread
                events.put((None, "raised", exc))
            finally:
                events.put((None, "ended", None))

        threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in self._pool]
        for thread in threads:
            thread.start()
        running: dict[int, str] = {}
        try:
            alive = len(threads)
            while alive:
                i, what, value = events.get()
                if what == "ended":
                    alive -= 1
                elif what == "raised":
                    raise value
                elif what == "started":
                    running[i] = value
                    describe(" | ".join(running.values()))
                else:
                    if what != "emit":
                        running.pop(i, None)
                    on_event(i, what, value)
        except BaseException:
            stop.set()
            for worker in self._pool:
                worker.kill()
            raise
        finally:
            for thread in threads:
                thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# Ray


_worker_envs: dict[tuple[str, int], dict[str, Any]] = {}


def _worker_environment(device: str, threads: int) -> dict[str, Any]:
    key = (device, threads)
    if key not in _worker_envs:
        _worker_envs[key] = _environment(device, threads)
    return _worker_envs[key]


def _identity() -> dict[str, str]:
    import ray

    return {
        "host": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
    }


def _probe_task(device: str, threads: int) -> dict[str, Any]:
    """Ray task: the environment of the node it runs on."""
    return {**_identity(), "env": _worker_environment(device, threads)}


def _ray_job(
    fn: Callable[..., Any], args: tuple[Any, ...], device: str, threads: int, env_key: dict[str, Any]
) -> dict[str, Any]:
    """Ray task: run one job as the inline worker would, collecting what it emits."""
    from attnbench.environment import environment_key
    from attnbench.worker import InlineWorker

    env = _worker_environment(device, threads)
    if environment_key(env) != env_key:
        raise ExecutorError(
            f"node {socket.gethostname()} has environment {environment_key(env)}, but the study measures on "
            f"{env_key}; it joined after the probe or differs from the other nodes"
        )
    emitted: list[Any] = []
    outcome, value = InlineWorker().call(fn, args, on_emit=emitted.append)
    return {**_identity(), "env": env, "emitted": emitted, "outcome": outcome, "value": value}


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            'the Ray executor needs ray: pip install "attnbench[ray]" (or "ray>=2.9") on the driver and '
            "on every node"
        ) from exc
    return ray


def _cause(exc: BaseException) -> str:
    """The message of a failed task: the worker's exception, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]


def _env_line(env: dict[str, Any]) -> str:
    from attnbench.environment import environment_key

    key = environment_key(env)
    return f"{key['device_name']}, torch {key['torch_version']}, cuda {key['cuda_version']}"


class RayExecutor(Executor):
    """Each job a Ray task; events come back to the driver as tasks finish.

    Args:
        address: a running cluster, as ``ray.init(address=...)`` takes it (``HOST:6379``, or
            ``auto``); None starts a local Ray instance for the run. A Ray already initialized in
            this process is used as it is.
        probe_timeout_s: how long to wait for every eligible node to report its environment.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._ray = _import_ray()
        self.address = address
        self.probe_timeout_s = probe_timeout_s
        self.submitted = 0  # tasks submitted by the last run()
        self.cancelled = 0  # tasks cancelled when the last run() was closed early
        self._device = "cpu"
        self._threads = 1
        self._workers: list[dict[str, Any]] = []
        self._keys: dict[str, str] = {}
        self._measured: set[str] = set()

    def resume_args(self) -> list[str]:
        return ["--executor", "ray"] + (["--address", self.address] if self.address else [])

    @contextlib.contextmanager
    def start(self, threads: int | None, device: str) -> Iterator[Setup]:
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
                    f"cannot start or reach {where}: {_cause(exc)} (start a cluster with `ray start --head`, "
                    "then pass --address HOST:6379)"
                ) from exc
            started = True
        try:
            yield self._probe(threads, device)
        finally:
            if started:
                ray.shutdown()

    def _probe(self, threads: int | None, device: str) -> Setup:
        """Environment of every node that can run a task; they must share one environment key."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from attnbench.environment import environment_key

        ray = self._ray
        cuda = device == "cuda"
        want_threads = default_threads(threads, device) if threads is not None or not cuda else None
        need_cpus = 1 if cuda else want_threads
        nodes = [n for n in ray.nodes() if n.get("Alive")]

        def fits(node: dict[str, Any]) -> bool:
            res = node.get("Resources", {})
            return res.get("CPU", 0) >= need_cpus and (not cuda or res.get("GPU", 0) >= 1)

        eligible = [n for n in nodes if fits(n)]
        if not eligible:
            want = "1 GPU and 1 CPU" if cuda else f"{need_cpus} CPUs (the study's threads)"
            have = "; ".join(f"{n.get('NodeManagerHostname')}: {n.get('Resources', {})}" for n in nodes)
            raise ExecutorError(f"no node of the Ray cluster offers {want}; nodes: {have or 'none'}")
        options: dict[str, Any] = {"num_cpus": 0, "num_gpus": 1, "max_calls": 1} if cuda else {"num_cpus": 0}
        probe = ray.remote(**options)(_probe_task)
        probe_threads = want_threads or 1
        refs = [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                device, probe_threads
            )
            for n in eligible
        ]
        _, missing = ray.wait(refs, num_returns=len(refs), timeout=self.probe_timeout_s)
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
                "the nodes that can run this study differ in device or software, so their numbers would "
                f"mix: {lines}. Run one kind of machine per study (start the others with `ray start "
                "--num-gpus 0` / `--num-cpus 0`, or use another cluster)"
            )
        if want_threads is None:  # CUDA: the fewest physical cores of any eligible node
            want_threads = min(r["env"]["cpu_physical_cores"] for r in reports)
        self._device, self._threads = device, want_threads
        self._workers = [{**r, "env": {**r["env"], "torch_threads": want_threads}} for r in reports]
        hosts = ", ".join(sorted({r["host"] for r in reports}))
        return Setup(
            threads=want_threads,
            env=self._workers[0]["env"],
            where=f", via Ray on {len(reports)} node{'s' if len(reports) > 1 else ''}: {hosts}",
        )

    def run(
        self, jobs: list[Job], *, on_event: OnEvent, describe: Callable[[str], Any], manifest: dict[str, Any]
    ) -> None:
        from attnbench.environment import environment_key
        from attnbench.worker import Failure

        ray = self._ray
        cuda = self._device == "cuda"
        manifest["runs"][-1]["executor"] = {
            "name": self.name,
            "address": self.address,
            "ray_version": ray.__version__,
            "task_resources": {"GPU": 1, "CPU": 1} if cuda else {"CPU": self._threads},
            "retries": RAY_RETRIES,
        }
        workers = manifest.setdefault("workers", {})
        ran_on = manifest.setdefault("measured_by", {})
        self.submitted = self.cancelled = 0
        self._keys, self._measured = {}, set()
        for report in self._workers:
            self._worker_key(workers, report, measured=False)
        if not jobs:
            return
        resources: dict[str, Any] = (
            {"num_gpus": 1, "num_cpus": 1, "max_calls": 1} if cuda else {"num_cpus": self._threads}
        )
        task = ray.remote(max_retries=RAY_RETRIES, retry_exceptions=True, **resources)(_ray_job)
        env_key = environment_key(self._workers[0]["env"])
        pending: dict[Any, int] = {}
        try:
            for i, job in enumerate(jobs):
                pending[task.remote(job.fn, job.args, self._device, self._threads, env_key)] = i
            self.submitted = len(pending)
            describe(f"{len(pending)} tasks submitted")
            refs = list(pending)
            while refs:
                ready, refs = ray.wait(refs, num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - every attempt failed
                        failure = Failure(
                            "exception", f"ray task failed {1 + RAY_RETRIES} times; last: {_cause(exc)}"
                        )
                        on_event(i, "failed", failure)
                        continue
                    ran_on[jobs[i].label] = self._worker_key(workers, result, measured=True)
                    describe(f"{len(pending)} left; done {jobs[i].label}")
                    for obj in result["emitted"]:
                        on_event(i, "emit", obj)
                    if result["outcome"] == "result":
                        on_event(i, "done", None)
                    else:
                        on_event(i, "failed", result["value"])
        finally:
            self.cancelled = len(pending)
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _worker_key(self, workers: dict[str, Any], report: dict[str, Any], *, measured: bool) -> str:
        """The manifest key of a node (its host name); its record is the environment as a task saw it."""
        from attnbench.environment import environment_id

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


def make_executor(
    name: str, address: str | None = None, isolation: str = "process", workers: int = 1
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``).

    Raises:
        ValueError: unknown name or isolation, or an address for the local executor.
        ImportError: ``ray`` without ray installed.
    """
    if name not in EXECUTORS:
        raise ValueError(f"executor {name!r} is not one of {list(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise ValueError(f"address {address!r} needs the ray executor (--executor ray)")
        return LocalExecutor(isolation, workers)
    if workers != 1:
        raise ValueError("--workers is for the local executor; a Ray cluster schedules its own tasks")
    return RayExecutor(address)
