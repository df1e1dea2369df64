"""Other processes' load: idle waiting, the guard, and contended rounds run again."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks import contention, timing


def test_busy_fraction_and_idle_wait_report_what_they_saw() -> None:
    busy = contention.cpu_busy_fraction(0.2)
    assert 0.0 <= busy <= 1.0
    seen = contention.wait_for_idle(0.0, max_busy=1.0)  # always idle enough: returns at once
    assert seen["idle_enough"] is True and seen["waited_s"] < 5
    assert set(seen) == {"waited_s", "busy_fraction_at_start", "idle_enough"}


def test_contended_rounds_are_run_again_and_counted(scripted_guard) -> None:
    calls: list[str] = []
    # warm-up round is never checked; round 1: busy, then quiet; round 2: busy three times
    guard = scripted_guard([2.0, 0.1, 2.0, 2.0, 2.0])
    timings = timing.time_interleaved(
        {"a": lambda: calls.append("a")}, repeats=2, warmup=1, guard=guard
    )
    assert len(calls) == 1 + 2 + 3  # warm-up, round 1 twice, round 2 three times
    assert timings["a"].repeats == 2  # only the kept round of each is a sample
    assert guard.to_dict() == {
        "max_other_cores": 0.5,
        "discarded_rounds": 3,
        "contended_rounds_kept": 1,
    }


def test_time_interleaved_uses_the_installed_guard(scripted_guard, monkeypatch) -> None:
    guard = scripted_guard([2.0, 0.1])
    monkeypatch.setattr(contention, "GUARD", guard)
    timing.time_interleaved({"a": lambda: None}, repeats=1, warmup=0)
    assert guard.loads == [] and guard.discarded == 1  # checked without being passed


def test_guard_measures_other_processes_not_this_one() -> None:
    guard = contention.ContentionGuard()
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
    assert contention.guarded_round(run, guard, timed=False) == 1  # warm-up: once, unchecked
    assert contention.guarded_round(run, guard) == 3  # busy, then quiet: the quiet run's result
    assert guard.loads == [] and guard.to_dict()["discarded_rounds"] == 1
    assert contention.guarded_round(run, None) == 4  # no guard: once


def test_contention_flags_install_the_guard_only_where_asked(monkeypatch) -> None:
    monkeypatch.setattr(contention, "GUARD", None)
    parser = argparse.ArgumentParser()
    contention.add_contention_args(parser)
    args = parser.parse_args(["--max-other-load", "0.5"])
    assert contention.apply_contention_args(args, guard=False) is None  # no wait, no guard
    assert contention.GUARD is None
    contention.apply_contention_args(args)
    assert isinstance(contention.GUARD, contention.ContentionGuard)
    assert contention.GUARD.max_other_cores == 0.5
    monkeypatch.setattr(contention, "GUARD", None)
    contention.apply_contention_args(parser.parse_args(["--max-other-load", "0"]))
    assert contention.GUARD is None  # 0 turns it off


@pytest.fixture(autouse=True)
def _no_guard_left_behind(monkeypatch) -> None:
    """Each test starts without an installed guard (a script's run may have left one)."""
    monkeypatch.setattr(contention, "GUARD", None)
