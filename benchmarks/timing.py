"""Timing code paths: one call, and several paths round-robin with median and quartiles.

`time_interleaved` runs several code paths round-robin (warm-up rounds first) and reports the
median and inter-quartile range per path. Round-robin matters on a shared machine: a burst of
load from another process hits every path of a round, not one path's whole sample; and a round
during which other processes loaded the CPUs is run again (`contention.guarded_round`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from benchmarks import contention


@dataclass
class Timing:
    """Seconds per call of one path: median and quartiles over the repeats."""

    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    repeats: int
    warmup: int
    samples_s: list[float] = field(default_factory=list)

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["iqr_s"] = self.iqr_s
        return out


def summarize(samples: Sequence[float], warmup: int = 0) -> Timing:
    if not samples:
        raise ValueError("no timing samples")
    ordered = sorted(samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return Timing(
        median_s=statistics.median(ordered),
        q1_s=q1,
        q3_s=q3,
        min_s=ordered[0],
        repeats=len(ordered),
        warmup=warmup,
        samples_s=list(samples),
    )


def synchronize() -> None:
    """Wait for the GPU's queued work (no-op without CUDA), so a clock read after it counts it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], setup: Callable[[], Any] | None = None) -> float:
    """Wall seconds of one call of `fn` (after an untimed `setup`), device work included."""
    if setup is not None:
        setup()
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def time_interleaved(
    paths: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    setups: dict[str, Callable[[], Any]] | None = None,
    calls_per_round: dict[str, int] | None = None,
    guard: contention.ContentionGuard | None = None,
) -> dict[str, Timing]:
    """Run every path once per round (`calls_per_round[name]` times for cheap paths, each call
    a sample), `warmup` untimed rounds then `repeats` timed rounds. With a guard (argument or
    the run's `contention.GUARD`), a timed round during which other processes loaded the CPUs
    is run again."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    setups = setups or {}
    calls_per_round = calls_per_round or {}
    guard = guard if guard is not None else contention.GUARD
    samples: dict[str, list[float]] = {name: [] for name in paths}

    def one_round() -> dict[str, list[float]]:
        return {
            name: [
                time_call(fn, setups.get(name)) for _ in range(max(1, calls_per_round.get(name, 1)))
            ]
            for name, fn in paths.items()
        }

    for round_index in range(warmup + repeats):
        this_round = contention.guarded_round(one_round, guard, timed=round_index >= warmup)
        if round_index >= warmup:
            for name, values in this_round.items():
                samples[name].extend(values)
    return {name: summarize(values, warmup) for name, values in samples.items()}
