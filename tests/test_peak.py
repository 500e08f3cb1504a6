"""The machine-limit micro-benchmarks: calibrated FMA peak and read bandwidth, and the achieved fraction."""

from __future__ import annotations

import math

import pytest

from compression.tvm_backend.peak import Peak, achieved_fraction, fma_gflops, measure_peak
from compression.tvm_backend.target import host_target_dict


def test_achieved_fraction_is_flops_over_peak():
    peak = Peak(threads=2, gflops=100.0, lanes=16, accumulators=8, per_shape={"16x8": 100.0})
    # 5e6 MACs = 1e7 FLOP in 1 ms = 10 GFLOP/s = 0.1 of a 100 GFLOP/s peak
    assert achieved_fraction(5e6, 1.0, peak) == pytest.approx(0.1)
    assert math.isnan(achieved_fraction(5e6, 0.0, peak))


def test_measured_peak_is_the_best_shape_and_counts_an_fma_as_two_flops():
    target = host_target_dict(1)
    peak = measure_peak(target, 1, with_stream=False)
    assert peak.gflops == max(peak.per_shape.values()) > 0
    assert f"{peak.lanes}x{peak.accumulators}" in peak.per_shape
    # a loop that runs more FMAs per call takes proportionally longer: the rate, not the time, is the result
    few = fma_gflops(target, 1, peak.lanes, peak.accumulators, iters=2_000)
    assert few > 0.2 * peak.gflops
