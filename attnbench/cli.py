"""The ``attnbench`` command line.

Subcommands (one ``_add_<name>`` function each, listed in :data:`SUBCOMMANDS`; adding one is a
new function there):

- ``attnbench list``: every registered mechanism, its docstring's first line and its parameters
  with types and defaults;
- ``attnbench run STUDY.yaml [--out DIR] [--fresh] [--device auto|cpu|cuda] [--quiet] [--no-report]
  [--retry-errors] [--retry-unstable] [--workers N] [--isolation process|none] [--executor local|ray]
  [--address ADDR]``: validate
  the study (exit 2 with one line per problem), then measure it, each point in a watched worker
  process or on a Ray cluster, into a resumable run folder (default runs/<name>) and write its report;
- ``attnbench report RUN_DIR``: tables, plots, the BRA formula check and index.html of a run;
- ``attnbench check NAME_OR_FILE``: the conformance suite on one mechanism, as a pass/fail table;
- ``attnbench doctor [--device D] [--dtype T ...] [--mechanism M ...] [--plugin FILE] [--out DIR]
  [--quick]``: the environment, then every mechanism's backends on this device against its
  reference (:mod:`attnbench.doctor`);
- ``attnbench new NAME``: a skeleton mechanism file that passes ``check``;
- ``attnbench schema [-o FILE]``: the JSON Schema of study files (for an editor).
- ``attnbench maps RUN_DIR [--level L] [--seed N] [--image-index I] [--query ROW,COL ...] [--stage S]``
  and ``attnbench maps --model NAME [--checkpoint FILE] [--image FILE] --out DIR``: pictures of where
  each mechanism looks and its effective receptive field (docs/maps.md).

Exit codes: 0 done, 2 bad study or usage, 130 interrupted (Ctrl-C; for ``run`` also SIGTERM or SIGHUP,
as from ``kill``, ``timeout`` or a closed terminal: the manifest then records the run as interrupted).

Building the parser imports nothing heavy (torch, timm, natten, matplotlib, pandas, ray), so that
``--help`` answers at once: each ``_cmd_<name>`` imports what its command needs, and this module's
top level never does (``tests/test_import_time.py`` keeps it so).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _first_doc_line(obj: object) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else "(no docstring)"


def _cmd_list(args: argparse.Namespace) -> int:
    from attnbench.registry import available_mechanisms, get_mechanism, load_plugin

    for path in args.plugin or []:
        try:
            load_plugin(path)
        except Exception as exc:  # noqa: BLE001 - a bad plugin is a usage error, not a crash
            print(f"attnbench list: plugin {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    for name in available_mechanisms():
        cls = get_mechanism(name)
        print(f"{name}: {_first_doc_line(cls)}")
        params = cls.hyperparameters()
        if not params:
            print("    (no parameters besides dim and num_heads)")
        for p in params.values():
            print(f"    {p.name}: {p.type_name} = {p.default!r}")
    return 0


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered mechanisms, their parameters and defaults")
    p.add_argument(
        "--plugin", action="append", metavar="FILE.py", help="load mechanisms from this file too (repeatable)"
    )
    p.set_defaults(func=_cmd_list)


def _cmd_run(args: argparse.Namespace) -> int:
    import shlex

    command = ["attnbench", "run", str(args.study)]
    if args.out is not None:
        command += ["--out", str(args.out)]
    if args.device is not None:
        command += ["--device", args.device]
    if args.executor != "local":
        command += ["--executor", args.executor] + (["--address", args.address] if args.address else [])
    if args.isolation != "process":
        command += ["--isolation", args.isolation]
    if args.workers != 1:
        command += ["--workers", str(args.workers)]
    try:
        with _stop_signals_interrupt():
            return _run(args, command)
    except KeyboardInterrupt:  # while importing or validating: nothing was measured
        again = shlex.join(command)
        print(f"\nattnbench: interrupted before measuring; run again with: {again}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a run the way Ctrl-C does.

    Python's default for them ends the process on the spot, so ``kill``, ``timeout`` or a closed
    terminal left the manifest saying "running" with no rows counted; as a KeyboardInterrupt the
    runner stops its workers, records the run as interrupted and prints how to resume. Spawned
    workers do not inherit the handler (it does not survive their exec). A signal the caller set to
    be ignored (``nohup`` does so for SIGHUP) is left alone.
    """
    import threading

    before: dict[int, object] = {}
    # handlers can only be set from the main thread (main() may be called from another one)
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)
            # an ignored signal stays ignored: `nohup attnbench run ...` must outlive its terminal
            if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
                before[signum] = signal.signal(signum, _raise_interrupt)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _run(args: argparse.Namespace, command: list[str]) -> int:
    from attnbench.executors import ExecutorError, make_executor
    from attnbench.runner import run_study
    from attnbench.study import StudyError, load_study

    try:
        executor = make_executor(args.executor, args.address, args.isolation, args.workers)
    except (ValueError, ImportError) as exc:
        print(f"attnbench run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from attnbench.study._trial import has_plugins, trial

    if has_plugins(args.study):  # plugin code is tried in a watched child before it runs in this one
        early = trial(args.study, args.device)
        if early is not None:
            for problem in early:
                print(problem, file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        study = load_study(args.study, device=args.device)
    except StudyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not _confirmed(study, args.yes):
        return EXIT_BAD_INPUT
    try:
        return run_study(
            study,
            out_dir=args.out,
            fresh=args.fresh,
            quiet=args.quiet,
            report=not args.no_report,
            command=command,
            executor=executor,
            retry_errors=args.retry_errors,
            retry_unstable=args.retry_unstable,
        )
    except ExecutorError as exc:
        print(f"attnbench run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


CONFIRM_POINTS = 10_000  # a study with more points runs only with --yes (or a yes at the prompt)


def _size(study: object) -> int:
    """The number of points (sweep, models, peers) or trainings (ablation) of a study."""
    for method in ("points", "runs"):
        if hasattr(study, method):
            return len(getattr(study, method)())
    return 0


def _confirmed(study: object, yes: bool) -> bool:
    """True when the study is small, ``--yes`` was given, or the user says yes at the prompt; a
    large study without a terminal to ask on is refused, with the count and the fix."""
    n = _size(study)
    if n <= CONFIRM_POINTS or yes:
        return True
    what = f"{study.path}: {n:,} points (more than {CONFIRM_POINTS:,})"  # type: ignore[attr-defined]
    if sys.stdin.isatty() and sys.stderr.isatty():
        print(f"attnbench run: {what}; run them all? [y/N] ", end="", file=sys.stderr, flush=True)
        try:
            answer = sys.stdin.readline().strip().lower()
        except (OSError, ValueError):
            answer = ""
        if answer in ("y", "yes"):
            return True
        print("attnbench run: not started", file=sys.stderr)
        return False
    print(
        f"attnbench run: {what}; give --yes to run them, or make the sweep smaller (nothing was started)",
        file=sys.stderr,
    )
    return False


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a study file (resumes an earlier run into the same folder)",
        description="Validate STUDY.yaml, then measure every point into DIR/results.db (SQLite; "
        "DIR/results.csv is an export) and DIR/manifest.json, each point in a watched worker process. "
        "Re-running resumes: rows already ok or skipped are kept, error rows are retried once.",
    )
    p.add_argument("study", type=Path, metavar="STUDY.yaml")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder (default: runs/<study name>; the shipped reference runs under results/ are written "
        "only when named here)",
    )
    p.add_argument(
        "--fresh", action="store_true", help="move an existing run folder aside to DIR.old-<time>, start over"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the study's device")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    p.add_argument("--no-report", action="store_true", help="do not write the report after the run")
    p.add_argument(
        "--retry-errors", action="store_true", help="measure again error rows that already failed twice"
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help=f"run a study of more than {CONFIRM_POINTS:,} points without asking",
    )
    p.add_argument(
        "--retry-unstable",
        action="store_true",
        help="measure again the tasks whose rows the noise guard marked unstable (do it on a quiet machine; "
        "an ablation reads its trainings back and times only the latency)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N points side by side in N worker processes (default 1). For trainings: each uses the "
        "study's threads, and timed rows measured beside another point come out unstable",
    )
    p.add_argument(
        "--isolation",
        choices=("process", "none"),
        default="process",
        help="process: each point in a watched worker process, so a crash, an OOM kill or a hang past "
        "point_timeout_s becomes an error row (default); none: in this process, for debugging",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: measure on this machine (default); ray: each point a task on a Ray cluster",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="with --executor ray: a running cluster (HOST:6379, or auto for the one this machine "
        "joined); default: start a local Ray instance",
    )
    p.set_defaults(func=_cmd_run)


def _cmd_report(args: argparse.Namespace) -> int:
    import sqlite3

    from attnbench.report import report_from_args
    from attnbench.store import StoreError, check_no_links, read_manifest

    if not any((args.run_dir / name).is_file() for name in ("results.db", "results.csv")):
        print(
            f"attnbench report: {args.run_dir} has no results.db or results.csv; give a run folder",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        check_no_links(args.run_dir)
        try:
            read_manifest(args.run_dir, strict=True)
        except StoreError as exc:  # the report reads what it can: the rows, without the manifest
            print(f"attnbench report: left out: {exc}", file=sys.stderr)
        index = report_from_args(args)
    except (ValueError, StoreError) as exc:
        print(f"attnbench report: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sqlite3.DatabaseError as exc:
        print(
            f"attnbench report: {args.run_dir / 'results.db'} cannot be read ({exc}); it is damaged or not "
            "an attnbench database: move it aside and report from results.csv, or give another run folder",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = exc.filename or args.run_dir
        print(
            f"attnbench report: cannot read or write {where} ({exc.strerror or exc}); give a run folder "
            "you can write to (copy it first if it is read-only)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    print(f"report written: {index}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    from attnbench.report.options import add_arguments

    p = sub.add_parser(
        "report",
        help="tables (Markdown, LaTeX), plots, the BRA formula check and index.html of a run folder",
        description="Write tables/, plots/, formula_check.csv, formula_report.md and index.html into "
        "RUN_DIR from its results.csv. `attnbench run` already does this at the end of a run.",
    )
    add_arguments(p)
    p.set_defaults(func=_cmd_report)


def _cmd_compare(args: argparse.Namespace) -> int:
    from attnbench.report.compare import CompareError, compare_runs, summary_lines, write_comparison
    from attnbench.store import StoreError, check_no_links

    try:
        for run in (args.run_a, args.run_b):
            check_no_links(run)
        comparison = compare_runs(
            args.run_a,
            args.run_b,
            threshold=args.threshold,
            allow_protocol_change=args.allow_protocol_change,
        )
        out = args.out if args.out is not None else args.run_b / "compare" / args.run_a.resolve().name
        check_no_links(out)
        written = write_comparison(comparison, out)
    except (CompareError, StoreError) as exc:
        print(f"attnbench compare: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"attnbench compare: cannot write {exc.filename} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"**A** = `{comparison.a}`, **B** = `{comparison.b}`.\n")
    print("\n".join(f"- {line}" for line in summary_lines(comparison)))
    print(f"comparison written: {written[2]}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="what changed between two runs of a sweep study, beyond noise (B / A per point)",
        description="Match the ok rows of RUN_A and RUN_B on their point (mechanism, parameters, shape, "
        "dtype, pass, compile mode) and give, per point, the latency ratio B / A with a bootstrap "
        "interval from the stored samples and a verdict (slower, faster, within noise), the peak-memory "
        "ratio, and whether FLOPs and parameters are equal. Writes compare.md, compare.tex, index.html "
        "and ratios.png into --out (default RUN_B/compare/<name of RUN_A>).",
    )
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="the reference run folder")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="the run folder compared with it")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.05,
        help="smallest change that counts, as a fraction (default 0.05: a ratio within 1 ± 5%% is "
        "within noise)",
    )
    p.add_argument(
        "--allow-protocol-change",
        action="store_true",
        help="compare runs measured under different protocols (threads, repeats, device, ...) and say so",
    )
    p.add_argument("--out", type=Path, default=None, help="folder for the comparison")
    p.set_defaults(func=_cmd_compare)


def _cmd_check(args: argparse.Namespace) -> int:
    from attnbench.check import main_check

    return main_check(args.target, checks=args.only)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="run the conformance suite on one mechanism (registered name or .py file)",
        description="Run the conformance checks (build, shape, gradients, bfloat16, batch independence, "
        "determinism, analytic vs counted FLOPs, constraints, errors) on a registered mechanism or on "
        "every mechanism a .py file registers, and print a pass/fail table with the reason and the fix "
        "of each failure. Exit codes: 0 all passed, 1 a check failed, 2 bad target.",
    )
    p.add_argument(
        "target", metavar="NAME_OR_FILE", help="a registered name, or a .py file that registers mechanisms"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="CHECK",
        help="run only this check (repeatable; names as in the table)",
    )
    p.set_defaults(func=_cmd_check)


def _cmd_new(args: argparse.Namespace) -> int:
    from attnbench.scaffold import main_new

    return main_new(args.name, args.out, args.force)


def _add_new(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "new",
        help="write a skeleton mechanism file that passes `attnbench check`",
        description="Write NAME.py: a commented, working mechanism (global attention) with the whole "
        "interface filled in, to replace with yours. Refuses an existing file without --force.",
    )
    p.add_argument("name", metavar="NAME", help="the registry name, a Python identifier not yet registered")
    p.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="the .py file, or a folder for NAME.py (default: ./NAME.py; mechanisms/ adds it to the zoo)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_cmd_new)


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from attnbench.study import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"attnbench schema: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"schema written: {args.out}")
    return 0


def _add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of study files (for editors: validation and completion)",
        description="Print (or write to FILE) the JSON Schema of a study file of any kind, with the "
        "parameters of every registered mechanism. studies/study.schema.json is its output; a study "
        "file whose first line is `# yaml-language-server: $schema=study.schema.json` is checked as "
        "you type by editors with the YAML language server.",
    )
    p.add_argument("-o", "--out", type=Path, metavar="FILE", help="write the schema to FILE instead")
    p.set_defaults(func=_cmd_schema)


def _queries(texts: list[str] | None) -> list[tuple[int, int]] | None:
    """``ROW,COL`` strings as (row, col); ValueError naming a bad one."""
    out = []
    for text in texts or []:
        try:
            row, col = (int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(
                f"--query {text!r} is not ROW,COL; give two integers, e.g. --query 3,7 (a token of the "
                "stage's map)"
            ) from None
        out.append((row, col))
    return out or None


def _cmd_maps(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.model is None):
        what = "neither was given" if args.run_dir is None else "both were given"
        print(
            f"attnbench maps: give an ablation run folder (RUN_DIR) or a seed model (--model NAME with --out "
            f"DIR), one of the two; {what}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if args.model is not None and args.out is None:
        print("attnbench maps: --model needs --out DIR, the folder to write the pictures to", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        queries = _queries(args.query)
    except ValueError as exc:
        print(f"attnbench maps: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from attnbench.kinds.ablation.maps import MapsError, draw_model_maps, draw_run_maps
    from attnbench.store import StoreError, check_no_links

    try:
        if args.model is not None:
            written = draw_model_maps(
                args.model,
                args.checkpoint,
                args.image,
                out_dir=args.out,
                queries=queries,
                stage=args.stage,
                img_size=args.img_size,
            )
        else:
            check_no_links(args.run_dir)
            written = draw_run_maps(
                args.run_dir,
                level=args.level,
                seed=args.seed,
                image_index=args.image_index,
                queries=queries,
                stage=args.stage,
                progress=lambda line: print(line, file=sys.stderr),
            )
    except (MapsError, StoreError) as exc:
        print(f"attnbench maps: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    return 0


def _add_maps(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "maps",
        help="draw where each mechanism looks (attention maps, effective receptive fields)",
        description="For an ablation run: per configuration (one trained model each, the smallest seed), "
        "the attention of a few queries on one val image (the hook attention_map), and the effective "
        "receptive field at initialisation and trained; writes RUN_DIR/maps/<config>.png|.svg, "
        "all.png|.svg and erf.csv. With --model: a seed model, with --checkpoint or randomly "
        "initialised, on --image or a synthetic pattern, into --out. See docs/maps.md.",
    )
    p.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="an ablation run folder")
    p.add_argument(
        "--level", metavar="L", help="dataset level: its index in the study, or its label (the rows' level)"
    )
    p.add_argument(
        "--seed", type=int, metavar="N", help="training seed (default: the smallest per configuration)"
    )
    p.add_argument(
        "--image-index", type=int, metavar="I", help="val image (default: the first connected one)"
    )
    p.add_argument(
        "--query",
        action="append",
        metavar="ROW,COL",
        help="a query token on the stage's map (repeatable; default: the markers and the contour's middle)",
    )
    p.add_argument("--stage", type=int, default=1, metavar="S", help="1-based stage drawn (default 1)")
    p.add_argument("--model", metavar="NAME", help="a seed model instead of a run (biformer_tiny, ...)")
    p.add_argument("--checkpoint", type=Path, metavar="FILE", help="with --model: its released .pth")
    p.add_argument("--image", type=Path, metavar="FILE", help="with --model: a PNG or JPEG to look at")
    p.add_argument("--img-size", type=int, metavar="PX", help="with --model: input side (default 224)")
    p.add_argument("--out", type=Path, metavar="DIR", help="with --model: the folder to write to")
    p.set_defaults(func=_cmd_maps)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from attnbench.doctor import main_doctor

    return main_doctor(
        device=args.device,
        dtypes=args.dtype,
        mechanisms=args.mechanism,
        plugins=args.plugin or (),
        out=args.out,
        quick=args.quick,
        threads=args.threads,
        report=not args.no_report,
        command=_doctor_command(args),
    )


def _doctor_command(args: argparse.Namespace) -> list[str]:
    """The doctor's command line as given (the manifest's record, and the line to run it again)."""
    line = ["attnbench", "doctor", "--device", args.device]
    for flag, values in (("--dtype", args.dtype), ("--mechanism", args.mechanism), ("--plugin", args.plugin)):
        for value in values or ():
            line += [flag, value]
    line += ["--out", args.out] if args.out else []
    line += ["--threads", str(args.threads)] if args.threads else []
    return line + (["--quick"] if args.quick else []) + (["--no-report"] if args.no_report else [])


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="say what runs on this machine and check every mechanism's backends against its reference",
        description="Print the environment (torch, CUDA and driver, the GPU, timm, natten and its fused "
        "kernels, FlexAttention, torch.compile, threads), then check every mechanism: its reference "
        "(float64 on the CPU) against numerical gradients, and each backend on the device, in each dtype, "
        "against the reference, forward and backward, with one small timing. The rows go into a run "
        "folder (a fresh one each time; attnbench report reads it). Exit codes: 0 every check passed or "
        "was skipped, 1 a check failed, 2 bad arguments. docs/doctor.md says what each column means.",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto (cuda when available, else cpu)",
    )
    p.add_argument(
        "--dtype",
        action="append",
        metavar="T",
        help="float32 (default), bfloat16 or float16; repeatable",
    )
    p.add_argument("--mechanism", action="append", metavar="M", help="check only M (repeatable)")
    p.add_argument(
        "--plugin", action="append", metavar="FILE", help="a .py file registering mechanisms: check them too"
    )
    p.add_argument("--out", metavar="DIR", help="the run folder (default runs/doctor-<device>)")
    p.add_argument("--quick", action="store_true", help="fewer timing samples and no torch.compile probe")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: the physical cores)")
    p.add_argument("--no-report", action="store_true", help="write no report into the run folder")
    p.set_defaults(func=_cmd_doctor)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_list,
    _add_run,
    _add_report,
    _add_compare,
    _add_check,
    _add_new,
    _add_schema,
    _add_maps,
    _add_doctor,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="attnbench", description="Benchmark and ablate vision attention mechanisms."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\nattnbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `attnbench list | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
