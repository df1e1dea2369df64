"""What every benchmark script shares: timing, FLOP counting, the machine, results files.

- `time_interleaved` runs several code paths round-robin (warm-up rounds first) and reports the
  median and inter-quartile range per path. Round-robin matters on a shared machine: a burst of
  load from another process hits every path of a round, not one path's whole sample.
- `count_flops` counts the FLOPs of one call exactly, from the matmuls and attention kernels the
  call really runs (torch.utils.flop_counter), by operator.
- `matmul_peak` measures this machine's matrix-multiply rate (square GEMM sweep, best of each
  size); every timed path is reported against it.
- `write_results` writes `<out>/<name>.json` and `<out>/<name>.md` with the machine and the
  exact command, so every committed number says how to regenerate it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from pipelines.core.machine import read_cpu_ticks

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"


# ----- threads, machine, command ------------------------------------------------------------
def set_threads(threads: int) -> int:
    """Fix intra-op threads (and one inter-op thread) so runs are comparable."""
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # inter-op threads can be set once per process
        torch.set_num_interop_threads(1)
    return torch.get_num_threads()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine as a results file records it (CPU, cores, threads, versions, load)."""
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def command_string(argv: Sequence[str] | None = None) -> str:
    """The command that produced a result, with the script path relative to the repository."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else Path("?")
    try:
        shown = str(script.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(argv[0]) if argv else "?"
    return " ".join(["python", shown, *argv[1:]])


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

    Timing with several intra-op threads on a machine where another process holds a core is
    not just slower but erratic: each parallel region waits for its descheduled thread (seen
    here: a 0.1 ms elementwise op taking 20 ms). Returns what was seen, for the results file.
    """
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


# ----- timing ------------------------------------------------------------------------------
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


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], setup: Callable[[], Any] | None = None) -> float:
    """Wall seconds of one call of `fn` (after an untimed `setup`), device work included."""
    if setup is not None:
        setup()
    _synchronize()
    start = time.perf_counter()
    fn()
    _synchronize()
    return time.perf_counter() - start


def time_interleaved(
    paths: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    setups: dict[str, Callable[[], Any]] | None = None,
    calls_per_round: dict[str, int] | None = None,
    guard: ContentionGuard | None = None,
) -> dict[str, Timing]:
    """Run every path once per round (`calls_per_round[name]` times for cheap paths, each call
    a sample), `warmup` untimed rounds then `repeats` timed rounds. With a guard (argument or
    the module's GUARD), a timed round during which other processes loaded the CPUs is run
    again."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    setups = setups or {}
    calls_per_round = calls_per_round or {}
    guard = guard if guard is not None else GUARD
    samples: dict[str, list[float]] = {name: [] for name in paths}

    def one_round() -> dict[str, list[float]]:
        return {
            name: [
                time_call(fn, setups.get(name)) for _ in range(max(1, calls_per_round.get(name, 1)))
            ]
            for name, fn in paths.items()
        }

    for round_index in range(warmup + repeats):
        this_round = guarded_round(one_round, guard, timed=round_index >= warmup)
        if round_index >= warmup:
            for name, values in this_round.items():
                samples[name].extend(values)
    return {name: summarize(values, warmup) for name, values in samples.items()}


# Set by the scripts (`--max-other-load`); None: no guard (tests, dry runs).
GUARD: ContentionGuard | None = None


# ----- FLOPs -------------------------------------------------------------------------------
def _attention_flops(query_shape: Sequence[int], key_shape: Sequence[int]) -> int:
    """QKᵀ and AV of attention: 2·2·B·H_q·S_q·S_k·d (full square, as the paper counts)."""
    batch, heads, s_q, dim = query_shape
    s_k = key_shape[-2]
    return 4 * batch * heads * s_q * s_k * dim


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return _attention_flops(query_shape, key_shape)


def _custom_flop_mapping() -> dict[Any, Callable[..., int]]:
    """Operators the stock counter misses (the CPU flash-attention kernel)."""
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

    counter = FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping())
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


# ----- profiling ---------------------------------------------------------------------------
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


# ----- results files -----------------------------------------------------------------------
def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats: whole numbers from 100, one decimal from 10, else 3
    significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "–"
            if abs(value) >= 100:
                return f"{value:.0f}"
            if abs(value) >= 10:
                return f"{value:.1f}"
            return f"{value:.3g}"
        return str(value)

    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_results(
    out_dir: str | Path, name: str, payload: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """`<out>/<name>.json` (payload + command + machine) and `<out>/<name>.md`; atomic writes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command_string(), "machine": machine_info(), **payload}
    record.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    header = f"Command: `{record['command']}`\n\nMachine: {_machine_line(record['machine'])}\n\n"
    for path, text in (
        (json_path, json.dumps(record, indent=2, default=_json_default) + "\n"),
        (md_path, header + markdown.rstrip() + "\n"),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return json_path, md_path


def _machine_line(machine: dict[str, Any]) -> str:
    parts = [
        machine.get("gpu") or machine["cpu"],
        f"{machine['logical_cpus']} logical CPUs",
        f"{machine['torch_threads']} torch threads",
        f"torch {machine['torch']}",
        f"load average {machine['load_average_1_5_15']}",
    ]
    return ", ".join(str(p) for p in parts)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure (Agg backend) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
