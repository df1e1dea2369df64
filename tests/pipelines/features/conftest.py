"""Inputs for the features tests, in the download stage's layout (built here, not downloaded)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


def encode_image(colour: tuple[int, int, int], size: tuple[int, int] = (40, 24), fmt="JPEG"):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_img2dataset_shard(path: Path, samples: dict[str, tuple[bytes, str, dict]]) -> None:
    """A webdataset tar as img2dataset writes it: {key}.jpg, {key}.txt, {key}.json."""
    import webdataset

    with open(path, "wb") as handle, webdataset.TarWriter(handle) as sink:
        for key, (image, caption, extra) in samples.items():
            meta = {
                "url": f"http://x/{key}.jpg",
                "caption": caption,
                "key": key,
                "status": "success",
                "width": 40,
            }
            sink.write({"__key__": key, "jpg": image, "txt": caption, "json": {**meta, **extra}})


def img2dataset_samples(first: int, count: int) -> dict[str, tuple[bytes, str, dict]]:
    """Decodable samples with img2dataset keys, captions and CapsFusion caption columns."""
    return {
        f"{i:09d}": (
            encode_image((23 * i % 256, 100, 200 - i)),
            f"caption {i}",
            {"capsfusion": f"cf {i}", "laion_2b": f"l2 {i}", "source_index": i},
        )
        for i in range(first, first + count)
    }


@pytest.fixture(scope="session")
def make_image() -> Callable[..., bytes]:
    return encode_image


@pytest.fixture(scope="session")
def write_shard() -> Callable[[Path, dict[str, tuple[bytes, str, dict]]], None]:
    return write_img2dataset_shard


@pytest.fixture(scope="session")
def good_samples() -> Callable[[int, int], dict[str, tuple[bytes, str, dict]]]:
    return img2dataset_samples


@pytest.fixture(scope="session")
def corrupt_samples() -> dict[str, tuple[bytes, str, dict]]:
    """An HTML error page and a cut JPEG: `not_an_image` and `truncated`."""
    return {
        "900000000": (b"<html>404 not found</html>", "html", {}),
        "900000001": (encode_image((1, 2, 3), (64, 64))[:300], "cut jpeg", {}),
    }
