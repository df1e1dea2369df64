"""The labelled-positions loss (training fast path) against the plain full-logits path."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from vlora.baseline import InputSpaceModel
from vlora.data.collate import collate_batch
from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from vlora.inputs import TokenBatch, strip_image_placeholders
from vlora.loss import labelled_positions_loss
from vlora.model import VLoRAModel


def sft_like_batch(model, seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows of different lengths (right padding), answers labelled, one text-only row."""
    generator = torch.Generator().manual_seed(seed)
    vision = model.config.vision
    rows = []
    for length, has_image in ((11, True), (7, False), (14, True), (9, True)):
        ids = torch.randint(4, 250, (length,), generator=generator)
        if has_image:
            ids[1] = IMAGE_TOKEN_INDEX
        labels = torch.full((length,), IGNORE_INDEX)
        labels[length // 2 : length - 1] = ids[length // 2 : length - 1]  # the "answer"
        rows.append(
            {
                "input_ids": ids.tolist(),
                "labels": labels.tolist(),
                "has_image": has_image,
                "features": torch.randn(
                    vision.num_patches, vision.feature_dim, generator=generator
                ).numpy(),
            }
        )
    return collate_batch(
        rows, model.tokenizer.pad_token_id, (vision.num_patches, vision.feature_dim)
    )


def loss_and_grads(model, batch, logits_for: str):
    model.zero_grad(set_to_none=True)
    out = model(**batch, logits_for=logits_for)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def make_model(cls, preset: str):
    torch.manual_seed(0)
    model = cls.from_preset(preset)
    if isinstance(model, VLoRAModel):  # W_s starts at zero: make the deltas matter
        with torch.no_grad():
            for w_s in model.generator.w_s.values():
                w_s.normal_(0, 0.2)
    model.set_trainable(bridge=True, llm=True)
    return model.train()


@pytest.mark.parametrize("cls", [VLoRAModel, InputSpaceModel], ids=["vlora", "input_space"])
@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])
def test_labelled_path_gives_the_plain_loss_and_gradients(cls, preset: str) -> None:
    model = make_model(cls, preset)
    batch = sft_like_batch(model)
    plain, plain_grads = loss_and_grads(model, batch, "all")
    fast, fast_grads = loss_and_grads(model, batch, "labelled")
    torch.testing.assert_close(fast.loss, plain.loss, atol=1e-6, rtol=1e-5)
    assert fast_grads.keys() == plain_grads.keys()
    # the generator / projector, every LLM block and the (tied) embedding all get gradients
    assert any("llm.model.embed_tokens" in n for n in plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("cls", [VLoRAModel, InputSpaceModel], ids=["vlora", "input_space"])
def test_labelled_logits_are_the_plain_logits_at_the_labelled_positions(cls) -> None:
    model = make_model(cls, "tiny-llama").eval()
    batch = sft_like_batch(model, seed=1)
    with torch.no_grad():
        plain = model(**batch).logits  # [B, T', V]
        fast = model(**batch, logits_for="labelled").logits  # [n, V]
    # the positions the plain path keeps, recovered from its own label alignment
    if cls is InputSpaceModel:
        features, mask = model.image_features(
            batch["input_ids"].shape[0], None, batch["image_features"], batch["has_image"]
        )
        _, _, labels = model.build_inputs(
            batch["input_ids"], batch["attention_mask"], batch["labels"], features, mask
        )
    else:  # VLoRA strips the placeholders (the stripping has its own tests)
        labels = strip_image_placeholders(
            TokenBatch(batch["input_ids"], batch["attention_mask"], batch["labels"]),
            model.tokenizer.pad_token_id,
        ).labels
    keep = labels[:, 1:] != IGNORE_INDEX
    assert fast.shape == (int(keep.sum()), plain.shape[-1])
    torch.testing.assert_close(fast, plain[:, :-1][keep], atol=1e-5, rtol=1e-4)


def test_gemma2_logit_softcapping_matches_the_plain_path() -> None:
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=5.0,
    )
    llm = Gemma2ForCausalLM(config).train()
    with torch.no_grad():  # logits large enough for the cap to bend them
        llm.lm_head.weight.mul_(50.0)
    ids = torch.randint(0, 128, (2, 10))
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    plain = llm(input_ids=ids, labels=labels).loss
    fast = labelled_positions_loss(llm, labels, input_ids=ids).loss
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_no_labelled_token_gives_a_zero_loss_with_zero_gradients() -> None:
    model = make_model(VLoRAModel, "tiny-llama")
    batch = sft_like_batch(model)
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
    out = model(**batch, logits_for="labelled")
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.logits.shape[0] == 0
    assert all(torch.all(p.grad == 0) for p in model.parameters() if p.grad is not None)


def test_logits_for_is_checked() -> None:
    model = VLoRAModel.from_preset("tiny-llama")
    ids = torch.randint(4, 250, (1, 5))
    with pytest.raises(ValueError, match="logits_for must be one of all, labelled, got 'some'"):
        model(input_ids=ids, labels=ids, logits_for="some")
    with pytest.raises(ValueError, match="logits_for='labelled' needs labels"):
        model(input_ids=ids, logits_for="labelled")
