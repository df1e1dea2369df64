"""Config of the eval stage (benchmarks, batched generation on Ray Data actors). Owner: eval."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StageConfig


class EvalConfig(StageConfig):
    batch_size: int = Field(default=8, gt=0, description="Prompts per generation batch.")
