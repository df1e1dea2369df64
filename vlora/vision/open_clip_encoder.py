"""open_clip vision towers: any model name, any pretrained tag or local checkpoint.

Features are the patch tokens of the selected block (penultimate by default), CLS dropped, as
LLaVA/VLoRA take them; the text tower is discarded and later blocks are pruned.
"""

from __future__ import annotations

import torch

from vlora.config import VisionEncoderConfig
from vlora.vision.activation import (
    QUICK_GELU,
    check_activation,
    module_activation,
    open_clip_pretrained_activation,
)
from vlora.vision.base import VisionEncoder, check_tower_shape, layer_index


class OpenClipVisionEncoder(VisionEncoder):
    def __init__(self, config: VisionEncoderConfig, meta: bool = False) -> None:
        super().__init__(config)
        import open_clip

        expected = open_clip_pretrained_activation(config.name, config.pretrained)
        hint = ""
        if expected == QUICK_GELU and not config.name.endswith("-quickgelu"):
            hint = f": use vision.name '{config.name}-quickgelu'"
        model_config = open_clip.get_model_config(config.name) or {}
        declared = QUICK_GELU if model_config.get("quick_gelu", False) else "gelu"
        if model_config:  # before any weights are fetched
            check_activation(declared, expected, "vision.name", hint)
        if meta:
            with torch.device("meta"):
                clip = open_clip.create_model(config.name, pretrained=None, device="meta")
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # a random tower is the same in every process
                clip = open_clip.create_model(config.name, pretrained=config.pretrained)
        visual = clip.visual
        check_tower_shape(
            config, visual.transformer.width, visual.patch_size[0], visual.image_size[0]
        )
        check_activation(
            module_activation(visual.transformer.resblocks[0]), expected, "vision.name", hint
        )
        num_blocks = len(visual.transformer.resblocks)
        self.block_index = layer_index(config.feature_layer, num_blocks) - 1  # 0-based block
        visual.prune_intermediate_layers(indices=[self.block_index], prune_norm=True)
        self.visual = visual

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(
            pixel_values,
            indices=[self.block_index],
            stop_early=True,
            intermediates_only=True,
            output_fmt="NLC",
        )
        return out["image_intermediates"][0]  # [B, L, d_v], CLS already split off
