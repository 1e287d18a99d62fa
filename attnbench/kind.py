"""Study kinds: the protocol every kind follows, and the registry of kinds.

A kind is one package, ``attnbench/kinds/<kind>/`` for the built-in ones (sweep, models, ablation,
peers, doctor), registered here by one line (:data:`KINDS`, or :func:`register_kind` for a kind
that lives elsewhere). The package holds everything particular to the kind, in three modules:

- ``kind.py``: ``KIND``, an instance of :class:`Kind` (below): columns, protocol, tasks, measure;
- ``schema.py`` (a kind that users write study files for): ``FILE``, the pydantic model of its
  study file, whose ``study(path, text)`` gives the validated study, and optionally
  ``claims(data) -> bool`` for a file that names no ``kind`` (:mod:`attnbench.study` builds the
  loader and the JSON Schema from the registered kinds);
- ``report.py``: ``write(run_dir, options, say) -> Path``, the run folder's report
  (:func:`attnbench.report.write_report` calls the one of the kind the run's manifest names), and
  ``OPTIONS``, the ``attnbench report`` options it accepts.

A kind says only what is its own: its columns, its measurement protocol (part of every
``point_id``), how its points are enumerated and identified (:class:`Task`: one unit of work that
writes a known set of (point_id, pass) rows), and how one task is measured into rows
(:meth:`Kind.measure`, which runs wherever the executor puts it and sends each row with
:func:`attnbench.worker.emit` as soon as it exists). Everything else (the plan, resume, the
executor, progress, interrupts, the manifest, the summary and the report) is the runner's, once
(:mod:`attnbench.runner`).

Executors run :func:`run_task` with a picklable :class:`RunContext` and :class:`Task`; they know
nothing of kinds or of the runner.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from typing import Any

__all__ = [
    "KINDS",
    "Kind",
    "RunContext",
    "Task",
    "config_id",
    "get_kind",
    "kind_module",
    "kind_of",
    "register_kind",
    "run_task",
    "study_kinds",
]


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every task of one run shares; picklable, sent to workers with each task.

    Attributes:
        kind: the kind's name.
        study: the validated study (:mod:`attnbench.study`).
        device: ``"cpu"`` or ``"cuda"``.
        threads: CPU intra-op threads every task runs with.
        env: the environment record of the measuring machine (:mod:`attnbench.environment`).
        run_dir: the run folder (an ablation keeps its checkpoints there).
        quiet: no progress lines from inside tasks.
        plugins: the study's plugin files and their text: a worker on another machine, where the
            path does not exist, loads the text.
    """

    kind: str
    study: Any
    device: str
    threads: int
    env: dict[str, Any]
    run_dir: str
    quiet: bool = False
    plugins: tuple[tuple[str, str], ...] = ()  # (path, source) of the study's plugin files

    @property
    def env_key(self) -> dict[str, Any]:
        from attnbench.environment import environment_key

        return environment_key(self.env)

    @property
    def env_id(self) -> str:
        from attnbench.environment import environment_id

        return environment_id(self.env)

    @property
    def protocol(self) -> dict[str, Any]:
        return get_kind(self.kind).protocol(self.study, self.threads)

    @property
    def protocol_id(self) -> str:
        """A short hash of the protocol and the environment key: rows that share it are comparable."""
        blob = json.dumps([self.protocol, self.env_key, self.device], sort_keys=True, default=repr)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Task:
    """One unit of work: it writes one row per entry of ``rows``.

    Attributes:
        label: for progress lines.
        rows: (point_id, pass) of every row the task writes.
        payload: what the kind needs to measure it (picklable).
    """

    label: str
    rows: tuple[tuple[str, str], ...]
    payload: Any


