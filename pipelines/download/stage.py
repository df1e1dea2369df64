"""Stage `download`: all raw training data of a run (pre-training image-text shards + SFT data).

Pre-training source (`download.pretrain.kind`):
- `capsfusion`: CapsFusion-style Parquet (image_url, laion_2b, laion_coco, capsfusion; local or
  any fsspec URL) → seeded subset of `samples` rows → input chunks → img2dataset.
- `easyvqa` / `skimage`: easy-vqa train images / scikit-image photos as a CapsFusion-style URL
  list served by a loopback HTTP server for the duration of the run → img2dataset.
- `llava_pretrain`: LLaVA-Pretrain JSON + image folder → the same shards, written directly.
SFT source (`download.sft.kind`): `llava` (user JSON + image folder), `easyvqa` (generated from
the train split; the test split is left to the eval stage), `none`.

Artifacts (`StageResult.artifacts`), the contract downstream stages read:
- `pretrain_shards`: folder of webdataset shards `{shard:05d}.tar`, each sample `{key}.jpg`
  (longest side `image_size` with the default resize mode), `{key}.txt` (the chosen caption),
  `{key}.json` (img2dataset metadata: url, caption, every kept caption column such as laion_2b,
  laion_coco, capsfusion, source_index, key, status, width, height, original_width,
  original_height, sha256). Next to each tar: `{shard:05d}.parquet` (one row per input row,
  failures included, with status/error_message) and `{shard:05d}_stats.json`. Only successful
  samples are in the tars; read `*.tar` only.
- `sft_json`: LLaVA-format conversations JSON (llava_v1_5_mix665k.json format).
- `sft_images`: the folder the records' "image" paths are relative to.

Summary: `source` (rows available/selected/kept, skipped by reason), `pretrain` (total,
success, failed, by_status, failed_by_reason with stable names — http_404, http_500, timeout,
not_an_image, truncated, empty_body, … — and example URLs per reason), `sft` (records,
image/text-only records, answer turns, images, missing images and malformed records by id),
`placement` (distributor ray: the shards each node's tasks wrote, from `placement/pass-*.json`).
A readable table is printed and kept as `report.md`. More than `max_failed_fraction` failed
samples fail the stage, listing the reasons; finished shards are kept for the rerun.

Resume: chunks are marked done by `source/_SOURCE.json`; a shard is done when its stats file
exists and its parquet, stats and tar agree (`validate_shard`); unfinished or inconsistent
shards are redone by img2dataset's incremental mode, so a killed run ends with exactly one copy
of every sample. Layout: `source/` (input chunks), `i2d_input/` (loopback sources: chunks with
the live server address), `shards/`, `sft/`, `logs/`, `placement/`, `report.md`.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq

from pipelines.config import PipelineConfig
from pipelines.config.download import (
    CAPSFUSION_CAPTION_COLUMNS,
    CapsFusionSource,
    DownloadConfig,
    EasyVQASource,
    LlavaPretrainSource,
    SkimagePhotosSource,
)
from pipelines.core import fs
from pipelines.core.chain import upstream_results
from pipelines.core.ray_cluster import RayConfig
from pipelines.core.stage import StageResult, run_stage
from pipelines.download.capsfusion import (
    PreparedSource,
    load_prepared,
    prepare_capsfusion,
    prepare_from_batches,
    read_chunks,
    select_rows,
)
from pipelines.download.report import DownloadFailedError, check_failures, format_report
from pipelines.download.sft import prepare_sft
from pipelines.download.shard_stats import stats_path, summarize_shards, validate_shard

STAGE = "download"
UPSTREAM: tuple[str, ...] = ()
PLACEMENT_DIR = "placement"
MAX_RUNS = 2  # img2dataset passes per stage run (it retries failed shards once itself, too)

logger = logging.getLogger(__name__)

__all__ = ["STAGE", "UPSTREAM", "DownloadFailedError", "key_config", "run"]


def key_config(config: PipelineConfig) -> dict[str, Any]:
    return {"download": config.download.key_config()}


def run(config: PipelineConfig, force: bool = False) -> StageResult:
    upstream = upstream_results(config, STAGE)
    result = run_stage(
        STAGE,
        config.workdir,
        key_config(config),
        lambda output_dir: body(config.download, output_dir, config.ray),
        upstream,
        force=force,
    )
    # The threshold is not in the key: a finished result is held to today's threshold too.
    check_failures(
        result.summary["pretrain"],
        config.download.max_failed_fraction,
        result.artifacts["pretrain_shards"],
    )
    return result


def prepare_source(cfg: DownloadConfig, folder: str) -> tuple[PreparedSource, dict[str, Path]]:
    """Input chunks of the pre-training source, and what a loopback server must serve."""
    source = cfg.pretrain
    if isinstance(source, CapsFusionSource):
        prepared = prepare_capsfusion(source, cfg.samples, cfg.seed, cfg.input_chunk_rows, folder)
        return prepared, {}
    if isinstance(source, LlavaPretrainSource):
        from pipelines.download.llava_pretrain import prepare_llava_pretrain

        prepared = prepare_llava_pretrain(
            source, cfg.samples, cfg.seed, cfg.input_chunk_rows, folder
        )
        return prepared, {}
    if isinstance(source, EasyVQASource):
        from pipelines.download import easyvqa

        served = dict(easyvqa.served_folders("train"))
        ids = list(easyvqa.image_ids("train"))
        chosen = [ids[i] for i in select_rows(len(ids), cfg.samples, cfg.seed)]
        make_table = lambda: easyvqa.url_table(chosen, "train")[0]  # noqa: E731
        available = len(ids)
    else:
        assert isinstance(source, SkimagePhotosSource)
        from pipelines.download import skimage_photos

        served = dict(skimage_photos.served_folders())
        full = skimage_photos.url_table()
        picked = select_rows(full.num_rows, cfg.samples, cfg.seed)
        make_table = lambda: full.take(picked)  # noqa: E731
        chosen, available = list(picked), full.num_rows
    existing = load_prepared(folder)
    if existing is not None:
        return existing, served
    prepared = prepare_from_batches(
        [make_table()],
        folder,
        available,
        len(chosen),
        source.caption_column,
        list(CAPSFUSION_CAPTION_COLUMNS),
        cfg.input_chunk_rows,
    )
    return prepared, served


LOOPBACK_URL_SAMPLE = 1000  # URLs of the first chunk looked at for loopback hosts


def _loopback_source(
    cfg: DownloadConfig, prepared: PreparedSource, served: dict[str, Path]
) -> str | None:
    """What in this source only this machine can reach: a source served on loopback, or a URL
    list pointing at loopback hosts (checked on a sample of the first chunk: the rest would
    fail as unreachable on the other nodes, counted by reason)."""
    from pipelines.core.ray_cluster import is_loopback

    if served:
        return cfg.pretrain.kind
    if not prepared.chunks:
        return None
    urls = next(read_chunks(prepared)).column("url").to_pylist()[:LOOPBACK_URL_SAMPLE]
    hosts = sorted({urlsplit(u).hostname or "" for u in urls} - {""})
    loopback = [h for h in hosts if is_loopback(h)]
    return f"{cfg.pretrain.kind} URLs on {', '.join(loopback)}" if loopback else None


def shard_placement(output_dir: str, shard_ids: list[int]) -> dict[str, Any] | None:
    """Where the Ray tasks of `shard_ids` ran (distributor ray), from every pass's records."""
    from pipelines.core.placement import NodeRecord, Placement
    from pipelines.download.img2dataset_runner import read_placement

    folder = fs.join(output_dir, PLACEMENT_DIR)
    if not fs.exists(folder):
        return None
    filesystem, path = fs.filesystem(folder)
    records: dict[int, dict[str, Any]] = {}
    for name in sorted(filesystem.ls(path, detail=False)):  # pass-<ns>.json: later passes win
        records.update(read_placement(filesystem.unstrip_protocol(name)))
    done = [records[i] for i in shard_ids if records.get(i, {}).get("ok")]
    placement = Placement.of("shard", (NodeRecord.model_validate(r["node"]) for r in done))
    failed_tasks = sum(1 for r in records.values() if not r.get("ok"))
    return {**placement.model_dump(), "failed_tasks": failed_tasks}


