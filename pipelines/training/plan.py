"""The resolved training plan: every number a worker needs, checked before any worker starts.

`resolve_plan` turns a TrainConfig plus the preset's recipe into concrete batch sizes, steps and
learning rates, and fails with a message naming the config field when they do not add up.
The plan is a plain pydantic model (the model to build included, as a typed ModelConfig), so
it travels to Ray workers as JSON and is validated back into the same types there.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipelines.config.train import TrainConfig
from vlora.config import ModelConfig, RecipeConfig

Phase = Literal["pretrain", "sft"]


class TrainPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase: Phase
    design: Literal["vlora", "input_space"]
    fresh_model_config: ModelConfig | None  # the model to build from scratch (pretrain)
    init_checkpoint: str | None  # exported model to start from (sft)
    train_llm: bool
    strategy: Literal["deepspeed", "ddp"]
    zero_stage: int
    offload_optimizer: bool
    precision: Literal["bf16", "fp32"]
    num_workers: int
    micro_batch_size: int
    grad_accum_steps: int
    global_batch_size: int
    total_steps: int
    warmup_steps: int
    lr: float
    min_lr_ratio: float
    weight_decay: float
    adam_betas: tuple[float, float]
    max_grad_norm: float
    gradient_checkpointing: bool
    seed: int
    checkpoint_every_steps: int
    report_every_steps: int
    rows_per_worker: int | None  # None: streaming, epochs unknown (max_steps given)
    image_fraction: float  # share of image rows: P(image) of the shared step schedule
    max_length: int
    export_dir: str
    mlflow_tracking_uri: str | None
    mlflow_run_id: str | None
    chaos_kill_at_step: int | None
    chaos_marker: str | None


def resolve_batches(
    config: TrainConfig, recipe_global_batch: int, section: str
) -> tuple[int, int, int]:
    """(micro, accumulation, global) with global = micro × accumulation × workers."""
    workers = config.num_workers
    micro, accum, global_ = (
        config.micro_batch_size,
        config.grad_accum_steps,
        config.global_batch_size,
    )
    if micro is not None and accum is not None:
        derived = micro * accum * workers
        if global_ is not None and global_ != derived:
            raise ValueError(
                f"{section}.global_batch_size: {global_} ≠ micro_batch_size {micro} × "
                f"grad_accum_steps {accum} × num_workers {workers} = {derived}"
            )
        return micro, accum, derived
    global_ = global_ or recipe_global_batch
    if micro is not None:
        if global_ % (micro * workers):
            raise ValueError(
                f"{section}.global_batch_size: {global_} is not divisible by micro_batch_size "
                f"{micro} × num_workers {workers}"
            )
        return micro, global_ // (micro * workers), global_
    accum = accum or 1
    if global_ % (accum * workers):
        raise ValueError(
            f"{section}.global_batch_size: {global_} is not divisible by grad_accum_steps "
            f"{accum} × num_workers {workers}"
        )
    return global_ // (accum * workers), accum, global_


def resolve_plan(
    config: TrainConfig,
    recipe: RecipeConfig,
    phase: Phase,
    *,
    design: Literal["vlora", "input_space"],
    fresh_model_config: ModelConfig | None,
    init_checkpoint: str | None,
    num_rows: int | None,
    use_gpu: bool,
    export_dir: str,
    image_fraction: float = 1.0,
    mlflow_tracking_uri: str | None = None,
    mlflow_run_id: str | None = None,
    chaos_marker: str | None = None,
) -> TrainPlan:
    section = phase
    recipe_batch = recipe.pretrain_global_batch if phase == "pretrain" else recipe.sft_global_batch
    micro, accum, global_ = resolve_batches(config, recipe_batch, section)
    rows_per_worker = None
    epochs = (config.epochs or 1.0) if config.max_steps is None else None
    if epochs is not None:
        if not num_rows:
            raise ValueError(f"{section}.epochs: the training set is empty or of unknown size")
        rows_per_worker = num_rows // config.num_workers
        steps_per_epoch = rows_per_worker // (micro * accum)
        if steps_per_epoch == 0:
            raise ValueError(
                f"{section}.global_batch_size: {global_} is larger than the training set "
                f"({num_rows} rows)"
            )
        total_steps = max(1, math.floor(steps_per_epoch * epochs))
    else:
        total_steps = config.max_steps
        if num_rows is not None:
            rows_per_worker = num_rows // config.num_workers
    warmup_ratio = config.warmup_ratio
    if warmup_ratio is None:
        warmup_ratio = (
            recipe.pretrain_warmup_ratio if phase == "pretrain" else recipe.sft_warmup_ratio
        )
    lr = config.lr or (recipe.pretrain_lr if phase == "pretrain" else recipe.sft_lr)
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if use_gpu else "fp32"
    if phase == "pretrain" and config.train_llm:
        raise ValueError(f"{section}.train_llm: pre-training trains the generator only")
    train_llm = phase == "sft" if config.train_llm is None else config.train_llm
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = phase == "sft"
    return TrainPlan(
        phase=phase,
        design=design,
        fresh_model_config=fresh_model_config,
        init_checkpoint=init_checkpoint,
        train_llm=train_llm,
        strategy=config.strategy,
        zero_stage=config.zero_stage,
        offload_optimizer=config.offload_optimizer,
        precision=precision,
        num_workers=config.num_workers,
        micro_batch_size=micro,
        grad_accum_steps=accum,
        global_batch_size=global_,
        total_steps=total_steps,
        warmup_steps=math.ceil(total_steps * warmup_ratio),
        lr=lr,
        min_lr_ratio=config.min_lr_ratio,
        weight_decay=config.weight_decay
        if config.weight_decay is not None
        else recipe.weight_decay,
        adam_betas=config.adam_betas,
        max_grad_norm=config.max_grad_norm,
        gradient_checkpointing=checkpointing,
        # a TrainConfig inside a PipelineConfig always has its seed resolved; alone, seed 0
        seed=config.seed if config.seed is not None else 0,
        checkpoint_every_steps=config.checkpoint_every_steps,
        report_every_steps=config.report_every_steps,
        rows_per_worker=rows_per_worker,
        image_fraction=image_fraction,
        max_length=config.max_length or recipe.max_length,
        export_dir=export_dir,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_run_id=mlflow_run_id,
        chaos_kill_at_step=config.chaos_kill_at_step,
        chaos_marker=chaos_marker,
    )
