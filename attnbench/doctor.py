"""``attnbench doctor``: what runs on this machine, and does it compute the right numbers here?

Two parts, both rows of one run folder (kind ``doctor``, :mod:`attnbench.kinds.doctor.kind`), so that
``attnbench report`` reads a doctor run like any other:

1. **The environment**, one row per probe: torch, CUDA and the driver, the GPU's name and memory,
   timm, natten (and whether its compiled library, the fused kernels, loads, and which of its
   backends accept a small problem here), FlexAttention (a forward and a backward on the device),
   ``torch.compile`` (a small function compiled and checked; ``--quick`` leaves it out) and the
   threads.
2. **Every mechanism**, checked against its plain reference on this device and dtype:

   - the **reference** is the mechanism itself with its ``reference_backend`` (BRA's released
     algorithm, NATTEN's plain ``torch`` gather; the mechanism's one implementation where it has
     no backends), in float64 on the CPU, its weights those of the checked module. Its gradients
     are first checked numerically (:func:`torch.autograd.gradcheck`, fast mode, with respect to the
     input and every parameter): the reference row. A wrong backward fails there, whatever the
     device;
   - then one row per backend that exists for the mechanism (:meth:`AttentionMechanism.backends`)
     and dtype: the backend's forward (eval, no gradient) and its gradients (train mode, loss
     ``sum(out · g)`` with a fixed random ``g``) against the reference's. The error of a tensor is
     ``max |a - ref| / max |ref|`` (relative to its largest entry, so one number per tensor whatever
     its scale); the backward's is the largest over the input's and every parameter's gradient. A
     row passes when both are within the dtype's :data:`TOLERANCE`. A backend that cannot run here
     (:meth:`AttentionMechanism.backend_unavailable`: FlexAttention off CUDA, natten not installed)
     is SKIP with the reason; one whose backward cannot run here has its forward checked.
   - ``default``: the backend ``backend="auto"`` takes here, for inference (no gradient) and for
     training; and one small median timing of the row's forward.

Verdicts: PASS (status ``ok``), SKIP (``skipped``), FAIL (``error``: the reason says what differs,
by how much, at which tolerance). The exit status is 1 when any row fails, 2 for bad arguments.
Every doctor starts a fresh folder (an earlier one is moved aside): it checks the machine as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnbench.kinds.doctor.kind import DIM, DTYPES, HEADS, SIZE, TOLERANCE

__all__ = [
    "DIM",
    "DTYPES",
    "HEADS",
    "SIZE",
    "TOLERANCE",
    "DoctorStudy",
    "doctor_study",
    "main_doctor",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class DoctorStudy:
    """What ``attnbench doctor`` checks; the runner takes it like a validated study file.

    Attributes:
        device: ``"cpu"`` or ``"cuda"`` (resolved).
        requested_device: as asked (``auto`` stays ``auto``).
        dtypes: the dtypes every backend is checked in.
        mechanisms: the registered mechanisms to check, in order.
        plugins: ``.py`` files that register more mechanisms (checked too when ``mechanisms`` is
            every mechanism).
        quick: fewer timing samples, no ``torch.compile`` probe.
        threads: CPU threads of every check.
        seed: of the weights, inputs and gradients.
        command: the command line (the manifest's, and the resume line's).
    """

    device: str
    requested_device: str
    dtypes: tuple[str, ...]
    mechanisms: tuple[str, ...]
    plugins: tuple[Path, ...] = ()
    quick: bool = False
    threads: int = 1
    seed: int = 0
    command: tuple[str, ...] = ()
    name: str = "doctor"
    kind: str = "doctor"
    point_timeout_s: float = 600.0

    @property
    def path(self) -> str:
        return "attnbench doctor"

    @property
    def description(self) -> str:
        return (
            f"attnbench doctor on {self.device} ({', '.join(self.dtypes)}): the environment, then "
            f"{len(self.mechanisms)} mechanisms against their plain reference"
        )

    @property
    def text(self) -> str:
        """The options, one per line (the manifest's record of what was asked)."""
        lines = [
            f"device: {self.requested_device}",
            f"dtypes: [{', '.join(self.dtypes)}]",
            f"mechanisms: [{', '.join(self.mechanisms)}]",
            f"plugins: [{', '.join(str(p) for p in self.plugins)}]",
            f"quick: {str(self.quick).lower()}",
            f"threads: {self.threads}",
            f"seed: {self.seed}",
        ]
        return "\n".join(lines) + "\n"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def resume_command(self) -> list[str]:
        return list(self.command) or ["attnbench", "doctor"]


def doctor_study(
    *,
    device: str = "auto",
    dtypes: Sequence[str] = ("float32",),
    mechanisms: Sequence[str] | None = None,
    plugins: Sequence[str | Path] = (),
    quick: bool = False,
    threads: int | None = None,
    seed: int = 0,
    command: Sequence[str] = (),
) -> DoctorStudy:
    """A checked :class:`DoctorStudy`; plugins are loaded (they register mechanisms).

    Raises:
        ValueError: a device, dtype, mechanism or plugin that is not valid, saying what would be.
    """
    import torch

    from attnbench.check import TargetError, resolve_target
    from attnbench.environment import physical_cpu_cores
    from attnbench.registry import available_mechanisms, get_mechanism, suggest

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {device!r} is not one of auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    resolved = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"--dtype {bad[0]!r} is not one of {', '.join(DTYPES)}")
    from_plugins: list[str] = []
    for plugin in plugins:
        try:
            from_plugins += resolve_target(str(plugin))
        except TargetError as exc:
            raise ValueError(f"--plugin: {exc}") from exc
    if mechanisms:
        names = list(dict.fromkeys(mechanisms))
        known = available_mechanisms()
        for name in names:
            if name not in known:
                raise ValueError(f"--mechanism {name!r} is not registered{suggest(name, known)}")
    else:
        names = [n for n in available_mechanisms() if n not in from_plugins] + from_plugins
    for name in names:
        get_mechanism(name)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads} must be >= 1")
    return DoctorStudy(
        device=resolved,
        requested_device=device,
        dtypes=tuple(dict.fromkeys(dtypes)),
        mechanisms=tuple(names),
        plugins=tuple(Path(p).resolve() for p in plugins),
        quick=quick,
        threads=threads or physical_cpu_cores(),
        seed=seed,
        command=tuple(command),
    )


