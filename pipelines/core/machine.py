"""How fast this machine was during a run: printed next to the local run's stage times.

Wall-clock times on shared VMs are not comparable from day to day without it: the same local
run measured 33.7 min on one day and 16.3 min on another on the same 2-core development VM, whose
fp32 GEMM rate had moved from ~126 to ~160 GFLOP/s. So the local flow measures the GEMM rate at
its start and end (half a second each) and the share of CPU time the hypervisor stole in between.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
STEAL_FIELD = 7  # user nice system idle iowait irq softirq steal …  (proc(5))


@dataclass(frozen=True)
class MachineSnapshot:
    cpus: int
    gemm_gflops: float
    cpu_ticks: tuple[int, ...] | None  # the aggregate "cpu" line of /proc/stat; None elsewhere


def gemm_gflops(seconds: float = 0.5, size: int = 512) -> float:
    """fp32 matmul rate with torch's intra-op threads, timed for about `seconds`."""
    import torch

    a = torch.randn(size, size)  # [n, n]
    b = torch.randn(size, size)  # [n, n]
    a @ b  # first call pays thread-pool start-up
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        a @ b
        calls += 1
    return 2 * size**3 * calls / elapsed / 1e9


def read_cpu_ticks(stat: Path = PROC_STAT) -> tuple[int, ...] | None:
    try:
        first = stat.read_text().splitlines()[0].split()
        if first[0] != "cpu":
            return None
        return tuple(int(v) for v in first[1:])
    except (OSError, IndexError, ValueError):  # not Linux, or a format we do not know
        return None


def snapshot(seconds: float = 0.5) -> MachineSnapshot:
    return MachineSnapshot(os.cpu_count() or 1, gemm_gflops(seconds), read_cpu_ticks())


def steal_share(start: MachineSnapshot, end: MachineSnapshot) -> float | None:
    """Share of all CPU time between two snapshots that the hypervisor gave to other guests."""
    if start.cpu_ticks is None or end.cpu_ticks is None:
        return None
    delta = [e - s for s, e in zip(start.cpu_ticks, end.cpu_ticks, strict=False)]
    total = sum(delta[:8])  # guest time is already counted in user (proc(5))
    if total <= 0 or len(delta) <= STEAL_FIELD:
        return None
    return delta[STEAL_FIELD] / total


def describe(start: MachineSnapshot, end: MachineSnapshot) -> str:
    line = (
        f"machine: {start.cpus} CPUs, fp32 GEMM {start.gemm_gflops:.0f} → "
        f"{end.gemm_gflops:.0f} GFLOP/s (start → end)"
    )
    steal = steal_share(start, end)
    if steal is not None:
        line += f", CPU steal {100 * steal:.1f}% of the run"
    return line
