"""Benchmark prompts as VLMEvalKit (and, behind a switch, lmms-eval) build them for LLaVA-style models.

Two independent choices (docs/benchmark-scoring.md, "Prompts"):

*Content* (``content=``):

* ``"vlmevalkit"`` (default), ``LLaVA.build_prompt`` for MCQ datasets (MMBench, CCBench, ScienceQA,
  MMMU): ``{hint}\\n`` (if any) + ``{question}`` + ``\\nA. …`` per non-missing option + ``\\nAnswer with
  the option's letter from the given choices directly.`` (``\\nAnswer the question directly.`` without
  options; Chinese suffixes when the text has CJK characters). Y/N datasets (MME, HallusionBench)
  use the question unchanged. The local short-answer benchmark appends LLaVA's ``\\nAnswer the
  question using a single word or phrase.``
* ``"lmms-eval"``: the task ``doc_to_text`` variants (MMBench ``There are several options:``,
  ScienceQA ``Context:``, MME ``single word or phrase``, MMMU with a blank line before the suffix).

*Wrapping* (``wrapping=``), i.e. where the ``<image>`` placeholder goes and the final string:

* ``"vlmevalkit-2024"`` (default; VLoRA era, ≤ 2024-07-26, conv template ``vicuna_v1``):
  ``"<system> USER: <image>\\n{content} ASSISTANT:"``;
* ``"vlmevalkit-2024-07"`` (≥ 2024-07-27 to today, ``concat_tilist``):
  ``"<system> USER:  <image> {content} ASSISTANT: "`` (note the double space and trailing space);
* ``"lmms-eval"``: lmms-eval's ``llava`` model: space-joined ``<image>`` tokens + ``\\n`` prepended
  unless the context already has ``<image>``, then ``vicuna_v1``.

Multi-image policy for a one-image model (VLoRA turns one image into one set of weight deltas):
VLMEvalKit's LLaVA prepends *all* images of a row (MMMU has rows with up to 7), but a model that is
not ``INTERLEAVE`` goes through ``BaseModel.message_to_promptimg``, which keeps the **first image**
and the joined text. We do the same: ``max_images=1`` (default) keeps the first image and places one
placeholder; the literal ``<image k>`` references stay in the question text, as in VLMEvalKit; the
number of dropped images is reported in :attr:`BenchmarkPrompt.dropped_images`. Pass
``max_images=None`` to get every image and one placeholder per image (the multi-image LLaVA view).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from vlora.eval.benchmarks import BenchmarkSpec, LmmsPromptKind, PromptKind
from vlora.eval.tsv import TsvRecord

PromptContent = Literal["vlmevalkit", "lmms-eval"]
PromptWrapping = Literal["vlmevalkit-2024", "vlmevalkit-2024-07", "lmms-eval"]

IMAGE_PLACEHOLDER = "<image>"
VICUNA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
MCQ_SUFFIX_EN = "\nAnswer with the option's letter from the given choices directly."
MCQ_SUFFIX_CN = "\n请直接回答选项字母。"
OPEN_SUFFIX_EN = "\nAnswer the question directly."
OPEN_SUFFIX_CN = "\n请直接回答问题。"
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
LMMS_MMBENCH_OPTIONS_HEADER = "There are several options:"
LMMS_CCBENCH_SUFFIX = "\n请直接使用所提供的选项字母作为答案回答。"
MME_YES_NO_INSTRUCTION = " Please answer yes or no."

_CJK_RE = re.compile(r"[\u4e00-\u9fff]")


def is_missing(value: object) -> bool:
    """True for None, float NaN (pandas rows) and empty strings: VLMEvalKit's ``pd.isna`` view."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value == ""


def row_options(fields: Mapping[str, object]) -> dict[str, str]:
    """Option columns ``A``…``Z`` that are present and not missing, in letter order."""
    return {
        letter: str(fields[letter])
        for letter in string.ascii_uppercase
        if letter in fields and not is_missing(fields[letter])
    }


def has_cjk(text: str) -> bool:
    """VLMEvalKit ``cn_string``: any CJK unified ideograph."""
    return _CJK_RE.search(text) is not None


def _text(fields: Mapping[str, object], column: str) -> str | None:
    value = fields.get(column)
    return None if is_missing(value) else str(value)


def vlmevalkit_mcq_content(fields: Mapping[str, object]) -> str:
    """``LLaVA.build_prompt`` text for an MCQ row (also MMMU open questions, which have no options)."""
    hint = _text(fields, "hint")
    prompt = str(fields.get("question", ""))
    if hint is not None:
        prompt = f"{hint}\n{prompt}"
    options = row_options(fields)
    for letter, option in options.items():
        prompt += f"\n{letter}. {option}"
    chinese = has_cjk(prompt)
    if options:
        return prompt + (MCQ_SUFFIX_CN if chinese else MCQ_SUFFIX_EN)
    return prompt + (OPEN_SUFFIX_CN if chinese else OPEN_SUFFIX_EN)


