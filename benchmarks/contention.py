"""Other processes on a shared machine: waiting for idle CPUs, and re-running contended rounds.

Timing with several intra-op threads on a machine where another process holds a core is not
just slower but erratic: each parallel region waits for its descheduled thread (seen here: a
0.1 ms elementwise op taking 20 ms). Two defences, both flags of every CPU timing script
(`add_contention_args`):

- `--wait-idle S`: `wait_for_idle` waits up to S seconds until other processes leave the CPUs
  mostly idle;
- `--max-other-load N`: a `ContentionGuard` measures the cores other processes kept busy during
  each timed round, and `guarded_round` runs a round again while that was more than N.

`apply_contention_args` installs the run's guard as `GUARD`, which `timing.time_interleaved`
uses when it is given none.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pipelines.core.machine import read_cpu_ticks

T = TypeVar("T")


def busy_and_total_ticks() -> tuple[int, int] | None:
    """All CPUs' busy and total clock ticks since boot (/proc/stat; None elsewhere)."""
    ticks = read_cpu_ticks()
    if ticks is None or len(ticks) < 4:
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs' time spent busy over `seconds` (from /proc/stat; NaN elsewhere)."""
    first = busy_and_total_ticks()
    time.sleep(seconds)
    second = busy_and_total_ticks()
    if first is None or second is None or second[1] <= first[1]:
        return float("nan")
    return (second[0] - first[0]) / (second[1] - first[1])


def wait_for_idle(
    max_wait_s: float, max_busy: float = 0.2, quiet_samples: int = 3
) -> dict[str, Any]:
    """Wait (up to `max_wait_s`) until other processes leave the CPUs mostly idle.

    Returns what was seen, for the results file."""
    start = time.monotonic()
    quiet: list[float] = []
    busy = cpu_busy_fraction()
    while True:
        quiet = [*quiet, busy] if busy <= max_busy else []
        if len(quiet) >= quiet_samples or time.monotonic() - start >= max_wait_s:
            break
        busy = cpu_busy_fraction(2.0)
    return {
        "waited_s": round(time.monotonic() - start, 1),
        "busy_fraction_at_start": round(busy, 3),
        "idle_enough": len(quiet) >= min(quiet_samples, 1) and busy <= max_busy,
    }


class ContentionGuard:
    """Measures how many CPUs *other* processes kept busy during a stretch of time.

    Busy time of the whole machine comes from /proc/stat, this process's own CPU time (all its
    threads) from os.times(); the difference over the wall time is the other processes' load
    in cores. A round of timings during which others held more than `max_other_cores` is
    thrown away and run again (at most `max_retries` times per round), and counted.
    """

    def __init__(self, max_other_cores: float = 0.25, max_retries: int = 5) -> None:
        self.max_other_cores = max_other_cores
        self.max_retries = max_retries
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.discarded = 0
        self.kept_contended = 0
        self._start: tuple[float, float, float] | None = None

    def _busy_seconds(self) -> float:
        ticks = busy_and_total_ticks()
        return ticks[0] / self.tick if ticks is not None else float("nan")

    def start(self) -> None:
        own = os.times()
        self._start = (time.perf_counter(), self._busy_seconds(), own.user + own.system)

    def others_cores(self) -> float:
        """Cores other processes used on average since `start` (NaN if unknown)."""
        if self._start is None:
            return float("nan")
        wall0, busy0, own0 = self._start
        own = os.times()
        wall = time.perf_counter() - wall0
        others = (self._busy_seconds() - busy0) - (own.user + own.system - own0)
        return others / wall if wall > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_other_cores": self.max_other_cores,
            "discarded_rounds": self.discarded,
            "contended_rounds_kept": self.kept_contended,
        }


# Set by the scripts (`--max-other-load`); None: no guard (tests, dry runs).
GUARD: ContentionGuard | None = None


def add_contention_args(parser: argparse.ArgumentParser) -> None:
    """`--max-other-load` and `--wait-idle`, the flags of every CPU timing script."""
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=0.25,
        help="redo a timing round when other processes used more CPU cores than this (0: off)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="wait up to this many seconds for other processes to leave the CPUs idle",
    )


def apply_contention_args(args: argparse.Namespace, guard: bool = True) -> dict[str, Any] | None:
    """Act on `add_contention_args`: wait for idle CPUs (`--wait-idle`, warning when they stay
    busy) and install the module's GUARD (`--max-other-load`; `guard=False` on a GPU run).
    Returns what the wait saw, or None when there was no wait."""
    global GUARD
    idle = wait_for_idle(args.wait_idle) if args.wait_idle > 0 else None
    if idle and not idle["idle_enough"]:
        print(f"warning: the CPUs stayed busy ({idle}); timings will be noisy", flush=True)
    if guard and args.max_other_load > 0:
        GUARD = ContentionGuard(args.max_other_load)
    return idle


def guarded_round(run: Callable[[], T], guard: ContentionGuard | None, timed: bool = True) -> T:
    """`run()` once; for a timed round under a guard, again (at most `guard.max_retries` times)
    while other processes held more than `guard.max_other_cores`. Counts the discarded rounds,
    and the contended rounds kept after the last retry."""
    if guard is None or not timed:
        return run()
    for attempt in range(1 + guard.max_retries):
        guard.start()
        result = run()
        if not guard.others_cores() > guard.max_other_cores:  # NaN counts as quiet
            return result
        if attempt < guard.max_retries:
            guard.discarded += 1
        else:
            guard.kept_contended += 1
    return result
