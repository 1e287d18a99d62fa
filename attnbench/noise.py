"""The noise guard: how busy the machine was while a row was timed, so no number from a busy
machine passes for a quiet one.

Around every timed row the measuring process reads the 1-minute load average and the kernel's CPU
counters (``/proc/stat``: busy and steal time of all cores) and its own CPU time; the counters are
read over at least half a second (back to the previous row's end when a row is quicker). From them:

- ``load_avg``: the 1-minute load average when the row started (includes this run's own threads);
- ``other_cpu``: the average number of cores that *other* processes kept busy while the row was
  timed: (all cores' busy time - this process's CPU time) / wall time;
- ``steal_pct``: the share of CPU time the hypervisor gave to other guests (virtual machines).

A row is ``unstable`` when its IQR exceeds 10 % of its median, when other work kept at least half a
core busy during it (``OTHER_CPU_LIMIT``), or when steal exceeded 2 % (``STEAL_LIMIT``). Where the
kernel has no ``/proc/stat``, the load average stands in (a rise of at least 1 during the row).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

__all__ = [
    "IQR_LIMIT",
    "Snapshot",
    "busy_warning",
    "load_average",
    "noise_columns",
    "snapshot",
    "unstable_reasons",
]

IQR_LIMIT = 0.10  # IQR / median above this: the samples disagree
OTHER_CPU_LIMIT = 0.5  # cores kept busy by other processes during the row
STEAL_LIMIT = 2.0  # % of CPU time stolen by the hypervisor
LOAD_RISE_LIMIT = 1.0  # without /proc/stat: rise of the 1-minute load average during the row
MIN_WINDOW_S = 0.5  # CPU counters over a shorter span are mostly tick rounding


def load_average() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _proc_stat() -> tuple[float, float] | None:
    """(busy, steal) jiffies summed over all cores, from the first line of /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:]]
    user, nice, system, idle, iowait, irq, softirq = (values + [0.0] * 7)[:7]
    steal = values[7] if len(values) > 7 else 0.0
    # guest time is already inside user/nice
    return user + nice + system + irq + softirq + steal, steal


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The counters at one moment."""

    wall: float
    own_cpu: float  # seconds of CPU this process (and its waited-for children) used
    load: float | None
    stat: tuple[float, float] | None


def snapshot() -> Snapshot:
    t = os.times()
    return Snapshot(time.perf_counter(), t.user + t.system, load_average(), _proc_stat())


def noise_columns(before: Snapshot, after: Snapshot, window: Snapshot | None = None) -> dict[str, Any]:
    """``load_avg``, ``load_avg_end``, ``other_cpu`` and ``steal_pct`` of the time between two snapshots.

    The kernel counts CPU time in ticks (10 ms), too coarse for a row timed in a few milliseconds:
    ``window`` (an earlier snapshot, e.g. the previous row's end) widens the span the CPU counters
    are read over; below ``MIN_WINDOW_S`` they are not read at all (``other_cpu`` empty).
    """
    out: dict[str, Any] = {
        "load_avg": before.load,
        "load_avg_end": after.load,
        "other_cpu": None,
        "steal_pct": None,
    }
    before = window if window is not None and window.wall < before.wall else before
    wall = after.wall - before.wall
    if before.stat is None or after.stat is None or wall < MIN_WINDOW_S:
        return out
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (after.stat[0] - before.stat[0]) / hz
    steal = (after.stat[1] - before.stat[1]) / hz
    own = after.own_cpu - before.own_cpu
    cores = os.cpu_count() or 1
    out["other_cpu"] = round(min(float(cores), max(0.0, busy - steal - own) / wall), 3)
    out["steal_pct"] = round(100.0 * steal / (wall * cores), 3)
    return out


def unstable_reasons(row: dict[str, Any]) -> list[str]:
    """Why a timed row cannot be trusted (empty: it can), from its latency and noise columns."""
    reasons = []
    median, iqr = row.get("latency_ms"), row.get("latency_iqr_ms")
    if median and iqr is not None and iqr > IQR_LIMIT * median:
        reasons.append(f"IQR {100 * iqr / median:.0f}% of the median")
    other, steal = row.get("other_cpu"), row.get("steal_pct")
    if other is not None and other >= OTHER_CPU_LIMIT:
        reasons.append(f"other processes kept {other:.1f} cores busy")
    if steal is not None and steal > STEAL_LIMIT:
        reasons.append(f"{steal:.0f}% CPU steal")
    start, end = row.get("load_avg"), row.get("load_avg_end")
    if other is None and start is not None and end is not None and end - start >= LOAD_RISE_LIMIT:
        reasons.append(f"load rose from {start:.1f} to {end:.1f}")
    # a row too short for the CPU counters on a machine that was already busy: the load average
    # (which counts this process's threads) left less than a core idle beside them
    cores, threads = os.cpu_count() or 1, _int(row.get("threads"), 1)
    if other is None and start is not None and start >= cores - threads + 1 and not reasons:
        reasons.append(f"load average {start:.1f} on {cores} cores")
    return reasons


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def busy_warning(threads: int, device: str) -> str | None:
    """A warning when the load leaves fewer idle cores than the study's threads (CPU timing only)."""
    load = load_average()
    cores = os.cpu_count() or 1
    if device != "cpu" or load is None:
        return None
    idle = cores - load
    if idle >= threads:
        return None
    return (
        f"the machine is busy: load average {load:.2f} on {cores} cores leaves {max(idle, 0):.2f} idle, "
        f"fewer than the study's {threads} thread(s); timings will be slow and noisy (rows are marked "
        "unstable). "
        "Check `uptime` and measure on a quiet machine before publishing"
    )
