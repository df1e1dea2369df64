"""DownloadConfig: strict, bad values fail naming the field, the key leaves out worker counts."""

from __future__ import annotations

import pytest

from pipelines.config import load_pipeline_config
from pipelines.config.download import (
    CapsFusionSource,
    DownloadConfig,
    EasyVQASft,
    EasyVQASource,
    LlavaPretrainSource,
)
from pipelines.download import stage as download

BASE = {"name": "t", "preset": "tiny-llama", "workdir": "/tmp/unused"}


def config(**download_fields):
    return load_pipeline_config({**BASE, "download": download_fields})


def test_defaults_are_the_offline_local_sources() -> None:
    cfg = DownloadConfig()
    assert isinstance(cfg.pretrain, EasyVQASource) and isinstance(cfg.sft, EasyVQASft)
    assert cfg.image_size == 336 and cfg.pretrain.caption_column == "capsfusion"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (
            {"pretrain": {"kind": "capsfusion", "url_list": "x.parquet", "caption_column": "blip"}},
            "caption_column",
        ),
        (
            {"pretrain": {"kind": "easyvqa", "caption_column": "blip"}},
            "download.pretrain.easyvqa.caption_column",
        ),
        ({"samples": 0}, "download.samples"),
        ({"samples": -5}, "download.samples"),
        ({"input_chunk_rows": 10, "number_sample_per_shard": 4}, "input_chunk_rows"),
        ({"pretrain": {"kind": "webvid"}}, "download.pretrain"),
        ({"threads": 0}, "download.threads"),
        ({"max_failed_fraction": 1.5}, "download.max_failed_fraction"),
        ({"sft": {"kind": "easyvqa", "images": 5000}}, "download.sft.easyvqa.images"),
        ({"surprise": 1}, "download.surprise"),
        (
            {"pretrain": {"kind": "capsfusion", "url_list": "x", "caption_columns": ["key"]}},
            "reserved by img2dataset",
        ),
        ({"distributor": "spark"}, "download.distributor"),
    ],
)
def test_bad_values_fail_naming_the_field(fields: dict, named: str) -> None:
    with pytest.raises(ValueError, match="invalid pipeline config") as err:
        config(**fields)
    assert named in str(err.value)


def test_key_leaves_out_workers_and_threshold_but_not_results() -> None:
    a = config(processes=1, threads=4, max_failed_fraction=0.1)
    b = config(processes=8, threads=64, max_failed_fraction=0.9, distributor="ray")
    assert download.key_config(a) == download.key_config(b)
    for change in ({"image_size": 224}, {"samples": 10}, {"seed": 1}, {"timeout": 3}):
        assert download.key_config(config(**change)) != download.key_config(a)
    assert "threads" not in download.key_config(a)["download"]


def test_sources_parse_by_kind_and_named_configs_load() -> None:
    cfg = config(
        pretrain={"kind": "llava_pretrain", "json_path": "p.json", "image_folder": "imgs"},
        sft={"kind": "llava", "json_path": "s3://bucket/mix665k.json", "image_folder": "s3://b/i"},
    )
    assert isinstance(cfg.download.pretrain, LlavaPretrainSource)
    caps = CapsFusionSource(url_list="s3://bucket/capsfusion/")
    assert caps.caption_columns == ["laion_2b", "laion_coco", "capsfusion"]
    for name in ("local", "smoke"):
        loaded = load_pipeline_config(name)
        assert loaded.download.pretrain.kind == "easyvqa"
        assert loaded.download.sft.kind == "easyvqa"
