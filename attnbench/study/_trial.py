"""Validate a study that loads plugins in a child process first, with a time limit.

Validation imports each plugin and builds its mechanisms (``attnbench.study.load_study``). A plugin
is code from anywhere: one that calls ``os._exit``, loops for ever or hangs in ``__init__`` would
silence or hang ``attnbench run`` itself. So a study with ``plugins:`` is first validated here, in
a child process watched by a clock; only when that ends cleanly does the CLI validate it in its own
process. Studies without plugins (built-in mechanisms only) skip the trial.

Run as ``python -m attnbench.study._trial STUDY [DEVICE]``: it prints its problems, one per line,
then the :data:`DONE` marker, and exits 0 (valid) or 3 (problems). A child that ends without the
marker, or runs past the limit, is the plugin's doing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["DONE", "TRIAL_SECONDS", "has_plugins", "trial"]

DONE = "attnbench-trial-done"
TRIAL_SECONDS = 120.0  # importing torch and a plugin and building its mechanisms takes seconds


def has_plugins(path: Path) -> bool:
    """Whether the study file gives ``plugins:`` (read as the loader reads it; False when the file
    cannot be read: the loader says why)."""
    from attnbench.study._yaml import read

    root, _, _ = read(path)
    return root is not None and bool(root.get("plugins"))


def trial(path: Path, device: str | None, timeout: float | None = None) -> list[str] | None:
    """Validate ``path`` in a child process: None when it ran to the end (the problems, if any, are
    for the in-process validation to say), else one problem line saying what the child did.
    ``timeout``: seconds (default :data:`TRIAL_SECONDS`)."""
    timeout = TRIAL_SECONDS if timeout is None else timeout
    cmd = [sys.executable, "-m", "attnbench.study._trial", str(path), *([device] if device else [])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [
            f"{path}: validating the study did not finish in {timeout:g} s: a plugin hangs while it is "
            "imported or while its mechanisms are built; fix the plugin (nothing was started)"
        ]
    if DONE in done.stdout.splitlines():
        return None
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
    said = f": {tail[0][:300]}" if tail else ""
    return [
        f"{path}: validating the study ended early (exit code {done.returncode}) while importing a plugin "
        f"or building its mechanisms{said}; a plugin called os._exit, crashed or was killed: fix the "
        "plugin (nothing was started)"
    ]


def _main(argv: list[str]) -> int:
    import attnbench  # noqa: F401 - its import order (torchvision after attnbench) as the CLI's
    from attnbench.study import StudyError, load_study

    path = Path(argv[0])
    device = argv[1] if len(argv) > 1 else None
    code = 0
    try:
        load_study(path, device=device)
    except StudyError as exc:
        print("\n".join(exc.problems))
        code = 3
    print(DONE, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
