"""AdamW parameter groups: no weight decay on biases, norms, embeddings and queries."""

from __future__ import annotations

from torch import nn


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # 1-D tensors (biases, norm scales) and learned tokens are not regularised, as usual.
        skip = param.ndim < 2 or "norm" in name or name.endswith(("queries", "position_embedding"))
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]
