"""The benchmark harness: statistics, round-robin timing, FLOP counting, results files."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks import common


def test_summarize_median_quartiles_and_min() -> None:
    t = common.summarize([5.0, 1.0, 3.0, 2.0, 4.0], warmup=2)
    assert (t.median_s, t.q1_s, t.q3_s, t.min_s) == (3.0, 2.0, 4.0, 1.0)
    assert t.iqr_s == 2.0 and t.repeats == 5 and t.warmup == 2
    assert t.to_dict()["iqr_s"] == 2.0
    single = common.summarize([0.5])
    assert single.iqr_s == 0.0 and single.median_s == 0.5
    with pytest.raises(ValueError, match="no timing samples"):
        common.summarize([])


def test_time_interleaved_runs_round_robin_with_setups_and_drops_warmup() -> None:
    calls: list[str] = []
    paths = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    setups = {"b": lambda: calls.append("setup-b")}
    timings = common.time_interleaved(paths, repeats=3, warmup=2, setups=setups)
    assert calls == ["a", "setup-b", "b"] * 5
    assert timings["a"].repeats == 3 and timings["b"].repeats == 3
    assert all(s >= 0 for s in timings["a"].samples_s)
    with pytest.raises(ValueError, match="repeats"):
        common.time_interleaved(paths, repeats=0)


def test_cheap_paths_can_take_several_samples_per_round() -> None:
    calls: list[str] = []
    paths = {"cheap": lambda: calls.append("c"), "dear": lambda: calls.append("d")}
    timings = common.time_interleaved(paths, repeats=2, warmup=1, calls_per_round={"cheap": 3})
    assert calls == ["c", "c", "c", "d"] * 3
    assert timings["cheap"].repeats == 6 and timings["dear"].repeats == 2


def test_count_flops_of_a_matmul_and_of_cpu_attention() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 16)
    assert common.count_flops(lambda: a @ b).total == 2 * 4 * 8 * 16
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    count = common.count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert count.total == 2 * (2 * 1 * 2 * 5 * 7 * 8)  # QKᵀ and AV, full square
    assert sum(count.by_operator.values()) == count.total


def test_rate_and_peak_sweep() -> None:
    assert common.rate(2e9, 1.0, 4.0) == {"achieved_gflops_per_s": 2.0, "percent_of_peak": 50.0}
    peak = common.matmul_peak(sizes=(16, 32), repeats=2)
    assert set(peak["gflops_by_size"]) == {"16", "32"}
    assert peak["best_gflops"] == max(peak["gflops_by_size"].values()) > 0
    assert peak["best_size"] in (16, 32)


def test_md_table_formats_numbers() -> None:
    text = common.md_table(["a", "b"], [["x", 1234.567], ["y", 12.345], ["z", 0.012345]])
    lines = text.splitlines()
    assert lines[0] == "| a | b |" and lines[1] == "|---|---|"
    assert lines[2:] == ["| x | 1235 |", "| y | 12.3 |", "| z | 0.0123 |"]
    assert "–" in common.md_table(["v"], [[float("nan")]])


def test_write_results_records_command_and_machine(tmp_path, monkeypatch) -> None:
    script = common.REPO_ROOT / "benchmarks" / "demo.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--repeats", "3"])
    json_path, md_path = common.write_results(tmp_path, "demo", {"value": 1}, "| a |\n|---|")
    record = json.loads(json_path.read_text())
    assert record["command"] == "python benchmarks/demo.py --repeats 3"
    assert record["value"] == 1
    assert record["machine"]["torch_threads"] == torch.get_num_threads()
    assert record["machine"]["logical_cpus"] >= 1 and record["machine"]["cpu"]
    md = md_path.read_text()
    assert md.startswith("Command: `python benchmarks/demo.py --repeats 3`") and "| a |" in md
    assert not list(tmp_path.glob("*.tmp"))


def test_busy_fraction_and_idle_wait_report_what_they_saw() -> None:
    busy = common.cpu_busy_fraction(0.2)
    assert 0.0 <= busy <= 1.0
    seen = common.wait_for_idle(0.0, max_busy=1.0)  # always idle enough: returns at once
    assert seen["idle_enough"] is True and seen["waited_s"] < 5
    assert set(seen) == {"waited_s", "busy_fraction_at_start", "idle_enough"}


def test_contended_rounds_are_run_again_and_counted(scripted_guard) -> None:
    calls: list[str] = []
    # warm-up round is never checked; round 1: busy, then quiet; round 2: busy three times
    guard = scripted_guard([2.0, 0.1, 2.0, 2.0, 2.0])
    timings = common.time_interleaved(
        {"a": lambda: calls.append("a")}, repeats=2, warmup=1, guard=guard
    )
    assert len(calls) == 1 + 2 + 3  # warm-up, round 1 twice, round 2 three times
    assert timings["a"].repeats == 2  # only the kept round of each is a sample
    assert guard.to_dict() == {
        "max_other_cores": 0.5,
        "discarded_rounds": 3,
        "contended_rounds_kept": 1,
    }


def test_guard_measures_other_processes_not_this_one() -> None:
    guard = common.ContentionGuard()
    guard.start()
    x = torch.randn(256, 256)
    for _ in range(50):
        x @ x  # our own work must not count as contention
    load = guard.others_cores()
    assert load == load  # not NaN on Linux
    assert load < 2.5


def test_guarded_round_checks_only_timed_rounds_under_a_guard(scripted_guard) -> None:
    calls: list[int] = []

    def run() -> int:
        calls.append(1)
        return len(calls)

    guard = scripted_guard([2.0, 0.1])
    assert common.guarded_round(run, guard, timed=False) == 1  # warm-up: once, unchecked
    assert common.guarded_round(run, guard) == 3  # busy, then quiet: the quiet run's result
    assert guard.loads == [] and guard.to_dict()["discarded_rounds"] == 1
    assert common.guarded_round(run, None) == 4  # no guard: once


def test_contention_flags_install_the_guard_only_where_asked(monkeypatch) -> None:
    import argparse

    monkeypatch.setattr(common, "GUARD", None)
    parser = argparse.ArgumentParser()
    common.add_contention_args(parser)
    args = parser.parse_args(["--max-other-load", "0.5"])
    assert common.apply_contention_args(args, guard=False) is None  # no wait asked, no guard
    assert common.GUARD is None
    common.apply_contention_args(args)
    assert isinstance(common.GUARD, common.ContentionGuard)
    assert common.GUARD.max_other_cores == 0.5
    monkeypatch.setattr(common, "GUARD", None)
    common.apply_contention_args(parser.parse_args(["--max-other-load", "0"]))
    assert common.GUARD is None  # 0 turns it off
