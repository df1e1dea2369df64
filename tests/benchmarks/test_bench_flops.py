"""FLOP counting against known values, the achieved rate, the GEMM peak sweep."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks import flops


def test_count_flops_of_a_matmul_and_of_cpu_attention() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 16)
    assert flops.count_flops(lambda: a @ b).total == 2 * 4 * 8 * 16
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    count = flops.count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert count.total == 2 * (2 * 1 * 2 * 5 * 7 * 8)  # QKᵀ and AV, full square
    assert sum(count.by_operator.values()) == count.total


def test_rate_and_peak_sweep() -> None:
    assert flops.rate(2e9, 1.0, 4.0) == {"achieved_gflops_per_s": 2.0, "percent_of_peak": 50.0}
    peak = flops.matmul_peak(sizes=(16, 32), repeats=2)
    assert set(peak["gflops_by_size"]) == {"16", "32"}
    assert peak["best_gflops"] == max(peak["gflops_by_size"].values()) > 0
    assert peak["best_size"] in (16, 32)
