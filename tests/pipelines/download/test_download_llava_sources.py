"""The download stage on LLaVA-Pretrain + LLaVA SFT files (no img2dataset: fast).

Covers the stage contract without network or subprocesses: artifacts, counts by reason, the
cached rerun, resuming after a kill (simulated: manifest and last shard removed) and the failure
threshold.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from pipelines.config import load_pipeline_config
from pipelines.core.stage import MANIFEST
from pipelines.download import stage as download
from pipelines.download.loopback import sample_jpeg

GOOD = 10


def make_sources(root: Path) -> tuple[Path, Path, Path]:
    images = root / "images"
    (images / "00001").mkdir(parents=True)
    records = []
    for i in range(GOOD):
        size = (40 + 8 * i, 64) if i % 2 else (64, 48)
        buffer = io.BytesIO()
        Image.new("RGB", size, (20 * i, 100, 200)).save(buffer, "PNG" if i % 3 == 0 else "JPEG")
        name = f"00001/{i:09d}.{'png' if i % 3 == 0 else 'jpg'}"
        (images / name).write_bytes(buffer.getvalue())
        records.append(_record(f"{i:09d}", name, f"caption number {i}"))
    jpeg = sample_jpeg(96)
    (images / "00001" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    records.append(_record("trunc", "00001/truncated.jpg", "a cut-off photo"))
    records.append(_record("gone", "00001/missing.jpg", "a photo that is not there"))
    records.append({"id": "noimage", "conversations": [{"from": "gpt", "value": "text"}]})
    records.append({"id": "nocaption", "image": "00001/000000001.jpg", "conversations": []})
    pretrain_json = root / "blip_laion_cc_sbu_558k.json"
    pretrain_json.write_text(json.dumps(records))
    sft = [
        _sft_record("a", "00001/000000001.jpg"),
        _sft_record("b", "00001/000000002.jpg"),
        _sft_record("c", "00001/lost.jpg"),
        {
            "id": "text-only",
            "conversations": [
                {"from": "human", "value": "Hi?"},
                {"from": "gpt", "value": "Hello."},
            ],
        },
        {"id": "broken", "conversations": [{"from": "robot", "value": "?"}]},
    ]
    sft_json = root / "mix665k.json"
    sft_json.write_text(json.dumps(sft))
    return pretrain_json, images, sft_json


def _record(rid: str, image: str, caption: str) -> dict:
    turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": caption}]
    return {"id": rid, "image": image, "conversations": turns}


def _sft_record(rid: str, image: str) -> dict:
    turns = [
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "A square."},
    ]
    return {"id": rid, "image": image, "conversations": turns}


def stage_config(root: Path, workdir: Path, **overrides):
    pretrain_json, images, sft_json = make_sources(root)
    data = {
        "name": "t",
        "preset": "tiny-llama",
        "workdir": str(workdir),
        "download": {
            "pretrain": {
                "kind": "llava_pretrain",
                "json_path": str(pretrain_json),
                "image_folder": str(images),
            },
            "sft": {
                "kind": "llava",
                "json_path": str(sft_json),
                "image_folder": str(images),
                "copy_images": True,
            },
            "image_size": 32,
            "number_sample_per_shard": 4,
            "input_chunk_rows": 8,
            "threads": 2,
            "max_failed_fraction": 0.5,
            **overrides,
        },
    }
    return load_pipeline_config(data)


def test_stage_counts_artifacts_cache_and_resume(tmp_path, capsys, shard_samples) -> None:
    config = stage_config(tmp_path / "src", tmp_path / "work")
    result = download.run(config)
    assert not result.cached
    assert set(result.artifacts) == {"pretrain_shards", "sft_json", "sft_images"}
    summary = result.summary
    assert summary["source"]["skipped"] == {"missing_caption": 1, "missing_url": 1}
    pretrain = summary["pretrain"]
    assert (pretrain["total"], pretrain["success"], pretrain["shards"]) == (GOOD + 2, GOOD, 3)
    assert pretrain["failed_by_reason"] == {"missing_file": 1, "truncated": 1}
    assert "| truncated | 1 |" in capsys.readouterr().out

    samples = shard_samples(result.artifacts["pretrain_shards"])
    assert len(samples) == GOOD
    metas = [json.loads(s["json"]) for s in samples.values()]
    assert sorted(m["llava_id"] for m in metas) == [f"{i:09d}" for i in range(GOOD)]
    for sample, meta in zip(samples.values(), metas, strict=True):
        assert max(sample["jpg"]) == 32  # longest side = image_size (keep_ratio_largest)
        assert sample["txt"] == meta["blip_caption"] == f"caption number {int(meta['llava_id'])}"

    sft = summary["sft"]
    assert (sft["records"], sft["image_records"], sft["text_only_records"]) == (5, 3, 1)
    assert sft["malformed"] == {"bad_turn": 1} and sft["missing_image_ids"] == ["c"]
    assert sft["images"] == 2 and sft["images_copied"]
    copied = Path(result.artifacts["sft_images"]) / "00001" / "000000001.jpg"
    assert copied.is_file() and str(tmp_path / "work") in str(copied)
    assert len(json.loads(Path(result.artifacts["sft_json"]).read_text())) == 5

    # a finished stage: the rerun does nothing
    started = time.perf_counter()
    again = download.run(config)
    assert again.cached and again.key == result.key
    assert time.perf_counter() - started < 2.0

    # a killed run (no manifest, last shard unfinished) resumes: only that shard is redone
    shards = Path(result.artifacts["pretrain_shards"])
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards.glob("0000[01].tar")}
    (Path(result.output_dir) / MANIFEST).unlink()
    (shards / "00002_stats.json").unlink()
    (shards / "00002.tar").write_bytes(b"half a tar")
    resumed = download.run(config)
    assert not resumed.cached and resumed.summary["pretrain"] == pretrain
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("0000[01].tar")} == mtimes
    assert shard_samples(str(shards)).keys() == samples.keys()


def test_failure_threshold_fails_then_a_higher_one_reuses_the_shards(tmp_path) -> None:
    strict = stage_config(tmp_path / "src", tmp_path / "work", max_failed_fraction=0.1)
    with pytest.raises(download.DownloadFailedError, match=r"2 of 12.*missing_file: 1"):
        download.run(strict)
    stage_dirs = list((tmp_path / "work" / "download").iterdir())
    assert len(stage_dirs) == 1 and not (stage_dirs[0] / MANIFEST).exists()
    tar = stage_dirs[0] / "shards" / "00000.tar"
    mtime = tar.stat().st_mtime_ns
    relaxed = strict.model_copy(deep=True)
    relaxed.download.max_failed_fraction = 0.5
    result = download.run(relaxed)
    assert result.output_dir == str(stage_dirs[0]) and tar.stat().st_mtime_ns == mtime
    # a finished result is held to a stricter threshold given later, too
    with pytest.raises(download.DownloadFailedError):
        download.run(strict)
