"""Stage `pretrain`: the perceptual weights generator learns from image-caption features.

LLM and vision encoder frozen, generator (and W_s) trainable (the paper's stage 1); for the
input-space baseline (`design: input_space`) the projector is trained instead, on the same data.
Input: the features stage's pretraining Parquet as a Ray Dataset split across workers.

Artifacts: "model" (exported inference checkpoint, loadable with VLoRAModel.from_pretrained),
"checkpoints" (Ray Train checkpoints: full resumable state), "train_plan", "deepspeed_config",
"loss_curve" (PNG).
"""

from __future__ import annotations

from pipelines.config import PipelineConfig
from pipelines.core.chain import upstream_results
from pipelines.core.ray_cluster import ensure_ray
from pipelines.core.stage import StageResult, run_stage

STAGE = "pretrain"
UPSTREAM = ("features",)


def key_config(config: PipelineConfig) -> dict:
    return {
        "design": config.design,
        "model": config.resolved_model.model_dump(mode="json"),
        "train": config.pretrain.key_config(),
    }


def run(config: PipelineConfig, force: bool = False) -> StageResult:
    upstream = upstream_results(config, STAGE)

    def body(output_dir: str) -> dict:
        from pipelines.training.datasets import pretrain_dataset_with_report
        from pipelines.training.launcher import run_training

        ensure_ray(config.ray)
        dataset, report = pretrain_dataset_with_report(
            config, upstream["features"], max_length=config.pretrain.max_length
        )
        return run_training(
            STAGE,
            config,
            config.pretrain,
            dataset,
            output_dir,
            # the report pass judged every caption with the dataset's own rule: its count of
            # usable rows is the dataset's size, which spares a counting pass over the features
            num_rows=report["ok"],
            extra_summary={"data": report},
        )

    return run_stage(STAGE, config.workdir, key_config(config), body, upstream, force=force)
