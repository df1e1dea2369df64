"""Training engines with one interface: DeepSpeed ZeRO (default) and plain torch DDP.

Both run inside Ray Train workers, where torch.distributed is already initialised (gloo on CPU,
NCCL on GPU). Checkpoints hold the trainable weights and the optimizer, scheduler and client
state (step, data position, RNG); frozen weights are never written to training checkpoints.

DeepSpeed checkpoints are DeepSpeed's own files (torch.save underneath): they are internal to a
run and read back only by that run. The DDP engine writes safetensors + JSON only. Exported
inference checkpoints are always safetensors (`vlora.checkpoint`).
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from pipelines.training.deepspeed_config import deepspeed_config
from pipelines.training.plan import TrainPlan
from vlora.model import VLoRAModel
from vlora.model_base import MultimodalModel
from vlora.training.params import adamw_param_groups
from vlora.training.schedule import warmup_cosine_scheduler

logger = logging.getLogger(__name__)
DS_TAG = "state"
# Logits (and the vocabulary softmax) only where the next token is labelled: same loss and
# gradients as full logits (vlora.loss, tested). SmolLM2's LM head is a fifth of its weights and
# an SFT conversation supervises about a quarter of its tokens.
TRAINING_LOGITS = "labelled"
CLIENT_KEY = "vlora_state"


class Engine(abc.ABC):
    def __init__(self, plan: TrainPlan, model: MultimodalModel) -> None:
        self.plan = plan
        self.model = model
        self.grad_norm: float | None = None
        self.micro_steps = 0

    @property
    def rank(self) -> int:
        return dist.get_rank() if dist.is_initialized() else 0

    @abc.abstractmethod
    def forward_backward(self, batch: dict[str, torch.Tensor]) -> float:
        """One micro batch: forward, loss, backward. Returns the loss value."""

    @abc.abstractmethod
    def step_if_boundary(self) -> bool:
        """Optimizer + scheduler step at the end of an accumulation window; True if stepped."""

    @abc.abstractmethod
    def current_lr(self) -> float: ...

    @abc.abstractmethod
    def save(self, directory: str, client_state: dict[str, Any]) -> None:
        """Every rank writes its part of the state into `directory`."""

    @abc.abstractmethod
    def load(self, directory: str) -> dict[str, Any]:
        """Restore from `directory`; returns the client state."""

    @contextlib.contextmanager
    def full_parameters(self) -> Iterator[None]:
        """Context in which every parameter is whole on every rank (for exporting)."""
        yield


class DeepSpeedEngine(Engine):
    def __init__(self, plan: TrainPlan, model: MultimodalModel, use_gpu: bool) -> None:
        super().__init__(plan, model)
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")
        self.ds_config = deepspeed_config(plan, use_gpu)
        if plan.zero_stage == 3 and isinstance(model, VLoRAModel):
            # W_s is read inside the delta wrappers' forward, not the generator's.
            for wrapper, w_s in model.w_s_users():
                deepspeed.zero.register_external_parameter(wrapper, w_s)
        groups = adamw_param_groups(model, plan.weight_decay)

        def scheduler(optimizer: torch.optim.Optimizer) -> Any:
            return warmup_cosine_scheduler(
                optimizer, plan.warmup_steps, plan.total_steps, plan.min_lr_ratio
            )

        if plan.offload_optimizer:
            optimizer = None
            model_parameters: Any = groups
        else:
            optimizer = torch.optim.AdamW(groups, lr=plan.lr, betas=plan.adam_betas)
            model_parameters = None
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            model_parameters=model_parameters,
            lr_scheduler=scheduler,
            config=self.ds_config,
        )

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> float:
        loss = self.engine(**batch, logits_for=TRAINING_LOGITS).loss
        _check_trainable(loss)
        self.engine.backward(loss)
        self.micro_steps += 1
        return float(loss.detach())

    def step_if_boundary(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()  # no-op for the optimizer inside an accumulation window
        if boundary:
            norm = self.engine.get_global_grad_norm()
            self.grad_norm = float(norm) if norm is not None else None
        return boundary

    def current_lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, directory: str, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(
            directory,
            tag=DS_TAG,
            client_state={CLIENT_KEY: client_state},
            exclude_frozen_parameters=True,
        )

    def load(self, directory: str) -> dict[str, Any]:
        # DeepSpeed hands back its whole checkpoint dict; ours is namespaced inside it.
        _, checkpoint = self.engine.load_checkpoint(directory, tag=DS_TAG, load_module_strict=False)
        if not checkpoint or CLIENT_KEY not in checkpoint:
            raise ValueError(f"{directory} holds no vlora training state")
        return checkpoint[CLIENT_KEY]

    @contextlib.contextmanager
    def full_parameters(self) -> Iterator[None]:
        if self.plan.zero_stage != 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            yield


class DDPEngine(Engine):
    """torch DDP with manual accumulation (no_sync inside the window) and clipping."""

    def __init__(self, plan: TrainPlan, model: MultimodalModel, use_gpu: bool) -> None:
        super().__init__(plan, model)
        from ray.train.torch import prepare_model

        # Text-only steps leave the generator/projector without gradients.
        self.wrapped = prepare_model(
            model,
            parallel_strategy="ddp",
            parallel_strategy_kwargs={"find_unused_parameters": True},
        )
        groups = adamw_param_groups(model, plan.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=plan.lr, betas=plan.adam_betas)
        self.scheduler = warmup_cosine_scheduler(
            self.optimizer, plan.warmup_steps, plan.total_steps, plan.min_lr_ratio
        )
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> float:
        self.micro_steps += 1
        in_window = self.micro_steps % self.plan.grad_accum_steps != 0
        sync = (
            self.wrapped.no_sync()
            if in_window and hasattr(self.wrapped, "no_sync")
            else contextlib.nullcontext()
        )
        with sync:
            loss = self.wrapped(**batch, logits_for=TRAINING_LOGITS).loss
            _check_trainable(loss)
            (loss / self.plan.grad_accum_steps).backward()
        return float(loss.detach())

    def step_if_boundary(self) -> bool:
        if self.micro_steps % self.plan.grad_accum_steps != 0:
            return False
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.plan.max_grad_norm)
        self.grad_norm = float(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def current_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, directory: str, client_state: dict[str, Any]) -> None:
        if self.rank != 0:  # DDP replicas are identical
            return
        trainable = {
            n: p.detach().cpu().contiguous()
            for n, p in self.model.named_parameters()
            if p.requires_grad
        }
        save_file(trainable, os.path.join(directory, "trainable.safetensors"))
        tensors, meta = _flatten_optimizer_state(self.optimizer.state_dict())
        save_file(tensors, os.path.join(directory, "optimizer.safetensors"))
        state = {
            "optimizer": meta,
            "scheduler": self.scheduler.state_dict(),
            "client": client_state,
            "micro_steps": self.micro_steps,
        }
        with open(os.path.join(directory, "state.json"), "w") as handle:
            json.dump(state, handle, default=_json_default)

    def load(self, directory: str) -> dict[str, Any]:
        trainable = load_file(os.path.join(directory, "trainable.safetensors"))
        missing = self.model.load_state_dict(trainable, strict=False)
        unexpected = [k for k in missing.unexpected_keys]
        if unexpected:
            raise ValueError(f"checkpoint has parameters the model lacks: {unexpected[:5]}")
        with open(os.path.join(directory, "state.json")) as handle:
            state = json.load(handle)
        tensors = load_file(os.path.join(directory, "optimizer.safetensors"))
        self.optimizer.load_state_dict(_unflatten_optimizer_state(tensors, state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = state["micro_steps"]
        return state["client"]


def _check_trainable(loss: torch.Tensor) -> None:
    if not loss.requires_grad:
        raise RuntimeError(
            "this micro batch reaches no trainable parameter (a text-only batch while only "
            "the generator/projector trains?): nothing to learn from it"
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _flatten_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state → (tensors for safetensors, JSON-able rest); no pickle involved."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        entry = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                name = f"{param_id}.{key}"
                tensors[name] = value.detach().cpu().contiguous()
                entry[key] = {"tensor": name}
            else:
                entry[key] = value
        per_param[str(param_id)] = entry
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def _unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for param_id, entry in meta["state"].items():
        state[int(param_id)] = {
            key: tensors[value["tensor"]]
            if isinstance(value, dict) and "tensor" in value
            else value
            for key, value in entry.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def build_engine(plan: TrainPlan, model: MultimodalModel, use_gpu: bool) -> Engine:
    if plan.strategy == "deepspeed":
        return DeepSpeedEngine(plan, model, use_gpu)
    return DDPEngine(plan, model, use_gpu)
