"""Batch arithmetic, schedules and the DeepSpeed JSON: checked before any worker starts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pipelines.config.train import TrainConfig
from pipelines.training.batching import EpochCounters, grouped_micro_batches
from pipelines.training.deepspeed_config import deepspeed_config
from pipelines.training.engines import _flatten_optimizer_state, _unflatten_optimizer_state
from pipelines.training.plan import resolve_batches, resolve_plan
from vlora.config import RecipeConfig
from vlora.training.schedule import warmup_cosine_factor


def plan_for(**kwargs):
    config = TrainConfig(**{"max_steps": 10, **kwargs})
    return resolve_plan(
        config,
        RecipeConfig(),
        "pretrain",
        design="vlora",
        model_config_json={},
        init_checkpoint=None,
        num_rows=1000,
        use_gpu=False,
        export_dir="/tmp/x",
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"global_batch_size": 768, "micro_batch_size": 16, "num_workers": 24}, (16, 2, 768)),
        ({"micro_batch_size": 4, "grad_accum_steps": 3, "num_workers": 2}, (4, 3, 24)),
        ({"global_batch_size": 16, "num_workers": 2}, (8, 1, 16)),
        ({"global_batch_size": 16, "grad_accum_steps": 2, "num_workers": 2}, (4, 2, 16)),
        ({"num_workers": 8}, (96, 1, 768)),  # the recipe's global batch
    ],
)
def test_batch_sizes_resolve(kwargs, expected) -> None:
    assert resolve_batches(TrainConfig(**kwargs), 768, "pretrain") == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"global_batch_size": 10, "micro_batch_size": 4, "num_workers": 2},
            "pretrain.global_batch_size: 10 is not divisible",
        ),
        (
            {"global_batch_size": 9, "num_workers": 2},
            "pretrain.global_batch_size: 9 is not divisible",
        ),
        (
            {
                "global_batch_size": 12,
                "micro_batch_size": 2,
                "grad_accum_steps": 2,
                "num_workers": 2,
            },
            "pretrain.global_batch_size: 12 ≠",
        ),
    ],
)
def test_batch_sizes_that_do_not_divide_fail_naming_the_field(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_batches(TrainConfig(**kwargs), 768, "pretrain")


def test_plan_uses_recipe_defaults_and_epochs() -> None:
    config = TrainConfig(epochs=2, global_batch_size=8, num_workers=2)
    plan = resolve_plan(
        config,
        RecipeConfig(),
        "sft",
        design="vlora",
        model_config_json=None,
        init_checkpoint="/ckpt",
        num_rows=100,
        use_gpu=False,
        export_dir="/tmp/x",
    )
    assert plan.lr == 2e-5  # release SFT lr
    assert plan.total_steps == 2 * (50 // 4)  # 50 rows per worker, 4 per step per worker
    assert plan.warmup_steps == math.ceil(plan.total_steps * 0.03)
    assert plan.gradient_checkpointing  # on for SFT by default
    assert plan.train_llm
    assert plan.precision == "fp32"  # CPU


def test_steps_and_epochs_are_exclusive() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        TrainConfig(max_steps=3, epochs=1)


def test_deepspeed_json_is_consistent() -> None:
    plan = plan_for(global_batch_size=8, micro_batch_size=2, num_workers=2, zero_stage=3)
    ds = deepspeed_config(plan, use_gpu=False)
    assert (
        ds["train_batch_size"]
        == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2
    )
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] is False
    assert "optimizer" not in ds  # a plain torch AdamW is the client optimizer
    offload = deepspeed_config(
        plan_for(offload_optimizer=True, global_batch_size=8, num_workers=2), True
    )
    assert offload["optimizer"]["type"] == "AdamW"
    assert offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_warmup_then_cosine() -> None:
    factors = [warmup_cosine_factor(s, 2, 10, 0.1) for s in range(10)]
    assert factors[0] == 0.5 and factors[1] == 1.0
    assert factors[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))
    assert warmup_cosine_factor(10, 2, 10, 0.1) == pytest.approx(0.1)


def _chunk(flags: list[bool], start: int) -> dict[str, np.ndarray]:
    ids = np.empty(len(flags), dtype=object)
    ids[:] = [np.arange(i % 3 + 1) for i in range(len(flags))]
    return {
        "has_image": np.array(flags),
        "row": np.arange(start, start + len(flags)),
        "input_ids": ids,
    }


def test_modality_grouped_batches_are_homogeneous_and_deterministic() -> None:
    flags = [True, False, True, True, False, False, True, False, True]
    chunks = [_chunk(flags[:5], 0), _chunk(flags[5:], 5)]
    counters = EpochCounters()
    batches = list(grouped_micro_batches(chunks, 2, True, counters))
    assert [list(b["row"]) for b in batches] == [[0, 2], [1, 4], [3, 6], [5, 7]]
    assert all(len(set(b["has_image"])) == 1 for b in batches)
    assert counters.rows_dropped == 1 and counters.rows_seen == 9
    assert batches[0]["input_ids"].dtype == object  # ragged token lists stay ragged
    again = list(grouped_micro_batches(chunks, 2, True))
    assert all((a["row"] == b["row"]).all() for a, b in zip(batches, again, strict=True))


def test_optimizer_state_round_trips_without_pickle() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors, meta = _flatten_optimizer_state(optimizer.state_dict())
    import json

    restored = _unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh.load_state_dict(restored)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(
            fresh.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key]
        )
