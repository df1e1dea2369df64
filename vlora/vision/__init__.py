"""Vision encoders with one contract: patch features [B, L, d_v] plus their preprocessing."""

from __future__ import annotations

from vlora.config import VisionEncoderConfig
from vlora.factories import UnknownNameError
from vlora.vision.base import VisionEncoder
from vlora.vision.preprocess import ImagePreprocessor

BACKENDS = ("hf", "open_clip")


def build_vision_encoder(config: VisionEncoderConfig, meta: bool = False) -> VisionEncoder:
    """Build a frozen encoder in eval mode (weights on the meta device when `meta`)."""
    if config.backend == "hf":
        from vlora.vision.hf_encoder import HFVisionEncoder

        encoder: VisionEncoder = HFVisionEncoder(config, meta=meta)
    elif config.backend == "open_clip":
        from vlora.vision.open_clip_encoder import OpenClipVisionEncoder

        encoder = OpenClipVisionEncoder(config, meta=meta)
    else:  # unreachable through validated configs; kept for hand-built ones
        raise UnknownNameError(f"unknown vision backend '{config.backend}'; valid: {BACKENDS}")
    encoder.requires_grad_(False)
    return encoder.eval()


__all__ = ["ImagePreprocessor", "VisionEncoder", "build_vision_encoder"]
