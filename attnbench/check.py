"""``attnbench check NAME_OR_FILE``: the conformance suite on one mechanism, as a pass/fail table.

The target is a registered name (``attnbench check bra``) or a ``.py`` file (``attnbench check
my_attention.py``), which is loaded with :func:`attnbench.load_plugin`; every mechanism it registers
is checked. Each check of :data:`attnbench.conformance.CHECKS` is one row: the check, PASS or FAIL,
and for a failure what went wrong and how to fix it.

Exit codes: 0 every check passed, 1 a check failed, 2 the target (or a check name) is not valid.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from attnbench.conformance import CHECKS, CheckResult, run_checks
from attnbench.registry import available_mechanisms, get_mechanism, load_plugin, suggest

__all__ = [
    "EXIT_BAD_TARGET",
    "EXIT_FAILED",
    "EXIT_OK",
    "TargetError",
    "format_table",
    "main_check",
    "resolve_target",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_TARGET = 0, 1, 2


class TargetError(ValueError):
    """The target of ``attnbench check`` is neither a registered name nor a loadable plugin file."""


def _looks_like_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target or Path(target).is_file()


def _closest_file(target: str) -> str:
    """``; did you mean 'x.py'?`` for the nearest ``.py`` file in the target's folder or the cwd."""
    given = Path(target).expanduser()
    candidates: dict[str, str] = {}  # file name -> the path to suggest, as the user would type it
    for folder in (given.parent, Path(".")):
        if folder.is_dir():
            for f in sorted(folder.glob("*.py")):
                candidates.setdefault(f.name, str(f))
    close = difflib.get_close_matches(given.name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {candidates[close[0]]!r}?" if close else ""


def resolve_target(target: str) -> list[str]:
    """The mechanism names ``target`` stands for: itself if registered, or what its file registers.

    Raises:
        TargetError: with a message saying what would be valid (the closest name, the missing file).
    """
    if _looks_like_path(target):
        path = Path(target).expanduser()
        if not path.is_file():
            raise TargetError(f"no such file: {target!r}{_closest_file(target)}")
        if path.suffix != ".py":
            raise TargetError(f"{target!r} is not a .py file; give a registered name or a plugin .py file")
        before = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # checking leaves no __pycache__ beside the user's file
        try:
            names = load_plugin(path)
        except Exception as exc:  # noqa: BLE001 - any import error is a bad target, reported
            raise TargetError(f"loading {target!r} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            sys.dont_write_bytecode = before
        if not names:
            raise TargetError(
                f"{target!r} registers no mechanism; decorate an AttentionMechanism subclass with "
                "@register_mechanism('your_name') (attnbench new NAME writes a skeleton)"
            )
        return names
    names = available_mechanisms()
    if target in names:
        return [target]
    hint = suggest(target, names)
    if not hint and Path(f"{target}.py").is_file():
        hint = f"; did you mean the file {target + '.py'!r}?"
    raise TargetError(f"unknown mechanism {target!r}{hint} (registered: {', '.join(names)})")


def _source(cls: type) -> str:
    try:
        path = Path(inspect.getsourcefile(cls) or "")
    except TypeError:
        return cls.__module__
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _reason(result: CheckResult) -> str:
    if result.passed:
        return ""
    if "Fix:" in result.message:
        return result.message
    # a crash inside the check: point at the way to see the whole traceback
    return (
        f"{result.message}. Fix: see the traceback with "
        f"attnbench.conformance.CHECKS[{result.check!r}](attnbench.get_mechanism(NAME))"
    )


def format_table(name: str, results: Sequence[CheckResult]) -> str:
    """The plain-text table of one mechanism: a header, one row per check, a summary line."""
    cls = get_mechanism(name)
    width = max([len("check"), *(len(r.check) for r in results)])
    lines = [
        f"{name}: {cls.__qualname__} ({_source(cls)})",
        f"{'check':<{width}} | result | reason and fix",
        f"{'-' * width}-+--------+{'-' * 16}",
    ]
    for r in results:
        lines.append(f"{r.check:<{width}} | {'PASS' if r.passed else 'FAIL':<6} | {_reason(r)}".rstrip())
    failed = [r.check for r in results if not r.passed]
    verdict = f"; failed: {', '.join(failed)}" if failed else ""
    lines.append(f"{name}: {len(results) - len(failed)} of {len(results)} checks passed{verdict}")
    return "\n".join(lines)


def main_check(target: str, checks: Sequence[str] | None = None) -> int:
    """Run the conformance suite on ``target`` and print a pass/fail table per mechanism.

    Args:
        target: a registered mechanism name, or a ``.py`` file registering one or more.
        checks: names of :data:`attnbench.conformance.CHECKS` to run (default: all).

    Returns:
        0 when every check passed, 1 when one failed, 2 for a bad target or check name (the reason,
        with the closest valid name, is printed to stderr).
    """
    unknown = [c for c in checks or () if c not in CHECKS]
    if unknown:
        hints = "".join(suggest(c, list(CHECKS)) for c in unknown[:1])
        print(
            f"attnbench check: unknown check {unknown[0]!r}{hints} (checks: {', '.join(CHECKS)})",
            file=sys.stderr,
        )
        return EXIT_BAD_TARGET
    try:
        names = resolve_target(target)
    except TargetError as exc:
        print(f"attnbench check: {exc}", file=sys.stderr)
        return EXIT_BAD_TARGET
    worst = EXIT_OK
    for i, name in enumerate(names):
        results = run_checks(name, list(checks) if checks else None)
        if i:
            print()
        print(format_table(name, results))
        if not all(r.passed for r in results):
            worst = EXIT_FAILED
    return worst
