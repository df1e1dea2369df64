"""Benchmarks are scripts, not an installed package: make `import benchmarks` work; and the
helpers the benchmark-harness tests share."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import common  # noqa: E402  (needs the path above)


class ScriptedGuard(common.ContentionGuard):
    """Reports the other processes' load from a script instead of /proc/stat."""

    def __init__(self, loads: list[float]) -> None:
        super().__init__(max_other_cores=0.5, max_retries=2)
        self.loads = loads

    def start(self) -> None:
        pass

    def others_cores(self) -> float:
        return self.loads.pop(0)


@pytest.fixture
def scripted_guard() -> type[ScriptedGuard]:
    """A ContentionGuard whose readings of other processes' load come from a list."""
    return ScriptedGuard
