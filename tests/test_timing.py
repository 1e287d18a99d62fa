"""The timing harness on functions of known cost."""

from __future__ import annotations

import time

import pytest
import torch

from attnbench.timing import Timing, fixed_threads, time_function


def test_sleep_10ms_measures_10ms_with_small_spread():
    calls = []

    def nap() -> None:
        calls.append(1)
        time.sleep(0.01)

    t = time_function(nap, device="cpu", warmup=2, repeats=15)
    assert len(calls) == 2 + 15  # warmup calls are made but not sampled
    assert len(t.samples_ms) == 15
    assert t.clock == "perf_counter" and t.device == "cpu"
    # sleep never wakes early; a loaded machine may wake it late by a little
    assert 9.9 <= t.median_ms <= 13.0, t.samples_ms
    assert min(t.samples_ms) >= 9.9
    assert t.iqr_ms < 2.0, t.samples_ms


def test_median_iqr_and_throughput_of_known_samples():
    t = Timing(samples_ms=(1.0, 2.0, 3.0, 4.0, 100.0), warmup=0, device="cpu", clock="perf_counter")
    assert t.median_ms == 3.0  # the outlier does not move the median
    assert t.iqr_ms == pytest.approx(4.0 - 2.0)  # linear-interpolated p75 - p25
    assert t.throughput(batch=6) == pytest.approx(6 / 3e-3)


def test_max_time_cuts_sampling_but_keeps_min_repeats():
    t = time_function(lambda: time.sleep(0.02), warmup=0, repeats=100, max_time_s=0.05, min_repeats=3)
    assert 3 <= len(t.samples_ms) < 100
    t = time_function(lambda: time.sleep(0.02), warmup=0, repeats=100, max_time_s=0.001, min_repeats=4)
    assert len(t.samples_ms) == 4


def test_bad_arguments_raise_naming_the_argument():
    with pytest.raises(ValueError, match="repeats"):
        time_function(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_function(lambda: None, warmup=-1)


def test_fixed_threads_sets_and_restores():
    before = torch.get_num_threads()
    with fixed_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with fixed_threads(None) as n:
        assert n == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_time_a_known_kernel():
    # a 4096^2 fp32 matmul: time grows about linearly with the number of chained products
    a = torch.randn(4096, 4096, device="cuda")
    one = time_function(lambda: a @ a, device="cuda", warmup=3, repeats=10)
    four = time_function(lambda: a @ a @ a @ a @ a, device="cuda", warmup=3, repeats=10)
    assert one.clock == "cuda_event"
    assert 3.0 < four.median_ms / one.median_ms < 5.0


def test_max_time_also_bounds_the_warmup():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    t = time_function(slow, device="cpu", warmup=50, repeats=3, max_time_s=0.05)
    assert t.warmup < 50 and len(t.samples_ms) == 3
    assert len(calls) == t.warmup + 3
