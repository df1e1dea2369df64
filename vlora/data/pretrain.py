"""Pre-training data: feature rows (image features + caption) → tokenised samples.

Each sample uses the "plain" template: BOS (from the tokenizer), the image placeholder
(IMAGE_TOKEN_INDEX; VLoRA removes it, the baseline splices its visual tokens there), then the
caption and a newline. Only the caption and its newline are supervised (`encode_segments` labels
by character spans). Captions longer than `max_length` tokens are cut (note `truncated`);
empty captions and captions whose supervised tokens do not decode back to the caption
(`round_trip_mismatch`, e.g. characters a tokenizer without byte fallback cannot represent) are
not trained on and are counted by key in a `DataReport`.

The training rows are built with `prepare_caption` by the Ray Data builder in
`pipelines/training/datasets.py`; batching (`pipelines/training/batching.py`) pads to the longest sample
of a micro batch, and each row carries its `length` for length-aware batching.
Packing is deliberately not offered. In VLoRA an image is not a span of tokens but a per-sample
weight delta ΔW = W_v·W_s applied to every token of the sequence: two captions of two images
packed into one sequence would both be read by one set of weights, so caption B would be
trained under image A's delta (or a per-token delta would be needed, which is a different
model). A block-diagonal attention mask does not help, since the delta acts in the linear
layers, not in attention. Text-only packing would be sound, but pre-training has no text-only
samples and the SFT mixture only ~6%, so it would not pay for its complexity.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from vlora.data.report import DataReport
from vlora.data.templates import ConversationTemplate, Turn, get_template
from vlora.data.tokenize import EncodedText, encode_conversation, round_trip_mismatches

PLAIN = "plain"


def encode_caption(
    tokenizer: PreTrainedTokenizerBase,
    caption: str,
    max_length: int | None = None,
    image_token: str = "<image>",
    template: ConversationTemplate | None = None,
) -> EncodedText:
    """[BOS, IMAGE, caption…, "\\n"] with the caption and newline supervised, cut to max_length."""
    template = template or get_template(PLAIN)
    turns = [Turn("user", image_token), Turn("assistant", caption)]
    encoded = encode_conversation(tokenizer, template, turns, image_token)
    return encoded.truncate(max_length) if max_length else encoded


def check_caption(
    tokenizer: PreTrainedTokenizerBase, caption: str | None, encoded: EncodedText | None
) -> tuple[str | None, str]:
    """(problem reason or None, detail) for one caption and its encoding."""
    if caption is None or not caption.strip():
        return "empty_caption", ""
    assert encoded is not None
    if encoded.num_straddling_tokens:
        return "straddling_tokens", f"{encoded.num_straddling_tokens} token(s)"
    if round_trip_mismatches(tokenizer, encoded):
        return "round_trip_mismatch", repr(caption[:60])
    if encoded.num_supervised == 0:
        return "truncated_no_supervised", ""
    return None, ""


def prepare_caption(
    tokenizer: PreTrainedTokenizerBase,
    key: str,
    caption: str | None,
    max_length: int | None,
    report: DataReport,
    image_token: str = "<image>",
) -> EncodedText | None:
    """Encode one caption and record it in `report`; None when it must not be trained on."""
    report.total += 1
    encoded = None
    if caption is not None and caption.strip():
        encoded = encode_caption(tokenizer, caption, max_length, image_token)
    reason, detail = check_caption(tokenizer, caption, encoded)
    if reason is not None:
        report.add_problem(key, reason, detail)
        return None
    assert encoded is not None
    if encoded.truncated_from:
        report.add_note(key, "truncated")
    return encoded
