"""FLOPs a call really does, and how fast this machine can do them.

- `count_flops` counts the FLOPs of one call exactly, from the matmuls and attention kernels the
  call really runs (torch.utils.flop_counter), by operator. (The paper's formulas are the cost
  model's, `vlora.flops`; a benchmark reports both.)
- `matmul_peak` measures this machine's matrix-multiply rate (square GEMM sweep, best of each
  size) and `memory_bandwidth` its copy rate; `rate` puts a timed path against the peak.
- `top_ops` is torch.profiler's view of one call: the operators with the most self CPU time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.timing import time_call


def _attention_flops(query_shape: Sequence[int], key_shape: Sequence[int]) -> int:
    """QKᵀ and AV of attention: 2·2·B·H_q·S_q·S_k·d (full square, as the paper counts)."""
    batch, heads, s_q, dim = query_shape
    s_k = key_shape[-2]
    return 4 * batch * heads * s_q * s_k * dim


def _cpu_sdpa_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """The counter's signature for the CPU flash-attention kernel (shapes of its arguments)."""
    return _attention_flops(query_shape, key_shape)


def custom_flop_mapping() -> dict[Any, Callable[..., int]]:
    """Operators the stock counter misses (the CPU flash-attention kernel); a caller that needs
    more (its backward) adds to the returned dict."""
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    cpu_flash = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        mapping[cpu_flash] = _cpu_sdpa_flops
    return mapping


@dataclass
class FlopCount:
    total: int
    by_operator: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_operator": self.by_operator}


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """Exact FLOPs of one call (a multiply-add = 2), from the operators it runs."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=custom_flop_mapping())
    with counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(total=int(counter.get_total_flops()), by_operator=by_op)


def matmul_peak(
    sizes: Sequence[int] = (256, 512, 1024, 2048),
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> dict[str, Any]:
    """Square GEMM sweep: the best rate of each size (fastest repeat) and the best overall."""
    rates: dict[str, float] = {}
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(2):
            torch.mm(a, b)
        best = min(time_call(lambda a=a, b=b: torch.mm(a, b)) for _ in range(repeats))
        rates[str(n)] = 2 * n**3 / best / 1e9
    best_size = max(rates, key=rates.__getitem__)
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "device": device,
        "gflops_by_size": {k: round(v, 2) for k, v in rates.items()},
        "best_gflops": round(rates[best_size], 2),
        "best_size": int(best_size),
    }


def memory_bandwidth(megabytes: int = 256, repeats: int = 5, device: str = "cpu") -> dict[str, Any]:
    """Best copy rate of a large buffer, bytes read + written per second (GB/s)."""
    n = megabytes * 2**20
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(time_call(lambda: dst.copy_(src)) for _ in range(repeats))
    return {"buffer_mb": megabytes, "copy_gb_per_s": 2 * n / best / 1e9}


def rate(flops: float, seconds: float, peak_gflops: float) -> dict[str, float]:
    """Achieved GFLOP/s of a path and its share of the measured peak (percent)."""
    gflops_per_s = flops / seconds / 1e9 if seconds > 0 else float("nan")
    return {
        "achieved_gflops_per_s": gflops_per_s,
        "percent_of_peak": 100.0 * gflops_per_s / peak_gflops if peak_gflops else float("nan"),
    }


def top_ops(fn: Callable[[], Any], limit: int = 8) -> list[dict[str, Any]]:
    """torch.profiler over one call: the operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "calls": int(e.count),
            "self_ms": round(e.self_cpu_time_total / 1e3, 3),
            "share_percent": round(100.0 * e.self_cpu_time_total / total, 1),
        }
        for e in events[:limit]
    ]