def _live_chunks(prepared: PreparedSource, folder: str, base_url: str) -> str:
    """Rewrite the canonical loopback URLs to this run's server (ports are ephemeral)."""
    import pyarrow as pa

    from pipelines.download.loopback import live_url

    for url, table in zip(prepared.chunks, read_chunks(prepared), strict=True):
        live = [live_url(u, base_url) for u in table.column("url").to_pylist()]
        table = table.set_column(table.schema.get_field_index("url"), "url", pa.array(live))
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        fs.write_bytes_atomic(fs.join(folder, url.rsplit("/", 1)[-1]), buffer.getvalue())
    return folder


def _log_path(output_dir: str) -> Path:
    if fs.is_local(output_dir):
        return Path(fs.filesystem(output_dir)[1]) / "logs" / "img2dataset.log"
    name = output_dir.replace("://", "_").replace("/", "_")
    return Path(tempfile.gettempdir()) / "vlora-download-logs" / f"{name}.log"


def _one_pass(
    cfg: DownloadConfig,
    prepared: PreparedSource,
    served: dict[str, Path],
    output_dir: str,
    shards_dir: str,
    done: set[int],
    expected: set[int],
    ray_config: RayConfig | None = None,
) -> float:
    """Write the shards not in `done`; seconds taken."""
    if isinstance(cfg.pretrain, LlavaPretrainSource):
        from pipelines.download.llava_pretrain import write_local_shards
        from pipelines.download.strict_resizer import StrictResizer

        resizer = StrictResizer(
            image_size=cfg.image_size,
            resize_mode=cfg.resize_mode,
            resize_only_if_bigger=cfg.resize_only_if_bigger,
            encode_quality=cfg.encode_quality,
        )
        fs.makedirs(shards_dir)
        return write_local_shards(
            prepared, shards_dir, cfg.number_sample_per_shard, resizer, cfg.threads, done
        )

    from pipelines.download.img2dataset_runner import (
        Img2DatasetJob,
        ray_distributor_address,
        run_img2dataset,
    )
    from pipelines.download.loopback import LoopbackImageServer

    ray_address = placement_url = None
    if cfg.distributor == "ray":
        ray_address = ray_distributor_address(ray_config, _loopback_source(cfg, prepared, served))
        logger.info("[download] img2dataset shards as Ray tasks on the cluster at %s", ray_address)
        # one file per pass (a resumed stage keeps the records of its earlier passes)
        placement_url = fs.join(output_dir, PLACEMENT_DIR, f"pass-{time.time_ns()}.json")

    def job(url_list: str) -> Img2DatasetJob:
        return Img2DatasetJob(
            url_list=url_list,
            output_folder=shards_dir,
            image_size=cfg.image_size,
            resize_mode=cfg.resize_mode,
            resize_only_if_bigger=cfg.resize_only_if_bigger,
            encode_quality=cfg.encode_quality,
            processes=cfg.processes,
            threads=cfg.threads,
            timeout=cfg.timeout,
            retries=cfg.retries,
            number_sample_per_shard=cfg.number_sample_per_shard,
            save_additional_columns=[*prepared.kept_columns, "source_index"],
            distributor=cfg.distributor,
            ray_address=ray_address,
            placement_url=placement_url,
        )

    if not served:
        return run_img2dataset(job(prepared.folder), _log_path(output_dir), expected)
    with LoopbackImageServer(folders=served) as server:
        logger.info("[download] serving %s at %s", sorted(served), server.base_url)
        inputs = _live_chunks(prepared, fs.join(output_dir, "i2d_input"), server.base_url)
        return run_img2dataset(job(inputs), _log_path(output_dir), expected)


