"""One run seed drives initialisation and data order of both training stages."""

from __future__ import annotations

from pipelines.config import load_pipeline_config
from pipelines.download import stage as download
from pipelines.features import stage as features
from pipelines.training import pretrain, sft


def test_run_seed_reaches_both_training_stages() -> None:
    config = load_pipeline_config("local", ["seed=3"])
    assert config.seed == 3
    assert (config.pretrain.seed, config.sft.seed) == (3, 3)


def test_stage_seed_overrides_the_run_seed() -> None:
    config = load_pipeline_config("local", ["seed=3", "pretrain.seed=7"])
    assert (config.pretrain.seed, config.sft.seed) == (7, 3)


def test_default_seed_keeps_the_stage_keys_of_seed_zero() -> None:
    default = load_pipeline_config("local")
    explicit = load_pipeline_config("local", ["pretrain.seed=0", "sft.seed=0"])
    assert pretrain.key_config(default) == pretrain.key_config(explicit)
    assert sft.key_config(default) == sft.key_config(explicit)


def test_seeds_share_data_stages_and_split_training_stages() -> None:
    one, two = load_pipeline_config("local"), load_pipeline_config("local", ["seed=1"])
    assert download.key_config(one) == download.key_config(two)
    assert features.key_config(one) == features.key_config(two)
    assert pretrain.key_config(one) != pretrain.key_config(two)
    assert sft.key_config(one) != sft.key_config(two)


def test_training_plan_carries_the_resolved_seed(tmp_path) -> None:
    from pipelines.training.plan import resolve_plan
    from vlora.presets import get_preset

    config = load_pipeline_config("local", ["seed=5", f"workdir={tmp_path}"])
    plan = resolve_plan(
        config.sft,
        get_preset(config.preset).recipe,
        "sft",
        design="vlora",
        fresh_model_config=None,
        init_checkpoint="x",
        num_rows=64,
        use_gpu=False,
        export_dir=str(tmp_path),
    )
    assert plan.seed == 5
