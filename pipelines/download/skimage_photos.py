"""scikit-image's bundled photos as a tiny, real-photo URL list (served over loopback).

Only files shipped inside the wheel are used (nothing is fetched through pooch). Captions are
the first sentence of the matching `skimage.data` function's docstring ("Chelsea the cat.").
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipelines.download.loopback import canonical_url

URL_PREFIX = "skimage"
# bundled file → skimage.data function whose docstring describes it
PHOTOS = {
    "astronaut.png": "astronaut",
    "brick.png": "brick",
    "camera.png": "camera",
    "cell.png": "cell",
    "chelsea.png": "chelsea",
    "clock_motion.png": "clock",
    "coffee.png": "coffee",
    "coins.png": "coins",
    "color.png": "colorwheel",
    "grass.png": "grass",
    "gravel.png": "gravel",
    "horse.png": "horse",
    "hubble_deep_field.jpg": "hubble_deep_field",
    "ihc.png": "immunohistochemistry",
    "logo.png": "logo",
    "microaneurysms.png": "microaneurysms",
    "moon.png": "moon",
    "page.png": "page",
    "phantom.png": "shepp_logan_phantom",
    "retina.jpg": "retina",
    "rocket.jpg": "rocket",
    "text.png": "text",
}


def data_folder() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def description(function_name: str) -> str:
    """First paragraph of the docstring, on one line, ending with a period."""
    import skimage.data

    doc = getattr(skimage.data, function_name).__doc__ or function_name
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return first if first.endswith(".") else first + "."


def photos() -> list[tuple[str, str, str]]:
    """[(file name, short name, description)] for the photos present in this installation."""
    folder = data_folder()
    found = [(f, n, description(n)) for f, n in PHOTOS.items() if (folder / f).is_file()]
    if not found:
        raise FileNotFoundError(f"no scikit-image photos found in {folder}")
    return found


def url_table() -> pa.Table:
    """A CapsFusion-style URL list (canonical loopback URLs)."""
    rows = photos()
    return pa.table(
        {
            "url": [canonical_url(f"{URL_PREFIX}/{f}") for f, _, _ in rows],
            "laion_2b": [name.replace("_", " ") for _, name, _ in rows],
            "laion_coco": [d for _, _, d in rows],
            "capsfusion": [d for _, _, d in rows],
            "source_index": pa.array(range(len(rows)), pa.int64()),
        }
    )


def served_folders() -> dict[str, Path]:
    return {URL_PREFIX: data_folder()}
