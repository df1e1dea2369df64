"""Delta injection: exactness at init, per-sample independence, merge/unmerge, golden einsum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlora.config import GeneratorConfig, LLMConfig, ModelConfig
from vlora.delta.injection import wrapped_module_names
from vlora.delta.layers import DeltaLinear, DeltaParallelBranch
from vlora.llm import build_llm
from vlora.model import VLoRAModel
from vlora.presets import get_preset


def perturb_w_s(model: VLoRAModel, std: float = 0.2) -> None:
    """Stand-in for training: non-zero W_s so the deltas actually change the outputs."""
    with torch.no_grad():
        for w_s in model.generator.w_s.values():
            w_s.normal_(0, std)


def batch(model: VLoRAModel, batch_size: int = 3, length: int = 9):
    ids = torch.randint(4, 250, (batch_size, length))
    features = torch.randn(
        batch_size, model.config.vision.num_patches, model.config.vision.feature_dim
    )
    return ids, features


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])
def test_init_logits_equal_base_llm_exactly(preset: str) -> None:
    model = VLoRAModel.from_preset(preset)
    base = build_llm(get_preset(preset).model.llm)  # same seed → same weights, never wrapped
    ids, features = batch(model)
    with torch.no_grad():
        ours = model(input_ids=ids, image_features=features).logits
        reference = base(input_ids=ids).logits
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])
def test_each_sample_matches_running_alone(preset: str) -> None:
    model = VLoRAModel.from_preset(preset)
    perturb_w_s(model)
    ids, features = batch(model)
    with torch.no_grad():
        together = model(input_ids=ids, image_features=features).logits
        for i in range(ids.shape[0]):
            alone = model(input_ids=ids[i : i + 1], image_features=features[i : i + 1]).logits
            torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-5, atol=1e-5)
        # and the deltas really change the output (the test above could not pass vacuously)
        base = model(input_ids=ids).logits
    assert (together - base).abs().max() > 1e-2


def test_text_only_sample_gets_zero_delta() -> None:
    model = VLoRAModel.from_preset("tiny-llama")
    perturb_w_s(model)
    ids, features = batch(model)
    has_image = torch.tensor([True, False, True])
    with torch.no_grad():
        mixed = model(input_ids=ids, image_features=features, has_image=has_image).logits
        text_only = model(input_ids=ids[1:2]).logits
        with_image = model(input_ids=ids[2:3], image_features=features[2:3]).logits
    torch.testing.assert_close(mixed[1:2], text_only, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[2:3], with_image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mlp_mode", ["parallel", "per_matrix"])
def test_merged_matches_factorised_and_unmerge_is_bit_exact(mlp_mode: str) -> None:
    config = get_preset("tiny-qwen2").model
    config.generator.mlp_mode = mlp_mode
    model = VLoRAModel.from_config(config)
    perturb_w_s(model)
    ids, features = batch(model, batch_size=1)
    originals = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    with torch.no_grad():
        factorised = model(input_ids=ids, image_features=features).logits
        model.merge(image_features=features)
        assert model.is_merged
        merged = model(input_ids=ids).logits
        model.unmerge()
        after = model(input_ids=ids, image_features=features).logits
    torch.testing.assert_close(merged, factorised, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, factorised)
    for name, param in model.llm.named_parameters():
        assert torch.equal(param, originals[name]), name


def test_merge_refuses_second_image_until_unmerged() -> None:
    model = VLoRAModel.from_preset("tiny-llama")
    ids, features = batch(model, batch_size=1)
    model.merge(image_features=features)
    with pytest.raises(RuntimeError, match="unmerge"):
        model(input_ids=ids, image_features=features)
    model.unmerge()
    with pytest.raises(ValueError, match="exactly one image"):
        model.merge(image_features=None)


def test_delta_linear_golden_against_dense_einsum() -> None:
    torch.manual_seed(123)
    base = nn.Linear(6, 5)
    layer = DeltaLinear(base, scale=0.5)
    x = torch.randn(2, 4, 6)  # [B, T, in]
    w_v = torch.randn(2, 6, 3)  # [B, in, r]
    w_s = torch.randn(3, 5)  # [r, out]
    layer.set_delta(w_v, w_s.unsqueeze(0), 0)
    dense = base.weight.T + 0.5 * torch.einsum("bir,ro->bio", w_v, w_s)  # [B, in, out]
    reference = torch.einsum("bti,bio->bto", x, dense) + base.bias
    torch.testing.assert_close(layer(x), reference, rtol=1e-5, atol=1e-5)
    # golden value of one output (fixed seed), so a wrong scale or transpose cannot slip by
    assert layer(x)[1, 2, 3].item() == pytest.approx(reference[1, 2, 3].item(), abs=1e-5)


def test_parallel_branch_adds_low_rank_term_around_module() -> None:
    mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
    branch = DeltaParallelBranch(mlp, hidden_size=4, scale=2.0)
    x = torch.randn(3, 5, 4)
    w_v, w_s = torch.randn(3, 4, 2), torch.randn(2, 4)
    branch.set_delta(w_v, w_s.unsqueeze(0), 0)
    expected = mlp(x) + 2.0 * torch.einsum("bti,bir,ro->bto", x, w_v, w_s)
    torch.testing.assert_close(branch(x), expected, rtol=1e-5, atol=1e-5)


def expected_names(blocks: list[int], suffixes: list[str]) -> set[str]:
    return {f"model.layers.{b}.{s}" for b in blocks for s in suffixes}


QKVOM = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp"]


@pytest.mark.parametrize(
    ("preset", "blocks"),
    [
        ("tiny-llama", [1, 3]),
        ("tiny-qwen2", [1, 3]),
        ("vicuna7b-clip336", [3, 7, 11, 15, 19, 23, 27, 31]),
        ("smollm2-dinov2", [3, 7, 11, 15, 19, 23, 27]),
    ],
)
def test_wrapped_module_names_are_exactly_the_planned_ones(preset: str, blocks: list[int]) -> None:
    model = VLoRAModel.from_preset(preset, meta=True)
    assert set(wrapped_module_names(model.llm)) == expected_names(blocks, QKVOM)


def test_per_matrix_mode_wraps_gate_up_down_with_their_shapes() -> None:
    config = get_preset("tiny-llama").model
    config.generator.mlp_mode = "per_matrix"
    model = VLoRAModel.from_config(config, meta=True)
    names = set(wrapped_module_names(model.llm))
    suffixes = [*QKVOM[:4], "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert names == expected_names([1, 3], suffixes)
    shapes = {t.name: (t.in_features, t.out_features) for t in model.plan.types}
    assert shapes["gate"] == (64, 128) and shapes["down"] == (128, 64)
    assert model.generator.w_s["down"].shape == (2, 4, 64)


def test_gqa_key_value_deltas_follow_the_narrower_projection() -> None:
    model = VLoRAModel.from_preset("tiny-qwen2")  # 4 heads of 16, 2 kv heads → k/v out = 32
    shapes = {t.name: (t.in_features, t.out_features) for t in model.plan.types}
    assert shapes == {"q": (64, 64), "k": (64, 32), "v": (64, 32), "o": (64, 64), "m": (64, 64)}
    assert model.generator.w_s["k"].shape == (2, 4, 32)


def test_mistral_family_is_supported() -> None:
    arch = {
        "model_type": "mistral",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 288,
    }
    config = get_preset("tiny-llama").model.model_copy(deep=True)
    config.llm = LLMConfig(source="random", architecture=arch, tokenizer="byte")
    config.generator = GeneratorConfig(
        hidden_size=16, num_blocks=1, num_heads=2, rank=2, insert_every=1
    )
    model = VLoRAModel.from_config(config)
    perturb_w_s(model)
    ids, features = batch(model, batch_size=2)
    out = model(input_ids=ids, image_features=features)
    assert out.logits.shape == (2, 9, 288)
    assert len(wrapped_module_names(model.llm)) == 10


def test_bfloat16_factorised_and_merged_agree() -> None:
    config: ModelConfig = get_preset("tiny-llama").model
    config.llm.dtype = "bfloat16"
    model = VLoRAModel.from_config(config)
    perturb_w_s(model, std=0.05)
    ids, features = batch(model, batch_size=1)
    with torch.no_grad():
        factorised = model(input_ids=ids, image_features=features).logits
        with model.merged(image_features=features):
            merged = model(input_ids=ids).logits
    assert factorised.dtype == torch.bfloat16
    torch.testing.assert_close(merged.float(), factorised.float(), rtol=0.05, atol=0.05)
