"""The vision encoder contract: pixels [B, 3, S, S] → patch features [B, L, d_v], frozen."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn

from vlora.config import VisionEncoderConfig
from vlora.vision.preprocess import ImagePreprocessor


class VisionEncoder(nn.Module, abc.ABC):
    """Base class of every backend. Subclasses implement `encode_pixels`."""

    def __init__(self, config: VisionEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.preprocessor = ImagePreprocessor(config)

    @property
    def num_patches(self) -> int:
        return self.config.num_patches

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.preprocessor(images)

    @abc.abstractmethod
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, S, S] → patch features [B, L, d_v]."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.encode_pixels(pixel_values)  # [B, L, d_v]
        expected = (self.num_patches, self.feature_dim)
        if tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"vision encoder produced features {tuple(features.shape)}, config says "
                f"[B, {expected[0]}, {expected[1]}] (check image_size, patch_size, feature_dim, "
                "num_prefix_tokens)"
            )
        return features

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        param = next(self.parameters())
        pixels = self.preprocess(images).to(device=param.device, dtype=param.dtype)
        return self(pixels)


def check_tower_shape(
    config: VisionEncoderConfig, width: int, patch_size: int, image_size: int | None
) -> None:
    """Fail at construction, naming the field, when the config disagrees with the weights."""
    if width != config.feature_dim:
        raise ValueError(
            f"vision.feature_dim: {config.feature_dim} does not match the encoder width {width}"
        )
    if patch_size != config.patch_size:
        raise ValueError(
            f"vision.patch_size: {config.patch_size} does not match the encoder's {patch_size}"
        )
    if image_size is not None and image_size != config.image_size:
        raise ValueError(
            f"vision.image_size: {config.image_size} does not match the encoder's fixed "
            f"position grid for {image_size} px"
        )


def layer_index(feature_layer: int, num_layers: int) -> int:
    """HF-style hidden-state index (-1 = last block output) → number of blocks to run."""
    blocks = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 1 <= blocks <= num_layers:
        raise ValueError(
            f"vision.feature_layer: {feature_layer} is out of range for {num_layers} blocks"
        )
    return blocks
