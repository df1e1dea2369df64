"""Config of the training stages (pretrain, sft): Ray Train workers running DeepSpeed or DDP.

Batch sizes: global batch = micro batch × gradient accumulation × workers. Give any two of
`global_batch_size`, `micro_batch_size`, `grad_accum_steps` (with the worker count) and the third
is derived; a combination that does not divide fails before any worker starts, naming the field.
Learning rate and global batch default to the preset's recipe (the paper's values for
vicuna7b-clip336: pretrain 5e-5 × 768, SFT 2e-5 × 128).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import StageConfig


class TrainConfig(StageConfig):
    # ----- scale -------------------------------------------------------------------------------
    strategy: Literal["deepspeed", "ddp"] = Field(
        default="deepspeed", description="DeepSpeed ZeRO (default) or plain torch DDP."
    )
    zero_stage: Literal[2, 3] = Field(default=2, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(
        default=False,
        description="ZeRO optimizer state offload to CPU (DeepSpeedCPUAdam; compiles a C++ op).",
    )
    num_workers: int = Field(default=2, gt=0, description="Ray Train workers (one per GPU).")
    use_gpu: bool | None = Field(
        default=None, description="Workers take a GPU each; None = when the cluster has GPUs."
    )
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs reserved per worker.")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="Extra custom resources per worker (e.g. node types)."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto = bf16 on GPU, fp32 on CPU."
    )
    # ----- batches and schedule ---------------------------------------------------------------
    global_batch_size: int | None = Field(
        default=None, gt=0, description="Samples per optimizer step (default: preset recipe)."
    )
    micro_batch_size: int | None = Field(
        default=None, gt=0, description="Samples per worker per forward/backward."
    )
    grad_accum_steps: int | None = Field(
        default=None, gt=0, description="Micro batches accumulated per optimizer step."
    )
    max_steps: int | None = Field(
        default=None, gt=0, description="Optimizer steps to run (overrides epochs)."
    )
    epochs: float | None = Field(
        default=None, gt=0, description="Passes over the data when max_steps is unset (default 1)."
    )
    lr: float | None = Field(
        default=None, gt=0, description="Peak learning rate (default: recipe)."
    )
    warmup_ratio: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Share of the steps with a linear lr warm-up before the cosine (default: recipe).",
    )
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="Cosine floor / peak.")
    weight_decay: float | None = Field(
        default=None,
        ge=0,
        description="AdamW weight decay (not on biases, norms, queries, positions; default: recipe).",
    )
    adam_betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW betas.")
    max_grad_norm: float = Field(
        default=1.0, gt=0, description="Gradient clipping: global L2 norm per step."
    )
    max_length: int | None = Field(
        default=None, gt=0, description="Token budget per sample (default: recipe)."
    )
    train_llm: bool | None = Field(
        default=None,
        description="Train the LLM's weights too: None = in SFT only (the paper's full SFT; "
        "pre-training always freezes the LLM). sft.train_llm=false trains the generator "
        "(or projector) alone: a backward pass without LLM weight gradients and an optimizer "
        "over the bridge only, for small machines; not the paper's recipe.",
    )
    gradient_checkpointing: bool | None = Field(
        default=None, description="Recompute LLM blocks in backward; None = on for SFT only."
    )
    seed: int | None = Field(
        default=None,
        description="Seed of this stage's initialisation and data order; None = the run's `seed`.",
    )
    max_bad_fraction: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="SFT: fail when more than this share of records cannot be trained on "
        "(malformed, missing image, tokenisation problems); they are listed by id either way.",
    )
    # ----- checkpoints, metrics, failures -----------------------------------------------------
    checkpoint_every_steps: int = Field(
        default=50,
        gt=0,
        description="Resumable checkpoint (weights, optimizer, scheduler, data position) every N steps.",
    )
    keep_checkpoints: int = Field(
        default=2, gt=0, description="Top-K by loss (latest always kept)."
    )
    report_every_steps: int = Field(
        default=10, gt=0, description="Metric reports (ray.train.report blocks ~2 s per call)."
    )
    storage_path: str | None = Field(
        default=None,
        description="Where Ray Train keeps checkpoints (local folder, NFS or any pyarrow/fsspec "
        "URL); None = inside the stage's output directory.",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        default="PACK",
        description="How Ray places the workers: PACK fills a node first (fastest collectives); "
        "SPREAD puts them on different nodes where it can, STRICT_SPREAD always (fails if "
        "there are fewer nodes than workers), so that losing one node loses one worker.",
    )
    max_failures: int = Field(
        default=3, ge=-1, description="Worker-group restarts from the latest checkpoint (-1: ∞)."
    )
    init_checkpoint: str | None = Field(
        default=None,
        description="SFT: start from this exported model instead of the pretrain stage's.",
    )
    chaos_kill_at_step: int | None = Field(
        default=None,
        gt=0,
        description="Fault drill: kill the last worker rank (SIGKILL) once at this step to "
        "exercise recovery. Never set in production runs.",
    )

    def key_config(self) -> dict:
        """The fields that make a training stage's key (see TRAIN_KEY_EXCLUDE)."""
        fields = self.model_dump(mode="json", exclude=TRAIN_KEY_EXCLUDE)
        for name in KEY_OMIT_AT_DEFAULT:
            if fields[name] is None:
                del fields[name]
        return fields

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainConfig:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("max_steps and epochs are mutually exclusive; set one")
        return self


# Fields that cannot change the trained weights; left out of the stage key so that changing them
# (more workers with the same global batch, another checkpoint folder) reuses finished results.
TRAIN_KEY_EXCLUDE = {
    "num_workers",
    "use_gpu",
    "cpus_per_worker",
    "resources_per_worker",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "report_every_steps",
    "storage_path",
    "placement_strategy",
    "max_failures",
    "chaos_kill_at_step",
}

# Fields added after stages had been run with the same behaviour: at their default (None) they
# stay out of the key, so finished stages are still found; set, they change it.
KEY_OMIT_AT_DEFAULT = ("train_llm",)
