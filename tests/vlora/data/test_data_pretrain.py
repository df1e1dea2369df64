"""Pre-training samples (plain template), the caption report, and the feature index."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.reference_data import pretrain_rows
from vlora.data.collate import collate_batch
from vlora.data.feature_index import FeatureIndex
from vlora.data.features import FeatureSchemaError
from vlora.data.pretrain import encode_caption
from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX, decode_supervised_spans
from vlora.presets import get_preset


@pytest.mark.parametrize("which", ["byte_tokenizer", "llama_tokenizer"])
def test_plain_template_supervises_caption_and_newline(which: str, request) -> None:
    tokenizer = request.getfixturevalue(which)
    caption = "A photo of a bus on a street, 2 € (ünïcödé)."
    encoded = encode_caption(tokenizer, caption)
    assert encoded.input_ids[:2] == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert encoded.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert all(label != IGNORE_INDEX for label in encoded.labels[2:])  # everything after
    assert [s.strip(" ") for s in decode_supervised_spans(tokenizer, encoded)] == [caption + "\n"]
    cut = encode_caption(tokenizer, caption, max_length=6)
    assert len(cut.input_ids) == 6 and cut.truncated_from == len(encoded.input_ids)
    assert cut.labels == encoded.labels[:6]


def test_feature_index_reads_across_files_and_row_groups(tmp_path, write_features) -> None:
    # 150 rows → row groups of 64, 64, 22 in the first file.
    keys0 = [f"{i:06d}" for i in range(150)]
    written = write_features(tmp_path / "00000.parquet", keys0, seed=0)
    written.update(write_features(tmp_path / "00001.parquet", ["x", "y"], seed=1))
    assert pq.ParquetFile(tmp_path / "00000.parquet").metadata.num_row_groups == 3
    index = FeatureIndex([str(tmp_path / "00000.parquet"), str(tmp_path / "00001.parquet")])
    assert len(index) == 152 and index.shape == (16, 32)
    assert index.locate("y") == (1, 1) and index.locate("000070") == (0, 70)
    wanted = ["y", "000149", "000000", "000064", "x", "000063", "000064"]
    got = index.read(wanted)
    assert got.dtype == np.float16 and got.shape == (7, 16 * 32)
    for row, key in zip(got, wanted, strict=True):
        assert np.array_equal(row, written[key])
    assert np.array_equal(index.read(["000100"])[0], written["000100"])  # cached path
    assert "nope" not in index
    with pytest.raises(KeyError):
        index.read(["nope"])


def test_feature_files_of_another_encoder_or_shape_are_rejected(tmp_path, write_features) -> None:
    path = tmp_path / "f.parquet"
    write_features(path, ["a"])
    other = get_preset("tiny-qwen2").model.vision
    with pytest.raises(FeatureSchemaError, match=r"f\.parquet: features were made by a different"):
        FeatureIndex([str(path)], expected_encoder=other)
    with pytest.raises(FeatureSchemaError, match=r"f\.parquet: features are \[16, 32\]"):
        FeatureIndex([str(path)], expected_shape=(576, 1024))
    bad = tmp_path / "bad.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["num_tokens"]), bad)
    with pytest.raises(FeatureSchemaError, match=r"bad\.parquet: .*num_tokens"):
        FeatureIndex([str(bad)])


def test_pretrain_rows_count_what_cannot_be_trained_on(
    byte_tokenizer, tmp_path, write_features
) -> None:
    # `prepare_caption` decides, as in both passes of the Ray builder (pipelines/training/datasets.py).
    captions0 = ["a red bus", "", "a cat " * 40, "two dogs"]
    written = write_features(tmp_path / "0.parquet", ["k0", "k1", "k2", "k3"], captions0, seed=0)
    written.update(write_features(tmp_path / "1.parquet", ["k4", "k5"], ["   ", "a boat"], seed=1))
    files = [str(tmp_path / "0.parquet"), str(tmp_path / "1.parquet")]
    rows, report = pretrain_rows(files, byte_tokenizer, max_length=64)
    assert [r["id"] for r in rows] == ["k0", "k2", "k3", "k5"]
    assert report.total == 6
    assert report.problems == {"empty_caption": ["k1", "k4"]}
    assert report.notes == {"truncated": ["k2"]}
    lengths = [r["length"] for r in rows]
    assert lengths == [2 + len("a red bus\n"), 64, 2 + len("two dogs\n"), 2 + len("a boat\n")]
    item = rows[2]
    assert np.array_equal(item["features"], written["k3"]) and item["has_image"] is True
    labels = item["labels"]
    assert byte_tokenizer.decode(labels[labels != IGNORE_INDEX]) == "two dogs\n"
    for start in range(0, len(rows), 2):
        chunk = rows[start : start + 2]
        batch = collate_batch(chunk, byte_tokenizer.pad_token_id, (16, 32))
        assert batch["image_features"].shape == (len(chunk), 16, 32)
        assert batch["input_ids"].shape[1] == max(r["length"] for r in chunk)
