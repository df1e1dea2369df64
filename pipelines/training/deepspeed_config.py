"""The DeepSpeed JSON, derived from the training plan (never hand-edited, always saved).

infra/deepspeed/ holds the same settings as reference templates; this function is the source of
truth, and each training run writes the exact JSON it used next to its outputs.
"""

from __future__ import annotations

from typing import Any

from pipelines.training.plan import TrainPlan


def deepspeed_config(plan: TrainPlan, use_gpu: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {
        "stage": plan.zero_stage,
        "contiguous_gradients": True,
        "overlap_comm": use_gpu,  # overlapping needs CUDA streams; on CPU it only adds copies
        "reduce_bucket_size": 5e7,
    }
    if plan.zero_stage == 3:
        zero.update(
            {
                "stage3_gather_16bit_weights_on_model_save": True,
                # small tensors (norms, biases) stay whole on every rank: gathering them costs
                # more than it saves
                "stage3_param_persistence_threshold": 1e5,
            }
        )
    if plan.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": use_gpu}
    config: dict[str, Any] = {
        "train_batch_size": plan.global_batch_size,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.grad_accum_steps,
        "gradient_clipping": plan.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": plan.precision == "bf16"},
        "fp16": {"enabled": False},
        # a plain torch AdamW is the client optimizer unless ZeRO-offload needs DeepSpeed's own
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if plan.offload_optimizer:
        config["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": plan.lr,
                "betas": list(plan.adam_betas),
                "weight_decay": plan.weight_decay,
            },
        }
    return config
