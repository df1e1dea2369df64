"""The features stage on Ray: one row per decodable image, corrupt ones counted by reason,
values equal to the encoder's, a finished stage is a no-op, a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.config import load_pipeline_config
from pipelines.core.ray_cluster import RayConfig, ensure_ray
from pipelines.core.stage import MANIFEST, run_stage
from pipelines.features.decode import decode_image
from vlora.data.features import table_features, validate_feature_file
from vlora.presets import get_preset
from vlora.vision import build_vision_encoder

REPO_ROOT = Path(__file__).resolve().parents[3]
VISION = get_preset("tiny-llama").model.vision  # random CLIP tower, 32 px → [16, 32]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ensure_ray(RayConfig(num_cpus=4))
    yield
    ray.shutdown()


def overrides_for(workdir: Path) -> list[str]:
    return [
        f"workdir={workdir}",
        "features.batch_size=4",
        "features.sft_images_per_file=2",
        "features.max_failed_fraction=0.5",
    ]


def pipeline_config(workdir: Path):
    return load_pipeline_config("smoke", overrides_for(workdir))


def fake_download(
    workdir: Path, shards: list[dict], sft_images: dict[str, bytes | None], write_shard
) -> Path:
    """A finished `download` result with the artifacts the features stage reads."""
    from pipelines.download.stage import key_config

    inputs = workdir / "inputs"
    (inputs / "shards").mkdir(parents=True)
    for i, shard in enumerate(shards):
        write_shard(inputs / "shards" / f"{i:05d}.tar", shard)
    images = inputs / "sft" / "images"
    images.mkdir(parents=True)
    records = []
    for name, data in sft_images.items():
        if data is not None:
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            (images / name).write_bytes(data)
        records.append({"id": name, "image": name, "conversations": []})
    records.append({"id": "text-only", "conversations": []})
    (inputs / "sft" / "conversations.json").write_text(json.dumps(records))

    def body(_: str) -> dict:
        return {
            "artifacts": {
                "pretrain_shards": str(inputs / "shards"),
                "sft_json": str(inputs / "sft" / "conversations.json"),
                "sft_images": str(images),
            }
        }

    run_stage("download", str(workdir), key_config(pipeline_config(workdir)), body)
    return inputs


def keys_in(folder: Path) -> list[str]:
    """Every key of every feature file (duplicates kept, so a duplicate fails a comparison)."""
    return sorted(
        k
        for f in folder.glob("*.parquet")
        for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()
    )


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def inputs(make_image, good_samples, corrupt_samples) -> dict:
    shards = [good_samples(0, 5) | corrupt_samples, good_samples(5, 6), good_samples(11, 3)]
    return {
        "shards": shards,
        "good_keys": sorted(k for s in shards for k in s if k not in corrupt_samples),
        "sft": {
            "coco/a.jpg": make_image((255, 0, 0)),
            "b.png": make_image((0, 255, 0), fmt="PNG"),
            "c.jpg": make_image((0, 0, 255)),
            "gone.jpg": None,
        },
    }


def test_features_rows_reasons_round_trip_cache_and_resume(
    ray_session, tmp_path, inputs, write_shard
) -> None:
    from pipelines.features.stage import run

    shards, good_keys = inputs["shards"], inputs["good_keys"]
    fake_download(tmp_path, shards, inputs["sft"], write_shard)
    config = pipeline_config(tmp_path)
    result = run(config)
    out = Path(result.output_dir)
    summary = result.summary

    # exactly one row per decodable image; corrupt and missing ones counted with reasons
    assert keys_in(out / "pretrain") == good_keys
    assert sorted(p.name for p in (out / "pretrain").iterdir()) == [
        "00000.parquet",
        "00001.parquet",
        "00002.parquet",
    ]
    assert summary["pretrain"] | {"skipped_keys": None} == {
        "files": 3,
        "images_in": 16,
        "rows": 14,
        "skipped": 2,
        "skipped_by_reason": {"not_an_image": 1, "truncated": 1},
        "skipped_keys": None,
    }
    assert summary["pretrain"]["skipped_keys"] == {
        "not_an_image": ["900000000"],
        "truncated": ["900000001"],
    }
    assert summary["per_file"]["pretrain/00000"] == {"rows": 5, "skipped": 2}
    assert keys_in(out / "sft") == ["b.png", "c.jpg", "coco/a.jpg"]  # keys as in the JSON
    assert sorted(p.name for p in (out / "sft").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert summary["sft"]["skipped_keys"] == {"missing_image": ["gone.jpg"]}
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted((s["unit"], s["key"], s["reason"]) for s in skipped) == [
        ("pretrain/00000", "900000000", "not_an_image"),
        ("pretrain/00000", "900000001", "truncated"),
        ("sft/part-00001", "gone.jpg", "missing_image"),
    ]
    assert summary["images_per_s"] > 0 and result.metrics["pretrain_rows"] == 14
    assert set(result.artifacts) == {"pretrain_features", "sft_features", "sft_json"}
    assert result.artifacts["sft_json"].endswith("conversations.json")

    # round trip: fp16 [L, d_v], equal to the encoder's own output for those images
    table = pq.read_table(out / "pretrain" / "00001.parquet")
    features = table_features(table)
    assert features.dtype == np.float16 and features.shape == (6, 16, 32)
    info = validate_feature_file(str(out / "pretrain" / "00001.parquet"), expected_encoder=VISION)
    assert (info.num_rows, info.num_tokens, info.feature_dim) == (6, 16, 32)
    encoder = build_vision_encoder(VISION)
    keys = table.column("key").to_pylist()
    assert keys == list(shards[1])  # shard order kept
    pixels = torch.stack([decode_image(shards[1][k][0], encoder.preprocessor) for k in keys])
    with torch.no_grad():
        expected = encoder(pixels).numpy()  # [6, 16, 32]
    np.testing.assert_allclose(features.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    assert table.column("caption").to_pylist() == [shards[1][k][1] for k in keys]
    assert json.loads(table.column("captions_json")[0].as_py()) == {
        "caption": "caption 5",
        "capsfusion": "cf 5",
        "laion_2b": "l2 5",
    }

    # a finished stage is a no-op: nothing rewritten
    before = mtimes(out)
    again = run(config)
    assert again.cached and again.output_dir == result.output_dir
    assert mtimes(out) == before

    # killed part-way: manifest gone, one output lost, one with the wrong schema, a temp left
    (out / MANIFEST).unlink()
    (out / "pretrain" / "00002.parquet").unlink()
    pq.write_table(pa.table({"key": ["x"]}), out / "pretrain" / "00001.parquet")
    (out / "pretrain" / "00002.parquet.tmp-dead0000").write_bytes(b"half a file")
    resumed = run(config)
    assert not resumed.cached
    assert resumed.summary["units_reused"] == 3  # shard 00000 and both SFT parts
    assert resumed.summary["units_done_now"] == 2
    after = mtimes(out)
    assert after["00000.parquet"] == before["00000.parquet"]  # reused, not rewritten
    assert after["00001.parquet"] != before["00001.parquet"]  # wrong schema: recomputed
    assert validate_feature_file(str(out / "pretrain" / "00001.parquet"), VISION).num_rows == 6
    assert keys_in(out / "pretrain") == good_keys  # none lost, no duplicates
    assert not list(out.rglob("*.tmp-*"))
    # counts of the reused shard come back from its metadata
    assert resumed.summary["pretrain"] == summary["pretrain"]
    assert resumed.summary["sft"] == summary["sft"]


def test_features_unreadable_shard_fails_after_the_others(
    ray_session, tmp_path, good_samples, write_shard
) -> None:
    from pipelines.features.stage import FeaturesFailedError, run

    folder = fake_download(tmp_path, [good_samples(0, 4), good_samples(4, 4)], {}, write_shard)
    good_tar = (folder / "shards" / "00001.tar").read_bytes()
    (folder / "shards" / "00001.tar").write_bytes(b"\x00garbage" * 100)
    config = pipeline_config(tmp_path)
    with pytest.raises(FeaturesFailedError, match=r"could not be read: pretrain/00001: .*Error"):
        run(config)
    out = next((tmp_path / "features").iterdir())
    assert keys_in(out / "pretrain") == sorted(good_samples(0, 4))  # the other shard is kept
    assert not (out / MANIFEST).exists() and not list(out.rglob("*.tmp-*"))
    (folder / "shards" / "00001.tar").write_bytes(good_tar)  # fixed upstream
    result = run(config)
    assert result.summary["units_reused"] == 1
    assert keys_in(out / "pretrain") == sorted(good_samples(0, 8))


KILLED_RUN = """
import functools
import sys
import time

