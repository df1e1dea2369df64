"""VLMEvalKit model class for VLoRA: :class:`VLoRAVLMEval`.

The interface it implements: docs/benchmark-scoring.md, "Toolkit adapters".

It subclasses ``vlmeval.vlm.base.BaseModel`` when VLMEvalKit is importable; otherwise the base class
is ``object`` (``VLMEVALKIT_AVAILABLE`` is False) so this module imports, and can be unit-tested,
without the toolkit. It behaves like VLMEvalKit's ``LLaVA`` class for a one-image model:

* ``use_custom_prompt`` is True for MCQ datasets (MMBench, CCBench, ScienceQA, MMMU), whose prompt
  is LLaVA's (``vlora.eval.prompts.vlmevalkit_mcq_content``); Y/N datasets keep the dataset prompt;
* ``generate_inner`` takes the first image and the joined text (``message_to_promptimg``), wraps
  them with the VLoRA-era ``vicuna_v1`` template by default, and calls the generate function.

Run it (VLMEvalKit checked out at ``325df3bc`` or ``027e38c8`` to match the paper's era, data in
``$LMUData``; no judge key needed for exact matching)::

    from vlmeval.dataset import build_dataset          # HEAD layout
    from vlmeval.inference import infer_data_job
    from vlora.eval.adapters.vlmevalkit import VLoRAVLMEval

    model = VLoRAVLMEval(factory="vlora.eval.generate_fn:make_generate_fn", checkpoint="/ckpt")
    dataset = build_dataset("MMBench_DEV_EN")
    infer_data_job(model=model, work_dir="outputs/vlora", model_name="vlora", dataset=dataset)
    print(dataset.evaluate("outputs/vlora/vlora_MMBench_DEV_EN.xlsx", model="exact_matching", nproc=1))

With ``run.py`` instead: add ``"vlora": partial(VLoRAVLMEval,
factory="vlora.eval.generate_fn:make_generate_fn", checkpoint="/ckpt")`` to ``supported_VLM`` in
``vlmeval/config.py`` (or make the class importable from ``vlmeval.vlm`` and use ``--config``), then
``python run.py --data MMBench_DEV_EN MME ScienceQA_TEST HallusionBench MMMU_DEV_VAL CCBench
--model vlora`` with no ``OPENAI_API_KEY`` set (exact matching; recent checkouts also accept
``--judge exact_matching``). In the 2024 code the inference helper takes the dataset
*name* rather than a dataset object; check ``inspect.signature(infer_data_job)`` on your checkout.
Cross-check with our scorer: ``vlora score --benchmark MMBench_DEV_EN --data
$LMUData/MMBench_DEV_EN.tsv --predictions preds.jsonl`` (``index``/``prediction`` columns of the
``.xlsx`` as JSON lines).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from vlora.eval.adapters.common import (
    GenerateFn,
    PromptFormat,
    load_image,
    render_prompt,
    resolve_generate_fn,
)
from vlora.eval.benchmarks import BENCHMARKS
from vlora.eval.prompts import PromptWrapping, vlmevalkit_mcq_content

try:
    from vlmeval.vlm.base import BaseModel as _VLMEvalKitBase

    VLMEVALKIT_AVAILABLE = True
except Exception:  # not installed, or its heavy imports fail: stay importable
    _VLMEvalKitBase = object  # type: ignore[assignment,misc]
    VLMEVALKIT_AVAILABLE = False

# Dataset-name fragments that VLMEvalKit types as MCQ, for use when it is not importable.
_MCQ_NAME_FRAGMENTS = ("mmbench", "ccbench", "scienceqa", "mmmu", "seedbench", "ai2d", "mmstar")


def dataset_is_mcq(dataset: str | None) -> bool:
    """VLMEvalKit ``DATASET_TYPE(dataset) == 'MCQ'``, with our registry as the offline fallback."""
    if dataset is None:
        return False
    if VLMEVALKIT_AVAILABLE:
        for module_name in ("vlmeval.dataset", "vlmeval.utils"):  # HEAD, then 2024 layout
            try:
                module = importlib.import_module(module_name)
                return bool(module.DATASET_TYPE(dataset) == "MCQ")
            except (ImportError, AttributeError):
                continue
    spec = BENCHMARKS.get(dataset)
    if spec is not None:
        return spec.prompt_kind == "mcq"
    return any(fragment in dataset.lower() for fragment in _MCQ_NAME_FRAGMENTS)


class VLoRAVLMEval(_VLMEvalKitBase):  # type: ignore[misc,valid-type]
    """VLMEvalKit ``BaseModel`` for a one-image model (falls back to ``object`` without VLMEvalKit).

    Args:
        generate_fn: ``(prompt_text, image) -> str``; or give ``model`` (an object with
            ``generate_from_text``) or ``factory`` (``"pkg.mod:callable"`` called with the extra
            keyword arguments). Exactly one of the three.
        prompt_format: ``"conversation"`` (full templated string), ``"user"`` or ``"content"``.
        wrapping: ``"vlmevalkit-2024"`` (default, VLoRA era) or ``"vlmevalkit-2024-07"``.
    """

    INTERLEAVE = False

    def __init__(
        self,
        generate_fn: GenerateFn | None = None,
        *,
        model: Any | None = None,
        factory: str | None = None,
        prompt_format: PromptFormat = "conversation",
        wrapping: PromptWrapping = "vlmevalkit-2024",
        **factory_kwargs: Any,
    ) -> None:
        if VLMEVALKIT_AVAILABLE:
            super().__init__()
        self.generate_fn = resolve_generate_fn(generate_fn, model, factory, factory_kwargs)
        self.prompt_format: PromptFormat = prompt_format
        self.wrapping: PromptWrapping = wrapping

    def use_custom_prompt(self, dataset: str | None) -> bool:
        """LLaVA's rule: a custom prompt for MCQ datasets only."""
        return dataset_is_mcq(dataset)

    def build_prompt(self, line: Mapping[str, Any], dataset: str | None = None) -> list[dict]:
        """LLaVA MCQ prompt: the row's images (dumped by VLMEvalKit) first, then the text."""
        dump_image = getattr(self, "dump_image", None)
        if dump_image is None:
            raise RuntimeError("build_prompt needs VLMEvalKit's BaseModel.dump_image")
        image_paths = dump_image(line, dataset)
        if isinstance(image_paths, str):
            image_paths = [image_paths]
        fields = dict(line.items())
        message = [{"type": "image", "value": path} for path in image_paths]
        message.append({"type": "text", "value": vlmevalkit_mcq_content(fields)})
        return message

    def generate_inner(
        self, message: Sequence[Mapping[str, Any]], dataset: str | None = None
    ) -> str:
        """First image + joined text (``message_to_promptimg``), wrapped, then generated."""
        texts = [str(item["value"]) for item in message if item["type"] == "text"]
        images = [item["value"] for item in message if item["type"] == "image"]
        image = load_image(images[0]) if images else None
        prompt = render_prompt(
            "\n".join(texts), image is not None, self.prompt_format, self.wrapping
        )
        return self.generate_fn(prompt, image)
