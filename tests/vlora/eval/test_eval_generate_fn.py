"""Greedy generation from a saved checkpoint: batching, prompt inputs, the adapters' factory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vlora.baseline import InputSpaceModel
from vlora.data.templates import get_template
from vlora.eval.adapters.vlmevalkit import VLoRAVLMEval
from vlora.eval.generate_fn import (
    BatchGenerator,
    load_model_for_eval,
    make_generate_fn,
    resolve_device,
    resolve_dtype,
)
from vlora.eval.prompts import wrap_prompt
from vlora.model import VLoRAModel

QUESTION = "Is the shape red? Please answer yes or no."
RED = Image.new("RGB", (40, 40), (255, 0, 0))
BLUE = Image.new("RGB", (40, 40), (0, 0, 255))


def image_dependent_tiny_model() -> VLoRAModel:
    """tiny-llama whose W_s are non-zero, so the image changes the answer.

    A fresh generator (the release's init) barely depends on the image: its N(0, 1) queries
    and positions dominate a std-0.02 input projection. A wide input projection makes the
    image matter even in bfloat16."""
    torch.manual_seed(0)
    model = VLoRAModel.from_preset("tiny-llama")
    with torch.no_grad():
        for weight in model.generator.w_s.values():
            weight.normal_(0.0, 1.0)
        model.generator.input.input_proj.weight.normal_(0.0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model() -> VLoRAModel:
    return image_dependent_tiny_model()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: VLoRAModel) -> Path:
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_batched_answers_equal_one_by_one_and_depend_on_the_image(tiny_model) -> None:
    generator = BatchGenerator(tiny_model, prompt_input="content", max_new_tokens=8)
    prompts = [QUESTION, "What colour is it?", QUESTION]
    images = [RED, BLUE, None]
    batched = generator.generate(prompts, images)
    alone = [generator(prompt, image) for prompt, image in zip(prompts, images, strict=True)]
    assert batched == alone
    assert generator(QUESTION, RED) != generator(QUESTION, BLUE)
    assert generator.generate(prompts, images) == batched  # greedy: the same every time


def test_user_input_matches_generate_text(tiny_model) -> None:
    generator = BatchGenerator(tiny_model, prompt_input="user", max_new_tokens=8)
    user, _ = wrap_prompt(QUESTION, 1, "vlmevalkit-2024")
    expected = tiny_model.generate_text([QUESTION], [RED], 8, delta_mode="factorised")
    assert [generator(user, RED)] == expected


def test_conversation_input_is_tokenised_verbatim(tiny_model) -> None:
    generator = BatchGenerator(tiny_model, prompt_input="conversation")
    _, conversation = wrap_prompt(QUESTION, 1, "vlmevalkit-2024")
    ids = generator.encode(conversation, has_image=True)
    tokenizer = tiny_model.tokenizer
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(-200) == 1  # IMAGE_TOKEN_INDEX where "<image>" was
    text = tokenizer.decode([i for i in ids[1:] if i >= 0])
    assert text == conversation.replace("<image>", "")
    # the user input wraps with the model's own template instead (vicuna_v1: "curious user")
    user_ids = BatchGenerator(tiny_model, prompt_input="user").encode(
        wrap_prompt(QUESTION, 1, "vlmevalkit-2024")[0], has_image=True
    )
    user_text = tokenizer.decode([i for i in user_ids[1:] if i >= 0])
    expected = get_template("vicuna_v1").prompt("<image>\n" + QUESTION).replace("<image>", "")
    assert user_text == expected


def test_placeholder_is_removed_without_an_image(tiny_model) -> None:
    generator = BatchGenerator(tiny_model, prompt_input="user")
    with_placeholder = generator.encode("<image>\n" + QUESTION, has_image=False)
    assert -200 not in with_placeholder
    assert with_placeholder == generator.encode(QUESTION, has_image=False)


def test_baseline_model_generates_without_delta_mode() -> None:
    torch.manual_seed(0)
    baseline = InputSpaceModel.from_preset("tiny-llama").eval()
    generator = BatchGenerator(baseline, prompt_input="content", max_new_tokens=4)
    answers = generator.generate([QUESTION, QUESTION], [RED, None])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_factory_through_the_vlmevalkit_adapter(tiny_checkpoint, tiny_model) -> None:
    generate_fn = make_generate_fn(str(tiny_checkpoint), max_new_tokens="8")
    assert generate_fn.max_new_tokens == 8 and generate_fn.prompt_input == "conversation"
    adapter = VLoRAVLMEval(
        factory="vlora.eval.generate_fn:make_generate_fn",
        checkpoint=str(tiny_checkpoint),
        max_new_tokens=8,
    )
    message = [{"type": "image", "value": RED}, {"type": "text", "value": QUESTION}]
    answer = adapter.generate_inner(message, dataset="MME")
    _, conversation = wrap_prompt(QUESTION, 1, "vlmevalkit-2024")
    assert answer == generate_fn(conversation, RED)
    reference = BatchGenerator(tiny_model, prompt_input="conversation", max_new_tokens=8)
    assert answer == reference(conversation, RED)  # the saved model answers like the original


def test_bfloat16_load(tiny_checkpoint) -> None:
    model = load_model_for_eval(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    answers = BatchGenerator(model, prompt_input="content", max_new_tokens=4).generate(
        [QUESTION, QUESTION], [RED, BLUE]
    )
    assert len(answers) == 2 and answers[0] != answers[1]


def test_bad_arguments() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="prompt_input"):
        BatchGenerator(object(), prompt_input="chat")  # type: ignore[arg-type]
