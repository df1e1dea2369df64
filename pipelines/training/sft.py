"""Stage `sft`: full fine-tuning of generator and LLM on LLaVA-style conversations.

Starts from the pre-training export (or `sft.init_checkpoint`); the vision encoder stays
frozen; gradient checkpointing on by default; modality-grouped batches (all-image or all-text).
Tokenisation problems and malformed records are counted and listed by the dataset builder;
above its configured fraction the stage fails before training.

Artifacts as for `pretrain`; "model" is the final inference checkpoint (LLM weights included,
since SFT changes them) that the eval and register stages use.
"""

from __future__ import annotations

from pipelines.config import PipelineConfig
from pipelines.core.chain import upstream_results
from pipelines.core.ray_cluster import ensure_ray
from pipelines.core.stage import StageResult, run_stage

STAGE = "sft"
UPSTREAM = ("features", "pretrain")


def key_config(config: PipelineConfig) -> dict:
    return {
        "design": config.design,
        "train": config.sft.key_config(),
    }


def run(config: PipelineConfig, force: bool = False) -> StageResult:
    upstream = upstream_results(config, STAGE)

    def body(output_dir: str) -> dict:
        from pipelines.training.datasets import sft_dataset
        from pipelines.training.launcher import run_training

        ensure_ray(config.ray)
        dataset, report = sft_dataset(
            config,
            upstream["features"],
            max_length=config.sft.max_length,
            max_bad_fraction=config.sft.max_bad_fraction,
            seed=config.sft.seed,
            # with the LLM frozen a text-only batch reaches no trainable weight
            images_only=config.sft.train_llm is False,
        )
        init = config.sft.init_checkpoint or upstream["pretrain"].artifacts["model"]
        return run_training(
            STAGE,
            config,
            config.sft,
            dataset,
            output_dir,
            init_checkpoint=init,
            extra_summary={"data": report},
        )

    return run_stage(STAGE, config.workdir, key_config(config), body, upstream, force=force)
