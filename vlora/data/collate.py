"""Tokenised samples (+ image features) → the model's forward arguments.

`collate_batch` accepts a list of row dicts (e.g. the tests' plain reference rows) or a dict of columns (Ray
Data's `iter_batches(batch_format="numpy")`: ragged columns arrive as object arrays of arrays,
fixed-size feature lists as an object array of [L·d_v] arrays or a stacked [B, L·d_v] array) and
returns exactly the arguments of `VLoRAModel.forward` / `InputSpaceModel.forward`:

    input_ids       [B, T] int64, right-padded with pad_token_id; IMAGE_TOKEN_INDEX (-200) stays
                    where the image goes (VLoRA strips it, the baseline splices visual tokens)
    attention_mask  [B, T] int64, 0 on padding
    labels          [B, T] int64, IGNORE_INDEX on padding, prompts and the placeholder
    image_features  [B, L, d_v] float32, zeros for text-only rows
    has_image       [B] bool

T is the longest row of the batch (after the optional `max_length` cut), rounded up to
`pad_to_multiple_of` when given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX

Rows = Sequence[Mapping[str, Any]] | Mapping[str, Any]


def _columns(rows: Rows) -> dict[str, list[Any]]:
    if isinstance(rows, Mapping):
        return {name: list(values) for name, values in rows.items()}
    if not rows:
        raise ValueError("collate_batch: empty batch")
    names = rows[0].keys()
    return {name: [row.get(name) for row in rows] for name in names}


def _feature_array(
    values: list[Any], has_image: list[bool], feature_shape: tuple[int, int] | None
) -> torch.Tensor | None:
    present = [np.asarray(v) for v, flag in zip(values, has_image, strict=True) if flag]
    if feature_shape is None:
        shaped = [v for v in present if v.ndim == 2]
        if shaped:
            feature_shape = tuple(shaped[0].shape)
        elif not present:
            return None
        else:
            raise ValueError("collate_batch: flat features need feature_shape=(L, d_v)")
    num_tokens, dim = feature_shape
    out = np.zeros((len(values), num_tokens, dim), dtype=np.float32)  # [B, L, d_v]
    for b, (value, flag) in enumerate(zip(values, has_image, strict=True)):
        if not flag:
            continue  # text-only: zeros (the models ignore them through has_image)
        array = np.asarray(value)
        if array.size != num_tokens * dim:
            raise ValueError(
                f"collate_batch: row {b} has {array.size} feature values, expected "
                f"{num_tokens}×{dim}"
            )
        out[b] = array.reshape(num_tokens, dim)
    return torch.from_numpy(out)


def collate_batch(
    rows: Rows,
    pad_token_id: int,
    feature_shape: tuple[int, int] | None = None,
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad a batch of samples into model inputs (see the module docstring for shapes)."""
    columns = _columns(rows)
    ids = [np.asarray(x, dtype=np.int64).reshape(-1) for x in columns["input_ids"]]
    labels_column = columns.get("labels")
    labels = (
        [np.asarray(x, dtype=np.int64).reshape(-1) for x in labels_column]
        if labels_column is not None
        else None
    )
    if max_length is not None:
        ids = [x[:max_length] for x in ids]
        labels = [x[:max_length] for x in labels] if labels is not None else None
    batch_size = len(ids)
    if "has_image" in columns:
        has_image = [bool(x) for x in columns["has_image"]]
    else:
        has_image = [v is not None for v in columns.get("features", [None] * batch_size)]
    for b, row in enumerate(ids):
        placeholders = int((row == IMAGE_TOKEN_INDEX).sum())
        if placeholders != int(has_image[b]):
            raise ValueError(
                f"collate_batch: row {b} has {placeholders} image placeholder(s) but "
                f"has_image={has_image[b]} (a truncation that cut the image, or mixed-up rows)"
            )
        if labels is not None and len(labels[b]) != len(row):
            raise ValueError(
                f"collate_batch: row {b} has {len(row)} ids but {len(labels[b])} labels"
            )
    length = max(len(x) for x in ids)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((batch_size, length), pad_token_id, dtype=torch.long)  # [B, T]
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long)  # [B, T]
    label_tensor = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)  # [B, T]
    for b, row in enumerate(ids):
        input_ids[b, : len(row)] = torch.from_numpy(row)
        attention_mask[b, : len(row)] = 1
        if labels is not None:
            label_tensor[b, : len(row)] = torch.from_numpy(labels[b])
    if bool((label_tensor == IMAGE_TOKEN_INDEX).any()):
        raise ValueError("collate_batch: labels contain the image placeholder id")
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "has_image": torch.tensor(has_image, dtype=torch.bool),  # [B]
    }
    if labels is not None:
        batch["labels"] = label_tensor
    if "features" in columns or feature_shape is not None:
        features = _feature_array(
            columns.get("features", [None] * batch_size), has_image, feature_shape
        )
        if features is not None:
            batch["image_features"] = features  # [B, L, d_v] float32
    return batch
