"""Fixtures for the benchmark-library tests: the synthetic format files and a TSV writer."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

# Synthetic files in the real VLMEvalKit layouts (docs/benchmark-scoring.md, "Golden values in
# the tests"); their digests are pinned in test_eval_golden_scores.py.
FORMATS_DIR = Path(__file__).parent / "data" / "benchmark-formats"


def png_base64(color: tuple[int, int, int] = (255, 0, 0), size: int = 4) -> str:
    """Base64 of a small PNG; comfortably longer than the 64-character reference limit."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def formats_dir() -> Path:
    return FORMATS_DIR


@pytest.fixture
def png_b64() -> str:
    return png_base64()


@pytest.fixture
def make_png_b64() -> Callable[..., str]:
    """Factory for PNGs of other colours/sizes."""
    return png_base64


TsvWriter = Callable[[str, Sequence[str], Sequence[Sequence[object]]], Path]


@pytest.fixture
def write_tsv(tmp_path: Path) -> TsvWriter:
    """Write a TSV the way VLMEvalKit does (every field quoted) and return its path."""

    def write(name: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
        path = tmp_path / name
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        return path

    return write