import pipelines.features.stage as stage
from pipelines.config import load_pipeline_config
from pipelines.features.actor import EncoderActor


class SlowEncoderActor(EncoderActor):  # 1 s per batch: the kill lands between shards
    def encode(self, pixels):
        time.sleep(1.0)
        return super().encode(pixels)


stage.encode_units = functools.partial(stage.encode_units, actor_class=SlowEncoderActor)
stage.run(load_pipeline_config("smoke", sys.argv[1:]))
"""


def _session_processes(session_id: int) -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [
        int(p) for p, s in (line.split() for line in listing.splitlines()) if int(s) == session_id
    ]


def test_features_killed_process_resumes_exactly_once(
    ray_session, tmp_path, good_samples, write_shard
) -> None:
    from pipelines.features.stage import run

    shards = [good_samples(8 * i, 8) for i in range(3)]  # 2 batches each: ≥ 2 s per shard
    fake_download(tmp_path, shards, {}, write_shard)
    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(KILLED_RUN))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), *overrides_for(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        start_new_session=True,  # the run and every Ray process it starts: one group to kill
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        first = None
        while first is None and time.monotonic() < deadline and proc.poll() is None:
            first = next(iter((tmp_path / "features").glob("*/pretrain/*.parquet")), None)
            time.sleep(0.05)
        assert first is not None, "the killed run never wrote its first shard"
        time.sleep(0.5)  # the next shard is in flight: its temp file exists, not its output
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    out = first.parent.parent
    assert [p.name for p in (out / "pretrain").glob("*.parquet")] == [first.name]
    assert not (out / MANIFEST).exists()

    result = run(pipeline_config(tmp_path))
    assert result.output_dir == str(out)
    assert result.summary["units_reused"] == 1 and result.summary["units_done_now"] == 2
    assert keys_in(out / "pretrain") == sorted(k for s in shards for k in s)
    assert result.summary["pretrain"]["rows"] == 24
    assert not list(out.rglob("*.tmp-*"))
    # the killed run's Ray processes went with it (same session)
    deadline = time.monotonic() + 20
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session_processes(proc.pid) == []


def test_features_benchmark_script_runs(ray_session, tmp_path) -> None:
    """benchmarks/features_throughput.py end to end on the tiny preset (logic, not timings)."""
    from benchmarks import features_throughput as bench

    argv = ["--preset", "tiny-llama", "--images", "24", "--shards", "2", "--repeats", "1"]
    result = bench.main([*argv, "--wait-idle", "0", "--out", str(tmp_path)])
    assert result["storage"]["rows"] == 24 and result["storage"]["files"] == 2
    assert result["storage"]["raw_fp16_bytes_per_image"] == 16 * 32 * 2
    assert result["max_abs_diff"] == 0.0  # the stage stores exactly what the encoder computes
    assert result["stage_summary"]["pretrain"]["rows"] == 24
    saved = json.loads((tmp_path / "features_throughput.json").read_text())
    assert saved["command"].startswith("python") and saved["throughput"]["bare"]["repeats"] == 1
    assert "| stage, inside the actor" in (tmp_path / "features_throughput.md").read_text()
