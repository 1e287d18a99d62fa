"""The one runner: every study kind's tasks measured into a run folder, each row saved as it exists.

The runner owns, once for every kind (:mod:`attnbench.kind`): the run folder and its lock, the
store (:mod:`attnbench.store`), the plan and resume, the executor (:mod:`attnbench.executors`),
progress, interrupts, the manifest, the summary and the report call.

- **Resume.** Rows already ``ok`` or ``skipped`` are kept. An ``error`` row is retried once; an
  error that happened twice is kept (``retry_errors`` tries again).
- **Failures.** A failure inside the measured code is an ``error`` row written by the kind. A job
  that fails outside it (its worker killed by a signal, past ``point_timeout_s``, ``sys.exit``)
  gets ``error`` rows for the passes it had not written, naming the cause; the run goes on.
- **Exit codes.** 0: every task visited (error rows included); 1: the run folder could not be
  written during the run; 2: it could not be used at all (nothing measured); 130: Ctrl-C. The
  resume command is printed whenever rows may be missing.
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from attnbench import __version__
from attnbench.executors import Executor, ExecutorError, Job, LocalExecutor
from attnbench.kind import Kind, RunContext, kind_of, run_task
from attnbench.noise import busy_warning, load_average, unstable_reasons
from attnbench.store import (
    DONE_STATUSES,
    ResultsStore,
    RunLock,
    StoreError,
    check_no_links,
    check_run_dir,
    move_aside,
    prepare_run_dir,
    recorded_kind,
)
from attnbench.study import resolve_device

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "RUNS_DIR", "default_run_dir", "run_study"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
RUNS_DIR = Path("runs")
MAX_ATTEMPTS = 2  # an error row is measured at most this often unless asked again


def default_run_dir(study: Any) -> Path:
    """``runs/<study name>`` under the current directory (``results/`` holds the shipped runs)."""
    return RUNS_DIR / study.name


def _environment_changes(manifest: dict[str, Any], key: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, before, now) of the environment key (device name, torch and CUDA versions) that differ
    from every environment the folder's manifest records; none when one of them matches."""
    from attnbench.environment import environment_key

    envs = manifest.get("environments")
    recorded = (
        [environment_key(e) for e in envs.values() if isinstance(e, dict)] if isinstance(envs, dict) else []
    )
    if not recorded or key in recorded:
        return []
    last = recorded[-1]
    return [(k, last.get(k), v) for k, v in key.items() if last.get(k) != v]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ProtocolChanged(StoreError):
    """The run folder holds rows of another protocol; nothing was written."""


def run_study(
    study: Any,
    *,
    out_dir: str | Path | None = None,
    fresh: bool = False,
    quiet: bool = False,
    report: bool = True,
    command: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    executor: Executor | None = None,
    retry_errors: bool = False,
    retry_unstable: bool = False,
) -> int:
    """Measure every task of ``study`` into ``out_dir`` (default ``runs/<name>``); returns the exit code.

    Args:
        study: a study from :func:`attnbench.study.load_study` (any kind).
        out_dir: the run folder.
        fresh: move an existing run folder aside to ``<folder>.old-<time>`` and start over.
        quiet: no progress bar and no summary table.
        report: afterwards write the report (``attnbench.report.write_report``; a failure there is
            printed, never raised: the results are safe).
        command: the command line to record in the manifest.
        stdout, stderr: where to print (default: the process's).
        executor: where tasks run (default: :class:`attnbench.executors.LocalExecutor`, each task in
            a watched worker process).
        retry_errors: measure again error rows that already failed twice.
        retry_unstable: measure again tasks with a row the noise guard marked unstable (on a quiet
            machine; an ablation task then reads its training back and times only the latency).

    Raises:
        attnbench.executors.ExecutorError: the executor cannot run the study (e.g. no Ray node fits).
    """
    kind = kind_of(study)
    if not kind.remote_ok and executor is not None and executor.name != LocalExecutor.name:
        raise ExecutorError(
            f"an {kind.name} study ({study.path}) writes its checkpoints into the run folder, so it runs on "
            f"this machine; run it with --executor local, not --executor {executor.name}"
        )
    run = _Run(
        study, out_dir, quiet, command, stdout or sys.stdout, stderr or sys.stderr, executor, retry_errors
    )
    run.retry_unstable = retry_unstable
    return run.go(fresh=fresh, report=report)


