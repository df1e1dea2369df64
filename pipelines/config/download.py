"""Config of the download stage (source preparation + img2dataset + SFT data). Owner: data stages."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StageConfig


class DownloadConfig(StageConfig):
    image_size: int = Field(default=336, gt=0, description="Shard image size in pixels.")
