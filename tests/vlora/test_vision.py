"""Vision encoders: one contract across backends, penultimate features, preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlora.config import CLIP_MEAN, VisionEncoderConfig
from vlora.presets import get_preset
from vlora.vision import ImagePreprocessor, build_vision_encoder
from vlora.vision.hf_encoder import load_hf_vision_model

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_open_clip_name(tmp_path_factory) -> str:
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_cfg")
    (folder / "vlora-test-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "vlora-test-tiny-vit"


def open_clip_config(name: str, feature_layer: int = -2) -> VisionEncoderConfig:
    return VisionEncoderConfig(
        backend="open_clip",
        name=name,
        image_size=32,
        patch_size=8,
        feature_dim=32,
        feature_layer=feature_layer,
    )


def test_open_clip_penultimate_patch_tokens(tiny_open_clip_name: str) -> None:
    import open_clip

    torch.manual_seed(0)
    encoder = build_vision_encoder(open_clip_config(tiny_open_clip_name))
    assert len(encoder.visual.transformer.resblocks) == 2  # the last block is pruned
    torch.manual_seed(0)
    full = open_clip.create_model(tiny_open_clip_name).visual.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = full._embeds(pixels)
        for block in full.transformer.resblocks[:-1]:  # every block but the last
            x = block(x)
        expected = x[:, 1:]  # CLS dropped
        ours = encoder(pixels)
    assert ours.shape == (2, 16, 32)
    torch.testing.assert_close(ours, expected)


def test_open_clip_local_checkpoint_is_loaded(tiny_open_clip_name: str, tmp_path) -> None:
    import open_clip
    from safetensors.torch import save_file

    trained = open_clip.create_model(tiny_open_clip_name)
    with torch.no_grad():
        trained.visual.conv1.weight.fill_(0.01)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, path)
    config = open_clip_config(tiny_open_clip_name).model_copy(update={"pretrained": str(path)})
    encoder = build_vision_encoder(config)
    assert torch.all(encoder.visual.conv1.weight == 0.01)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])
def test_hf_backend_matches_hidden_states(preset: str) -> None:
    config = get_preset(preset).model.vision
    torch.manual_seed(0)
    encoder = build_vision_encoder(config)
    torch.manual_seed(0)
    full = load_hf_vision_model(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = full(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        expected = hidden[:, config.num_prefix_tokens :]
        ours = encoder(pixels)
    assert ours.shape == (2, config.num_patches, config.feature_dim)
    torch.testing.assert_close(ours, expected)


def test_encoder_is_frozen_and_in_eval_mode() -> None:
    encoder = build_vision_encoder(get_preset("tiny-llama").model.vision)
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_pad_to_square_uses_mean_colour_which_normalises_to_zero() -> None:
    config = get_preset("tiny-llama").model.vision
    pixels = ImagePreprocessor(config)([Image.new("RGB", (64, 16), (255, 0, 0))])
    assert pixels.shape == (1, 3, 32, 32)
    top_rows = pixels[0, :, :4]  # padding band above the 64×16 strip (resized to 32×8)
    assert top_rows.abs().max() < 0.02  # mean colour ≈ 0 after normalisation
    middle = pixels[0, 0, 16]  # red channel inside the image is strongly positive
    assert middle.mean() > 1.0
    assert tuple(round(m * 255) for m in CLIP_MEAN) == (123, 117, 104)


def test_grayscale_and_rgba_are_converted() -> None:
    config = get_preset("tiny-llama").model.vision
    images = [Image.new("L", (10, 10), 128), Image.new("RGBA", (10, 12), (1, 2, 3, 4))]
    assert ImagePreprocessor(config)(images).shape == (2, 3, 32, 32)


def test_encode_images_accepts_pil() -> None:
    encoder = build_vision_encoder(get_preset("tiny-qwen2").model.vision)
    array = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype("uint8")
    assert encoder.encode_images([Image.fromarray(array)]).shape == (1, 16, 48)
