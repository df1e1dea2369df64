"""Timing: statistics of the samples, round-robin order, warm-up rounds dropped."""

from __future__ import annotations

import pytest

from benchmarks import timing


def test_summarize_median_quartiles_and_min() -> None:
    t = timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0], warmup=2)
    assert (t.median_s, t.q1_s, t.q3_s, t.min_s) == (3.0, 2.0, 4.0, 1.0)
    assert t.iqr_s == 2.0 and t.repeats == 5 and t.warmup == 2
    assert t.to_dict()["iqr_s"] == 2.0
    single = timing.summarize([0.5])
    assert single.iqr_s == 0.0 and single.median_s == 0.5
    with pytest.raises(ValueError, match="no timing samples"):
        timing.summarize([])


def test_time_interleaved_runs_round_robin_with_setups_and_drops_warmup() -> None:
    calls: list[str] = []
    paths = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    setups = {"b": lambda: calls.append("setup-b")}
    timings = timing.time_interleaved(paths, repeats=3, warmup=2, setups=setups)
    assert calls == ["a", "setup-b", "b"] * 5
    assert timings["a"].repeats == 3 and timings["b"].repeats == 3
    assert all(s >= 0 for s in timings["a"].samples_s)
    with pytest.raises(ValueError, match="repeats"):
        timing.time_interleaved(paths, repeats=0)


def test_cheap_paths_can_take_several_samples_per_round() -> None:
    calls: list[str] = []
    paths = {"cheap": lambda: calls.append("c"), "dear": lambda: calls.append("d")}
    timings = timing.time_interleaved(paths, repeats=2, warmup=1, calls_per_round={"cheap": 3})
    assert calls == ["c", "c", "c", "d"] * 3
    assert timings["cheap"].repeats == 6 and timings["dear"].repeats == 2
