"""Config of the features stage (Ray Data actor pool running the frozen vision encoder)."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StageConfig


class FeaturesConfig(StageConfig):
    batch_size: int = Field(default=32, gt=0, description="Images per encoder forward pass.")
    num_actors: int = Field(
        default=1, gt=0, description="Encoder actors (one per GPU on a cluster)."
    )
    cpus_per_actor: float = Field(
        default=1.0, gt=0, description="CPUs reserved per actor (decode threads + CPU encoding)."
    )
    gpus_per_actor: float = Field(default=0.0, ge=0, description="GPUs per actor (0 = CPU).")
    decode_threads: int = Field(default=2, gt=0, description="Image decode threads per actor.")
    torch_threads: int | None = Field(
        default=None, gt=0, description="torch intra-op threads per CPU actor (None: torch's)."
    )
    dtype: str = Field(
        default="float16",
        pattern="^float16$",
        description="Stored feature dtype (the schema stores fp16; encoders run in fp32/bf16).",
    )
    sft_images_per_file: int = Field(
        default=1024, gt=0, description="SFT images per output Parquet file."
    )
    max_failed_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Fail when more than this share of images cannot be decoded (all are listed).",
    )
