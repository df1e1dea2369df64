"""Pre-training data: feature rows (image features + caption) → tokenised samples.

Each sample uses the "plain" template: BOS (from the tokenizer), the image placeholder
(IMAGE_TOKEN_INDEX; VLoRA removes it, the baseline splices its visual tokens there), then the
caption and a newline. Only the caption and its newline are supervised (`encode_segments` labels
by character spans). Captions longer than `max_length` tokens are cut (note `truncated`);
empty captions and captions whose supervised tokens do not decode back to the caption
(`round_trip_mismatch`, e.g. characters a tokenizer without byte fallback cannot represent) are
not trained on and are counted by key in a `DataReport`.

Batching: padding to the longest sample of the batch, with length-bucketing
(`vlora.data.sampling`, or the `length` column in Ray Data) to keep the padding small.
Packing is deliberately not offered. In VLoRA an image is not a span of tokens but a per-sample
weight delta ΔW = W_v·W_s applied to every token of the sequence: two captions of two images
packed into one sequence would both be read by one set of weights, so caption B would be
trained under image A's delta (or a per-token delta would be needed, which is a different
model). A block-diagonal attention mask does not help, since the delta acts in the linear
layers, not in attention. Text-only packing would be sound, but pre-training has no text-only
samples and the SFT mixture only ~6%, so it would not pay for its complexity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from vlora.data.feature_index import FeatureIndex, Opener, open_local
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


class PretrainDataset(Dataset):
    """Plain torch dataset over feature Parquet files: one sample per usable caption.

    Captions are read and checked up front (key and caption columns only: the report, and
    `lengths` for length-bucketed batching); features are read lazily, one Parquet row group at
    a time through a small cache, so sequential or bucketed access stays cheap.
    """

    def __init__(
        self,
        feature_files: Sequence[str] | FeatureIndex,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int | None,
        image_token: str = "<image>",
        opener: Opener = open_local,
        max_bad_fraction: float | None = None,
    ) -> None:
        import pyarrow.parquet as pq

        if isinstance(feature_files, FeatureIndex):
            self.index = feature_files
        else:
            self.index = FeatureIndex(feature_files, opener)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.image_token = image_token
        self.report = DataReport()
        self.keys: list[str] = []
        self.captions: list[str] = []
        self.lengths: list[int] = []
        seen: set[str] = set()
        for path in self.index.files:
            with self.index.opener(path) as handle:
                table = pq.ParquetFile(handle).read(columns=["key", "caption"])
            for key, caption in zip(
                table.column("key").to_pylist(), table.column("caption").to_pylist(), strict=True
            ):
                if key in seen:  # the index keeps the first row of a key: count the others
                    self.report.total += 1
                    self.report.add_problem(key, "duplicate_key", path)
                    continue
                seen.add(key)
                encoded = prepare_caption(
                    tokenizer, key, caption, max_length, self.report, image_token
                )
                if encoded is not None:
                    self.keys.append(key)
                    self.captions.append(caption)
                    self.lengths.append(len(encoded.input_ids))
        if max_bad_fraction is not None:
            self.report.check(max_bad_fraction, "pre-training data")
        self.has_image = [True] * len(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        encoded = encode_caption(
            self.tokenizer, self.captions[index], self.max_length, self.image_token
        )
        return {
            "id": self.keys[index],
            "input_ids": np.asarray(encoded.input_ids, dtype=np.int32),
            "labels": np.asarray(encoded.labels, dtype=np.int32),
            "features": self.index.read([self.keys[index]])[0],  # float16 [L·d_v]
            "has_image": True,
            "length": len(encoded.input_ids),
        }