class Kind(abc.ABC):
    """One kind of study. Subclasses are stateless; a run's state is in :class:`RunContext`."""

    name: str
    unit: str = "row"  # what the progress bar counts
    remote_ok: bool = True  # False: tasks write into the run folder, so they run on this machine

    @abc.abstractmethod
    def columns(self, study: Any) -> dict[str, str]:
        """Every column of this kind's rows, in export order, with its meaning and unit."""

    @abc.abstractmethod
    def protocol(self, study: Any, threads: int) -> dict[str, Any]:
        """How the numbers are measured: part of every ``point_id`` and of the manifest."""

    @abc.abstractmethod
    def tasks(self, ctx: RunContext) -> list[Task]:
        """Every task of the study, in run order (a point listed twice appears once)."""

    @abc.abstractmethod
    def measure(self, ctx: RunContext, task: Task) -> None:
        """Measure ``task``, emitting ``("row", row)`` for each row as soon as it exists (and
        ``("progress", text)`` lines if useful). Runs in a worker; must not raise for a failure of
        the measured code (that is an ``error`` row)."""

    @abc.abstractmethod
    def error_rows(
        self, ctx: RunContext, task: Task, missing: list[str], message: str
    ) -> list[dict[str, Any]]:
        """``error`` rows for the passes in ``missing`` of a task whose worker failed outside the
        measurement (killed, hung, crashed)."""

    def describe(self, ctx: RunContext, n_tasks: int) -> str:
        """The first line of a run: what is measured where."""
        return f"{self.name} study {ctx.study.name!r}: {n_tasks} tasks"

    def manifest(self, ctx: RunContext) -> dict[str, Any]:
        """Kind-specific manifest entries (conditions, how each measure is taken)."""
        return {}

    def refresh(self, ctx: RunContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Kept rows to rewrite before the run (e.g. reference numbers edited in the study)."""
        return []

    def summary_table(self, rows: list[dict[str, Any]]) -> str:
        """A plain-text table of this run's rows for the terminal."""
        return ""


KINDS: dict[str, str] = {  # name -> the package that holds the kind
    "sweep": "attnbench.kinds.sweep",
    "models": "attnbench.kinds.models",
    "ablation": "attnbench.kinds.ablation",
    "peers": "attnbench.kinds.peers",
    "doctor": "attnbench.kinds.doctor",
}


def register_kind(name: str, package: str) -> None:
    """Register the kind ``name`` held in ``package`` (importable; its modules are imported on first
    use). A kind outside attnbench needs this one line; a built-in one its line in :data:`KINDS`."""
    import importlib.util

    if not name.isidentifier():
        raise ValueError(f"a kind's name must be an identifier, not {name!r}")
    try:
        found = importlib.util.find_spec(f"{package}.kind") is not None
    except ImportError:
        found = False
    if not found:
        raise ValueError(
            f"kind {name!r}: no module {package}.kind (a kind's package holds kind.py with KIND)"
        )
    KINDS[name] = package


def config_id(config: dict[str, Any]) -> str:
    """A point id: 16 hex digits of the SHA-256 of ``config`` as sorted JSON."""
    blob = json.dumps(config, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def get_kind(name: str) -> Kind:
    """The kind called ``name`` (its module is imported on first use)."""
    return kind_module(name, "kind").KIND


def kind_module(name: str, part: str) -> Any:
    """The module ``part`` (``schema``, ``report``) of the kind ``name``; None when the kind has none."""
    import importlib
    import importlib.util

    if name not in KINDS:
        raise ValueError(f"unknown study kind {name!r}; known: {', '.join(KINDS)}")
    module = f"{KINDS[name]}.{part}"
    if importlib.util.find_spec(module) is None:
        return None
    return importlib.import_module(module)


def study_kinds() -> list[str]:
    """The kinds that users write study files for (those with a ``schema`` module), in order."""
    import importlib.util

    return [name for name, package in KINDS.items() if importlib.util.find_spec(f"{package}.schema")]


def kind_of(study: Any) -> Kind:
    """The kind of a validated study."""
    return get_kind(getattr(study, "kind", "sweep"))


def run_task(kind: Kind, ctx: RunContext, task: Task) -> None:
    """Measure one task, wherever an executor runs it: loads the study's plugins, fixes the threads.

    ``kind`` travels as an object, so a worker imports the kind's module (torch and the measuring
    code) while it reads the job, before the job's time limit starts.
    """
    from attnbench.timing import fixed_threads

    _load_plugins(ctx.plugins)
    with fixed_threads(ctx.threads):
        kind.measure(ctx, task)


def _load_plugins(plugins: tuple[tuple[str, str], ...]) -> None:
    """Load each plugin from its path, or from its text where the path does not exist (another
    machine); a text lands in a folder named by its hash, so loading twice is a no-op."""
    import os
    import tempfile
    from pathlib import Path

    from attnbench.registry import load_plugin

    for path, text in plugins:
        if Path(path).is_file():
            load_plugin(path)
            continue
        copy = (
            Path(tempfile.gettempdir()) / "attnbench-plugins" / hashlib.sha256(text.encode()).hexdigest()[:16]
        )
        copy = copy / Path(path).name
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, copy)  # workers of one node may race to write the same file
        load_plugin(copy)
