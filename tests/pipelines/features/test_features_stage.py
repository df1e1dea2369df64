"""The features stage: one row per decodable image, corrupt ones counted, resumable, cached."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipelines.config import load_pipeline_config
from pipelines.core.ray_cluster import RayConfig, ensure_ray
from pipelines.core.stage import run_stage
from pipelines.featurize.decode import DecodeError, decode_image
from pipelines.featurize.units import tar_bytes_for_tests
from pipelines.featurize.writer import finished_unit
from vlora.data.features import FeatureSchemaError, table_features, validate_feature_file
from vlora.presets import get_preset
from vlora.vision import ImagePreprocessor, build_vision_encoder

VISION = get_preset("tiny-llama").model.vision


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (40, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


GOOD = {f"{i:04d}": (jpeg((20 * i, 100, 200 - 20 * i)), f"caption {i}") for i in range(10)}
CORRUPT = {
    "9000": (b"<html>not an image</html>", "html"),
    "9001": (jpeg((1, 2, 3))[:200], "truncated"),
}


def test_decode_reasons() -> None:
    pre = ImagePreprocessor(VISION)
    assert decode_image(GOOD["0001"][0], pre).shape == (3, 32, 32)
    reasons = {}
    for name, data in {
        "html": b"<html>",
        "cut": jpeg((1, 2, 3))[:200],
        "empty": b"",
        "none": None,
    }.items():
        with pytest.raises(DecodeError) as err:
            decode_image(data, pre)
        reasons[name] = err.value.reason
    assert reasons == {
        "html": "not_an_image",
        "cut": "truncated",
        "empty": "empty_file",
        "none": "missing_image",
    }


def fake_download(workdir: Path, shards: list[dict], sft_images: dict[str, bytes | None]) -> None:
    """A finished `download` result with the artifacts the features stage reads."""
    out = workdir / "inputs"
    (out / "shards").mkdir(parents=True)
    for i, shard in enumerate(shards):
        (out / "shards" / f"{i:05d}.tar").write_bytes(tar_bytes_for_tests(shard))
    (out / "sft" / "images").mkdir(parents=True)
    records = []
    for name, data in sft_images.items():
        if data is not None:
            (out / "sft" / "images" / name).write_bytes(data)
        records.append({"id": name, "image": name, "conversations": []})
    records.append({"id": "text-only", "conversations": []})
    (out / "sft" / "conversations.json").write_text(json.dumps(records))

    def body(_: str) -> dict:
        return {
            "artifacts": {
                "pretrain_shards": str(out / "shards"),
                "sft_json": str(out / "sft" / "conversations.json"),
                "sft_images": str(out / "sft" / "images"),
            }
        }

    from pipelines.download import key_config

    config = pipeline_config(workdir)
    run_stage("download", str(workdir), key_config(config), body)


def pipeline_config(workdir: Path, *overrides: str):
    return load_pipeline_config(
        "smoke",
        [
            f"workdir={workdir}",
            "features.batch_size=4",
            "features.max_failed_fraction=0.5",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ensure_ray(RayConfig(num_cpus=4))
    yield
    ray.shutdown()


def rows_of(folder: Path) -> list[str]:
    return sorted(
        k
        for f in folder.glob("*.parquet")
        for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()
    )


@pytest.mark.slow
def test_features_rows_resume_and_cache(ray_session, tmp_path) -> None:
    from pipelines.features import run

    shards = [dict(list(GOOD.items())[:5]) | CORRUPT, dict(list(GOOD.items())[5:])]
    sft = {"a.jpg": jpeg((255, 0, 0)), "b.jpg": jpeg((0, 255, 0)), "gone.jpg": None}
    fake_download(tmp_path, shards, sft)
    config = pipeline_config(tmp_path)
    result = run(config)
    out = Path(result.output_dir)
    summary = result.summary
    assert summary["pretrain"]["rows"] == 10
    assert summary["pretrain"]["skipped_by_reason"] == {"not_an_image": 1, "truncated": 1}
    assert summary["pretrain"]["skipped_keys"]["truncated"] == ["9001"]
    assert summary["sft"]["rows"] == 2
    assert summary["sft"]["skipped_keys"] == {"missing_image": ["gone.jpg"]}
    assert rows_of(out / "pretrain") == sorted(GOOD)  # one row per good image, no duplicates
    assert rows_of(out / "sft") == ["a.jpg", "b.jpg"]
    assert result.artifacts["sft_json"].endswith("conversations.json")

    # round trip: dtype, shape and values equal the encoder's own output
    table = pq.read_table(out / "pretrain" / "00001.parquet")
    features = table_features(table)
    assert features.dtype == np.float16 and features.shape == (5, 16, 32)
    encoder = build_vision_encoder(VISION)
    pixels = torch.stack(
        [decode_image(GOOD[k][0], encoder.preprocessor) for k in table.column("key").to_pylist()]
    )
    with torch.no_grad():
        expected = encoder(pixels).numpy()
    np.testing.assert_allclose(features.astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    assert table.column("caption").to_pylist()[0] == GOOD[table.column("key")[0].as_py()][1]

    # a finished stage is a no-op
    again = run(config)
    assert again.cached and again.output_dir == result.output_dir

    # killed part-way: one output lost, a temp file left behind, the manifest gone → resume
    (out / "_MANIFEST.json").unlink()
    lost = out / "pretrain" / "00000.parquet"
    lost.unlink()
    (out / "pretrain" / "00001.parquet.tmp-dead").write_bytes(b"half a file")
    before = (out / "pretrain" / "00001.parquet").stat().st_mtime_ns
    resumed = run(config)
    assert resumed.summary["units_reused"] == 2  # shard 00001 and the SFT part
    assert (out / "pretrain" / "00001.parquet").stat().st_mtime_ns == before
    assert rows_of(out / "pretrain") == sorted(GOOD)
    assert resumed.summary["pretrain"]["skipped_by_reason"] == {"not_an_image": 1, "truncated": 1}


def test_wrong_schema_is_rejected_and_redone(tmp_path) -> None:
    import pyarrow as pa

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"key": ["x"], "features": [[1.0, 2.0]]}), bad)
    with pytest.raises(FeatureSchemaError, match="not a VLoRA feature file"):
        validate_feature_file(str(bad))
    assert finished_unit(str(bad), VISION) is None  # a resume recomputes such a file
    other = VISION.model_copy(update={"feature_layer": -1})
    from vlora.data.features import features_to_table, write_feature_table

    good = tmp_path / "good.parquet"
    write_feature_table(features_to_table(["k"], np.zeros((1, 16, 32)), other), str(good))
    with pytest.raises(FeatureSchemaError, match="different encoder"):
        validate_feature_file(str(good), expected_encoder=VISION)
    assert finished_unit(str(good), VISION) is None
