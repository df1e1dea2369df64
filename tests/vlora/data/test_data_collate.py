"""collate_batch: shapes and values from python rows and from Ray-style numpy batches, and the
result feeds VLoRAModel / InputSpaceModel.forward as is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlora.data.collate import collate_batch
from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX

PAD = 0
L, D = 16, 32


def rows() -> list[dict]:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, L * D)).astype(np.float16)
    return [
        {  # image sample: BOS, placeholder, 3 prompt tokens, 2 answer tokens
            "input_ids": np.array([1, IMAGE_TOKEN_INDEX, 10, 11, 12, 20, 2], dtype=np.int32),
            "labels": np.array([-100, -100, -100, -100, -100, 20, 2], dtype=np.int32),
            "features": feats[0],
            "has_image": True,
            "length": 7,
        },
        {  # text-only sample (Ray rows carry zeros, torch rows None)
            "input_ids": np.array([1, 30, 31, 2], dtype=np.int32),
            "labels": np.array([-100, -100, 31, 2], dtype=np.int32),
            "features": None,
            "has_image": False,
            "length": 4,
        },
        {
            "input_ids": np.array([1, IMAGE_TOKEN_INDEX, 40, 41, 2], dtype=np.int32),
            "labels": np.array([-100, -100, -100, 41, 2], dtype=np.int32),
            "features": feats[1],
            "has_image": True,
            "length": 5,
        },
    ]


def as_ray_numpy_batch(items: list[dict]) -> dict[str, np.ndarray]:
    """What `iter_batches(batch_format="numpy")` yields: ragged lists as object arrays."""
    width = L * D
    out = {}
    for name in ("input_ids", "labels", "features"):
        column = np.empty(len(items), dtype=object)
        column[:] = [r[name] if r[name] is not None else np.zeros(width, np.float16) for r in items]
        out[name] = column
    out["has_image"] = np.array([r["has_image"] for r in items])
    out["length"] = np.array([r["length"] for r in items], dtype=np.int32)
    return out


def test_shapes_and_values_from_python_rows() -> None:
    items = rows()
    batch = collate_batch(items, PAD, (L, D))
    assert (
        batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, 7)
    )
    assert batch["input_ids"].dtype == torch.long and batch["has_image"].dtype == torch.bool
    assert (
        batch["image_features"].shape == (3, L, D)
        and batch["image_features"].dtype == torch.float32
    )
    assert batch["input_ids"][1].tolist() == [1, 30, 31, 2, PAD, PAD, PAD]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert batch["labels"][1].tolist() == [-100, -100, 31, 2, -100, -100, -100]
    assert batch["input_ids"][0, 1] == IMAGE_TOKEN_INDEX and batch["labels"][0, 1] == IGNORE_INDEX
    assert batch["has_image"].tolist() == [True, False, True]
    assert torch.equal(batch["image_features"][1], torch.zeros(L, D))
    expected = torch.from_numpy(items[2]["features"].astype(np.float32)).reshape(L, D)
    assert torch.equal(batch["image_features"][2], expected)


def test_ray_numpy_batches_give_the_same_tensors() -> None:
    items = rows()
    reference = collate_batch(items, PAD, (L, D))
    from_ray = collate_batch(as_ray_numpy_batch(items), PAD, (L, D))
    stacked = as_ray_numpy_batch(items)
    stacked["features"] = np.stack(list(stacked["features"]))  # [B, L·d_v] after a stack
    from_stacked = collate_batch(stacked, PAD, (L, D))
    for name in reference:
        assert torch.equal(reference[name], from_ray[name]), name
        assert torch.equal(reference[name], from_stacked[name]), name


def test_max_length_and_pad_multiple() -> None:
    batch = collate_batch(rows(), PAD, (L, D), max_length=5, pad_to_multiple_of=8)
    assert batch["input_ids"].shape == (3, 8)
    assert batch["attention_mask"].sum(1).tolist() == [5, 4, 5]
    assert batch["labels"][0].tolist()[:5] == [-100, -100, -100, -100, -100]


def test_inconsistent_rows_fail_naming_the_row() -> None:
    items = rows()
    items[1]["has_image"] = True
    with pytest.raises(ValueError, match="row 1 has 0 image placeholder"):
        collate_batch(items, PAD, (L, D))
    items = rows()
    with pytest.raises(ValueError, match="row 0 has 512 feature values, expected 8×32"):
        collate_batch(items, PAD, (8, D))
    items = rows()
    items[0]["labels"] = items[0]["labels"][:-1]
    with pytest.raises(ValueError, match="row 0 has 7 ids but 6 labels"):
        collate_batch(items, PAD, (L, D))


@pytest.mark.parametrize("design", ["vlora", "input_space"])
def test_collated_batch_is_exactly_the_forward_arguments(design: str, byte_tokenizer) -> None:
    from vlora.baseline import InputSpaceModel
    from vlora.model import VLoRAModel

    cls = VLoRAModel if design == "vlora" else InputSpaceModel
    model = cls.from_preset("tiny-llama").eval()
    vision = model.config.vision
    assert (vision.num_patches, vision.feature_dim) == (L, D)
    batch = collate_batch(rows(), model.tokenizer.pad_token_id, (L, D))
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)
    if design == "vlora":
        # W_s starts at zero (ΔW = 0 for every row); make the deltas real, then the text-only
        # row must still get ΔW = 0 (the base LLM's logits) and the image rows must not.
        with torch.no_grad():
            for parameter in model.generator.parameters():
                if not parameter.any():
                    parameter.normal_(std=0.5)
            out = model(**batch)
            text_alone = model(input_ids=batch["input_ids"][1:2, :4]).logits
            image_ids = batch["input_ids"][2:3, :5]
            image_alone = model(input_ids=image_ids[image_ids != IMAGE_TOKEN_INDEX][None]).logits
        torch.testing.assert_close(out.logits[1:2, :4], text_alone, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(out.logits[2:3, :4], image_alone, atol=1e-3)
