"""The plain-torch reference of the training rows, which the Ray Data builders are compared with.

`pipelines/training/datasets.py` builds the pre-training and SFT rows with Ray Data: streamed, split into
blocks, features attached by (file, row) on workers. The functions here build the same rows the
plain way, for small test data only: every feature file is read whole into memory and every
caption or record is handled in order, with the library functions the Ray tasks run
(`prepare_caption`, `build_sft_samples`). tests/pipelines/datasets/test_datasets_ray.py checks
that both give the same rows.

Rows follow the contract of `vlora.data.collate.collate_batch` (`pipelines.training.datasets.ROW_COLUMNS`:
input_ids, labels, features, has_image, length), plus the sample's `id`, which the Ray rows do
not carry. A list of rows is a map-style torch dataset: `DataLoader(rows, collate_fn=...)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from vlora.data.features import table_features
from vlora.data.pretrain import prepare_caption
from vlora.data.report import DataReport
from vlora.data.sft import (
    DEFAULT_MAX_BAD_FRACTION,
    LLAVA_IMAGE_TOKEN,
    build_sft_samples,
    load_sft_records,
)
from vlora.data.templates import ConversationTemplate

Row = dict[str, Any]


def make_row(
    sample_id: str, input_ids: list[int], labels: list[int], features: np.ndarray, has_image: bool
) -> Row:
    return {
        "id": sample_id,
        "input_ids": np.asarray(input_ids, dtype=np.int32),
        "labels": np.asarray(labels, dtype=np.int32),
        "features": np.asarray(features, dtype=np.float16).reshape(-1),  # [L·d_v]
        "has_image": has_image,
        "length": len(input_ids),
    }


def read_feature_file(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """(keys, captions, features float16 [n, L, d_v]) of one feature Parquet file."""
    table = pq.read_table(path)
    keys = table.column("key").to_pylist()
    captions = table.column("caption").to_pylist()
    return keys, captions, table_features(table)


def pretrain_rows(
    feature_files: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    image_token: str = "<image>",
) -> tuple[list[Row], DataReport]:
    """One row per feature-file row whose caption can be trained on, in file order, and the
    report of the captions that cannot (by key)."""
    report = DataReport()
    rows = []
    for path in feature_files:
        keys, captions, features = read_feature_file(path)
        for key, caption, values in zip(keys, captions, features, strict=True):
            encoded = prepare_caption(tokenizer, key, caption, max_length, report, image_token)
            if encoded is not None:
                rows.append(make_row(key, encoded.input_ids, encoded.labels, values, True))
    return rows, report


def sft_rows(
    records: str | Path | Sequence[Any],
    tokenizer: PreTrainedTokenizerBase,
    template: ConversationTemplate | str,
    feature_files: Sequence[str],
    max_length: int | None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    image_token: str = LLAVA_IMAGE_TOKEN,
) -> tuple[list[Row], DataReport]:
    """One row per usable SFT record, in record order, and the report of all records.

    `records` is a LLaVA JSON (array or lines) file or the parsed records. An image record gets
    its image's features (the first row of that key in `feature_files`), a text-only record
    zeros. Raises `DataQualityError` above `max_bad_fraction`, as the Ray builder does.
    """
    raw = load_sft_records(records) if isinstance(records, str | Path) else list(records)
    by_key: dict[str, np.ndarray] = {}  # image key → float16 [L, d_v]
    for path in feature_files:
        keys, _, features = read_feature_file(path)
        for key, values in zip(keys, features, strict=True):
            by_key.setdefault(key, values)
    if not by_key:
        raise ValueError("sft_rows needs at least one feature row (for the feature shape)")
    zeros = np.zeros_like(next(iter(by_key.values())))  # text-only rows: ΔW = 0 downstream
    samples, report = build_sft_samples(
        raw, tokenizer, template, max_length, by_key.__contains__, image_token
    )
    report.check(max_bad_fraction, "SFT data")
    rows = [
        make_row(
            s.id,
            s.input_ids,
            s.labels,
            by_key[s.image] if s.image is not None else zeros,
            s.image is not None,
        )
        for s in samples
    ]
    return rows, report
