"""Greedy generation from a saved checkpoint, for the eval stage and the toolkit adapters.

* :func:`load_model_for_eval` — ``vlora.auto.load_pretrained`` + eval mode, device, dtype.
* :class:`BatchGenerator` — prompt strings (+ one optional image each) → answers, batched with
  left padding; VLoRA uses per-sample factorised deltas (``delta_mode="factorised"``), so a batch
  mixes images freely and each answer is what the same prompt alone would give up to float
  rounding.
* :func:`make_generate_fn` — the factory the adapters take
  (``factory="vlora.eval.generate_fn:make_generate_fn", checkpoint="/ckpt"``): a callable
  ``generate_fn(prompt_text, image) -> str``.

What a prompt string is (``prompt_input``):

* ``"user"``: the user message, with ``<image>`` where the image goes (``BenchmarkPrompt.text``);
  it is wrapped in the checkpoint's own conversation template (``model.config.template``). For a
  ``vicuna_v1`` model this is VLMEvalKit's 2024 LLaVA string ``"<system> USER: <image>\\n{prompt}
  ASSISTANT:"`` except for the system sentence (LLaVA's training template says "user" where
  VLMEvalKit's ``llava_v1`` says "human"); for a ``chatml`` model (SmolLM2) it is the ChatML
  equivalent;
* ``"conversation"``: the whole string as the toolkit built it (``BenchmarkPrompt.conversation``),
  tokenised as is after the template's BOS: faithful to the toolkit byte for byte, but only
  meaningful for a model trained with that template (vicuna_v1);
* ``"content"``: the bare instruction; ``<image>\\n`` is put in front when there is an image, then
  as ``"user"``.

Decoding is greedy (``do_sample=False``, one beam); an answer ends at the template's end-of-turn
token or the tokenizer's EOS, and is stripped of whitespace (VLMEvalKit's stop string is ``</s>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from PIL import Image

from vlora.data.templates import Turn, get_template
from vlora.data.tokenize import encode_conversation, encode_prompt, stop_token_ids
from vlora.eval.prompts import IMAGE_PLACEHOLDER
from vlora.inputs import pad_rows

PromptInput = Literal["conversation", "user", "content"]
DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
PROMPT_INPUTS: tuple[str, ...] = ("conversation", "user", "content")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` → bfloat16 on CUDA, float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


def load_model_for_eval(checkpoint: str, *, device: str = "auto", dtype: str = "auto") -> Any:
    """The model saved at ``checkpoint`` (a local folder), in eval mode on ``device``/``dtype``."""
    from vlora.auto import load_pretrained

    model = load_pretrained(checkpoint)
    target = resolve_device(device)
    model.to(device=target, dtype=resolve_dtype(dtype, target))
    model.eval()
    return model


class BatchGenerator:
    """Greedy answers for batches of (prompt string, optional image) on a loaded model.

    Args:
        model: a ``VLoRAModel`` or ``InputSpaceModel`` (``vlora.auto.load_pretrained``).
        prompt_input: what the prompt strings are (module docstring); per call overridable.
        max_new_tokens: default answer budget; per call overridable.
    """

    def __init__(
        self, model: Any, *, prompt_input: PromptInput = "user", max_new_tokens: int = 512
    ) -> None:
        if prompt_input not in PROMPT_INPUTS:
            raise ValueError(f"prompt_input must be one of {PROMPT_INPUTS}, got {prompt_input!r}")
        self.model = model
        self.tokenizer = model.tokenizer
        self.template = get_template(model.config.template)
        self.image_token: str = model.config.image_token
        self.stop_ids = stop_token_ids(self.tokenizer, self.template)
        self.prompt_input: PromptInput = prompt_input
        self.max_new_tokens = int(max_new_tokens)

    def encode(
        self, prompt: str, has_image: bool, prompt_input: PromptInput | None = None
    ) -> list[int]:
        """Token ids of one prompt (the image placeholder becomes ``IMAGE_TOKEN_INDEX``)."""
        kind = prompt_input or self.prompt_input
        token = self.image_token
        text = prompt.replace(IMAGE_PLACEHOLDER, token) if token != IMAGE_PLACEHOLDER else prompt
        if not has_image:
            # A placeholder without an image is an error for the models: drop it with its newline.
            text = text.replace(f"{token}\n", "").replace(token, "")
        elif kind != "conversation" and token not in text:
            text = f"{token}\n{text}"  # LLaVA's convention, as in generate_text
        if kind == "conversation":
            return encode_prompt(self.tokenizer, text, token, add_bos=self.template.add_bos)
        turns = [Turn("user", text)]
        encoded = encode_conversation(self.tokenizer, self.template, turns, token, True)
        return encoded.input_ids

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        images: Sequence[Image.Image | None],
        *,
        max_new_tokens: int | None = None,
        prompt_input: PromptInput | None = None,
    ) -> list[str]:
        """One greedy answer per prompt; ``images[i]`` is None for a text-only prompt."""
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
        if not prompts:
            return []
        rows = [
            torch.tensor(self.encode(prompt, image is not None, prompt_input))
            for prompt, image in zip(prompts, images, strict=True)
        ]
        pad_id = self.tokenizer.pad_token_id
        input_ids = pad_rows(rows, pad_id, left=True)  # [B, T]
        attention_mask = pad_rows([torch.ones_like(row) for row in rows], 0, left=True)  # [B, T]
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(max_new_tokens or self.max_new_tokens),
            "do_sample": False,
            "num_beams": 1,
            "eos_token_id": self.stop_ids,
            "pad_token_id": pad_id,
        }
        if self.model.kind == "vlora":
            kwargs["delta_mode"] = "factorised"  # per-sample deltas: any mix of images in a batch
        image_list = list(images)
        new_tokens = self.model.generate(
            input_ids.to(self.model.device),
            attention_mask.to(self.model.device),
            images=image_list if any(image is not None for image in image_list) else None,
            **kwargs,
        )  # [B, new]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        eos = self.template.eos
        return [(text.split(eos)[0] if eos.strip() else text).strip() for text in texts]

    def __call__(self, prompt: str, image: Image.Image | None) -> str:
        """The adapters' ``generate_fn(prompt_text, image) -> str``."""
        return self.generate([prompt], [image])[0]


def make_generate_fn(
    checkpoint: str,
    *,
    prompt_input: PromptInput = "conversation",
    max_new_tokens: int | str = 512,
    device: str = "auto",
    dtype: str = "auto",
) -> BatchGenerator:
    """Load ``checkpoint`` and return ``generate_fn(prompt_text, image) -> str`` for the adapters.

    ``prompt_input`` must describe what the adapter sends: its default ``prompt_format=
    "conversation"`` matches the default here; with ``prompt_format="user"`` pass
    ``prompt_input="user"`` (the right choice for a model whose template is not vicuna_v1).
    ``max_new_tokens`` may arrive as a string from a toolkit's ``--model_args``. The returned
    object also has ``generate(prompts, images)`` for batches.
    """
    model = load_model_for_eval(checkpoint, device=device, dtype=dtype)
    return BatchGenerator(model, prompt_input=prompt_input, max_new_tokens=int(max_new_tokens))