def fetch_shards(
    cfg: DownloadConfig,
    prepared: PreparedSource,
    served: dict[str, Path],
    output_dir: str,
    ray_config: RayConfig | None = None,
) -> float:
    """Bring every expected shard to a complete, consistent state; seconds spent writing."""
    shards_dir = fs.join(output_dir, "shards")
    expected = prepared.shard_rows(cfg.number_sample_per_shard)
    seconds = 0.0
    for attempt in range(MAX_RUNS + 1):
        problems = {
            sid: problem
            for sid, rows in expected.items()
            if (problem := validate_shard(shards_dir, sid, rows)) is not None
        }
        if not problems:
            return seconds
        if attempt == MAX_RUNS:
            listed = "; ".join(f"{sid:05d}: {p}" for sid, p in sorted(problems.items())[:20])
            raise RuntimeError(
                f"download: {len(problems)} of {len(expected)} shards in {shards_dir} are still "
                f"incomplete after {MAX_RUNS} img2dataset runs ({listed}); see "
                f"{_log_path(output_dir)}"
            )
        for sid in problems:
            # A stats file next to an inconsistent shard would make img2dataset skip it.
            if fs.exists(stats_path(shards_dir, sid)):
                filesystem, path = fs.filesystem(stats_path(shards_dir, sid))
                filesystem.rm(path)
        done = set(expected) - set(problems)
        logger.info(
            "[download] %d of %d shards done; writing %d", len(done), len(expected), len(problems)
        )
        seconds += _one_pass(
            cfg, prepared, served, output_dir, shards_dir, done, set(expected), ray_config
        )
    return seconds


