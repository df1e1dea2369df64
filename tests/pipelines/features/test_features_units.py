"""The features stage's pieces without Ray: reading shards and folders, decoding with reasons,
the atomic writer, validation of finished files, config and key."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.config import load_pipeline_config
from pipelines.features.actor import EncoderActor
from pipelines.features.decode import DecodeError, decode_image
from pipelines.features.units import (
    ShardMismatchError,
    WorkUnit,
    pretrain_units,
    read_checked_tar_samples,
    read_folder_samples,
    read_tar_samples,
    sft_units,
)
from pipelines.features.writer import (
    META_COMPUTE_DTYPE,
    META_SKIPPED,
    UnitWriter,
    finished_unit,
    stale_temp_files,
)
from vlora.data.features import (
    FeatureSchemaError,
    features_to_table,
    table_features,
    validate_feature_file,
    write_feature_table,
)
from vlora.presets import get_preset
from vlora.vision import ImagePreprocessor

VISION = get_preset("tiny-llama").model.vision  # 32 px, features [16, 32]


def test_tar_samples_keys_captions_and_caption_columns(tmp_path, make_image, write_shard) -> None:
    shard = tmp_path / "00003.tar"
    write_shard(
        shard,
        {
            "000030000": (
                make_image((1, 2, 3)),
                "a red square",
                {"capsfusion": "cf", "laion_2b": "l2"},
            ),
            "000030001": (make_image((9, 9, 9)), "grey", {"laion_coco": "lc", "source_index": 7}),
        },
    )
    samples = list(read_tar_samples(str(shard)))
    assert [s.key for s in samples] == ["000030000", "000030001"]
    assert samples[0].caption == "a red square"
    # caption columns only: img2dataset's url/key/status/width are metadata, not captions
    assert json.loads(samples[0].captions_json) == {
        "caption": "a red square",
        "capsfusion": "cf",
        "laion_2b": "l2",
    }
    assert json.loads(samples[1].captions_json) == {"caption": "grey", "laion_coco": "lc"}
    assert samples[0].image_bytes == make_image((1, 2, 3)) and samples[0].read_error is None
    (tmp_path / "00003.parquet").write_bytes(b"img2dataset's status file")
    (tmp_path / "00003_stats.json").write_text("{}")
    assert pretrain_units(str(tmp_path)) == [WorkUnit("pretrain", "00003", str(shard))]


def test_tar_sample_without_image_is_reported(tmp_path) -> None:
    import webdataset

    shard = tmp_path / "00000.tar"
    with open(shard, "wb") as handle, webdataset.TarWriter(handle) as sink:
        sink.write({"__key__": "k1", "txt": "caption only", "json": {"key": "k1"}})
    (sample,) = read_tar_samples(str(shard))
    assert sample.key == "k1" and sample.image_bytes is None
    assert sample.read_error[0] == "missing_image"


def test_cut_tar_fails_instead_of_yielding_part(tmp_path, make_image, write_shard) -> None:
    shard = tmp_path / "00000.tar"
    write_shard(shard, {f"k{i}": (make_image((i, i, i), (200, 200)), "c", {}) for i in range(4)})
    data = shard.read_bytes()
    # cut inside a member: tarfile itself fails
    (tmp_path / "00001.tar").write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(tarfile.TarError):
        list(read_checked_tar_samples(str(tmp_path / "00001.tar")))
    # cut exactly where the third sample starts: a valid, shorter tar ...
    with tarfile.open(shard) as tar:
        third = next(m for m in tar.getmembers() if m.name.startswith("k2.")).offset
    cut = tmp_path / "00002.tar"
    cut.write_bytes(data[:third])
    assert [s.key for s in read_checked_tar_samples(str(cut))] == ["k0", "k1"]
    # ... which img2dataset's stats file next to it exposes
    (tmp_path / "00002_stats.json").write_text(json.dumps({"count": 5, "successes": 4}))
    with pytest.raises(ShardMismatchError, match="2 samples in the tar, but .* say 4"):
        list(read_checked_tar_samples(str(cut)))
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 5, "successes": 4}))
    assert len(list(read_checked_tar_samples(str(shard)))) == 4


def test_sft_units_and_folder_reading(tmp_path, make_image) -> None:
    images = tmp_path / "images"
    (images / "coco").mkdir(parents=True)
    (images / "coco" / "a.jpg").write_bytes(make_image((255, 0, 0)))
    (images / "b.png").write_bytes(make_image((0, 255, 0), fmt="PNG"))
    (images / "folder.jpg").mkdir()  # a directory where an image should be
    records = [
        {"id": "1", "image": "coco/a.jpg", "conversations": []},
        {"id": "2", "image": "b.png", "conversations": []},
        {"id": "3", "image": "coco/a.jpg", "conversations": []},  # shared image: one row
        {"id": "4", "image": "gone.jpg", "conversations": []},
        {"id": "5", "image": "folder.jpg", "conversations": []},
        {"id": "6", "conversations": []},  # text-only
    ]
    (tmp_path / "conv.json").write_text(json.dumps(records))
    units = sft_units(str(tmp_path / "conv.json"), str(images), per_file=3)
    assert [(u.name, u.images) for u in units] == [
        ("part-00000", ("b.png", "coco/a.jpg", "folder.jpg")),
        ("part-00001", ("gone.jpg",)),
    ]
    samples = list(read_folder_samples(str(images), units[0].images + units[1].images))
    assert [s.key for s in samples] == ["b.png", "coco/a.jpg", "folder.jpg", "gone.jpg"]
    assert samples[1].image_bytes == make_image((255, 0, 0))
    assert [s.read_error and s.read_error[0] for s in samples] == [
        None,
        None,
        "unreadable",
        "missing_image",
    ]


def test_decode_reasons(make_image) -> None:
    pre = ImagePreprocessor(VISION)
    pixels = decode_image(make_image((200, 100, 50)), pre)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    cases = {
        "html": (b"<html>404</html>", "not_an_image"),
        "cut jpeg": (make_image((1, 2, 3), (64, 64))[:300], "truncated"),
        "cut png": (make_image((1, 2, 3), (64, 64), fmt="PNG")[:60], "truncated"),
        "empty": (b"", "empty_file"),
        "missing": (None, "missing_image"),
    }
    reasons = {}
    for name, (data, _) in cases.items():
        with pytest.raises(DecodeError) as err:
            decode_image(data, pre)
        reasons[name] = err.value.reason
    assert reasons == {name: reason for name, (_, reason) in cases.items()}


def test_writer_is_atomic_and_groups_rows_by_64(tmp_path) -> None:
    final = tmp_path / "pretrain" / "00000.parquet"
    writer = UnitWriter(str(final), VISION, "float32")
    rng = np.random.default_rng(0)
    features = rng.standard_normal((150, 16, 32)).astype(np.float32)
    for start in range(0, 150, 30):  # encoder batches of 30 rows
        keys = [f"k{i:03d}" for i in range(start, start + 30)]
        writer.write(keys, features[start : start + 30], ["c"] * 30, ["{}"] * 30)
        assert not final.exists()  # nothing under the final name until close()
    writer.skip("bad", "truncated", "image file is truncated")
    assert [p.endswith(".parquet") for p in stale_temp_files(str(final.parent))] == [False]
    assert writer.close() == {
        "rows": 150,
        "skipped": [{"key": "bad", "reason": "truncated", "detail": "image file is truncated"}],
    }
    assert stale_temp_files(str(final.parent)) == []
    parquet = pq.ParquetFile(final)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert sizes == [64, 64, 22]
    assert parquet.metadata.metadata[META_COMPUTE_DTYPE] == b"float32"
    assert json.loads(parquet.metadata.metadata[META_SKIPPED])[0]["key"] == "bad"
    table = parquet.read()
    stored = table_features(table)
    assert stored.dtype == np.float16 and stored.shape == (150, 16, 32)
    np.testing.assert_array_equal(stored, features.astype(np.float16))
    assert finished_unit(str(final), VISION) == {"rows": 150, "skipped": writer.skipped}


def test_writer_abort_leaves_nothing(tmp_path) -> None:
    final = tmp_path / "00001.parquet"
    writer = UnitWriter(str(final), VISION, "float32")
    writer.write(["a"], np.zeros((1, 16, 32)), [""], ["{}"])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_wrong_files_are_rejected_with_clear_errors_and_redone(tmp_path, capsys) -> None:
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"key": ["x"], "features": [[1.0, 2.0]]}), wrong)
    with pytest.raises(FeatureSchemaError, match="not a VLoRA feature file"):
        validate_feature_file(str(wrong))
    assert finished_unit(str(wrong), VISION) is None  # a resume recomputes it
    assert "wrong.parquet: invalid, will be recomputed" in capsys.readouterr().out

    other = VISION.model_copy(update={"feature_layer": -1})
    foreign = tmp_path / "foreign.parquet"
    write_feature_table(features_to_table(["k"], np.zeros((1, 16, 32)), other), str(foreign))
    with pytest.raises(FeatureSchemaError, match="different encoder"):
        validate_feature_file(str(foreign), expected_encoder=VISION)
    assert finished_unit(str(foreign), VISION) is None

    # right schema and encoder, but not written by this stage (no skip record): redone too
    plain = tmp_path / "plain.parquet"
    write_feature_table(features_to_table(["k"], np.zeros((1, 16, 32)), VISION), str(plain))
    assert validate_feature_file(str(plain), expected_encoder=VISION).num_rows == 1
    assert finished_unit(str(plain), VISION) is None

    half = tmp_path / "half.parquet"
    half.write_bytes(plain.read_bytes()[:100])
    with pytest.raises(FeatureSchemaError, match="unreadable Parquet"):
        validate_feature_file(str(half))
    assert finished_unit(str(half), VISION) is None


def test_actor_process_in_process(tmp_path, make_image, write_shard) -> None:
    """The actor's work without Ray: rows in input order, skips by reason, values = encoder."""
    shard = tmp_path / "00007.tar"
    good = {f"k{i}": (make_image((30 * i, 60, 90)), f"cap {i}", {}) for i in range(5)}
    write_shard(shard, {**good, "bad": (b"GIF89a-not-really", "x", {})})
    actor = EncoderActor(
        VISION.model_dump(mode="json"),
        str(tmp_path / "out"),
        batch_size=2,
        decode_threads=2,
        prefetch_batches=1,
        torch_threads=1,
        use_gpu=False,
        compute_dtype="float32",
        show_progress=False,
    )
    (row,) = [
        dict(zip(out, values, strict=True))
        for out in [
            actor({"unit": np.array([WorkUnit("pretrain", "00007", str(shard)).to_row()["unit"]])})
        ]
        for values in zip(*out.values(), strict=True)
    ]
    assert row["unit"] == "pretrain/00007" and row["rows"] == 5 and row["error"] == ""
    assert [s["reason"] for s in json.loads(row["skipped"])] == ["not_an_image"]
    table = pq.read_table(tmp_path / "out" / "pretrain" / "00007.parquet")
    assert table.column("key").to_pylist() == list(good)
    assert table.column("caption").to_pylist() == [c for _, c, _ in good.values()]
    pixels = torch.stack(
        [decode_image(img, actor.encoder.preprocessor) for img, _, _ in good.values()]
    )
    with torch.no_grad():
        expected = actor.encoder(pixels).numpy()  # [5, 16, 32]
    np.testing.assert_allclose(
        table_features(table).astype(np.float32), expected, atol=2e-3, rtol=2e-3
    )

    # an unreadable unit reports its error instead of raising (the other units go on)
    broken = WorkUnit("pretrain", "00008", str(tmp_path / "missing.tar"))
    out = actor({"unit": np.array([broken.to_row()["unit"]])})
    assert out["rows"] == [0] and "FileNotFoundError" in out["error"][0]
    assert not (tmp_path / "out" / "pretrain" / "00008.parquet").exists()
    assert stale_temp_files(str(tmp_path / "out" / "pretrain")) == []


def test_config_validation_and_key() -> None:
    base = ["workdir=/tmp/x"]
    with pytest.raises(ValueError, match="features: .*float16 needs a GPU"):
        load_pipeline_config("smoke", [*base, "features.compute_dtype=float16"])
    with pytest.raises(ValueError, match="features.batch_size"):
        load_pipeline_config("smoke", [*base, "features.batch_size=0"])
    from pipelines.features.stage import key_config

    config = load_pipeline_config("smoke", base)
    key = key_config(config)
    assert key["vision"] == config.resolved_model.vision.model_dump(mode="json")
    assert key["dtype"] == "float16" and key["compute_dtype"] == "float32"
    faster = load_pipeline_config(
        "smoke",
        [*base, "features.batch_size=7", "features.num_actors=3", "features.decode_threads=9"],
    )
    assert key_config(faster) == key  # speed knobs do not change the output
    assert (
        key_config(load_pipeline_config("smoke", [*base, "features.compute_dtype=bfloat16"])) != key
    )
    local = load_pipeline_config("local", base)  # another preset (and its model overrides)
    assert key_config(local)["vision"] == local.resolved_model.vision.model_dump(mode="json")
    assert key_config(local)["vision"] != key["vision"]
