"""The training workers' metric window: rates and where the wall time went."""

from __future__ import annotations

import pytest

from pipelines.training import worker
from pipelines.training.worker import MetricWindow


def test_window_reports_rates_and_time_shares(monkeypatch) -> None:
    clock = iter([100.0, 110.0])  # started at 100 s, summary at 110 s
    monkeypatch.setattr(worker.time, "perf_counter", lambda: next(clock))
    window = MetricWindow()
    window.add(loss=2.0, samples=8, tokens=800)
    window.add(loss=1.0, samples=8, tokens=600)
    window.add_time("data", 1.0)
    window.add_time("forward_backward", 7.5)
    window.add_time("optimizer", 1.0)
    window.add_time("forward_backward", 0.5)
    summary = window.summary(world=2)
    assert summary["loss"] == pytest.approx(1.5)
    assert summary["samples_per_s"] == pytest.approx(16 * 2 / 10)
    assert summary["tokens_per_s"] == pytest.approx(1400 * 2 / 10)
    assert summary["data_time_share"] == pytest.approx(0.1)
    assert summary["forward_backward_time_share"] == pytest.approx(0.8)
    assert summary["optimizer_time_share"] == pytest.approx(0.1)


def test_reset_clears_the_window() -> None:
    window = MetricWindow()
    window.add(1.0, 4, 40)
    window.add_time("data", 3.0)
    window.reset()
    summary = window.summary(world=1)
    assert summary["samples_per_s"] == 0 and summary["data_time_share"] == 0
    with pytest.raises(KeyError):
        window.add_time("checkpoint", 1.0)  # not a phase: a typo must not pass silently
