"""`VLoRAModel.choose_delta_mode`: merge one image when the answer repays the merge on the
model's device (thresholds measured by benchmarks/merge_crossover.py and gpu_h200.py)."""

from __future__ import annotations

import pytest
import torch

from vlora import model as vlora_model
from vlora.model import MERGE_MIN_NEW_TOKENS, MERGE_MIN_NEW_TOKENS_BY_DEVICE, VLoRAModel

ONE = torch.ones(1, dtype=torch.bool)


@pytest.fixture(scope="module")
def model() -> VLoRAModel:
    return VLoRAModel.from_preset("tiny-llama")  # type: ignore[return-value]


def _on(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    monkeypatch.setattr(VLoRAModel, "device", property(lambda self: torch.device(device)))


def test_cpu_merges_from_the_cpu_threshold(model: VLoRAModel) -> None:
    assert model.device.type == "cpu"
    assert model.choose_delta_mode(1, ONE, MERGE_MIN_NEW_TOKENS - 1) == "factorised"
    assert model.choose_delta_mode(1, ONE, MERGE_MIN_NEW_TOKENS) == "merged"
    assert model.choose_delta_mode(1, ONE, 10 * MERGE_MIN_NEW_TOKENS) == "merged"


def test_cuda_merges_from_its_own_threshold(model: VLoRAModel, monkeypatch) -> None:
    _on(monkeypatch, "cuda")
    cuda = MERGE_MIN_NEW_TOKENS_BY_DEVICE["cuda"]
    assert cuda == 1 < MERGE_MIN_NEW_TOKENS
    assert model.choose_delta_mode(1, ONE, cuda) == "merged"
    assert model.choose_delta_mode(1, ONE, cuda - 1) == "factorised"


def test_other_devices_fall_back_to_the_default(model: VLoRAModel, monkeypatch) -> None:
    _on(monkeypatch, "mps")
    assert model.choose_delta_mode(1, ONE, MERGE_MIN_NEW_TOKENS - 1) == "factorised"
    assert model.choose_delta_mode(1, ONE, MERGE_MIN_NEW_TOKENS) == "merged"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_batches_and_text_only_samples_stay_factorised(model, monkeypatch, device) -> None:
    _on(monkeypatch, device)
    long = 10 * MERGE_MIN_NEW_TOKENS
    assert model.choose_delta_mode(2, torch.ones(2, dtype=torch.bool), long) == "factorised"
    assert model.choose_delta_mode(1, torch.zeros(1, dtype=torch.bool), long) == "factorised"


def test_generate_auto_follows_the_rule(model: VLoRAModel, monkeypatch) -> None:
    chosen: list[str] = []
    original = VLoRAModel.choose_delta_mode

    def spy(self, *args, **kwargs):
        chosen.append(original(self, *args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(VLoRAModel, "choose_delta_mode", spy)
    ids = torch.randint(10, 200, (1, 5))
    feats = torch.randn(1, model.config.vision.num_patches, model.config.vision.feature_dim)
    for n in (1, MERGE_MIN_NEW_TOKENS):
        model.generate(ids, image_features=feats, max_new_tokens=n, do_sample=False)
    assert chosen == ["factorised", "merged"]
    assert not model.is_merged  # merged only for the duration of the call
    assert vlora_model.MERGE_MIN_NEW_TOKENS == MERGE_MIN_NEW_TOKENS
