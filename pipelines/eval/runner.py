"""The eval stage's body: prepare → reuse finished benchmarks → generate the rest → report.

Order of work, so that mistakes cost nothing and a killed run loses little:

1. every benchmark is prepared (data found, read, validated, limited, prompts built): a bad file
   fails here, before Ray starts or any model is loaded;
2. a benchmark whose ``scores/<KEY>.json`` and matching predictions exist is reused; one whose
   predictions exist without scores (killed while scoring) is only re-scored;
3. the others are generated in one Ray Data pass (``generation``); each is written and scored the
   moment its last batch returns;
4. ``scores.json`` and ``report.md`` are written from all benchmarks' score records.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from pipelines.config.eval import EvalConfig
from pipelines.core import fs
from pipelines.core.placement import NodeRecord, Placement
from pipelines.core.ray_cluster import RayConfig, ensure_ray
from pipelines.eval import outputs
from pipelines.eval.generation import BenchmarkTiming, generate_all
from pipelines.eval.prepare import PreparedBenchmark, prepare_all
from pipelines.eval.report import flat_metrics, render_report
from vlora.eval.scoring import ScoringOptions, score_benchmark

logger = logging.getLogger(__name__)


def scoring_options(eval_config: EvalConfig) -> ScoringOptions:
    scoring = eval_config.scoring
    return ScoringOptions(
        matcher=scoring.matcher,
        circular=scoring.circular,
        mmmu_parser=scoring.mmmu_parser,
        seed=scoring.seed,
        yes_no_parser=scoring.yes_no_parser,
        na_mode=scoring.na_mode,
    )


def _work_dir(output_dir: str, scratch: Path) -> Path:
    """Where local files (built/cut TSVs) go: the stage folder itself when it is local."""
    return Path(fs.filesystem(output_dir)[1]) if fs.is_local(output_dir) else scratch


def _finish(
    output_dir: str,
    work_dir: Path,
    benchmark: PreparedBenchmark,
    predictions: dict[str, str],
    eval_config: EvalConfig,
    generation: dict[str, Any],
) -> dict[str, Any]:
    """Score ``predictions`` exactly as ``vlora score`` does, write and return the record."""
    scores = score_benchmark(
        benchmark.key, benchmark.data_path, predictions, options=scoring_options(eval_config)
    )
    in_work_dir = benchmark.data_path.resolve().is_relative_to(work_dir.resolve())
    data = (
        outputs.publish_data(output_dir, benchmark.data_path, benchmark.key)
        if in_work_dir
        else str(benchmark.data_path)
    )
    record = {
        "benchmark": benchmark.key,
        "data": data,
        "predictions": outputs.predictions_url(output_dir, benchmark.key),
        "scores": scores,
        "counts": benchmark.counts,
        "generation": generation,
        "example_prompt": benchmark.prompts[0],
    }
    outputs.write_scores(output_dir, benchmark.key, record)
    headline = {k: v for k, v in scores.items() if isinstance(v, int | float)}
    logger.info("[eval] %s scored: %s", benchmark.key, headline)
    return record


def evaluate(
    eval_config: EvalConfig,
    checkpoint: str,
    output_dir: str,
    *,
    ray_config: RayConfig,
    header: dict[str, Any],
) -> dict[str, Any]:
    """Run the stage body into ``output_dir``; returns summary, metrics and artifacts."""
    with tempfile.TemporaryDirectory(prefix="vlora-eval-") as scratch:
        work_dir = _work_dir(output_dir, Path(scratch))
        benchmarks = prepare_all(eval_config, work_dir)
        records: dict[str, dict[str, Any]] = {}
        reused, rescored, to_generate = [], [], []
        for benchmark in benchmarks:
            saved = outputs.finished_predictions(output_dir, benchmark.key, benchmark.indices)
            record = outputs.read_scores(output_dir, benchmark.key) if saved else None
            if saved is not None and record is not None:
                records[benchmark.key] = record
                reused.append(benchmark.key)
            elif saved is not None:
                records[benchmark.key] = _finish(
                    output_dir, work_dir, benchmark, saved, eval_config, {"rescored": True}
                )
                rescored.append(benchmark.key)
            else:
                to_generate.append(benchmark)
        if reused or rescored:
            logger.info("[eval] kept finished benchmarks: %s", reused + rescored)

        def on_done(benchmark: PreparedBenchmark, answers: list[str], timing: BenchmarkTiming):
            outputs.write_predictions(output_dir, benchmark.key, benchmark.indices, answers)
            generation = {
                **timing.to_dict(),
                "batch_size": eval_config.batch_size,
                "max_new_tokens": benchmark.max_new_tokens,
            }
            predictions = dict(zip(benchmark.indices, answers, strict=True))
            records[benchmark.key] = _finish(
                output_dir, work_dir, benchmark, predictions, eval_config, generation
            )

        pass_timing: dict[str, float] = {}
        nodes: list[NodeRecord] = []
        if to_generate:
            ensure_ray(ray_config)
            pass_timing = generate_all(to_generate, eval_config, checkpoint, on_done, nodes)

    order = [benchmark.key for benchmark in benchmarks]
    all_scores = {key: records[key] for key in order}
    fs.write_json_atomic(fs.join(output_dir, "scores.json"), all_scores)
    report = render_report(all_scores, header, order)
    fs.write_bytes_atomic(fs.join(output_dir, "report.md"), report.encode("utf-8"))
    # the scores are logged per benchmark above and in the run's final report; the full report
    # (paper comparison, counts) is the stage's artifact and this file
    logger.info("[eval] report: %s", fs.join(output_dir, "report.md"))
    summary = {
        "checkpoint": checkpoint,
        "generated": [b.key for b in to_generate],
        "reused": reused,
        "rescored": rescored,
        "generation_pass": pass_timing,
        # the nodes whose actors answered this run's prompt batches (reused benchmarks: none)
        "placement": Placement.of("batch", nodes).model_dump(),
        "benchmarks": {
            key: {
                **{
                    name: record["counts"].get(name)
                    for name in (
                        "rows_evaluated",
                        "rows_left_out_by_limit",
                        "rows_dropped_without_image",
                        "images_dropped_by_policy",
                    )
                },
                "unresolved": record["scores"].get("unresolved"),
                "missing_predictions": record["scores"].get("missing_predictions"),
                "skipped_images_in_build": record["counts"].get("built", {}).get("skipped_images"),
            }
            for key, record in all_scores.items()
        },
    }
    metrics = {k: v for k, v in flat_metrics(all_scores).items() if math.isfinite(v)}
    if pass_timing.get("prompts_per_s"):
        metrics["prompts_per_s_wall"] = float(pass_timing["prompts_per_s"])
    artifacts = {
        "report": fs.join(output_dir, "report.md"),
        "scores": fs.join(output_dir, "scores.json"),
        "predictions": fs.join(output_dir, outputs.PREDICTIONS_DIR),
        "scores_dir": fs.join(output_dir, outputs.SCORES_DIR),
        "model": checkpoint,
    }
    return {"summary": summary, "metrics": metrics, "artifacts": artifacts}
