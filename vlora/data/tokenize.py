"""Tokenising rendered conversations into input ids and labels, image placeholder included.

The whole text is tokenised at once (exactly what inference sees) and each token is labelled by
the character span it covers: tokens inside a supervised segment are supervised, others get
IGNORE_INDEX. A token that straddles a supervised/unsupervised boundary cannot be labelled
faithfully; it is left unsupervised and counted, never silently dropped.

The image placeholder text (e.g. "<image>") becomes IMAGE_TOKEN_INDEX, LLaVA's convention: the
input-space baseline splices visual tokens there and VLoRA removes it.

Checks on an encoding (used by the data builders and `vlora data inspect-sft`):
- `EncodedText.span_positions` records, per supervised segment, which token positions carry its
  labels, so the supervised text can be decoded back span by span (`decode_supervised_spans`);
- `round_trip_mismatches` lists the spans whose decoded tokens do not reproduce the segment text
  (unknown characters, normalisers, a lost boundary token);
- `EncodedText.truncate(max_length)` cuts ids and labels and keeps the span bookkeeping right.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

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
    # One entry per supervised segment, in order: the segment's text and the positions (into
    # input_ids) of the tokens labelled for it. Positions past a truncation are removed.
    span_texts: list[str] = field(default_factory=list)
    span_positions: list[list[int]] = field(default_factory=list)
    truncated_from: int | None = None  # the length before `truncate`, when it cut anything
    span_cut: list[bool] = field(default_factory=list)  # per span: lost tokens to `truncate`

    @property
    def num_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def truncate(self, max_length: int) -> EncodedText:
        """The first `max_length` tokens (ids, labels and span positions cut together)."""
        if len(self.input_ids) <= max_length:
            return self
        return EncodedText(
            input_ids=self.input_ids[:max_length],
            labels=self.labels[:max_length],
            num_straddling_tokens=self.num_straddling_tokens,
            num_images=sum(i == IMAGE_TOKEN_INDEX for i in self.input_ids[:max_length]),
            span_texts=list(self.span_texts),
            span_positions=[[p for p in ps if p < max_length] for ps in self.span_positions],
            truncated_from=len(self.input_ids),
            span_cut=[bool(ps) and ps[-1] >= max_length for ps in self.span_positions],
        )


def _supervised_ranges(segments: list[Segment]) -> tuple[str, list[tuple[int, int]], list[str]]:
    parts, ranges, texts, cursor = [], [], [], 0
    for segment in segments:
        if segment.supervised:
            ranges.append((cursor, cursor + len(segment.text)))
            texts.append(segment.text)
        parts.append(segment.text)
        cursor += len(segment.text)
    return "".join(parts), ranges, texts


def encode_segments(
    tokenizer: PreTrainedTokenizerBase,
    segments: list[Segment],
    image_token: str = "<image>",
    add_bos: bool = True,
) -> EncodedText:
    text, ranges, span_texts = _supervised_ranges(segments)
    range_ends = [hi for _, hi in ranges]
    span_positions: list[list[int]] = [[] for _ in ranges]
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
                # Ranges are sorted and disjoint: the only one that can hold or overlap a token
                # is the first ending after the token's start (O(log R) instead of O(R)).
                j = bisect.bisect_right(range_ends, start)
                overlaps = j < len(ranges) and start < ranges[j][1] and ranges[j][0] < end
                inside = j < len(ranges) and ranges[j][0] <= start and end <= ranges[j][1]
                if overlaps and not inside:
                    straddling += 1
                if inside and end > start:
                    span_positions[j].append(len(ids))
                    labels.append(token_id)
                else:
                    labels.append(IGNORE_INDEX)
                ids.append(token_id)
        chunk_start += len(chunk) + len(image_token)
    return EncodedText(
        ids,
        labels,
        straddling,
        num_images=len(chunks) - 1,
        span_texts=span_texts,
        span_positions=span_positions,
    )


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


def decode_supervised_spans(tokenizer: PreTrainedTokenizerBase, encoded: EncodedText) -> list[str]:
    """Each supervised segment's labelled tokens, decoded (special tokens kept)."""
    return [
        tokenizer.decode(
            [encoded.input_ids[p] for p in positions],
            skip_special_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        for positions in encoded.span_positions
    ]


def round_trip_mismatches(
    tokenizer: PreTrainedTokenizerBase, encoded: EncodedText, ignore_truncated: bool = True
) -> list[int]:
    """Indices of supervised spans whose decoded tokens do not give back the segment's text.

    Whitespace at the ends is ignored: SentencePiece decoders drop the leading "▁" of a
    sequence, so " yes</s>" decodes to "yes</s>" although every character was trained on.
    Spans cut by truncation are skipped when `ignore_truncated` (they are counted apart).
    """
    decoded = decode_supervised_spans(tokenizer, encoded)
    cut = encoded.span_cut or [False] * len(decoded)
    bad = []
    for index, (text, got) in enumerate(zip(encoded.span_texts, decoded, strict=True)):
        if ignore_truncated and cut[index]:
            continue  # cut short by the truncation: counted as truncated instead
        if got.strip() != text.strip():
            bad.append(index)
    return bad
