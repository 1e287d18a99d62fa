"""The environment a run measured in: device, library versions, CPU, threads, git revision.

:func:`collect_environment` gives the record written to a run's ``manifest.json``;
:func:`environment_key` is the part of it that makes a measurement a different one (device name,
torch and CUDA versions) and enters every ``point_id``, so resuming a run on another machine or
another torch measures again instead of mixing numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "collect_environment",
    "cpu_model",
    "device_name",
    "environment_id",
    "environment_key",
    "git_revision",
    "physical_cpu_cores",
]

_PACKAGES = ("torch", "natten", "timm", "fvcore", "numpy", "pandas", "attnbench")


def physical_cpu_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A human name of the device: the GPU's name, or ``"CPU: <model>"``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_model()}"


def git_revision(path: str | Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``path`` (attnbench's own by default).

    Read-only: ``--no-optional-locks`` keeps ``git status`` from rewriting the index.
    Returns None outside a git checkout or without git.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    versions["torch"] = torch.__version__  # includes the local tag (+cpu, +cu128)
    return versions


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def collect_environment(device: torch.device) -> dict[str, Any]:
    """Everything about the machine and software that a reader of the numbers needs."""
    env: dict[str, Any] = {
        "device_type": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "packages": _package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_physical_cores": physical_cpu_cores(),
        "cpu_logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git": git_revision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu_total_memory_mib=props.total_memory // 2**20,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
            cudnn_version=torch.backends.cudnn.version(),
            nvidia_driver=_nvidia_driver(),
        )
    return env


def environment_key(env: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``env`` that make a measurement a different measurement."""
    return {k: env.get(k) for k in ("device_type", "device_name", "torch_version", "cuda_version")}


def environment_id(env: dict[str, Any]) -> str:
    """A short stable hash of :func:`environment_key`."""
    blob = json.dumps(environment_key(env), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
