"""Tiny models for the serving engine tests, with deltas that really change the answers.

W_s is zero-initialised (ΔW = 0 at the start of training), so a random-init VLoRA model answers
the same whatever the image, and an untrained generator's W_v hardly depends on the image.
`nonzero_deltas` gives W_s random values and the generator's matrices fan-in-scaled random
values, so each image's deltas change the answer and a mix-up between rows would show.
`saved_vlora` is such a model saved and loaded back, as a server loads a checkpoint folder.
`images` are distinct coloured squares on coloured backgrounds (noise images all look alike to
a random vision tower).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlora import InputSpaceModel, VLoRAModel
from vlora.auto import load_pretrained
from vlora.data.templates import Turn, get_template
from vlora.data.tokenize import encode_conversation


def nonzero_deltas(model: VLoRAModel, std: float = 0.5) -> VLoRAModel:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.generator.named_parameters():
            if name.startswith("w_s."):
                param.copy_(torch.randn(param.shape, generator=generator) * std)
            elif param.dim() >= 2:
                scale = param.shape[-1] ** -0.5
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model


def build(kind: str, preset: str = "tiny-llama"):
    torch.manual_seed(0)
    if kind == "vlora":
        return nonzero_deltas(VLoRAModel.from_preset(preset)).eval()
    return InputSpaceModel.from_preset(preset).eval()


@pytest.fixture(scope="session")
def tiny_vlora() -> VLoRAModel:
    return build("vlora")


@pytest.fixture(scope="session")
def tiny_baseline() -> InputSpaceModel:
    return build("input_space")


@pytest.fixture(scope="session")
def saved_vlora(tmp_path_factory: pytest.TempPathFactory) -> VLoRAModel:
    folder = Path(tmp_path_factory.mktemp("ckpt")) / "tiny-vlora"
    build("vlora").save_pretrained(folder)
    return load_pretrained(folder).eval()


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    return make_images(6)


def make_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pixels = np.empty((32, 32, 3), dtype=np.uint8)
        pixels[:] = rng.integers(0, 255, 3)
        x, y = rng.integers(0, 20, 2)
        pixels[y : y + 12, x : x + 12] = rng.integers(0, 255, 3)
        out.append(Image.fromarray(pixels))
    return out


def prompt_ids(model, question: str, with_image: bool) -> list[int]:
    template = get_template(model.config.template)
    text = f"{model.config.image_token}\n{question}" if with_image else question
    turns = [Turn("user", text)]
    return encode_conversation(
        model.tokenizer, template, turns, model.config.image_token, True
    ).input_ids


def reference_tokens(model, ids: list[int], image, max_new_tokens: int, **kwargs) -> list[int]:
    """The plain path: `model.generate` alone, greedy, no stop token (fixed length)."""
    extra = {"delta_mode": kwargs.pop("delta_mode", "factorised")} if model.kind == "vlora" else {}
    out = model.generate(
        torch.tensor([ids]),
        images=[image] if image is not None else None,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=model.tokenizer.pad_token_id,
        **extra,
        **kwargs,
    )
    return out[0].tolist()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