def body(
    cfg: DownloadConfig, output_dir: str, ray_config: RayConfig | None = None
) -> dict[str, Any]:
    prepared, served = prepare_source(cfg, fs.join(output_dir, "source"))
    seconds = fetch_shards(cfg, prepared, served, output_dir, ray_config)
    shards_dir = fs.join(output_dir, "shards")
    shards = summarize_shards(shards_dir, sorted(prepared.shard_rows(cfg.number_sample_per_shard)))
    sft = prepare_sft(cfg.sft, cfg.seed, fs.join(output_dir, "sft"), cfg.threads)
    summary = {
        "source": {
            "kind": cfg.pretrain.kind,
            "caption_column": getattr(cfg.pretrain, "caption_column", "blip_caption"),
            **prepared.summary(),
        },
        "pretrain": shards.to_json(),
        "sft": sft.summary,
    }
    if cfg.distributor == "ray":
        summary["placement"] = shard_placement(
            output_dir, sorted(prepared.shard_rows(cfg.number_sample_per_shard))
        )
    report = format_report(summary)
    print(report, flush=True)
    fs.write_bytes_atomic(fs.join(output_dir, "report.md"), report.encode())
    check_failures(summary["pretrain"], cfg.max_failed_fraction, shards_dir)
    total = max(1, shards.total)
    metrics = {
        "pretrain_samples": float(shards.total),
        "pretrain_success": float(shards.success),
        "pretrain_failed": float(shards.failed),
        "pretrain_success_fraction": shards.success / total,
        "download_seconds": round(seconds, 3),
        # time inside shards (img2dataset's per-shard durations), without process start-up
        "seconds_in_shards": round(shards.seconds, 3),
        "sft_records": float(sft.summary.get("records", 0)),
    }
    if seconds > 0:
        metrics["samples_per_second"] = round(shards.total / seconds, 2)
    return {
        "summary": summary,
        "metrics": metrics,
        "artifacts": {
            "pretrain_shards": shards_dir,
            "sft_json": sft.json_path,
            "sft_images": sft.images_folder,
        },
    }
