"""Config of the training stages (pretrain, sft): Ray Train + DeepSpeed. Owner: training."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StageConfig


class TrainConfig(StageConfig):
    max_steps: int = Field(default=100, gt=0, description="Optimizer steps.")
