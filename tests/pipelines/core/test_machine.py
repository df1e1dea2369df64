"""The machine line of the local run's report: GEMM rate and hypervisor steal between snapshots."""

from __future__ import annotations

import pytest

from pipelines.core import machine
from pipelines.core.machine import MachineSnapshot, describe, read_cpu_ticks, steal_share


def test_gemm_rate_is_measured() -> None:
    assert machine.gemm_gflops(seconds=0.05, size=64) > 0


def test_cpu_ticks_come_from_the_aggregate_line(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  93152 247691 59605 138956 1438 0 879 957 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    )
    assert read_cpu_ticks(stat) == (93152, 247691, 59605, 138956, 1438, 0, 879, 957, 0, 0)
    assert read_cpu_ticks(tmp_path / "missing") is None
    for unknown in ("intr 1 2 3\n", "", "\n", "cpu a b\n"):
        stat.write_text(unknown)
        assert read_cpu_ticks(stat) is None


def test_steal_is_the_stolen_share_of_all_cpu_time() -> None:
    start = MachineSnapshot(2, 150.0, (100, 0, 50, 800, 0, 0, 0, 10, 0, 0))
    # +200 user, +50 system, +700 idle, +50 steal; guest ticks (+30, already in user) not added
    end = MachineSnapshot(2, 120.0, (300, 0, 100, 1500, 0, 0, 0, 60, 30, 0))
    assert steal_share(start, end) == pytest.approx(50 / 1000)
    line = describe(start, end)
    assert "2 CPUs" in line and "150 → 120 GFLOP/s" in line and "CPU steal 5.0%" in line


def test_no_steal_figure_without_proc_stat() -> None:
    start = MachineSnapshot(2, 150.0, None)
    assert steal_share(start, start) is None
    assert "steal" not in describe(start, start)
