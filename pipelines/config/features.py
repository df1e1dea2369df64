"""Config of the features stage (Ray Data + frozen vision encoder → Parquet). Owner: data stages."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StageConfig


class FeaturesConfig(StageConfig):
    batch_size: int = Field(default=32, gt=0, description="Images per encoder batch.")