def vlmevalkit_content(kind: PromptKind, fields: Mapping[str, object]) -> str:
    """Prompt text (no image placeholder) as VLMEvalKit gives it to a LLaVA-class model."""
    question = str(fields.get("question", ""))
    if kind == "mcq":
        return vlmevalkit_mcq_content(fields)
    if kind == "yorn":
        return question  # dataset default prompt: [image, question] unchanged
    return question + SHORT_ANSWER_SUFFIX


def lmms_eval_content(kind: LmmsPromptKind, fields: Mapping[str, object]) -> str:
    """Prompt text of the matching lmms-eval task's ``doc_to_text``."""
    question = str(fields.get("question", ""))
    options = row_options(fields)
    option_lines = "\n".join(f"{letter}. {text}" for letter, text in options.items())
    if kind in ("mmbench_en", "mmbench_cc"):
        hint = _text(fields, "hint")
        body = f"{question} {LMMS_MMBENCH_OPTIONS_HEADER}\n{option_lines}"
        if hint is not None and hint != "nan":
            body = f"{hint} {body}"
        return body + (MCQ_SUFFIX_EN if kind == "mmbench_en" else LMMS_CCBENCH_SUFFIX)
    if kind == "scienceqa":
        hint = _text(fields, "hint")
        context = f"Context: {hint}\n" if hint else ""
        return f"{context}{question}\n{option_lines}{MCQ_SUFFIX_EN}"
    if kind == "mme":
        stripped = question.strip().replace(MME_YES_NO_INSTRUCTION, "")
        return stripped + SHORT_ANSWER_SUFFIX
    if kind == "mmmu":
        if options:
            return f"{question}\n{option_lines}\n{MCQ_SUFFIX_EN}"
        return f"{question}\n{SHORT_ANSWER_SUFFIX}"
    if kind == "hallusion":
        return question
    return question + SHORT_ANSWER_SUFFIX


def wrap_prompt(content: str, n_images: int, wrapping: PromptWrapping) -> tuple[str, str]:
    """Place ``n_images`` placeholders; return (user message, full conversation string)."""
    if wrapping == "vlmevalkit-2024":
        user = f"{IMAGE_PLACEHOLDER}\n" * n_images + content
        return user, f"{VICUNA_V1_SYSTEM} USER: {user} ASSISTANT:"
    if wrapping == "vlmevalkit-2024-07":
        user = f" {IMAGE_PLACEHOLDER} " * n_images + content
        return user, f"{VICUNA_V1_SYSTEM} USER: {user} ASSISTANT: "
    if wrapping == "lmms-eval":
        user = content
        if n_images and IMAGE_PLACEHOLDER not in content:
            user = " ".join([IMAGE_PLACEHOLDER] * n_images) + "\n" + content
        return user, f"{VICUNA_V1_SYSTEM} USER: {user} ASSISTANT:"
    raise ValueError(f"unknown prompt wrapping {wrapping!r}")


@dataclass(frozen=True)
class BenchmarkPrompt:
    """A row's prompt.

    Attributes:
        content: instruction text without any image placeholder.
        text: the user message with the ``<image>`` placeholder(s) placed per the wrapping.
        conversation: the full string VLMEvalKit feeds the tokenizer (system + ``USER:`` …
            ``ASSISTANT:``).
        images: the images given to the model (at most ``max_images``), RGB.
        dropped_images: images of the row left out by the one-image policy.
    """

    content: str
    text: str
    conversation: str
    images: list[Image.Image]
    dropped_images: int


def build_prompt(
    spec: BenchmarkSpec,
    row: TsvRecord,
    *,
    content: PromptContent = "vlmevalkit",
    wrapping: PromptWrapping = "vlmevalkit-2024",
    max_images: int | None = 1,
) -> BenchmarkPrompt:
    """Build the prompt of ``row`` for a LLaVA-style model (see the module docstring)."""
    if content == "vlmevalkit":
        text = vlmevalkit_content(spec.prompt_kind, row.fields)
    elif content == "lmms-eval":
        text = lmms_eval_content(spec.lmms_prompt, row.fields)
    else:
        raise ValueError(f"unknown prompt content style {content!r}")
    images = row.decode_images()
    kept = images if max_images is None else images[:max_images]
    user, conversation = wrap_prompt(text, len(kept), wrapping)
    return BenchmarkPrompt(
        content=text,
        text=user,
        conversation=conversation,
        images=kept,
        dropped_images=len(images) - len(kept),
    )
