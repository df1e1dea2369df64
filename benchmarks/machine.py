"""The machine a benchmark runs on, as its results record it, and the command that ran it.

- `set_threads` fixes torch's thread counts, so runs on one machine are comparable.
- `machine_info` is the `machine` record of every results file (CPU, cores, threads, versions,
  load average, GPU).
- `command_string` is the `command` record: how to run the benchmark again from the repository
  root (`python -m benchmarks.<name> args…`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    """The command that produced a result, runnable from the repository root.

    A module of the `benchmarks` package (what `python -m benchmarks.NAME` runs: argv[0] is then
    the module's file) is shown as `python -m benchmarks.NAME args…`, the only way it runs; any
    other script as its path relative to the repository, or as given when outside it. Arguments
    are shell-quoted where needed (a `--case-name` with spaces), so the line can be pasted."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "python ?"
    script = Path(argv[0]).resolve()
    try:
        relative = script.relative_to(REPO_ROOT)
    except ValueError:
        return shlex.join(["python", str(argv[0]), *argv[1:]])
    if relative.parts[:1] == ("benchmarks",) and relative.suffix == ".py":
        module = ".".join(relative.with_suffix("").parts)
        return shlex.join(["python", "-m", module.removesuffix(".__main__"), *argv[1:]])
    return shlex.join(["python", str(relative), *argv[1:]])
