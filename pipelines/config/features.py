"""Config of the features stage (Ray Data actor pool running the frozen vision encoder).

What the output depends on (and so what the stage key hashes): the run's vision encoder config,
the stored `dtype`, the `compute_dtype` the encoder runs in and `sft_images_per_file` (the SFT
file names). Batch size, actor counts and threads only change speed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import StageConfig


class FeaturesConfig(StageConfig):
    batch_size: int = Field(default=32, gt=0, description="Images per encoder forward pass.")
    num_actors: int = Field(
        default=1, gt=0, description="Encoder actors (one per GPU on a cluster)."
    )
    cpus_per_actor: float = Field(
        default=1.0,
        gt=0,
        description="Logical CPUs reserved per actor (decode threads + CPU encoding). Fractions "
        "are allowed: on a small machine whole CPUs per actor can leave nothing for other "
        "Ray work (Ray Data's read tasks wait for a free CPU, and the job hangs).",
    )
    gpus_per_actor: float = Field(
        default=0.0,
        ge=0,
        description="GPUs per actor; > 0 runs the encoder on CUDA (fails if the actor has none), "
        "0 runs it on the CPU.",
    )
    decode_threads: int = Field(
        default=2,
        gt=0,
        description="Image decode/preprocess threads per actor (PIL releases the GIL); they work "
        "`prefetch_batches` batches ahead of the encoder.",
    )
    prefetch_batches: int = Field(
        default=2,
        ge=0,
        description="Batches decoded ahead while the encoder runs (0 = decode, then encode).",
    )
    torch_threads: int | None = Field(
        default=None,
        gt=0,
        description="torch intra-op threads per CPU actor (None: max(1, cpus_per_actor)).",
    )
    dtype: Literal["float16"] = Field(
        default="float16",
        description="Stored feature dtype (the schema stores fp16).",
    )
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32",
        description="dtype the encoder runs in. It changes the features, so it is part of the "
        "stage key; on GPUs float16 (what LLaVA runs CLIP in) or bfloat16 is 2-3× faster. "
        "float16 needs a GPU.",
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

    @model_validator(mode="after")
    def _fp16_needs_gpu(self) -> FeaturesConfig:
        if self.compute_dtype == "float16" and self.gpus_per_actor == 0:
            raise ValueError(
                "compute_dtype: float16 needs a GPU (set gpus_per_actor > 0, or use float32 / "
                "bfloat16 on CPUs)"
            )
        return self

    def key_config(self) -> dict[str, object]:
        """The fields the features depend on (the rest only change speed)."""
        return {
            "dtype": self.dtype,
            "compute_dtype": self.compute_dtype,
            "sft_images_per_file": self.sft_images_per_file,
        }
