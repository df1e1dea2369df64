"""Batch plumbing shared by VLoRA and the input-space baseline.

- Image inputs come as pixels [B, 3, S, S], a list of PIL images (None = text-only sample) or
  precomputed features [B, L, d_v]; `has_image` [B] marks which samples have one.
- Token ids may contain IMAGE_TOKEN_INDEX where the image belongs: VLoRA removes it (its image
  lives in the weights), the baseline splices the visual tokens there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX

ImagesInput = torch.Tensor | Sequence[Image.Image | None] | None


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor | None  # [B, T]


def is_left_padded(attention_mask: torch.Tensor) -> bool:
    """True when padding sits on the left (every row ends with a real token, some start with pad)."""
    return bool((attention_mask[:, -1] == 1).all() and (attention_mask[:, 0] == 0).any())


def pad_rows(
    rows: list[torch.Tensor], pad_value: int | float, left: bool, length: int | None = None
) -> torch.Tensor:
    """Stack 1-D (or [T, h]) rows into [B, T, ...], padding each on the chosen side."""
    length = length or max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), length, *rows[0].shape[1:]), pad_value)
    for i, row in enumerate(rows):
        if left:
            out[i, length - row.shape[0] :] = row
        else:
            out[i, : row.shape[0]] = row
    return out


def strip_image_placeholders(
    batch: TokenBatch, pad_token_id: int, left: bool | None = None
) -> TokenBatch:
    """Remove IMAGE_TOKEN_INDEX positions and re-pad on the `left` side (None: keep the batch's).

    Generation passes left=True: prompts must end where the new tokens start.
    """
    keep = batch.input_ids != IMAGE_TOKEN_INDEX  # [B, T]
    was_left = is_left_padded(batch.attention_mask)
    left = was_left if left is None else left
    padded = bool((batch.attention_mask == 0).any())
    if bool(keep.all()) and (not padded or left == was_left):
        return batch
    ids, masks, labels = [], [], []
    for b in range(batch.input_ids.shape[0]):
        real = keep[b] & (batch.attention_mask[b] == 1)
        ids.append(batch.input_ids[b][real])
        masks.append(batch.attention_mask[b][real])
        if batch.labels is not None:
            labels.append(batch.labels[b][real])
    return TokenBatch(
        input_ids=pad_rows(ids, pad_token_id, left),
        attention_mask=pad_rows(masks, 0, left),
        labels=pad_rows(labels, IGNORE_INDEX, left) if batch.labels is not None else None,
    )


def resolve_has_image(
    batch_size: int,
    images: ImagesInput,
    image_features: torch.Tensor | None,
    has_image: torch.Tensor | None,
) -> torch.Tensor:
    """[B] bool: which samples carry an image."""
    if images is not None and image_features is not None:
        raise ValueError("pass either images or image_features, not both")
    if images is None and image_features is None:
        if has_image is not None and bool(has_image.any()):
            raise ValueError("has_image marks samples with images but no images were given")
        return torch.zeros(batch_size, dtype=torch.bool)
    given = len(images) if images is not None else image_features.shape[0]  # type: ignore[union-attr]
    if given != batch_size:
        raise ValueError(f"got {given} images for a batch of {batch_size} texts")
    if has_image is None:
        if isinstance(images, Sequence) and not isinstance(images, torch.Tensor):
            return torch.tensor([im is not None for im in images], dtype=torch.bool)
        return torch.ones(batch_size, dtype=torch.bool)
    return has_image.to(torch.bool).cpu()