class _Run:
    def __init__(
        self,
        study: Any,
        out_dir: str | Path | None,
        quiet: bool,
        command: list[str] | None,
        out: TextIO,
        err: TextIO,
        executor: Executor | None,
        retry_errors: bool,
    ) -> None:
        self.study = study
        self.kind: Kind = kind_of(study)
        self.run_dir = Path(out_dir) if out_dir is not None else default_run_dir(study)
        self.quiet = quiet
        self.command = command
        self.out, self.err = out, err
        self.executor = executor or LocalExecutor()
        self.retry_errors = retry_errors
        self.retry_unstable = False
        self.store: ResultsStore | None = None
        self._protocols: set[str] = set()  # protocol_id of the rows the folder held when it opened
        self.resume = shlex.join(
            getattr(study, "resume_command", None)
            or [
                "attnbench",
                "run",
                str(study.path),
                "--out",
                str(self.run_dir),
                "--device",
                study.device,
            ]
            + self.executor.resume_args()
        )

    def say(self, text: str, *, always: bool = False) -> None:
        if always or not self.quiet:
            print(f"attnbench: {text}", file=self.out)

    @staticmethod
    def _unstable_keys(store: ResultsStore) -> set[tuple[str, str]]:
        """(point_id, pass) of the timed rows the noise guard marked unstable, or would mark now (its
        rules as they are, applied to the row's recorded load)."""
        return {
            (str(r.get("point_id")), str(r.get("pass")))
            for r in store.rows()
            if str(r.get("unstable")) in ("1", "True", "1.0")
            or (r.get("latency_ms") not in (None, "") and unstable_reasons(r))
        }

    def go(self, *, fresh: bool, report: bool) -> int:
        lock = None
        measuring = False
        try:
            check_run_dir(self.run_dir)  # a bad --out fails before anything starts
            with self.executor.start(self.study.threads, resolve_device(self.study.device)) as setup:
                if fresh and self.run_dir.is_dir():
                    with RunLock(self.run_dir, self.command):  # never move a folder another run is writing
                        pass
                    moved = move_aside(self.run_dir)
                    self.say(f"--fresh: moved the previous run folder to {moved}", always=True)
                prepare_run_dir(self.run_dir)
                check_no_links(self.run_dir)
                lock = RunLock(self.run_dir, self.command)
                lock.acquire()
                self.store = ResultsStore(self.run_dir)
                self.store.read_manifest()  # a manifest or a stored row that cannot be read is
                kept = self.store.rows()  # refused before anything runs
                self._protocols = {str(r["protocol_id"]) for r in kept if r.get("protocol_id")}
                for note in self.store.notes:
                    self.say(note, always=True)
                folder_kind = recorded_kind(self.run_dir)
                if folder_kind is None and len(self.store):
                    raise StoreError(
                        f"{self.run_dir} holds rows that record no kind of study (no manifest.json, a "
                        "results.csv of an older attnbench); give this study its own folder with --out, "
                        "or start over with --fresh"
                    )
                if folder_kind not in (None, self.kind.name):
                    raise StoreError(
                        f"{self.run_dir} holds a {folder_kind} run; give this {self.kind.name} study its own "
                        "folder with --out, or start over with --fresh"
                    )
                self.store.set_meta("kind", self.kind.name)
                measuring = True
                code = self._measure(setup)
            if code != 0:
                return code
        except StoreError as exc:
            print(f"attnbench run: {exc}", file=self.err)
            if measuring and not isinstance(exc, ProtocolChanged):
                print(
                    f"attnbench: the rows written so far are kept; resume with: {self.resume}", file=self.err
                )
                return EXIT_FAILED
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print(f"\nattnbench: interrupted before measuring; resume with: {self.resume}", file=self.err)
            return EXIT_INTERRUPTED
        finally:
            if self.store is not None:
                self.store.close()
            if lock is not None:
                lock.release()
        if report:
            self._write_report()
        return 0

    def _check_one_protocol(self, ctx: RunContext) -> None:
        """A run folder holds one protocol: rows measured under another (threads, repeats, measured
        quantities, device, torch version, ...) are refused before anything is written, naming what
        changed, so no folder mixes numbers that are not comparable.

        Raises:
            ProtocolChanged: the folder holds rows of another protocol.
        """
        assert self.store is not None
        if not self._protocols - {ctx.protocol_id}:  # (the folder's protocols, read when it opened)
            return
        before = self.store.read_manifest() or {}
        old = before.get("protocol") if isinstance(before.get("protocol"), dict) else {}
        new = ctx.protocol  # the manifest's protocol adds the kind's descriptions: compare these keys
        changes = [(k, old.get(k), new.get(k)) for k in new if old.get(k) != new.get(k)]
        if before.get("device") not in (None, ctx.device):
            changes.append(("device", before.get("device"), ctx.device))
        changes += _environment_changes(before, ctx.env_key)
        words = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changes[:4]) or "the measurement protocol"
        raise ProtocolChanged(
            f"{self.run_dir} holds rows measured under another protocol ({words}); one folder holds one "
            "protocol, so that no table mixes numbers that are not comparable. Give this run another "
            "--out, or start over with --fresh (the folder is moved aside)"
        )

    def _measure(self, setup: Any) -> int:
        study, kind, store = self.study, self.kind, self.store
        assert store is not None
        plugins = tuple((str(p), Path(p).read_text(encoding="utf-8")) for p in getattr(study, "plugins", ()))
        ctx = RunContext(
            kind.name,
            study,
            resolve_device(study.device),
            setup.threads,
            setup.env,
            str(self.run_dir),
            self.quiet,
            plugins,
        )
        self._check_one_protocol(ctx)
        warning = busy_warning(ctx.threads, ctx.device)
        if warning:
            print(f"attnbench: warning: {warning}", file=self.err)
        store.declare_columns(kind.columns(study))
        store.export_csv()  # the export exists (header at least) from the start
        manifest = self._start_manifest(ctx)
        record = manifest["runs"][-1]

        tasks = kind.tasks(ctx)
        wanted = {key for t in tasks for key in t.rows}
        state = store.state()
        refreshed = kind.refresh(ctx, store.rows())
        for row in refreshed:
            store.add(row, attempt=False)
        todo, kept, given_up = [], 0, 0
        unstable = self._unstable_keys(store) if self.retry_unstable else set()
        for task in tasks:
            statuses = [state.get(key) for key in task.rows]
            if any(key in unstable for key in task.rows):
                todo.append(task)
            elif all(s is not None and s[0] in DONE_STATUSES for s in statuses):
                kept += len(statuses)
            elif not self.retry_errors and all(
                s is not None and (s[0] in DONE_STATUSES or s[1] >= MAX_ATTEMPTS) for s in statuses
            ):
                given_up += 1
            else:
                todo.append(task)
        stale = sum(1 for key in state if key not in wanted)
        self.say(f"{kind.describe(ctx, len(tasks))}{setup.where} -> {self.run_dir}")
        if kept:
            self.say(f"resuming: {kept} {kind.unit}s already measured are kept")
        if refreshed:
            self.say(f"reference numbers of {len(refreshed)} kept rows updated from the study")
        if unstable:
            retried = sum(1 for t in todo if any(key in unstable for key in t.rows))
            self.say(f"measuring again {retried} tasks with unstable rows (--retry-unstable)", always=True)
        if given_up:
            self.say(
                f"{given_up} tasks failed twice and are kept as error rows (--retry-errors measures them "
                "again)",
                always=True,
            )
        if stale:
            self.say(
                f"{stale} rows in {store.db_path} are points this study no longer has (an edited sweep); "
                "they are kept, and stay in the report (--fresh starts over)",
                always=True,
            )

        from tqdm import tqdm

        bar = tqdm(
            total=sum(len(t.rows) for t in todo),
            unit=kind.unit,
            disable=self.quiet,
            file=self.err,
            dynamic_ncols=True,
        )
        written: list[set[tuple[str, str]]] = [set() for _ in todo]

        def save(i: int, row: dict[str, Any]) -> None:
            task = todo[i]
            key = (row.get("point_id"), row.get("pass"))
            if key not in task.rows or key in written[i]:
                (pid, pass_) = next((k for k in task.rows if k not in written[i]), task.rows[-1])
                message = (
                    f"the worker wrote a row for {key}, not one of this point's {list(task.rows)}: attnbench "
                    "or the mechanism code differs between this process and the worker"
                )
                row = kind.error_rows(ctx, task, [pass_], message)[0]
                key = (pid, pass_)
            store.add(row)
            written[i].add(key)
            record["rows_written"] += 1
            bar.update(1)

        def on_event(i: int, what: str, value: Any) -> None:
            task = todo[i]
            if what == "emit":
                tag, obj = value
                if tag == "row":
                    save(i, obj)
                elif tag == "progress" and not self.quiet:
                    bar.write(obj, file=self.err)
                return
            missing = [key[1] for key in task.rows if key not in written[i]]
            if not missing:
                return
            if what == "failed":
                reason = value.message
                if value.cause in ("signal", "timeout", "exit"):
                    bar.write(f"attnbench: {task.label}: {reason}; the run goes on", file=self.err)
            else:
                reason = "the task ended without writing this row (a bug in the study kind)"
            for row in kind.error_rows(ctx, task, missing, reason):
                save(i, row)

        jobs = [Job(run_task, (kind, ctx, t), t.label, getattr(study, "point_timeout_s", None)) for t in todo]
        try:
            self.executor.run(jobs, on_event=on_event, describe=bar.set_description_str, manifest=manifest)
        except KeyboardInterrupt:
            bar.close()
            record.update(status="interrupted", finished=_now(), load_average_end=load_average())
            store.write_manifest(manifest)
            print(
                f"\nattnbench: interrupted; {len(store)} rows are saved in {store.db_path}\n"
                f"attnbench: resume with: {self.resume}",
                file=self.err,
            )
            return EXIT_INTERRUPTED
        finally:
            bar.close()
        record.update(status="completed", finished=_now(), load_average_end=load_average())
        store.write_manifest(manifest)
        store.export_csv()

        mine = [r for r in store.rows() if (r.get("point_id"), r.get("pass")) in wanted]
        counts = {s: sum(r.get("status") == s for r in mine) for s in ("ok", "skipped", "error")}
        unstable = sum(1 for r in mine if str(r.get("unstable")) == "1")
        if not self.quiet and mine:
            print(kind.summary_table(mine), file=self.out)
        print(
            f"attnbench: {counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} errors, "
            f"{unstable} unstable; results in {store.db_path} (export: {store.csv_path})",
            file=self.out,
        )
        if unstable:
            print(
                f"attnbench: {unstable} timed rows are unstable (column unstable_why): measure on a quiet "
                "machine before publishing them",
                file=self.out,
            )
        return 0

    def _start_manifest(self, ctx: RunContext) -> dict[str, Any]:
        from attnbench.memory import METHODS as MEMORY_METHODS

        assert self.store is not None
        study, kind = self.study, self.kind
        manifest = self.store.read_manifest() or {"created": _now(), "environments": {}, "runs": []}
        extra = kind.manifest(ctx)
        protocol = {**ctx.protocol, **extra.pop("protocol_text", {})}
        manifest.update(
            attnbench_version=__version__,
            updated=_now(),
            kind=kind.name,
            study={
                "name": study.name,
                "kind": kind.name,
                "description": study.description,
                "path": str(study.path),
                "sha256": study.sha256,
                "text": study.text,
            },
            device=ctx.device,
            requested_device=study.device,
            threads=ctx.threads,
            protocol=protocol,
            protocol_id=ctx.protocol_id,
            memory_methods=MEMORY_METHODS,
            columns=kind.columns(study),
            **extra,
        )
        manifest.setdefault("environments", {})[ctx.env_id] = ctx.env
        manifest.setdefault("runs", []).append(
            {
                "started": _now(),
                "finished": None,
                "status": "running",
                "env_id": ctx.env_id,
                "protocol_id": ctx.protocol_id,
                "study_sha256": study.sha256,
                "command": self.command,
                "rows_written": 0,
                "load_average_start": load_average(),
            }
        )
        self.store.write_manifest(manifest)
        return manifest

    def _write_report(self) -> None:
        """``attnbench.report.prepare_report`` and ``write_report(run_dir)``; a failure there never
        loses results."""
        self.say(f"writing the report (tables, plots, index.html) into {self.run_dir} ...")
        try:
            from attnbench.report import prepare_report, write_report

            say = lambda line: self.say(f"report: {line}")  # noqa: E731
            prepare_report(self.run_dir, progress=say)
            index = write_report(self.run_dir, progress=say)
        except Exception as exc:  # noqa: BLE001 - a report failure must never lose results
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
            print(f"attnbench: writing the report failed ({text}); the results are safe", file=self.err)
            return
        self.say(f"report: {index or self.run_dir / 'index.html'}", always=True)
