"""Image preprocessing shared by every vision backend (LLaVA-1.5 style).

RGB → pad to a square with the mean colour (so padding looks like "nothing" after
normalisation) → resize → scale to [0, 1] → normalise with the encoder's mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from vlora.config import VisionEncoderConfig

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class ImagePreprocessor:
    """PIL images → normalised pixel tensor [B, 3, S, S] for one encoder config."""

    def __init__(self, config: VisionEncoderConfig) -> None:
        self.image_size = config.image_size
        self.pad = config.pad_to_square
        self.resample = _RESAMPLE[config.resample]
        self.fill = tuple(round(m * 255) for m in config.image_mean)
        self.mean = torch.tensor(config.image_mean).view(3, 1, 1)
        self.std = torch.tensor(config.image_std).view(3, 1, 1)

    def to_square_rgb(self, image: Image.Image) -> Image.Image:
        """Pad and resize only (uint8 RGB at the encoder resolution): what shards store."""
        image = image.convert("RGB")
        if self.pad:
            image = pad_to_square(image, self.fill)  # type: ignore[arg-type]
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), self.resample)
        return image

    def normalise(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.float32) / 255.0  # [S, S, 3]
        pixels = torch.from_numpy(array).permute(2, 0, 1)  # [3, S, S]
        return (pixels - self.mean) / self.std

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if not images:
            raise ValueError("no images to preprocess")
        return torch.stack([self.normalise(self.to_square_rgb(im)) for im in images])  # [B,3,S,S]
