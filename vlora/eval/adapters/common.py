"""Pieces shared by the toolkit adapters: how to reach the model, and which prompt string it gets.

A model is reached through a *generate function* ``generate_fn(prompt_text, image) -> str`` (greedy
decoding is the caller's job: VLMEvalKit used ``do_sample=False, num_beams=1, max_new_tokens=512``).
It can be given directly, as an object with ``generate_from_text(prompt, image)``, or as a factory
``"package.module:callable"`` called with the remaining keyword arguments (what the toolkits' string
configs can express, e.g. lmms-eval ``--model_args factory=pkg.mod:make,checkpoint=/ckpt``).
For a saved VLoRA/baseline folder the factory is ``vlora.eval.generate_fn:make_generate_fn``.

``prompt_format`` says which string the model receives:

* ``"conversation"`` (default): the whole string VLMEvalKit feeds the tokenizer, e.g.
  ``"<system> USER: <image>\\n{prompt} ASSISTANT:"``; for models that do not template themselves;
* ``"user"``: the user message with the ``<image>`` placeholder only (model applies its template);
* ``"content"``: the bare instruction text, no placeholder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

from PIL import Image

from vlora.eval.prompts import PromptWrapping, wrap_prompt

GenerateFn = Callable[[str, Image.Image | None], str]
PromptFormat = Literal["conversation", "user", "content"]


def as_generate_fn(target: Any) -> GenerateFn:
    """A generate function from a callable or an object with ``generate_from_text``.

    ``generate_from_text`` wins over ``__call__``: a torch module is callable (its forward), which
    is not what we want to run.
    """
    method = getattr(target, "generate_from_text", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(target):
        return target  # type: ignore[no-any-return]
    raise TypeError(
        f"{type(target).__name__} is neither callable nor has generate_from_text(prompt, image)"
    )


def load_factory(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"factory must look like 'package.module:callable', got {spec!r}")
    return getattr(importlib.import_module(module_name), attribute)  # type: ignore[no-any-return]


def resolve_generate_fn(
    generate_fn: GenerateFn | None,
    model: Any | None,
    factory: str | None,
    factory_kwargs: dict[str, Any],
) -> GenerateFn:
    """Exactly one of ``generate_fn``, ``model`` and ``factory`` must be given."""
    sources = {"generate_fn": generate_fn, "model": model, "factory": factory}
    given = [name for name, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ValueError(f"pass exactly one of generate_fn, model, factory (got {given or 'none'})")
    if factory_kwargs and factory is None:
        raise TypeError(f"unexpected keyword arguments {sorted(factory_kwargs)} (only for factory)")
    if generate_fn is not None:
        return as_generate_fn(generate_fn)
    if model is not None:
        return as_generate_fn(model)
    assert factory is not None
    return as_generate_fn(load_factory(factory)(**factory_kwargs))


def render_prompt(
    content: str, has_image: bool, prompt_format: PromptFormat, wrapping: PromptWrapping
) -> str:
    """The string handed to the model for ``content`` (one image at most: see ``prompts``)."""
    if prompt_format == "content":
        return content
    user, conversation = wrap_prompt(content, int(has_image), wrapping)
    if prompt_format == "user":
        return user
    if prompt_format == "conversation":
        return conversation
    raise ValueError(f"unknown prompt_format {prompt_format!r}")


def load_image(value: Any) -> Image.Image:
    """A PIL image from a PIL image or a local path (the toolkits pass dumped image files)."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        raise ValueError(f"remote images are not fetched (offline project): {value}")
    with Image.open(value) as image:
        return image.convert("RGB")
