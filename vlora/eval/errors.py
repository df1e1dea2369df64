"""Error types of the benchmark library.

Every error names what is wrong and where (file, row index, line number), so a user can fix the
input without reading our code. They subclass ValueError/KeyError so generic handlers still work.
"""

from __future__ import annotations


class BenchmarkDataError(ValueError):
    """A benchmark TSV is malformed: missing column, bad base64, dangling image reference, …"""


class PredictionsError(ValueError):
    """A predictions file or mapping is malformed, or does not cover the rows being scored."""


class UnknownBenchmarkError(KeyError):
    """A benchmark key is not in the registry; the message lists the valid keys."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument; a plain sentence reads better on a terminal.
        return str(self.args[0]) if self.args else ""
