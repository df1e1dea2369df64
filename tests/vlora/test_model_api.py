"""Public API: training signals, checkpointing, generation, save/load, the baseline."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from vlora.baseline import InputSpaceModel
from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from vlora.model import VLoRAModel


def perturb_w_s(model: VLoRAModel, std: float = 0.2) -> None:
    with torch.no_grad():
        for w_s in model.generator.w_s.values():
            w_s.normal_(0, std)


def make_batch(model, batch_size: int = 2, length: int = 8):
    ids = torch.randint(4, 250, (batch_size, length))
    ids[:, 1] = IMAGE_TOKEN_INDEX
    labels = ids.masked_fill(ids == IMAGE_TOKEN_INDEX, IGNORE_INDEX)
    vision = model.config.vision
    features = torch.randn(batch_size, vision.num_patches, vision.feature_dim)
    return ids, labels, features


def test_gradients_reach_generator_and_w_s_but_not_frozen_llm() -> None:
    model = VLoRAModel.from_preset("tiny-llama")
    model.set_trainable(bridge=True, llm=False)
    ids, labels, features = make_batch(model)
    model(input_ids=ids, image_features=features, labels=labels).loss.backward()
    # W_s = 0 at init: W_s gets gradient; everything upstream of W_v only through W_s
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.generator.w_s.values())
    assert all(p.grad is None for p in model.llm.parameters() if not p.requires_grad)
    assert all(not p.requires_grad for p in model.llm.parameters())
    assert all(not p.requires_grad for p in model.vision.parameters())
    model.zero_grad(set_to_none=True)
    perturb_w_s(model)
    model(input_ids=ids, image_features=features, labels=labels).loss.backward()
    queries = model.generator.decoders["q"].queries
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert model.generator.heads["m"].weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_same_loss_and_gradients() -> None:
    def run(checkpointing: bool):
        torch.manual_seed(0)
        model = VLoRAModel.from_preset("tiny-llama")
        perturb_w_s(model)
        model.set_trainable(bridge=True, llm=True)
        model.train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        torch.manual_seed(1)
        ids, labels, features = make_batch(model)
        loss = model(input_ids=ids, image_features=features, labels=labels).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    loss_plain, grads_plain = run(False)
    loss_ckpt, grads_ckpt = run(True)
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=1e-6, atol=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys()
    assert any("generator" in n for n in grads_plain) and any("llm" in n for n in grads_plain)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("delta_mode", ["factorised", "merged"])
def test_greedy_generation_same_with_and_without_kv_cache(delta_mode: str) -> None:
    model = VLoRAModel.from_preset("tiny-qwen2")
    perturb_w_s(model)
    model.eval()
    ids, _, features = make_batch(model, batch_size=1)
    kwargs = {"max_new_tokens": 8, "do_sample": False, "delta_mode": delta_mode}
    cached = model.generate(ids, image_features=features, use_cache=True, **kwargs)
    uncached = model.generate(ids, image_features=features, use_cache=False, **kwargs)
    assert cached.shape == (1, 8)
    assert torch.equal(cached, uncached)


def test_batched_generation_matches_one_by_one_with_left_padding() -> None:
    model = VLoRAModel.from_preset("tiny-llama")
    perturb_w_s(model)
    model.eval()
    _, _, features = make_batch(model, batch_size=2)
    short, long = torch.randint(4, 250, (1, 4)), torch.randint(4, 250, (1, 7))
    ids = torch.full((2, 7), model.tokenizer.pad_token_id)
    ids[0, 3:], ids[1] = short[0], long[0]
    mask = (torch.arange(7) >= torch.tensor([[3], [0]])).long()
    kwargs = {"max_new_tokens": 6, "do_sample": False, "delta_mode": "factorised"}
    together = model.generate(ids, mask, image_features=features, **kwargs)
    first = model.generate(short, image_features=features[:1], **kwargs)
    second = model.generate(long, image_features=features[1:], **kwargs)
    assert torch.equal(together[0], first[0]) and torch.equal(together[1], second[0])


@pytest.mark.parametrize("cls", [VLoRAModel, InputSpaceModel])
def test_save_and_load_give_identical_logits(cls, tmp_path) -> None:
    model = cls.from_preset("tiny-qwen2")
    if isinstance(model, VLoRAModel):
        perturb_w_s(model)
    ids, _, features = make_batch(model)
    saved = model.save_pretrained(tmp_path / "ckpt")
    assert (saved / "vlora_config.json").is_file()
    reloaded = cls.from_pretrained(saved)
    with torch.no_grad():
        before = model(input_ids=ids, image_features=features).logits
        after = reloaded(input_ids=ids, image_features=features).logits
    assert torch.equal(before, after)


def test_format_1_checkpoint_loads_with_its_per_type_input_layout(tmp_path) -> None:
    import json

    config = VLoRAModel.from_preset("tiny-llama").config
    config.generator.shared_input = False  # the layout every format-1 folder has
    model = VLoRAModel.from_config(config)
    perturb_w_s(model)
    # the parameter names of format-1 files, which this layout must keep
    names = dict(model.generator.named_parameters())
    assert {"decoders.q.input_proj.weight", "decoders.q.position_embedding"} <= set(names)
    assert not any(name.startswith("input.") for name in names)
    saved = model.save_pretrained(tmp_path / "ckpt")
    manifest_path = saved / "vlora_config.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 1  # written before these two fields existed
    del manifest["model"]["generator"]["shared_input"]
    del manifest["model"]["generator"]["init_scheme"]
    manifest_path.write_text(json.dumps(manifest))
    reloaded = VLoRAModel.from_pretrained(saved)
    assert reloaded.config.generator.shared_input is False
    ids, _, features = make_batch(model)
    with torch.no_grad():
        before = model(input_ids=ids, image_features=features).logits
        after = reloaded(input_ids=ids, image_features=features).logits
    assert torch.equal(before, after)


def test_unknown_checkpoint_format_version_is_refused(tmp_path) -> None:
    import json

    saved = VLoRAModel.from_preset("tiny-llama").save_pretrained(tmp_path / "ckpt")
    manifest = json.loads((saved / "vlora_config.json").read_text())
    manifest["format_version"] = 99
    (saved / "vlora_config.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="unsupported checkpoint format vlora-checkpoint v99"):
        VLoRAModel.from_pretrained(saved)


def test_untrained_reference_llm_is_not_copied_into_checkpoint(tmp_path) -> None:
    model = VLoRAModel.from_preset("tiny-llama")
    model.llm_modified = False  # as for a hub LLM that pre-training leaves frozen
    saved = model.save_pretrained(tmp_path / "ckpt")
    assert not (saved / "llm").exists()
    model.set_trainable(bridge=True, llm=True)  # SFT trains the LLM → its weights are saved
    saved = model.save_pretrained(tmp_path / "ckpt2")
    assert (saved / "llm" / "config.json").is_file()
    with safe_open(saved / "llm" / "model.safetensors", framework="pt") as handle:
        keys = set(handle.keys())
    assert "model.layers.1.self_attn.q_proj.weight" in keys  # plain HF layout, loadable alone
    assert not any("base_layer" in key for key in keys)


def test_from_pretrained_rejects_the_other_design(tmp_path) -> None:
    path = InputSpaceModel.from_preset("tiny-llama").save_pretrained(tmp_path / "b")
    with pytest.raises(TypeError, match="input_space"):
        VLoRAModel.from_pretrained(path)


def test_baseline_splices_visual_tokens_at_placeholder() -> None:
    model = InputSpaceModel.from_preset("tiny-llama")
    ids, labels, features = make_batch(model, batch_size=2, length=6)
    out = model(input_ids=ids, image_features=features, labels=labels)
    num_patches = model.config.vision.num_patches
    assert out.logits.shape == (2, 6 - 1 + num_patches, 288)
    embeds, _mask, new_labels = model.build_inputs(
        ids, torch.ones_like(ids), labels, features, torch.tensor([True, True])
    )
    assert (new_labels[:, 1 : 1 + num_patches] == IGNORE_INDEX).all()
    projected = model.projector(features)
    torch.testing.assert_close(embeds[:, 1 : 1 + num_patches], projected)


def test_baseline_text_only_rows_and_missing_placeholder() -> None:
    model = InputSpaceModel.from_preset("tiny-llama")
    ids, _labels, features = make_batch(model, batch_size=2, length=6)
    plain = ids.clone()
    plain[:, 1] = 10
    with pytest.raises(ValueError, match="row 0 has an image but no image placeholder"):
        model(input_ids=plain, image_features=features)
    with pytest.raises(ValueError, match="placeholder but no image"):
        model(input_ids=ids, image_features=features, has_image=torch.tensor([True, False]))
    out = model(input_ids=plain)  # text-only batch: the LLM alone
    torch.testing.assert_close(out.logits, model.llm(input_ids=plain).logits)


def test_generate_text_with_pil_images_and_text_only_prompts() -> None:
    from PIL import Image

    model = VLoRAModel.from_preset("tiny-llama")
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    answers = model.generate_text(["what colour?", "hi"], images=[image, None], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_auto_load_picks_the_class_the_folder_records(tmp_path) -> None:
    from vlora.auto import load_pretrained, model_class

    for cls in (VLoRAModel, InputSpaceModel):
        path = cls.from_preset("tiny-llama").save_pretrained(tmp_path / cls.kind)
        assert type(load_pretrained(path)) is cls
    with pytest.raises(ValueError, match="unknown model kind 'mystery'; known: vlora, input_space"):
        model_class("mystery")
