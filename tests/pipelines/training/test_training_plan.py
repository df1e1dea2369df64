"""Batch arithmetic, schedules and the DeepSpeed JSON: checked before any worker starts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pipelines.config.train import TrainConfig
from pipelines.training.batching import EpochCounters, epoch_micro_batches, modality_schedule
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
        fresh_model_config=None,
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
        fresh_model_config=None,
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


def test_modality_batches_follow_the_shared_schedule() -> None:
    flags = [True, False, True, True, False, False, True, False, True]
    chunks = [_chunk(flags[:5], 0), _chunk(flags[5:], 5)]
    schedule = list(itertools.islice(modality_schedule(0.5, seed=3), 6))
    counters = EpochCounters()
    batches = list(epoch_micro_batches(chunks, 2, 0.5, 3, torch.device("cpu"), counters))
    assert batches
    assert all(len(set(b["has_image"])) == 1 for b in batches)  # homogeneous
    kinds = ["image" if b["has_image"][0] else "text" for b in batches]
    assert kinds == schedule[: len(kinds)]  # the same schedule every rank draws
    image_rows = [r for b in batches if b["has_image"][0] for r in b["row"]]
    assert image_rows == [0, 2, 3, 6][: len(image_rows)]  # stream order within a modality
    assert counters.rows_seen == 9
    assert counters.rows_left_over + 2 * len(batches) == 9
    again = list(epoch_micro_batches(chunks, 2, 0.5, 3, torch.device("cpu")))
    assert all((a["row"] == b["row"]).all() for a, b in zip(batches, again, strict=True))


def test_ragged_token_lists_stay_ragged() -> None:
    batch = next(epoch_micro_batches([_chunk([True] * 4, 0)], 3, 1.0, 0, torch.device("cpu")))
    assert batch["input_ids"].dtype == object
    assert [len(x) for x in batch["input_ids"]] == [1, 2, 3]


def test_schedule_extremes() -> None:
    assert set(itertools.islice(modality_schedule(1.0, 0), 20)) == {"image"}
    assert set(itertools.islice(modality_schedule(0.0, 0), 20)) == {"text"}


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


def test_llm_trains_in_sft_unless_told_and_never_in_pretrain() -> None:
    def sft_plan(**kwargs):
        return resolve_plan(
            TrainConfig(max_steps=10, **kwargs),
            RecipeConfig(),
            "sft",
            design="vlora",
            fresh_model_config=None,
            init_checkpoint="/tmp/pretrained",
            num_rows=1000,
            use_gpu=False,
            export_dir="/tmp/x",
        )

    assert sft_plan().train_llm is True  # the paper's full SFT
    assert sft_plan(train_llm=False).train_llm is False
    assert plan_for().train_llm is False
    with pytest.raises(ValueError, match="pretrain.train_llm: pre-training trains the generator"):
        plan_for(train_llm=True)


def test_training_key_ignores_run_mechanics_and_unset_late_fields() -> None:
    base = TrainConfig(global_batch_size=16).key_config()
    # how the work is spread and reported does not change the weights
    assert (
        TrainConfig(global_batch_size=16, num_workers=4, report_every_steps=1).key_config() == base
    )
    # a field added later hashes only when set: finished stages stay found after an upgrade
    assert "train_llm" not in base
    assert TrainConfig(global_batch_size=16, train_llm=False).key_config() == {
        **base,
        "train_llm": False,
    }
