"""The per-worker training loop run by Ray Train (one process per GPU, or per CPU slot here).

Steps: environment → model (fresh from the preset for pre-training, from the pre-training export
for SFT) → freeze/unfreeze and log parameter counts → engine (DeepSpeed or DDP) → restore the
latest checkpoint if the run is resuming → epochs of modality-grouped micro batches → metrics
(loss, lr, grad norm, samples/s, tokens/s) to Ray and MLflow → checkpoints → export.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipelines.core import verbosity
from pipelines.training.batching import EpochCounters, epoch_micro_batches
from pipelines.training.plan import TrainPlan

logger = logging.getLogger("vlora.train")
CHUNK_MICRO_BATCHES = 4  # rows fetched from Ray Data per chunk, in micro batches


def _setup_environment(use_gpu: bool) -> None:
    from vlora.offline.cache import vlora_cache_dir
    from vlora.utils.env import apply_offline_defaults

    apply_offline_defaults()
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(vlora_cache_dir() / "torch_extensions"))


def build_model(plan: TrainPlan):
    """A fresh model (pre-training) or the pre-training export (SFT), with the right parts trainable."""
    from vlora.auto import load_pretrained
    from vlora.baseline import InputSpaceModel
    from vlora.model import VLoRAModel

    if plan.init_checkpoint is not None:
        from pipelines.training.export import local_copy

        model = load_pretrained(local_copy(plan.init_checkpoint))
        expected = "vlora" if plan.design == "vlora" else "input_space"
        if model.kind != expected:
            raise ValueError(
                f"init checkpoint holds a '{model.kind}' model, run design is '{expected}'"
            )
    else:
        cls = VLoRAModel if plan.design == "vlora" else InputSpaceModel
        if plan.fresh_model_config is None:
            raise ValueError(f"{plan.phase}: the plan names neither a checkpoint nor a model")
        model = cls.from_config(plan.fresh_model_config)
    model.set_trainable(bridge=True, llm=plan.train_llm)
    if plan.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    model.vision.eval()  # frozen and fed precomputed features; keep its dropout/norm in eval
    return model


class MetricWindow:
    """Accumulates micro-batch statistics between two reports, and where the time went.

    The shares of wall time spent waiting for data, in forward + backward (DDP and ZeRO-2 reduce
    gradients inside backward) and in the optimizer step tell an input-bound run from a
    compute-bound one; the rest is reporting and checkpointing.
    """

    PHASES = ("data", "forward_backward", "optimizer")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.losses: list[float] = []
        self.samples = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self.phase_seconds = dict.fromkeys(self.PHASES, 0.0)

    def add(self, loss: float, samples: int, tokens: int) -> None:
        self.losses.append(loss)
        self.samples += samples
        self.tokens += tokens

    def add_time(self, phase: str, seconds: float) -> None:
        self.phase_seconds[phase] += seconds

    def summary(self, world: int) -> dict[str, float]:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return {
            "loss": sum(self.losses) / max(len(self.losses), 1),
            # every rank processes the same number of micro batches of the same size
            "samples_per_s": self.samples * world / seconds,
            "tokens_per_s": self.tokens * world / seconds,
            **{f"{p}_time_share": self.phase_seconds[p] / seconds for p in self.PHASES},
        }


def _chaos_kill(plan: TrainPlan, step: int, rank: int) -> None:
    # the last rank: a non-zero one when there are several, the only one on a single worker
    if plan.chaos_kill_at_step != step or rank != plan.num_workers - 1 or not plan.chaos_marker:
        return
    marker = Path(plan.chaos_marker)
    if marker.exists():
        return
    # Ray Train's controller collects reports by polling (every 2 s): a worker dying right after
    # `ray.train.report` can take its newest checkpoint with it, and the restart then begins at
    # the one before. The drill kills once every report is committed, so that the restart point
    # is the last checkpoint, which the tests check.
    import ray.train

    ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=120
    )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"killed rank {rank} at step {step}\n")
    logger.warning("fault drill: killing worker rank %d at step %d", rank, step)
    os.kill(os.getpid(), signal.SIGKILL)


PLACEMENT_TAG = "vlora.placement."  # + start time (ns): one MLflow tag per worker-group start


def _record_placement(plan: TrainPlan, rank: int, world: int, from_step: int) -> None:
    """Every rank's node for this start of the worker group, as a tag of the stage's MLflow
    run (rank 0 writes it; the driver puts all starts into the stage summary). A record only:
    a failure to write it is logged, never raised."""
    import torch.distributed as dist

    from pipelines.core.placement import TrainingAttempt, this_node

    mine = this_node()
    ranks = [mine]
    if world > 1 and dist.is_initialized():
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine.model_dump())
        ranks = [type(mine).model_validate(r) for r in gathered]
    if rank != 0 or not (plan.mlflow_tracking_uri and plan.mlflow_run_id):
        return
    attempt = TrainingAttempt.of(from_step, time.time(), ranks)
    logger.info("%s: ranks on nodes %s", plan.phase, [r.name for r in ranks])
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=plan.mlflow_tracking_uri).set_tag(
            plan.mlflow_run_id, f"{PLACEMENT_TAG}{time.time_ns()}", attempt.model_dump_json()
        )
    except Exception as err:  # a missing record must not stop training
        logger.warning("could not record the worker placement in MLflow: %s", err)


def recorded_placement(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """Every start of the worker group recorded in the run (the stage summary's placement)."""
    from mlflow.tracking import MlflowClient

    from pipelines.core.placement import TrainingAttempt, TrainingPlacement

    tags = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    starts = {
        int(key[len(PLACEMENT_TAG) :]): value
        for key, value in tags.items()
        if key.startswith(PLACEMENT_TAG) and key[len(PLACEMENT_TAG) :].isdigit()
    }
    attempts = [TrainingAttempt.model_validate_json(starts[t]) for t in sorted(starts)]
    placement = TrainingPlacement(attempts=attempts)
    return {**placement.model_dump(), "final": placement.last().model_dump()}


def train_loop_per_worker(plan_json: dict[str, Any]) -> None:
    import ray.train

    plan = TrainPlan.model_validate(plan_json)
    use_gpu = torch.cuda.is_available()
    _setup_environment(use_gpu)
    verbosity.quiet_ray_train_reports()
    from pipelines.training.engines import build_engine
    from pipelines.training.export import export_model
    from pipelines.training.tracking import MetricsLogger
    from vlora.data.collate import collate_batch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(plan.seed)  # identical replicas; data order differs through the shards
    device = torch.device("cuda", context.get_local_rank()) if use_gpu else torch.device("cpu")
    started = time.perf_counter()
    model = build_model(plan).to(device)
    model_seconds = time.perf_counter() - started
    if rank == 0:
        logger.info("%s: what is frozen and trainable\n%s", plan.phase, model.parameter_report())
    engine = build_engine(plan, model, use_gpu)
    if rank == 0:  # start-up is a fixed cost per stage run; on small machines it adds up
        logger.info(
            "%s: model ready in %.1f s, %s engine in %.1f s; %d worker(s) × %d torch thread(s)",
            plan.phase,
            model_seconds,
            plan.strategy,
            time.perf_counter() - started - model_seconds,
            world,
            torch.get_num_threads(),
        )
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "samples": 0, "tokens": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state.update(engine.load(directory))
        torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
        logger.info(
            "rank %d resumed at step %d (epoch %d, batch %d)",
            rank,
            state["step"],
            state["epoch"],
            state["batches_in_epoch"],
        )
    metrics_log = MetricsLogger(plan) if rank == 0 else None
    if metrics_log is not None and checkpoint is not None:
        # a metric, so MLflow keeps one entry per restart (failed worker or stopped job) and
        # the stage summary can list them all, not just the last
        metrics_log.log({"resumed_from_step": float(state["step"])}, state["step"])
    _record_placement(plan, rank, world, state["step"])
    window = MetricWindow()
    # CPU time of this worker process (all its threads) since the loop started: the training
    # cost on a CPU machine that other work shares, where wall seconds also count the waiting
    cpu_started = time.process_time()
    shard = ray.train.get_dataset_shard("train")
    pad_id = model.tokenizer.pad_token_id
    vision = model.config.vision
    feature_shape = (vision.num_patches, vision.feature_dim)

    def save_and_report(metrics: dict[str, float], with_checkpoint: bool) -> None:
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        client = {**state, "torch_rng": torch.get_rng_state().tolist()}
        with tempfile.TemporaryDirectory(prefix="vlora-ckpt-") as directory:
            engine.save(directory, client)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    while state["step"] < plan.total_steps:
        counters = EpochCounters()
        chunks = shard.iter_batches(
            batch_size=plan.micro_batch_size * CHUNK_MICRO_BATCHES,
            batch_format="numpy",
            local_shuffle_buffer_size=plan.micro_batch_size * 16,
            local_shuffle_seed=plan.seed + state["epoch"],
        )
        batches = epoch_micro_batches(
            chunks,
            plan.micro_batch_size,
            plan.image_fraction,
            plan.seed + state["epoch"],
            device,
            counters,
        )
        waited_since = time.perf_counter()
        for index, numpy_batch in enumerate(batches):
            if index < state["batches_in_epoch"]:
                continue  # replaying the epoch up to the resume position: no compute
            batch = {
                k: v.to(device)
                for k, v in collate_batch(
                    numpy_batch, pad_id, feature_shape, plan.max_length
                ).items()
            }
            computing_since = time.perf_counter()
            window.add_time("data", computing_since - waited_since)
            loss = engine.forward_backward(batch)
            stepping_since = time.perf_counter()
            window.add_time("forward_backward", stepping_since - computing_since)
            window.add(loss, int(batch["input_ids"].shape[0]), int(batch["attention_mask"].sum()))
            state["batches_in_epoch"] = index + 1
            state["samples"] += int(batch["input_ids"].shape[0]) * world
            stepped = engine.step_if_boundary()
            window.add_time("optimizer", time.perf_counter() - stepping_since)
            waited_since = time.perf_counter()
            if not stepped:
                continue
            state["step"] += 1
            step = state["step"]
            _chaos_kill(plan, step, rank)
            last = step >= plan.total_steps
            checkpoint_now = last or step % plan.checkpoint_every_steps == 0
            if last or checkpoint_now or step % plan.report_every_steps == 0:
                metrics = {
                    **window.summary(world),
                    "lr": engine.current_lr(),
                    "grad_norm": engine.grad_norm if engine.grad_norm is not None else float("nan"),
                    "step": float(step),
                    "epoch": float(state["epoch"]),
                    "process_cpu_seconds": time.process_time() - cpu_started,
                }
                window.reset()
                if metrics_log is not None:
                    metrics_log.log(metrics, step)
                save_and_report(metrics, checkpoint_now)
                waited_since = time.perf_counter()  # reporting is not waiting for data
            if last:
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
            if rank == 0:
                logger.info("epoch done: %s", counters)
            if counters.batches["image"] + counters.batches["text"] == 0:
                raise RuntimeError("the training set yields no full micro batch on this worker")
            continue
        break
    with engine.full_parameters():
        if rank == 0:
            export_model(model, plan.export_dir)
    if metrics_log is not None:
        metrics_log.close()
