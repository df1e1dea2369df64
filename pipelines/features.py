"""Stage `features`: frozen vision features of every image, as Parquet, with Ray Data.

Input (the download stage's artifacts): `pretrain_shards` (webdataset tars), `sft_json` and
`sft_images`. Work units are deterministic: one pre-training shard → `pretrain/{shard}.parquet`;
the sorted unique images of the conversations, `sft_images_per_file` at a time →
`sft/part-{i:05d}.parquet`. Every file follows `vlora/data/features.py` (fp16 [L, d_v] per image,
encoder config in the metadata) and records the inputs it skipped, by reason, in its metadata.

How: `ray.data.from_items(pending units)` → `map_batches(EncoderActor, concurrency=num_actors)`
with one unit per call: each actor holds the encoder (on its GPU on a cluster), decodes a unit's
images in a thread pool, encodes them in batches and streams the rows into the unit's file,
which appears under its final name only when complete. One file per unit, written by the actor
that made it, so nothing funnels through the driver and memory stays at one batch per actor.

Resume: a unit whose output exists and validates against the run's encoder config is not
redone (its counts are read back from the file's metadata); a killed run leaves only temporary
files, which are ignored and replaced. Corrupt or missing images are counted by reason and
listed by key, never replaced by a blank image; above `max_failed_fraction` the stage fails.

Artifacts: "pretrain_features" (folder), "sft_features" (folder), "sft_json" (passed through
from download). Summary: images in / rows out per kind, skipped by reason (keys listed),
units done now vs reused, images/s of this run.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.core import fs
from pipelines.core.chain import upstream_results
from pipelines.core.ray_cluster import ensure_ray
from pipelines.core.stage import StageResult, run_stage
from pipelines.featurize.units import WorkUnit, pretrain_units, sft_units
from pipelines.featurize.writer import finished_unit

logger = logging.getLogger(__name__)

STAGE = "features"
UPSTREAM = ("download",)
MAX_LISTED_KEYS = 200


class FeaturesFailedError(RuntimeError):
    pass


def key_config(config: PipelineConfig) -> dict:
    features = config.features
    return {
        "vision": config.model_config_for_run().vision.model_dump(mode="json"),
        "dtype": features.dtype,
        "sft_images_per_file": features.sft_images_per_file,
    }


def work_units(config: PipelineConfig, download: StageResult) -> list[WorkUnit]:
    artifacts = download.artifacts
    units = pretrain_units(artifacts["pretrain_shards"])
    if artifacts.get("sft_json"):
        units += sft_units(
            artifacts["sft_json"], artifacts["sft_images"], config.features.sft_images_per_file
        )
    return units


def _encode_pending(
    config: PipelineConfig, pending: list[WorkUnit], output_dir: str
) -> list[dict[str, Any]]:
    import ray.data

    from pipelines.featurize.actor import EncoderActor

    ensure_ray(config.ray)
    features = config.features
    dataset = ray.data.from_items([u.to_row() for u in pending], override_num_blocks=len(pending))
    results = dataset.map_batches(
        EncoderActor,
        fn_constructor_kwargs={
            "encoder_json": config.model_config_for_run().vision.model_dump(mode="json"),
            "output_dir": output_dir,
            "batch_size": features.batch_size,
            "decode_threads": features.decode_threads,
            "torch_threads": features.torch_threads,
        },
        batch_size=1,  # one unit per call: each produces one file
        concurrency=min(features.num_actors, len(pending)),
        num_cpus=features.cpus_per_actor,
        num_gpus=features.gpus_per_actor,
    )
    return results.take_all()


def summarize(
    units: list[WorkUnit], done: dict[str, dict[str, Any]], reused: set[str], seconds: float
) -> dict[str, Any]:
    summary: dict[str, Any] = {"units": len(units), "units_reused": len(reused)}
    for kind in ("pretrain", "sft"):
        names = [f"{u.kind}/{u.name}" for u in units if u.kind == kind]
        rows = sum(done[n]["rows"] for n in names)
        skipped = [s for n in names for s in done[n]["skipped"]]
        reasons = Counter(s["reason"] for s in skipped)
        summary[kind] = {
            "files": len(names),
            "images_in": rows + len(skipped),
            "rows": rows,
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(reasons.items())),
            "skipped_keys": {
                reason: [s["key"] for s in skipped if s["reason"] == reason][:MAX_LISTED_KEYS]
                for reason in sorted(reasons)
            },
        }
    fresh = [n for n in done if n not in reused]
    fresh_images = sum(done[n]["rows"] + len(done[n]["skipped"]) for n in fresh)
    summary["images_per_s"] = round(fresh_images / seconds, 2) if fresh and seconds > 0 else None
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"[features] {summary['units']} files ({summary['units_reused']} reused); "
        + "; ".join(
            f"{kind}: {summary[kind]['rows']} rows from {summary[kind]['images_in']} images, "
            f"skipped {summary[kind]['skipped_by_reason'] or 0}"
            for kind in ("pretrain", "sft")
        )
        + (f"; {summary['images_per_s']} images/s" if summary["images_per_s"] else ""),
        flush=True,
    )


def run(config: PipelineConfig, force: bool = False) -> StageResult:
    upstream = upstream_results(config, STAGE)
    download = upstream["download"]
    vision = config.model_config_for_run().vision

    def body(output_dir: str) -> dict[str, Any]:
        units = work_units(config, download)
        done: dict[str, dict[str, Any]] = {}
        for unit in units:
            finished = finished_unit(unit.output(output_dir), vision)
            if finished is not None:
                done[f"{unit.kind}/{unit.name}"] = finished
        reused = set(done)
        pending = [u for u in units if f"{u.kind}/{u.name}" not in done]
        logger.info("[features] %d units, %d already done", len(units), len(reused))
        started = time.perf_counter()
        if pending:
            for row in _encode_pending(config, pending, output_dir):
                done[row["unit"]] = {"rows": row["rows"], "skipped": json.loads(row["skipped"])}
        summary = summarize(units, done, reused, time.perf_counter() - started)
        _print_summary(summary)
        total_in = summary["pretrain"]["images_in"] + summary["sft"]["images_in"]
        total_skipped = summary["pretrain"]["skipped"] + summary["sft"]["skipped"]
        if total_in and total_skipped / total_in > config.features.max_failed_fraction:
            raise FeaturesFailedError(
                f"{total_skipped} of {total_in} images could not be used (more than "
                f"features.max_failed_fraction={config.features.max_failed_fraction}): "
                f"{summary['pretrain']['skipped_by_reason']} {summary['sft']['skipped_by_reason']}"
                "; the finished files are kept for the rerun"
            )
        artifacts = {
            "pretrain_features": fs.join(output_dir, "pretrain"),
            "sft_features": fs.join(output_dir, "sft"),
        }
        if download.artifacts.get("sft_json"):
            artifacts["sft_json"] = download.artifacts["sft_json"]
        fs.makedirs(artifacts["pretrain_features"])
        fs.makedirs(artifacts["sft_features"])
        return {"summary": summary, "artifacts": artifacts}

    return run_stage(STAGE, config.workdir, key_config(config), body, upstream, force=force)