def default_out(device: str) -> Path:
    """``runs/doctor-<device>`` under the current directory."""
    return Path("runs") / f"doctor-{device}"


def main_doctor(
    *,
    device: str = "auto",
    dtypes: Sequence[str] | None = None,
    mechanisms: Sequence[str] | None = None,
    plugins: Sequence[str] = (),
    out: str | None = None,
    quick: bool = False,
    threads: int | None = None,
    report: bool = True,
    command: Sequence[str] = (),
    stdout: Any = None,
    stderr: Any = None,
) -> int:
    """``attnbench doctor``: check, print both tables, write the run folder; the exit status."""
    from attnbench.kinds.doctor.kind import environment_table, mechanism_table
    from attnbench.runner import run_study
    from attnbench.store import load_rows

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        study = doctor_study(
            device=device,
            dtypes=dtypes or ("float32",),
            mechanisms=mechanisms,
            plugins=plugins,
            quick=quick,
            threads=threads,
            command=command or ("attnbench", "doctor"),
        )
    except ValueError as exc:
        print(f"attnbench doctor: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    run_dir = Path(out) if out else default_out(study.device)
    code = run_study(
        study,
        out_dir=run_dir,
        fresh=True,
        quiet=True,
        report=False,
        command=list(study.resume_command),
        stdout=stdout,
        stderr=stderr,
    )
    if code not in (0,):
        return code
    _, rows = load_rows(run_dir)
    print(environment_table(rows), file=stdout)
    print(file=stdout)
    print(mechanism_table(rows), file=stdout)
    failed = [r for r in rows if r.get("status") == "error"]
    skipped = sum(r.get("status") == "skipped" for r in rows)
    passed = sum(r.get("status") == "ok" for r in rows)
    print(file=stdout)
    if report:
        try:
            from attnbench.report import write_report

            index = write_report(run_dir, plots=False)
            print(f"attnbench doctor: report {index}", file=stdout)
        except Exception as exc:  # noqa: BLE001 - the rows are safe; a report failure is only said
            print(f"attnbench doctor: writing the report failed ({type(exc).__name__}: {exc})", file=stderr)
    print(
        f"attnbench doctor: {passed} passed, {len(failed)} failed, {skipped} skipped "
        f"({study.device}, {', '.join(study.dtypes)}); rows in {run_dir}",
        file=stdout,
    )
    for r in failed:
        where = " ".join(str(r.get(k)) for k in ("item", "backend", "dtype") if r.get(k) not in (None, ""))
        print(f"attnbench doctor: FAIL {where}: {r.get('error')}", file=stdout)
    return EXIT_FAILED if failed else EXIT_OK
