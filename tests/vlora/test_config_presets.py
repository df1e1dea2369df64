"""Presets build; bad configuration fails at construction, naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vlora.config import GeneratorConfig, LLMConfig, ModelConfig
from vlora.factories import UnknownNameError
from vlora.llm import MODULE_NAMES, FamilyModuleNames
from vlora.model import VLoRAModel
from vlora.presets import get_preset, preset_names


def test_required_presets_exist() -> None:
    assert {"vicuna7b-clip336", "smollm2-dinov2", "tiny-llama", "tiny-qwen2"} <= set(preset_names())


def test_paper_preset_matches_the_spec() -> None:
    model = get_preset("vicuna7b-clip336").model
    assert model.llm.source == "lmsys/vicuna-7b-v1.5"
    assert (model.vision.backend, model.vision.name, model.vision.pretrained) == (
        "open_clip",
        "ViT-L-14-336-quickgelu",  # OpenAI's weights were trained with QuickGELU
        "openai",
    )
    g = model.generator
    assert (g.hidden_size, g.num_blocks, g.rank, g.targets) == (
        512,
        8,
        64,
        ["q", "k", "v", "o", "m"],
    )
    assert g.resolve_blocks(32) == [3, 7, 11, 15, 19, 23, 27, 31]
    assert model.vision.num_patches == 576 and model.vision.feature_dim == 1024


def test_paper_model_builds_on_meta_with_release_parameter_count() -> None:
    model = VLoRAModel.from_preset("vicuna7b-clip336", meta=True)
    generator_params = sum(p.numel() for p in model.generator.parameters())
    # the release's count, summed from its code: one shared input projection and positions,
    # five per-type decoders and heads, and the stacked W_s
    assert generator_params == 851_891_712
    assert model.plan.blocks == [3, 7, 11, 15, 19, 23, 27, 31]


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="tiny-llama") as err:
        VLoRAModel.from_preset("tiny-lama")
    assert "unknown preset 'tiny-lama'" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rank": 0}, "rank"),
        ({"rank": -3}, "rank"),
        ({"targets": ["q", "x"]}, "targets"),
        ({"targets": []}, "targets"),
        ({"num_heads": 3}, "num_heads"),
        ({"insert_blocks": [1, 1]}, "insert_blocks"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_generator_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        GeneratorConfig(**kwargs)


def test_random_llm_needs_architecture() -> None:
    with pytest.raises(ValidationError, match="architecture"):
        LLMConfig(source="random")


def test_out_of_range_insert_blocks_fail_at_construction() -> None:
    config: ModelConfig = get_preset("tiny-llama").model
    config.generator.insert_blocks = [1, 9]
    with pytest.raises(ValueError, match=r"generator.insert_blocks: \[9\]"):
        VLoRAModel.from_config(config)


def test_target_missing_from_llm_fails_naming_targets(monkeypatch) -> None:
    monkeypatch.setitem(MODULE_NAMES, "llama", FamilyModuleNames(q="self_attn.query"))
    with pytest.raises(ValueError, match="generator.targets: 'q' maps to 'self_attn.query'"):
        VLoRAModel.from_preset("tiny-llama")


def test_unsupported_llm_family_lists_supported_ones() -> None:
    config: ModelConfig = get_preset("tiny-llama").model
    config.llm = LLMConfig(
        source="random",
        architecture={
            "model_type": "gpt2",
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 2,
            "vocab_size": 288,
        },
        tokenizer="byte",
    )
    with pytest.raises(ValueError, match="model_type 'gpt2' has no delta target names.*llama"):
        VLoRAModel.from_config(config)


def test_mismatched_feature_width_fails_at_construction() -> None:
    config: ModelConfig = get_preset("tiny-llama").model
    config.vision.feature_dim = 40
    with pytest.raises(ValueError, match="vision.feature_dim: 40"):
        VLoRAModel.from_config(config)


def test_mismatched_feature_width_at_call_names_image_features() -> None:
    import torch

    model = VLoRAModel.from_preset("tiny-llama")
    with pytest.raises(ValueError, match="image_features: width 40"):
        model(input_ids=torch.ones(1, 4, dtype=torch.long), image_features=torch.randn(1, 16, 40))


def test_shared_generator_option_builds_and_runs() -> None:
    import torch

    config: ModelConfig = get_preset("tiny-llama").model
    config.generator.share_across_targets = True
    model = VLoRAModel.from_config(config)
    assert list(model.generator.decoders) == ["shared"]
    assert model.generator.decoders["shared"].queries.shape == (2 * 5, 32)
    out = model(input_ids=torch.ones(2, 4, dtype=torch.long), image_features=torch.randn(2, 16, 32))
    assert out.logits.shape == (2, 4, 288)
