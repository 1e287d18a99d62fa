"""The noise guard: other processes' CPU time around a row, and when a row is unstable."""

from __future__ import annotations

import os

import pytest

from attnbench import noise
from attnbench.noise import Snapshot, busy_warning, noise_columns, unstable_reasons

HZ = os.sysconf("SC_CLK_TCK")


def _snap(wall: float, own: float, busy_s: float, steal_s: float = 0.0, load: float = 0.5) -> Snapshot:
    return Snapshot(wall, own, load, (busy_s * HZ, steal_s * HZ))


def test_other_cpu_is_busy_time_less_our_own_over_the_wall_time():
    before = _snap(10.0, own=1.0, busy_s=100.0)
    after = _snap(12.0, own=2.0, busy_s=103.0, load=1.5)  # 3 s busy, 1 s of it ours, over 2 s
    cols = noise_columns(before, after)
    assert cols["other_cpu"] == pytest.approx(1.0)
    assert cols["load_avg"] == 0.5 and cols["load_avg_end"] == 1.5 and cols["steal_pct"] == 0.0


def test_a_short_row_reads_the_counters_over_a_wider_window_or_not_at_all():
    window = _snap(9.0, own=0.5, busy_s=99.0)
    before, after = _snap(10.0, own=1.0, busy_s=100.0), _snap(10.01, own=1.01, busy_s=100.01)
    assert noise_columns(before, after)["other_cpu"] is None  # 10 ms: tick rounding, not a reading
    assert noise_columns(before, after, window)["other_cpu"] == pytest.approx(0.5 / 1.01, rel=1e-3)


def test_steal_counts_against_the_machine():
    cores = os.cpu_count() or 1
    cols = noise_columns(_snap(0.0, 0.0, 0.0), _snap(1.0, 0.0, 0.5, steal_s=0.5))
    assert cols["steal_pct"] == pytest.approx(50.0 / cores)
    assert cols["other_cpu"] == 0.0  # stolen time is not another process's


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"latency_ms": 10.0, "latency_iqr_ms": 0.5, "other_cpu": 0.1, "steal_pct": 0.0}, []),
        ({"latency_ms": 10.0, "latency_iqr_ms": 1.5, "other_cpu": 0.1}, ["IQR 15% of the median"]),
        (
            {"latency_ms": 10.0, "latency_iqr_ms": 0.5, "other_cpu": 0.6},
            ["other processes kept 0.6 cores busy"],
        ),
        ({"latency_ms": 10.0, "latency_iqr_ms": 0.5, "steal_pct": 3.0}, ["3% CPU steal"]),
        (
            {"latency_ms": 10.0, "latency_iqr_ms": 0.5, "load_avg": 0.2, "load_avg_end": 1.4},
            ["load rose from 0.2 to 1.4"],
        ),
        ({"status": "skipped"}, []),
    ],
)
def test_unstable_reasons(row, expected):
    assert unstable_reasons(row) == expected


def test_busy_warning_names_the_load_and_the_fix(monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.setattr(noise, "load_average", lambda: float(cores))
    text = busy_warning(1, "cpu")
    assert text is not None and f"load average {cores:.2f}" in text and "quiet machine" in text
    assert busy_warning(1, "cuda") is None  # GPU timings do not share the cores
    monkeypatch.setattr(noise, "load_average", lambda: 0.0)
    assert busy_warning(1, "cpu") is None


def test_a_short_row_on_a_busy_machine_is_unstable_by_its_load_average(monkeypatch):
    """No CPU counters (too short a row) and no rise in the load: a load average that left less than
    a core idle beside the row's threads still marks it."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    row = {"latency_ms": 5.0, "latency_iqr_ms": 0.2, "load_avg": 2.7, "load_avg_end": 2.7, "threads": 1}
    assert unstable_reasons(row) == ["load average 2.7 on 2 cores"]
    assert unstable_reasons({**row, "load_avg": 0.9, "load_avg_end": 0.9}) == []
    assert unstable_reasons({**row, "other_cpu": 0.1}) == []  # the counters, where read, decide
