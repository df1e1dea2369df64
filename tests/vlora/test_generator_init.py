"""The generator starts as the authors' release does, and its k query outputs start distinct."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlora.config import GeneratorConfig
from vlora.generator import (
    Attention,
    VisualInput,
    WeightsDecoder,
    init_pytorch_default_,
    init_release_,
)
from vlora.model import VLoRAModel
from vlora.presets import get_preset


def mean_pairwise_cosine(outputs: torch.Tensor) -> float:
    """Mean cosine similarity between the k query outputs of each sample, [B, k, h] → float."""
    unit = nn.functional.normalize(outputs, dim=-1)
    sim = unit @ unit.transpose(1, 2)  # [B, k, k]
    k = sim.shape[-1]
    return sim[:, ~torch.eye(k, dtype=torch.bool)].mean().item()


def paper_sized_decoder_outputs(init) -> torch.Tensor:
    """One delta type's decoder at the paper's size (h_p 512, N 8, k 8, 576×1024 features)."""
    config = GeneratorConfig(hidden_size=512, num_blocks=8, num_heads=16)
    visual_input = VisualInput(1024, 576, 512)
    decoder = WeightsDecoder(config, 1024, 576, num_queries=8)
    init(nn.ModuleList([visual_input, decoder]))
    with torch.no_grad():
        return decoder(visual_input(torch.randn(2, 576, 1024)))  # [2, 8, 512]


def test_fresh_generator_query_outputs_are_not_near_identical() -> None:
    # with the release's init the k inserted blocks start from different W_v (measured 0.07-0.16)
    assert mean_pairwise_cosine(paper_sized_decoder_outputs(init_release_)) < 0.4


def test_pytorch_default_init_gives_near_identical_query_outputs() -> None:
    # the defect the release scheme fixes, so the measure above can tell them apart (0.99)
    assert mean_pairwise_cosine(paper_sized_decoder_outputs(init_pytorch_default_)) > 0.9


def test_release_init_statistics_on_a_whole_generator() -> None:
    model = VLoRAModel.from_preset("tiny-llama")
    generator = model.generator
    assert generator.config.init_scheme == "release"
    for name, module in generator.named_modules():
        if isinstance(module, Attention):
            bound = math.sqrt(6.0 / (4 * module.q_proj.in_features))  # packed [3h, h] Xavier
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                assert proj.weight.abs().max() <= bound
                assert proj.weight.abs().max() > 0.8 * bound, name
                assert torch.count_nonzero(proj.bias) == 0
        elif isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.count_nonzero(module.bias) == 0
    linears = [generator.input.input_proj, *generator.heads.values()]
    linears += [m.out_proj for m in generator.modules() if isinstance(m, Attention)]
    weights = torch.cat([layer.weight.flatten() for layer in linears])
    assert weights.std().item() == pytest.approx(0.02, rel=0.1)
    assert weights.abs().max().item() <= 2.0  # truncated at ±2 (absolute), as trunc_normal_
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in linears)
    tokens = torch.cat(
        [generator.input.position_embedding.flatten()]
        + [decoder.queries.flatten() for decoder in generator.decoders.values()]
    )
    assert tokens.std().item() == pytest.approx(1.0, rel=0.1)  # N(0, 1), not std 0.02
    assert all(torch.count_nonzero(w_s) == 0 for w_s in generator.w_s.values())


def test_pytorch_default_scheme_keeps_w_s_zero_and_small_tokens() -> None:
    config = get_preset("tiny-llama").model
    config.generator.init_scheme = "pytorch_default"
    generator = VLoRAModel.from_config(config).generator
    assert all(torch.count_nonzero(w_s) == 0 for w_s in generator.w_s.values())
    assert generator.decoders["q"].queries.std().item() == pytest.approx(0.02, rel=0.3)


def test_seeded_init_is_reproducible_and_seed_dependent() -> None:
    def queries(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return VLoRAModel.from_preset("tiny-llama").generator.decoders["k"].queries.detach()

    assert torch.equal(queries(1), queries(1))
    assert not torch.equal(queries(1), queries(2))


def test_attention_equals_torch_multihead_attention_with_the_same_weights() -> None:
    # our separate q/k/v projections are the release's packed nn.MultiheadAttention
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        nn.init.normal_(reference.in_proj_bias)  # non-zero biases must map too
    ours = Attention(32, 4, dropout=0.0)
    weights = reference.in_proj_weight.detach().chunk(3)
    biases = reference.in_proj_bias.detach().chunk(3)
    with torch.no_grad():
        for proj, weight, bias in zip(
            (ours.q_proj, ours.k_proj, ours.v_proj), weights, biases, strict=True
        ):
            proj.weight.copy_(weight)
            proj.bias.copy_(bias)
        ours.out_proj.load_state_dict(reference.out_proj.state_dict())
    query, context = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    expected = reference(query, context, context, need_weights=False)[0]
    torch.testing.assert_close(ours(query, context), expected, rtol=1e-5, atol=1e-6)
