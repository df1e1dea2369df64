"""The models the benchmarks time: same weights on both sides, and the timed paths compute the
same thing (merged and factorised VLoRA give the same logits)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import models as bm
from vlora.delta.layers import LowRankDelta


@pytest.fixture(scope="module")
def pair() -> bm.BenchPair:
    return bm.build_pair(bm.tiny_case())


def test_baseline_uses_an_unwrapped_copy_of_the_same_weights(pair: bm.BenchPair) -> None:
    assert pair.vlora.llm is not pair.baseline.llm
    assert not any(isinstance(m, LowRankDelta) for m in pair.baseline.llm.modules())
    assert any(isinstance(m, LowRankDelta) for m in pair.vlora.llm.modules())
    base = pair.baseline.llm.state_dict()
    for key, value in pair.vlora.llm.state_dict().items():
        assert torch.equal(value, base[key.replace(".base_layer.", ".")])
    assert pair.inserted_blocks == 2 and pair.blocks == 8
    # W_s was filled, so merges add real numbers
    assert all(float(w.abs().sum()) > 0 for w in pair.vlora.generator.w_s.values())


@torch.inference_mode()
def test_merged_and_factorised_prefill_agree_and_modes_restore_weights(pair: bm.BenchPair) -> None:
    before = {k: v.clone() for k, v in pair.vlora.llm.state_dict().items()}
    feats = bm.image_features(pair, 2)
    ids = bm.text_ids(pair, 1, 12)
    modes = bm.DeltaModes(pair, feats)
    modes.merged()
    merged = pair.vlora.llm(input_ids=ids).logits
    modes.factorised(1)
    factorised = pair.vlora.llm(input_ids=ids).logits
    torch.testing.assert_close(merged, factorised, atol=1e-4, rtol=1e-4)
    base = pair.baseline.llm(input_ids=ids).logits
    assert not torch.allclose(base, factorised, atol=1e-4)  # the image changed the output
    modes.factorised()
    assert modes.state == ("factorised", 2)
    modes.merged()
    modes.clear()
    for key, value in pair.vlora.llm.state_dict().items():
        assert torch.equal(value, before[key])


@torch.inference_mode()
def test_decode_loop_grows_a_random_cache_of_the_right_shape(pair: bm.BenchPair) -> None:
    loop = bm.DecodeLoop(pair.baseline.llm, batch=2, context=10, steps=3)
    keys, values = loop.tensors[0]
    assert keys.shape == (2, 2, 10, 32) and values.shape == keys.shape
    loop.reset()
    loop.run()
    assert loop.cache.get_seq_length() == 13
    loop.reset()  # a fresh cache from the same tensors
    assert loop.cache.get_seq_length() == 10


def test_inputs_have_the_requested_shapes(pair: bm.BenchPair) -> None:
    ids = bm.text_ids(pair, 3, 5)
    assert ids.shape == (3, 5) and int(ids.min()) >= 10
    with_image = bm.with_placeholder(ids)
    assert with_image.shape == (3, 6) and bool((with_image[:, 0] < 0).all())
    assert bm.image_features(pair, 2).shape == (2, 64, 32)
    assert bm.image_features(pair, 1, 16).shape == (1, 16, 32)
    assert bm.embeddings(pair, 1, 7).shape == (1, 7, 64)


def test_cases_declare_the_stated_shapes() -> None:
    case = bm.llama7b_h512_case()
    arch = case.arch
    assert arch["num_hidden_layers"] == 32 and arch["hidden_size"] == 512
    assert arch["hidden_size"] // arch["num_attention_heads"] == 128  # Vicuna's head_dim
    assert arch["intermediate_size"] / arch["hidden_size"] == pytest.approx(11008 / 4096, rel=0.01)
    assert case.generator.hidden_size == 512 and case.generator.rank == 64
    assert case.model_config().vision.num_patches == 576
    assert bm.vicuna7b_case().arch["hidden_size"] == 4096
    with pytest.raises(ValueError, match="square"):
        bm.BenchCase("x", "x", case.llm, case.generator, 8, visual_tokens=50).model_config()
