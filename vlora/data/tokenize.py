"""Tokenising rendered conversations into input ids and labels, image placeholder included.

The whole text is tokenised at once (exactly what inference sees) and each token is labelled by
the character span it covers: tokens inside a supervised segment are supervised, others get
IGNORE_INDEX. A token that straddles a supervised/unsupervised boundary cannot be labelled
faithfully; it is left unsupervised and counted, never silently dropped.

The image placeholder text (e.g. "<image>") becomes IMAGE_TOKEN_INDEX, LLaVA's convention: the
input-space baseline splices visual tokens there and VLoRA removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from vlora.data.templates import ConversationTemplate, Segment, Turn

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200


@dataclass
class EncodedText:
    input_ids: list[int]
    labels: list[int]
    num_straddling_tokens: int = 0  # tokens crossing a supervised boundary (left unsupervised)
    num_images: int = 0


def _supervised_ranges(segments: list[Segment]) -> tuple[str, list[tuple[int, int]]]:
    text, ranges, cursor = "", [], 0
    for segment in segments:
        if segment.supervised:
            ranges.append((cursor, cursor + len(segment.text)))
        text += segment.text
        cursor += len(segment.text)
    return text, ranges


def encode_segments(
    tokenizer: PreTrainedTokenizerBase,
    segments: list[Segment],
    image_token: str = "<image>",
    add_bos: bool = True,
) -> EncodedText:
    text, ranges = _supervised_ranges(segments)
    ids: list[int] = []
    labels: list[int] = []
    if add_bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    straddling = 0
    chunk_start = 0
    chunks = text.split(image_token)
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
        if chunk:
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
                start, end = start + chunk_start, end + chunk_start
                inside = any(lo <= start and end <= hi for lo, hi in ranges)
                overlaps = any(start < hi and lo < end for lo, hi in ranges)
                if overlaps and not inside:
                    straddling += 1
                ids.append(token_id)
                labels.append(token_id if inside and end > start else IGNORE_INDEX)
        chunk_start += len(chunk) + len(image_token)
    return EncodedText(ids, labels, straddling, num_images=len(chunks) - 1)


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    image_token: str = "<image>",
    add_bos: bool = True,
) -> list[int]:
    """A generation prompt → ids (image placeholder → IMAGE_TOKEN_INDEX)."""
    return encode_segments(tokenizer, [Segment(prompt)], image_token, add_bos).input_ids


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    template: ConversationTemplate,
    turns: list[Turn],
    image_token: str = "<image>",
    add_generation_prompt: bool = False,
) -> EncodedText:
    segments = template.render(turns, add_generation_prompt=add_generation_prompt)
    return encode_segments(tokenizer, segments, image_token, add_bos=template.add_bos)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, template: ConversationTemplate) -> list[int]:
    """Token ids that end an answer: the template's end-of-turn token and the tokenizer's EOS."""
    ids = []
    eos_ids = tokenizer(template.eos, add_special_tokens=False).input_ids if template.eos else []
    if len(eos_ids) == 1:
        ids.append(eos_ids[0])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
