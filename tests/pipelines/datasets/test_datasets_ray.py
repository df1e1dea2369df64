"""Ray Data builders of the training datasets: same rows as the plain reference
(tests/reference_data.py), the contract's column types, the problem report, and the
fail-above-fraction error.

One local Ray session (loopback, 4 logical CPUs) for the module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.config import load_pipeline_config
from pipelines.core.ray_cluster import RayConfig, ensure_ray
from pipelines.core.stage import StageResult
from tests.reference_data import pretrain_rows, sft_rows
from vlora.data.collate import collate_batch
from vlora.data.features import features_to_table, write_feature_table
from vlora.data.report import DataQualityError, DataReport
from vlora.presets import get_preset
from vlora.tokenizer import build_byte_tokenizer

pytestmark = pytest.mark.slow

ENCODER = get_preset("tiny-llama").model.vision  # 16 × 32 features
WIDTH = 16 * 32


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ensure_ray(RayConfig(num_cpus=4))
    yield
    ray.shutdown()


def write(path: Path, keys: list[str], captions: list[str] | None = None, seed: int = 0) -> None:
    values = np.random.default_rng(seed).standard_normal((len(keys), 16, 32)).astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_feature_table(features_to_table(keys, values, ENCODER, captions=captions), str(path))


def rec(rid: str, question: str, answer: str, image: str | None = None) -> dict:
    record = {
        "id": rid,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }
    if image:
        record["image"] = image
    return record


@pytest.fixture(scope="module")
def features_result(tmp_path_factory) -> StageResult:
    root = tmp_path_factory.mktemp("features")
    write(
        root / "pretrain" / "00000.parquet",
        ["p0", "p1", "p2", "p3", "p4"],
        ["a red bus", "", "two dogs in a park", "a cat", "a " * 80],
        seed=0,
    )
    write(
        root / "pretrain" / "00001.parquet",
        ["p5", "p6", "p7"],
        ["a tree", "a boat on a lake", "snow"],
        seed=1,
    )
    write(root / "sft" / "00000.parquet", ["img/c.jpg", "img/a.jpg", "img/e.jpg"], seed=2)
    write(root / "sft" / "00001.parquet", ["img/b.jpg", "img/d.jpg", "img/unused.jpg"], seed=3)
    records = [
        rec("r-a", "<image>\nWhat is A?", "It is A.", "img/a.jpg"),
        rec("r-b", "What is B?\n<image>", "It is B.", "img/b.jpg"),
        rec("t-1", "Say one.", "One."),
        rec("r-c", "<image>\nWhat is C?", "It is C.", "img/c.jpg"),
        rec("r-missing", "<image>\nWhat is X?", "It is X.", "img/x.jpg"),
        rec("r-d", "<image>\nWhat is D?", "It is D.", "img/d.jpg"),
        {"id": "bad", "conversations": [{"from": "gpt", "value": "hi"}]},
        rec("t-2", "Say two.", "Two."),
        rec("r-long", "<image>\n" + "Why? " * 200, "Because.", "img/e.jpg"),
        rec("r-a2", "<image>\nAgain A?", "Yes, A.", "img/a.jpg"),
    ]
    (root / "sft.json").write_text(json.dumps(records))
    return StageResult(
        stage="features",
        key="test",
        output_dir=str(root),
        artifacts={
            "pretrain_features": str(root / "pretrain"),
            "sft_features": str(root / "sft"),
            "sft_json": str(root / "sft.json"),
        },
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    return load_pipeline_config(
        {"name": "t", "preset": "tiny-llama", "workdir": str(workdir), "ray": {"num_cpus": 4}}
    )


def row_key(row: dict) -> tuple:
    """A Ray row or a reference row, as comparable values (the contract's columns)."""
    features = np.asarray(row["features"], np.float16)
    assert features.shape == (WIDTH,)
    return (
        tuple(int(x) for x in row["input_ids"]),
        tuple(int(x) for x in row["labels"]),
        features.tobytes(),
        bool(row["has_image"]),
        int(row["length"]),
    )


def assert_same_report(summary: dict, reference: DataReport) -> None:
    """The Ray builder's report counts what the reference counts (ids in any order)."""

    def by_reason(table: dict[str, list[str]]) -> dict[str, list[str]]:
        return {reason: sorted(ids) for reason, ids in table.items()}

    assert (summary["total"], summary["bad"]) == (reference.total, reference.num_bad)
    assert by_reason(summary["problem_ids"]) == by_reason(reference.problems)
    assert by_reason(summary["note_ids"]) == by_reason(reference.notes)


def check_schema(schema) -> None:
    types = dict(zip(schema.names, schema.types, strict=True))
    assert list(types) == ["input_ids", "labels", "features", "has_image", "length"]
    assert types["input_ids"] == types["labels"] == pa.list_(pa.int32())
    assert types["features"] == pa.list_(pa.float16(), WIDTH)
    assert types["has_image"] == pa.bool_() and types["length"] == pa.int32()


def test_pretrain_rows_equal_the_reference(ray_session, config, features_result) -> None:
    from pipelines.training.datasets import pretrain_dataset_with_report

    dataset, report = pretrain_dataset_with_report(config, features_result, max_length=64)
    assert report["total"] == 8 and report["problems"] == {"empty_caption": 1}
    assert report["problem_ids"] == {"empty_caption": ["p1"]}
    assert report["note_ids"] == {"truncated": ["p4"]}
    check_schema(dataset.schema())
    rows = dataset.take_all()
    files = sorted(
        str(p) for p in Path(features_result.artifacts["pretrain_features"]).glob("*.parquet")
    )
    reference, reference_report = pretrain_rows(files, build_byte_tokenizer(), max_length=64)
    assert sorted(map(row_key, rows)) == sorted(map(row_key, reference)) and len(rows) == 7
    assert_same_report(report, reference_report)
    assert report["ok"] == len(rows)  # the pretrain stage sizes its epochs from this count
    assert all(r["length"] == len(r["input_ids"]) for r in rows)
    for batch in dataset.iter_batches(batch_size=4, batch_format="numpy"):
        collated = collate_batch(batch, 0, (16, 32))
        assert collated["image_features"].shape[1:] == (16, 32)
        assert bool(collated["has_image"].all())


def test_sft_rows_equal_the_reference_and_report_problems(
    ray_session, config, features_result
) -> None:
    from pipelines.training.datasets import sft_dataset

    dataset, report = sft_dataset(
        config, features_result, max_length=256, max_bad_fraction=0.5, block_rows=3
    )
    assert report["total"] == 10 and report["bad"] == 3
    assert report["problem_ids"] == {
        "image_missing": ["r-missing"],
        "not_alternating": ["bad"],
        "truncated_no_supervised": ["r-long"],
    }
    assert report["note_ids"]["text_only"] == ["t-1", "t-2"]
    assert report["images_in_features"] == 6 and report["images_unused"] == 1
    dataset = dataset.materialize()
    check_schema(dataset.schema())
    rows = dataset.take_all()
    arts = features_result.artifacts
    files = sorted(str(p) for p in Path(arts["sft_features"]).glob("*.parquet"))
    reference, reference_report = sft_rows(
        arts["sft_json"], build_byte_tokenizer(), "vicuna_v1", files, 256, 0.5
    )
    assert_same_report(report, reference_report)
    # each image's own features, text-only zeros
    assert sorted(map(row_key, rows)) == sorted(map(row_key, reference)) and len(rows) == 7
    assert sum(r["has_image"] for r in rows) == 5
    batch = next(iter(dataset.iter_batches(batch_size=7, batch_format="numpy")))
    collated = collate_batch(batch, 0, (16, 32))
    assert collated["input_ids"].shape[0] == 7
    assert collated["image_features"][~collated["has_image"]].abs().sum() == 0


def test_sft_fails_above_max_bad_fraction_listing_ids(ray_session, config, features_result) -> None:
    from pipelines.training.datasets import sft_dataset

    with pytest.raises(DataQualityError) as err:
        sft_dataset(config, features_result, max_length=256, max_bad_fraction=0.2)
    message = str(err.value)
    assert "3 of 10 records (30.00%)" in message
    for rid in ("r-missing", "bad", "r-long"):
        assert rid in message


def test_sft_images_only_leaves_text_only_records_out_and_counts_them(
    ray_session, config, features_result
) -> None:
    from pipelines.training.datasets import sft_dataset

    dataset, report = sft_dataset(
        config, features_result, max_length=256, max_bad_fraction=0.5, images_only=True
    )
    rows = dataset.take_all()
    assert len(rows) == 5 and all(r["has_image"] for r in rows)
    assert report["text_only_left_out"] == 2
    assert report["bad"] == 3  # problems are still found and listed as before
    _, full_report = sft_dataset(config, features_result, max_length=256, max_bad_fraction=0.5)
    assert full_report["text_only_left_out"] == 0
