"""The helpers the benchmark-harness tests share; and `import benchmarks` under a bare `pytest`.

`benchmarks` is a package of the repository root that is not installed: `python -m pytest` and
`python -m benchmarks.<name>`, run from the root, find it in the current folder; the path below
lets the `pytest` executable (whose sys.path does not hold the root) find it too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.contention import ContentionGuard  # noqa: E402  (needs the path above)


class ScriptedGuard(ContentionGuard):
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
