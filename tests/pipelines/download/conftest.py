"""Helpers shared by the download tests."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


def read_shard_samples(folder: str) -> dict[str, dict]:
    """key → {"jpg": (w, h), "txt": str, "json": str} across all tars; fails on a duplicate."""
    samples: dict[str, dict] = {}
    for tar_path in sorted(Path(folder).glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.rsplit(".", 1)
                entry = samples.setdefault(key, {})
                assert ext not in entry, f"duplicate {member.name} in {tar_path}"
                data = tar.extractfile(member).read()
                entry[ext] = Image.open(io.BytesIO(data)).size if ext == "jpg" else data.decode()
    return samples


@pytest.fixture
def shard_samples() -> Callable[[str], dict[str, dict]]:
    return read_shard_samples
