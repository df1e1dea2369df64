"""easy-vqa (PyPI, MIT) as a local source: 4,000 train / 1,000 test 64 px images of one shape.

Each image shows one shape (circle, rectangle, triangle) in one of 8 pure palette colours on a
light, slightly noisy background. Captions need the shape and the colour of every image, and the
questions alone do not give both for all of them (about 5% lack one), so they are read from the
pixels: the colour is the palette colour with the most pixels; the shape follows from how much
of its bounding box the shape fills (rectangle ≈ 1.0, circle ≈ π/4, triangle ≈ 0.5; measured on
the 3,000+ train images whose questions name the shape, the three ranges do not overlap). Where
the questions do name the shape or colour, they win and every disagreement is counted.

The train/test split is kept: pre-training and SFT data come from `train` only; the eval stage
builds its benchmark from `test`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.download.loopback import canonical_url

SHAPES = ("circle", "rectangle", "triangle")
PALETTE = {
    "black": (0, 0, 0),
    "blue": (0, 0, 255),
    "brown": (165, 42, 42),
    "gray": (128, 128, 128),
    "green": (0, 255, 0),
    "red": (255, 0, 0),
    "teal": (0, 128, 128),
    "yellow": (255, 255, 0),
}
SPLITS = ("train", "test")
URL_PREFIX = "easyvqa"


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    image_id: int


@dataclass(frozen=True)
class ImageFacts:
    image_id: int
    shape: str
    color: str


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"easy-vqa split must be one of {SPLITS}, got '{split}'")


@cache
def image_folder(split: str) -> Path:
    """The installed package's image folder of a split (files `{id}.png`)."""
    import easy_vqa

    _check_split(split)
    return Path(easy_vqa.__file__).resolve().parent / "data" / split / "images"


@cache
def image_ids(split: str) -> tuple[int, ...]:
    return tuple(sorted(int(p.stem) for p in image_folder(split).glob("*.png")))


@cache
def questions(split: str) -> tuple[Question, ...]:
    import easy_vqa

    _check_split(split)
    read = easy_vqa.get_train_questions if split == "train" else easy_vqa.get_test_questions
    texts, answers, ids = read()
    return tuple(Question(t, a, int(i)) for t, a, i in zip(texts, answers, ids, strict=True))


def questions_by_image(split: str) -> dict[int, list[Question]]:
    grouped: dict[int, list[Question]] = {}
    for q in questions(split):
        grouped.setdefault(q.image_id, []).append(q)
    return grouped


def facts_from_questions(qs: list[Question]) -> tuple[str | None, str | None]:
    """(shape, colour) stated by an image's questions and answers, where they state them."""
    shape = color = None
    for q in qs:
        words = set(re.findall(r"[a-z]+", q.text))
        named_shapes = [s for s in SHAPES if s in words]
        named_colors = [c for c in PALETTE if c in words]
        if q.answer in SHAPES:
            shape = q.answer
            color = named_colors[0] if named_colors else color
        elif q.answer in PALETTE:
            color = q.answer
            shape = named_shapes[0] if named_shapes else shape
        elif q.answer in ("yes", "no"):
            negated = re.search(r"\b(not|no)\b", q.text) is not None
            if (q.answer == "yes") != negated:  # the named thing is present
                shape = named_shapes[0] if named_shapes else shape
                color = named_colors[0] if named_colors else color
    return shape, color


def facts_from_pixels(path: Path) -> tuple[str, str]:
    """(shape, colour) read from the image: see the module docstring."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)  # [H, W, 3]
    counts = {
        name: int(np.all(pixels == np.array(rgb, dtype=np.int16), axis=-1).sum())
        for name, rgb in PALETTE.items()
    }
    color = max(counts, key=counts.__getitem__)
    background = pixels[0, 0]
    mask = np.abs(pixels - background).sum(axis=-1) > 60  # [H, W] shape pixels
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError(f"{path}: no shape found")
    fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = "triangle" if fill < 0.7 else "circle" if fill < 0.92 else "rectangle"
    return shape, color


def image_facts(split: str, ids: list[int] | None = None) -> tuple[dict[int, ImageFacts], Counter]:
    """Shape and colour of each image; counts of where they came from and of disagreements."""
    grouped = questions_by_image(split)
    folder = image_folder(split)
    facts: dict[int, ImageFacts] = {}
    counts: Counter[str] = Counter()
    for image_id in ids if ids is not None else image_ids(split):
        pixel_shape, pixel_color = facts_from_pixels(folder / f"{image_id}.png")
        q_shape, q_color = facts_from_questions(grouped.get(image_id, []))
        for kind, stated, seen in (
            ("shape", q_shape, pixel_shape),
            ("color", q_color, pixel_color),
        ):
            if stated is None:
                counts[f"{kind}_from_pixels"] += 1
            elif stated != seen:
                counts[f"{kind}_pixels_disagree"] += 1
        facts[image_id] = ImageFacts(image_id, q_shape or pixel_shape, q_color or pixel_color)
    return facts, counts


def captions(f: ImageFacts) -> dict[str, str]:
    """CapsFusion-style caption variants: raw alt-text-like, COCO-like, and a fused sentence."""
    return {
        "laion_2b": f"{f.color} {f.shape}",
        "laion_coco": f"a {f.shape} in {f.color} on a light background",
        "capsfusion": f"a {f.color} {f.shape}.",
    }


def image_path(split: str, image_id: int) -> str:
    """Relative path used in URLs and in the SFT image folder."""
    return f"{URL_PREFIX}/{split}/{image_id}.png"


def url_table(ids: list[int], split: str = "train") -> tuple[pa.Table, Counter]:
    """A CapsFusion-style URL list (canonical loopback URLs) for the given images."""
    facts, counts = image_facts(split, ids)
    rows = [captions(facts[i]) for i in ids]
    table = pa.table(
        {
            "url": [canonical_url(image_path(split, i)) for i in ids],
            "laion_2b": [r["laion_2b"] for r in rows],
            "laion_coco": [r["laion_coco"] for r in rows],
            "capsfusion": [r["capsfusion"] for r in rows],
            "source_index": pa.array(ids, pa.int64()),
        }
    )
    return table, counts


def served_folders(split: str = "train") -> dict[str, Path]:
    """What the loopback server must serve for `url_table` URLs to resolve."""
    return {f"{URL_PREFIX}/{split}": image_folder(split)}
