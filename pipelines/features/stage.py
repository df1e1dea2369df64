"""Stage `features`: frozen vision features of every image, as Parquet, with Ray Data.

Contract
    STAGE = "features", UPSTREAM = ("download",). Reads the download artifacts
    `pretrain_shards` (img2dataset webdataset tars `{shard:05d}.tar` with `{key}.jpg/.txt/.json`),
    `sft_json` (LLaVA-format conversations) and `sft_images` (the folder their "image" paths are
    relative to); local paths or fsspec URLs.

Output (`{workdir}/features/{key}/`)
    pretrain/{shard}.parquet   one file per input shard, same stem (`00012.tar` → `00012.parquet`)
    sft/part-{i:05d}.parquet   the sorted unique "image" paths of the JSON, `sft_images_per_file`
                               per file
    skipped.jsonl              every image that produced no row: kind, unit, key, reason, detail
    Every Parquet file follows `vlora/data/features.py`: key (img2dataset key, or the image path
    exactly as written in the JSON), caption (the shard's .txt; "" for SFT), captions_json (the
    caption columns of the shard's .json: caption, laion_2b, laion_coco, capsfusion, …), features
    fp16 [L, d_v] (fixed-size list + num_tokens/feature_dim columns), the encoder config in the
    metadata; also `vlora.skipped` (this file's skipped inputs) and `vlora.compute_dtype`.

Artifacts: "pretrain_features" (folder), "sft_features" (folder), "sft_json" (passed through from
download so training finds the conversations). Summary: per kind images_in / rows / skipped by
reason (keys listed, up to 200 per reason; all of them in skipped.jsonl), per-file rows/skipped,
files done now vs reused, images/s of this run, `placement` (the files each node's actors wrote). Skip reasons: missing_image (referenced by the
JSON but absent, or a tar sample without an image), unreadable, empty_file, not_an_image,
truncated, too_large, empty_image, decode_error. More than `max_failed_fraction` skipped images,
or a unit that cannot be read at all (a corrupt tar), fail the stage after every other unit is
written; the finished files are kept for the rerun.

Key: the full vision encoder config, the stored dtype, the compute dtype, sft_images_per_file;
never batch sizes, actor counts or threads.

How (Ray Data): `from_items(pending units)` → `map_batches(EncoderActor)` on a fixed actor pool
(`num_actors`, each with `cpus_per_actor` CPUs, `gpus_per_actor` GPUs), one unit per call.
The actor streams the unit's samples, decodes them in a thread pool a few batches ahead of the
encoder and writes the unit's file itself (`actor.py`). Decoding lives in the actor,
not in separate Ray Data map tasks, on purpose: the output is one atomic file per shard, so one
shard's rows must meet in one place; with decode tasks upstream of the pool a shard's batches
land on different actors, and getting them back into one file needs either the driver
(1.2 MB per image at CLIP-L/336 through one process) or a shuffle/merge pass that writes every
byte twice. Here nothing but a small summary row per unit reaches the driver, and decode
parallelism scales with `decode_threads`/`cpus_per_actor` next to each GPU.

Resume: a unit whose output exists and validates against the run's encoder config is not
redone (its counts come from the file's metadata); a killed run leaves only `*.tmp-*` files,
which are never read, are replaced, and are removed when the stage finishes.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.core import fs
from pipelines.core.chain import upstream_results
from pipelines.core.placement import NodeRecord, Placement
from pipelines.core.ray_cluster import ensure_ray
from pipelines.core.stage import StageResult, run_stage
from pipelines.features.units import WorkUnit, pretrain_units, sft_units
from pipelines.features.writer import finished_unit, stale_temp_files

logger = logging.getLogger(__name__)

STAGE = "features"
UPSTREAM = ("download",)
KINDS = ("pretrain", "sft")
MAX_LISTED_KEYS = 200

__all__ = ["STAGE", "UPSTREAM", "FeaturesFailedError", "key_config", "run", "work_units"]


class FeaturesFailedError(RuntimeError):
    pass


def key_config(config: PipelineConfig) -> dict[str, Any]:
    return {
        "vision": config.resolved_model.vision.model_dump(mode="json"),
        **config.features.key_config(),
    }


def work_units(config: PipelineConfig, download: StageResult) -> list[WorkUnit]:
    artifacts = download.artifacts
    units = pretrain_units(artifacts["pretrain_shards"])
    if artifacts.get("sft_json"):
        units += sft_units(
            artifacts["sft_json"], artifacts["sft_images"], config.features.sft_images_per_file
        )
    return units


def encode_units(
    config: PipelineConfig,
    pending: list[WorkUnit],
    output_dir: str,
    actor_class: type | None = None,
) -> list[dict[str, Any]]:
    """Run the actor pool over `pending`; one summary row per unit (rows, skipped, error).

    `actor_class`: an EncoderActor subclass (tests slow it down to kill a run part-way).
    """
    import ray.data

    from pipelines.features.actor import EncoderActor

    ensure_ray(config.ray)
    features = config.features
    actors = min(features.num_actors, len(pending))
    dataset = ray.data.from_items([u.to_row() for u in pending], override_num_blocks=len(pending))
    results = dataset.map_batches(
        actor_class or EncoderActor,
        fn_constructor_kwargs={
            "encoder_json": config.resolved_model.vision.model_dump(mode="json"),
            "output_dir": output_dir,
            "batch_size": features.batch_size,
            "decode_threads": features.decode_threads,
            "prefetch_batches": features.prefetch_batches,
            "torch_threads": features.torch_threads or max(1, int(features.cpus_per_actor)),
            "use_gpu": features.gpus_per_actor > 0,
            "compute_dtype": features.compute_dtype,
        },
        batch_size=1,  # one unit per call: each call writes one file
        # one queued unit per actor: no unit waits behind another while an actor is idle
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        num_cpus=features.cpus_per_actor,
        num_gpus=features.gpus_per_actor,
    )
    return results.take_all()


def _reason_counts(skipped: list[dict[str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(s["reason"] for s in skipped).items()))


def summarize(
    units: list[WorkUnit],
    done: dict[str, dict[str, Any]],
    reused: set[str],
    failed: dict[str, str],
    seconds: float,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "units": len(units),
        "units_reused": len(reused),
        "units_done_now": len(done) - len(reused),
        "units_failed": failed,
    }
    for kind in KINDS:
        labels = [u.label for u in units if u.kind == kind and u.label in done]
        rows = sum(done[n]["rows"] for n in labels)
        skipped = [s for n in labels for s in done[n]["skipped"]]
        reasons = _reason_counts(skipped)
        summary[kind] = {
            "files": len(labels),
            "images_in": rows + len(skipped),
            "rows": rows,
            "skipped": len(skipped),
            "skipped_by_reason": reasons,
            "skipped_keys": {
                reason: [s["key"] for s in skipped if s["reason"] == reason][:MAX_LISTED_KEYS]
                for reason in reasons
            },
        }
    summary["per_file"] = {
        n: {"rows": d["rows"], "skipped": len(d["skipped"])} for n, d in sorted(done.items())
    }
    fresh = [d for n, d in done.items() if n not in reused]
    fresh_images = sum(d["rows"] + len(d["skipped"]) for d in fresh)
    summary["images_done_now"] = fresh_images
    summary["images_per_s"] = round(fresh_images / seconds, 2) if fresh and seconds > 0 else None
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"[features] {summary['units']} files: {summary['units_done_now']} written now, "
        f"{summary['units_reused']} reused, {len(summary['units_failed'])} failed"
        + (f"; {summary['images_per_s']} images/s" if summary["images_per_s"] else "")
    ]
    for kind in KINDS:
        part = summary[kind]
        lines.append(
            f"[features]   {kind}: {part['rows']} rows from {part['images_in']} images, "
            f"{part['skipped']} skipped {part['skipped_by_reason'] or ''}".rstrip()
        )
        for reason, keys in part["skipped_keys"].items():
            hidden = part["skipped_by_reason"][reason] - min(len(keys), 10)
            lines.append(
                f"[features]     {reason}: {', '.join(keys[:10])}"
                + (f" (+{hidden} more)" if hidden else "")
            )
    for label, error in summary["units_failed"].items():
        lines.append(f"[features]   FAILED {label}: {error}")
    return "\n".join(lines)


def _skipped_lines(done: dict[str, dict[str, Any]]) -> bytes:
    lines = [
        json.dumps({"kind": label.split("/", 1)[0], "unit": label, **s}, ensure_ascii=False)
        for label, d in sorted(done.items())
        for s in d["skipped"]
    ]
    return ("\n".join(lines) + "\n" if lines else "").encode()


def _check(config: PipelineConfig, summary: dict[str, Any], output_dir: str) -> None:
    if summary["units_failed"]:
        failed = "; ".join(f"{n}: {e}" for n, e in summary["units_failed"].items())
        raise FeaturesFailedError(
            f"{len(summary['units_failed'])} input file(s) could not be read: {failed}. "
            f"The other files are written under {output_dir}; fix or remove these inputs upstream "
            "and rerun."
        )
    total_in = sum(summary[k]["images_in"] for k in KINDS)
    total_skipped = sum(summary[k]["skipped"] for k in KINDS)
    limit = config.features.max_failed_fraction
    if total_in and total_skipped / total_in > limit:
        reasons = {k: summary[k]["skipped_by_reason"] for k in KINDS}
        raise FeaturesFailedError(
            f"{total_skipped} of {total_in} images could not be used (more than "
            f"features.max_failed_fraction={limit}): {reasons}; every one is listed in "
            f"{fs.join(output_dir, 'skipped.jsonl')}; the finished files are kept for the rerun"
        )


def run(config: PipelineConfig, force: bool = False) -> StageResult:
    upstream = upstream_results(config, STAGE)
    download = upstream["download"]
    vision = config.resolved_model.vision

    def body(output_dir: str) -> dict[str, Any]:
        units = work_units(config, download)
        with ThreadPoolExecutor(max_workers=16) as pool:  # footers only; many on object stores
            found = list(pool.map(lambda u: finished_unit(u.output(output_dir), vision), units))
        done = {u.label: f for u, f in zip(units, found, strict=True) if f is not None}
        reused = set(done)
        pending = [u for u in units if u.label not in done]
        print(f"[features] {len(units)} files, {len(reused)} already done", flush=True)
        started = time.perf_counter()
        failed: dict[str, str] = {}
        actor_seconds = 0.0
        nodes: list[NodeRecord] = []
        for row in encode_units(config, pending, output_dir) if pending else []:
            nodes.append(NodeRecord.model_validate_json(row["node"]))
            if row["error"]:
                failed[row["unit"]] = row["error"]
            else:
                done[row["unit"]] = {"rows": row["rows"], "skipped": json.loads(row["skipped"])}
                actor_seconds += row["seconds"]
        summary = summarize(units, done, reused, failed, time.perf_counter() - started)
        # inside the actors (no cluster/actor start-up, no model load): the steady-state rate
        summary["actor_seconds"] = round(actor_seconds, 3)
        # the nodes whose actors wrote this run's files (reused files: none)
        summary["placement"] = Placement.of("unit", nodes).model_dump()
        fs.write_bytes_atomic(fs.join(output_dir, "skipped.jsonl"), _skipped_lines(done))
        print(format_summary(summary), flush=True)
        _check(config, summary, output_dir)
        filesystem, _ = fs.filesystem(output_dir)
        for kind in KINDS:
            fs.makedirs(fs.join(output_dir, kind))
            for stale in stale_temp_files(fs.join(output_dir, kind)):
                logger.info("[features] removing %s, left by a killed run", stale)
                filesystem.rm(stale)
        metrics = {f"{k}_rows": float(summary[k]["rows"]) for k in KINDS}
        metrics["skipped"] = float(sum(summary[k]["skipped"] for k in KINDS))
        if summary["images_per_s"]:
            metrics["images_per_s"] = float(summary["images_per_s"])
        return {
            "summary": summary,
            "metrics": metrics,
            "artifacts": {
                "pretrain_features": fs.join(output_dir, "pretrain"),
                "sft_features": fs.join(output_dir, "sft"),
                "sft_json": download.artifacts.get("sft_json", ""),
            },
        }

    return run_stage(STAGE, config.workdir, key_config(config), body, upstream, force=force)
