"""Driver side of a training stage: validate, start Ray Train, collect the results.

Everything that can be wrong with the configuration (batch sizes that do not divide, an
unwritable checkpoint path, an empty dataset for `epochs`) fails here, before any worker starts.
Ray Train keeps its state under `storage_path/<phase>`; rerunning the same stage (same output
directory) resumes from the latest checkpoint, and worker failures restart the worker group from
it automatically (FailureConfig).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.config.train import TrainConfig
from pipelines.core import fs, verbosity
from pipelines.training.deepspeed_config import deepspeed_config
from pipelines.training.plan import Phase, TrainPlan, resolve_plan
from pipelines.training.tracking import (
    finish_mlflow_run,
    metric_history,
    plot_loss_curve,
    start_mlflow_run,
)
from vlora.presets import get_preset

logger = logging.getLogger(__name__)


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def prepare_plan(
    phase: Phase,
    config: PipelineConfig,
    train: TrainConfig,
    output_dir: str,
    *,
    num_rows: int | None,
    init_checkpoint: str | None,
    use_gpu: bool,
    image_fraction: float = 1.0,
) -> tuple[TrainPlan, str]:
    """The plan and the Ray storage path, with every check that can run before workers."""
    storage = train.storage_path or fs.join(output_dir, "ray")
    fs.check_writable(storage, f"{phase}.storage_path")
    plan = resolve_plan(
        train,
        get_preset(config.preset).recipe,
        phase,
        design=config.design,
        fresh_model_config=config.resolved_model if init_checkpoint is None else None,
        init_checkpoint=init_checkpoint,
        num_rows=num_rows,
        use_gpu=use_gpu,
        image_fraction=image_fraction,
        export_dir=fs.join(output_dir, "model"),
        mlflow_tracking_uri=config.mlflow_uri(),
        chaos_marker=fs.join(output_dir, "chaos_done.txt") if fs.is_local(output_dir) else None,
    )
    return plan, storage


def _mlflow_run(config: PipelineConfig, phase: str, output_dir: str, params: dict) -> str:
    """One MLflow run per stage directory, reused when a killed stage resumes."""
    marker = fs.join(output_dir, "mlflow_run_id.txt")
    if fs.exists(marker):
        filesystem, path = fs.filesystem(marker)
        return filesystem.cat_file(path).decode().strip()
    run_id = start_mlflow_run(
        config.mlflow_uri(),
        config.tracking.experiment,
        f"{config.name}-{phase}",
        params,
        artifact_location=config.mlflow_artifact_location(),
    )
    fs.write_bytes_atomic(marker, run_id.encode())
    return run_id


def run_training(
    phase: Phase,
    config: PipelineConfig,
    train: TrainConfig,
    dataset: Any,
    output_dir: str,
    *,
    init_checkpoint: str | None = None,
    num_rows: int | None = None,
    image_fraction: float = 1.0,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import ray.train
    from ray.data import DataContext
    from ray.train.torch import TorchTrainer

    from pipelines.training.worker import recorded_placement, train_loop_per_worker

    use_gpu = train.use_gpu if train.use_gpu is not None else cluster_has_gpus()
    if train.max_steps is None and num_rows is None:  # epochs (default 1) need the size
        num_rows = dataset.count()
    plan, storage = prepare_plan(
        phase,
        config,
        train,
        output_dir,
        num_rows=num_rows,
        init_checkpoint=init_checkpoint,
        use_gpu=use_gpu,
        image_fraction=image_fraction,
    )
    plan.mlflow_run_id = _mlflow_run(config, phase, output_dir, plan.model_dump(mode="json"))
    fs.write_json_atomic(fs.join(output_dir, "train_plan.json"), plan.model_dump(mode="json"))
    ds_json = deepspeed_config(plan, use_gpu) if plan.strategy == "deepspeed" else None
    if ds_json is not None:
        fs.write_json_atomic(fs.join(output_dir, "deepspeed_config.json"), ds_json)
    logger.info(
        "[%s] %d workers (%s), global batch %d = micro %d × accumulation %d × workers, "
        "%d steps, lr %.2g, %s, %s",
        phase,
        plan.num_workers,
        "GPU" if use_gpu else "CPU",
        plan.global_batch_size,
        plan.micro_batch_size,
        plan.grad_accum_steps,
        plan.total_steps,
        plan.lr,
        plan.precision,
        f"DeepSpeed ZeRO-{plan.zero_stage}" if plan.strategy == "deepspeed" else "DDP",
    )
    execution = DataContext.get_current().execution_options
    execution.preserve_order = True  # a deterministic order is what makes resume exact
    resources = {"CPU": train.cpus_per_worker, **train.resources_per_worker}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=plan.model_dump(mode="json"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            placement_strategy=train.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=phase,
            storage_path=storage,
            # Ray Train's own lines (worker group, one per report); ours are logged apart
            logging_config=ray.train.LoggingConfig(log_level=verbosity.framework_log_level()),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=train.keep_checkpoints,
                checkpoint_score_attribute="loss",
                checkpoint_score_order="min",
            ),
        ),
        datasets={"train": dataset},
        dataset_config=ray.train.DataConfig(execution_options=execution),
    )
    try:
        result = trainer.fit()
    except Exception:
        finish_mlflow_run(config.mlflow_uri(), plan.mlflow_run_id, status="FAILED")
        raise
    finish_mlflow_run(config.mlflow_uri(), plan.mlflow_run_id)
    losses = metric_history(config.mlflow_uri(), plan.mlflow_run_id, "loss")
    resumes = metric_history(config.mlflow_uri(), plan.mlflow_run_id, "resumed_from_step")
    artifacts = {
        "model": plan.export_dir,
        "checkpoints": fs.join(storage, phase),
        "train_plan": fs.join(output_dir, "train_plan.json"),
    }
    if ds_json is not None:
        artifacts["deepspeed_config"] = fs.join(output_dir, "deepspeed_config.json")
    if fs.is_local(output_dir):
        from pathlib import Path

        curve = Path(fs.filesystem(output_dir)[1]) / "loss_curve.png"
        plot_loss_curve(losses, curve, f"{config.name}: {phase} ({config.design})")
        artifacts["loss_curve"] = str(curve)
    final = dict(result.metrics or {})
    summary = {
        "steps": plan.total_steps,
        "global_batch_size": plan.global_batch_size,
        "workers": plan.num_workers,
        "device": "gpu" if use_gpu else "cpu",
        "strategy": plan.strategy if plan.strategy == "ddp" else f"deepspeed-zero{plan.zero_stage}",
        "precision": plan.precision,
        "mlflow_run_id": plan.mlflow_run_id,
        "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None,
        # one entry per restart from a checkpoint (worker failure, or a stopped job rerun)
        "resumed_from_steps": [int(step) for step, _ in resumes],
        # every start of the worker group: which node each rank ran on
        "placement": recorded_placement(config.mlflow_uri(), plan.mlflow_run_id),
        **(extra_summary or {}),
    }
    metrics = {k: float(v) for k, v in final.items() if isinstance(v, int | float) and k != "step"}
    logger.info("[%s] finished: %s", phase, json.dumps(summary, default=str))
    return {"summary": summary, "metrics": metrics, "artifacts": artifacts}
